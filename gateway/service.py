"""The gateway's core, below HTTP: accept a job, record what workers answer, wait for events.

This is the data path of the design, top to bottom:
validate -> store job -> publish (confirm) -> ... -> consume answer -> store event -> notify.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import secrets
import time
from collections import OrderedDict

import orjson

from gateway.answers import Outcome, dead_letter_outcome, interpret, oversized_outcome
from gateway.auth import ANONYMOUS, Principal
from gateway.broker import Answer, Attachment, Broker
from gateway.config import Settings
from gateway.contracts import Contract, ContractRegistry
from gateway.errors import Conflict, Forbidden, GatewayError, NotFound, ServiceUnavailable
from gateway.follow import Follow, JobLog
from gateway.hub import Hub, Watch
from gateway.jobs import Event, Job, error_body, new_job
from gateway.metrics import Metrics
from gateway.peers import PeerNotices
from gateway.store import Created, JobStore
from gateway.telemetry import Telemetry
from gateway.topic_contracts import TopicContract, TopicRegistry
from gateway.topic_feed import TopicMessage
from gateway.topics import TopicLog
from gateway.trace_context import TraceContext
from gateway.trust import broker_user
from gateway.types import JSON, TERMINAL_EVENTS
from gateway.wire import HEADER_TRACEPARENT, HEADER_TRACESTATE, AnswerType, answer_type

log = logging.getLogger("gateway.service")

MAX_OPS_REMEMBERED = 100_000
NOTICE_HEAD_START = 0.05  # seconds a peer notice may take before local waiters wake
SIGHTING_WAIT = 1.0  # seconds a published topic message may take to reach this process


def request_hash(body: JSON) -> str:
    """Fingerprint of a request, blind to key order and whitespace."""
    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()


class GatewayService:
    def __init__(self, settings: Settings, contracts: ContractRegistry, store: JobStore) -> None:
        self.settings = settings
        self.contracts = contracts
        self.store = store
        self.hub = Hub()
        self.metrics = Metrics()
        self.telemetry = Telemetry()
        """Off unless create_app gives one that exports (gateway/telemetry.py)."""
        share = settings.notify_peers if settings.notify_peers is not None else store.shared
        user = broker_user(settings.broker_url)
        self.peers = (
            PeerNotices(
                self.hub, user, trusted_user=user if settings.worker_users is not None else None
            )
            if share
            else None
        )
        self.topics = TopicRegistry.from_directory(settings.topics_dir)
        self.topic_hub = Hub()
        """The doorbell of topic subscribers, by topic (a hub of its own: topics and job
        ids are keys of different things)."""
        self.topic_log = TopicLog(
            self.topics,
            self.topic_hub,
            self.metrics,
            max_bytes=settings.max_body_bytes,
            ring=settings.topic_ring_messages,
            publish_marker=lambda stream, message_id: self.broker.publish_marker(
                stream, message_id
            ),
        )
        attachments: list[Attachment] = [self.peers] if self.peers else []
        if self.topics:
            attachments.append(self.topic_log)
        self.broker = Broker(
            settings.broker_url,
            contracts,
            store_identity=lambda: store.identity,
            on_answer=self.on_answer,
            on_dead_letter=self.on_dead_letter,
            publish_timeout=settings.publish_timeout_seconds,
            stall_after=settings.stall_seconds,
            attachments=attachments,
        )
        self.metrics.watch(
            lambda: self.broker.ready,
            lambda: self.broker.problem is not None,
            lambda: self.waiting,
        )
        self._job_log = JobLog(store)
        self._sweeper: asyncio.Task[None] | None = None
        self.slot: int | None = None
        """This process's slot among those of one `gateway serve --workers N`
        (gateway/siblings.py); None when alone. A light job's id ends in `.<slot>`."""
        self._ops_in_flight: OrderedDict[str, str] = OrderedDict()
        uncovered = settings.worker_users.uncovered(contracts) if settings.worker_users else []
        if uncovered:
            # Refused, not warned: nobody could ever answer these, so their jobs would all
            # end in deadlines and lost leases, far from the cause.
            raise ValueError(
                f"--worker-users names no broker user for the operations "
                f"{', '.join(uncovered)}: add an entry (a glob such as '*=worker' matches "
                f"the rest)"
            )

    async def start(self) -> None:
        await self.store.open()
        self.broker.start()
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="sweeper")

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        if self.peers is not None:
            await self.peers.flush()  # notices on their way go out before the link goes
        await self.broker.close()
        await self.store.close()

    async def problems(self) -> dict[str, str]:
        """What keeps the gateway from serving now, by part (`broker`, `store`), in words
        for /readyz; empty when ready."""
        problems: dict[str, str] = {}
        if not await self.broker.probe():
            problems["broker"] = self.broker.problem or "RabbitMQ did not confirm a probe in time"
        try:
            await self.store.ping()
        except GatewayError as exc:
            problems["store"] = exc.message
        return problems

    def contract(self, op: str) -> Contract:
        try:
            return self.contracts[op]
        except KeyError:
            raise NotFound(f"no operation named {op!r}", code="unknown_op") from None

    # -- accepting work -------------------------------------------------------------

    async def submit(
        self,
        contract: Contract,
        body: JSON,
        idempotency_key: str | None = None,
        deadline_seconds: float | None = None,
        owner: str | None = None,
        trace: TraceContext | None = None,
    ) -> Job:
        """Store the job, publish its request, return once RabbitMQ confirmed it.

        Raises 503 if RabbitMQ or the store cannot take it now, at once when either is
        known to be down or stalled; 409 if the idempotency key names a job with another
        request. With an idempotency key the job is kept whatever fails, and every retry
        publishes that same job: one key, one job id, at the broker too. `trace`: the
        trace its request message carries to the worker (and the job keeps).
        """
        self.broker.check_publishable()  # before anything is stored
        fingerprint = request_hash(body) if idempotency_key is not None else None
        if idempotency_key is not None and owner is not None:
            # Keys are each owner's own: another subject's same key is another job.
            idempotency_key = f"{len(owner)}:{owner}:{idempotency_key}"
        job, first = new_job(
            contract.op,
            idempotency_key=idempotency_key,
            request_hash=fingerprint,
            deadline_seconds=deadline_seconds or contract.settings.deadline_seconds,
            owner=owner,
            id_suffix=f".{self.slot}"
            if self.slot is not None and contract.settings.durability == "light"
            else "",
            trace=trace,
        )
        raw = orjson.dumps(body)
        created = await self.store.create(job, first, raw)
        if not created.created:
            return await self._submit_again(contract, created, fingerprint)
        try:
            with self.metrics.publish_seconds.time():
                await self.broker.publish_request(
                    contract, job.id, raw, deadline_at=job.deadline_at, trace=trace
                )
        except BaseException:
            if idempotency_key is None:
                # The client never learns this id, so nothing may remain of it. (If
                # RabbitMQ took the message after all, its answer is dropped as unknown.)
                with contextlib.suppress(Exception):
                    await self.store.discard(job.id)
            # With a key the job stays: the retry finds it and publishes it again.
            raise
        if idempotency_key is not None:
            # Only a repeat of the key can find a job whose publish was never confirmed
            # (any other id is given out only after the confirm), so only then record it.
            await self.store.mark_published(job.id)
        self._remember_op(job.id, contract.op)
        self.metrics.jobs_submitted.labels(contract.op).inc()
        return job

    async def _submit_again(
        self, contract: Contract, created: Created, fingerprint: str | None
    ) -> Job:
        """A repeat of an idempotency key: the job it names, published if it never was."""
        existing = created.job
        if existing.request_hash != fingerprint:
            raise Conflict(
                "this Idempotency-Key was used with a different request",
                code="idempotency_key_reused",
            )
        if created.published or existing.status != "queued":
            # Published, or a worker answered it (so RabbitMQ had it), or it ended.
            return existing
        # Stored, but its publish was never confirmed (a 503 or a crash in between): publish
        # it again, under the same id, so a worker can tell the two copies are one job.
        await self.broker.publish_request(
            contract,
            existing.id,
            created.request,
            deadline_at=existing.deadline_at,
            attempt=2,
            trace=TraceContext.parse(existing.traceparent, existing.tracestate),
        )
        await self.store.mark_published(existing.id)
        self._remember_op(existing.id, contract.op)
        return existing

    def _remember_op(self, job_id: str, op: str) -> None:
        """Which operation a job in flight belongs to, so its answers need no store read."""
        self._ops_in_flight[job_id] = op
        if len(self._ops_in_flight) > MAX_OPS_REMEMBERED:
            self._ops_in_flight.popitem(last=False)

    # -- reading and waiting ------------------------------------------------------------

    async def job(self, job_id: str, principal: Principal = ANONYMOUS) -> Job:
        """The job, if `principal` may see it; 404 alike for missing and not yours."""
        job = await self.store.get(job_id)
        if job is None or not principal.may_read(job_id, job.owner):
            raise NotFound(f"no job with id {job_id!r}", code="job_not_found")
        return job

    @property
    def waiting(self) -> int:
        """Long-polls and streams held now, of jobs and topics."""
        return self.hub.waiting + self.topic_hub.waiting

    def check_capacity(self) -> None:
        """Refuse one more waiter when the process holds as many as it may."""
        if self.waiting >= self.settings.max_waiters:
            raise ServiceUnavailable(
                "too many requests are waiting on this gateway; retry shortly",
                code="too_many_waiters",
                retry_after=2,
            )

    async def wait_for_job(
        self,
        job_id: str,
        timeout: float,
        after: int | None = None,
        principal: Principal = ANONYMOUS,
    ) -> Job:
        """The job once it is terminal (or has an event past `after`), or after `timeout`.
        Capacity is the caller's to check first (`check_capacity`), before anything it
        cannot take back: a submit checks before it makes the job."""
        if principal is not ANONYMOUS:
            await self.job(job_id, principal)

        def done(job: Job | None) -> bool:
            if job is None or job.terminal:
                return True
            return after is not None and job.seq > after

        def noticed(watch: Watch, last: Job | None) -> Job | None:
            job = watch.job
            return job if job is not None and (last is None or job.seq >= last.seq) else None

        job = await self.hub.wait_until(
            job_id, lambda: self.store.get(job_id), done, timeout, noticed
        )
        if job is None:
            raise NotFound(f"no job with id {job_id!r}", code="job_not_found")
        return job

    def follow(self, job_id: str, after: int, *, until_end: bool = False) -> Follow[Event]:
        """`with service.follow(job_id, after) as follow:` reads the job's events past
        `after` as they come (`await follow.next(timeout)`): the one way to follow a job,
        for streams (`until_end`: stop after its end) and long-polls alike. Access and
        capacity are the caller's to check first (`job`, `check_capacity`)."""
        return Follow(self.hub, self._job_log, job_id, after, until_end=until_end)

    async def wait_for_events(
        self, job_id: str, after: int, timeout: float, principal: Principal = ANONYMOUS
    ) -> list[Event]:
        """Events past `after`, waiting up to `timeout` for the first one."""
        await self.job(job_id, principal)
        if timeout > 0:
            self.check_capacity()
        with self.follow(job_id, after) as follow:
            events = await follow.next(timeout)
            if not events and timeout > 0:
                # Out of time: answer with what is true now, in case a notice was lost.
                events = await follow.read()
            return events

    # -- topics -----------------------------------------------------------------------------

    async def publish(self, contract: TopicContract, topic: str, message: JSON) -> str:
        """Publish a message (checked against `contract` by the caller) to `topic`; its
        message id once RabbitMQ confirmed it (and this process's feed has it, within
        `SIGHTING_WAIT`)."""
        message_id = secrets.token_urlsafe(16)
        with self.topic_log.sighting(contract.name, message_id) as seen:
            await self.broker.publish_topic(topic, orjson.dumps(message), message_id)
            self.metrics.topic_published.labels(contract.name).inc()
            # Answered once this process has it too, normally a moment after the confirm:
            # the publisher's next read here finds it (read your writes). Not longer
            # than a moment: it is confirmed, whatever this process's feed is doing.
            await asyncio.wait((seen,), timeout=SIGHTING_WAIT)
        return message_id

    async def subscribe(self, topic: str, after: int | None) -> Follow[TopicMessage]:
        """`with await service.subscribe(topic, after) as follow:` reads the topic's
        messages past `after` (None: those published from now on) as they come, as
        `follow` reads a job's events. Capacity is the caller's to check first."""
        if after is None:
            after = await self.topic_log.position(topic)
        return Follow(self.topic_hub, self.topic_log, topic, after, until_end=False)

    # -- cancelling -------------------------------------------------------------------------

    async def cancel(self, job_id: str, principal: Principal = ANONYMOUS) -> Job:
        """Cancel a job that has not ended; a finished job is left as it is (409)."""
        if principal.is_token:
            raise Forbidden("a job token may read its job, not cancel it")
        if principal is not ANONYMOUS:
            await self.job(job_id, principal)
        recorded = await self.store.record(
            job_id, "cancelled", error_body("cancelled", "the job was cancelled by a client")
        )
        if recorded is None:
            raise NotFound(f"no job with id {job_id!r}", code="job_not_found")
        job = recorded.job
        if recorded.event is None:
            if job.status == "cancelled":
                return job  # cancelling twice is fine
            raise Conflict(f"the job has already ended ({job.status})", code="job_finished")
        await self._announce(job, recorded.event)
        self.metrics.jobs_finished.labels(job.op, "cancelled").inc()
        self.metrics.job_event(job, recorded.event, answered=False)
        try:
            await self.broker.publish_cancel(job_id, job.op)
        except Exception:
            # The job is cancelled regardless; its worker may just do the work in vain.
            log.warning("job %s: cancel notice not published", job_id, exc_info=True)
        return job

    # -- answers from workers -------------------------------------------------------------

    async def on_answer(self, answer: Answer) -> None:
        if not answer.job_id:
            log.warning("answer without correlation_id dropped")
            self.metrics.answers.labels("no_job").inc()
            return
        job_id = answer.job_id
        op = self._ops_in_flight.get(job_id)
        if op is None:  # submitted before a restart, or through another instance
            job = await self.store.get(job_id)
            if job is None:
                log.warning("answer for unknown job %s dropped", job_id)
                self.metrics.answers.labels("unknown_job").inc()
                return
            op = job.op
        if not self._from_its_workers(answer, op):
            return
        contract = self.contracts.get(op)
        if contract is None:
            log.warning("answer for job %s of operation %s, no longer served, dropped", job_id, op)
            self.metrics.answers.labels("unknown_op").inc()
            return
        lease_until = time.time() + contract.settings.lease_seconds
        if answer.type == AnswerType.HEARTBEAT:
            # Proof of life for a long job: extends the lease, adds no event.
            await self.store.touch(job_id, lease_until)
            self.metrics.answers.labels("heartbeat").inc()
            return
        oversized = oversized_outcome(answer, self.settings.max_answer_bytes)
        if oversized is not None:
            # Failed unparsed: one answer must not balloon the gateway's memory or store.
            log.warning("job %s: answer of %d bytes over the limit", job_id, len(answer.body))
            await self._record(job_id, oversized, counted_as="too_large", answer=answer)
            return
        outcome = await interpret(answer, contract)
        if (
            answer.redelivered
            and outcome is not None
            and await self._stored_before(job_id, outcome)
        ):
            # A gateway stored it, then died before its ack: RabbitMQ delivered it again.
            self.metrics.answers.labels("redelivered").inc()
            return
        await self._record(job_id, outcome, lease_until=lease_until, answer=answer)

    async def _trace_answer(self, job: Job, event: Event, answer: Answer) -> None:
        """The spans a worker's answer ends (gateway/telemetry.py)."""
        started_at = None
        if event.type in TERMINAL_EVENTS:
            events = await self.store.events(job.id)
            started_at = next((e.time for e in events if e.type == "started"), None)
        worker = TraceContext.parse(
            answer.headers.get(HEADER_TRACEPARENT), answer.headers.get(HEADER_TRACESTATE)
        )
        self.telemetry.answered(job, event, worker, started_at)

    async def _stored_before(self, job_id: str, outcome: Outcome) -> bool:
        """Whether the job's log has this progress already. (A redelivered terminal answer
        needs no look: the state machine ignores anything after the first terminal one.)"""
        if outcome.type != "progress":
            return False
        events = await self.store.events(job_id)
        return any(e.type == "progress" and e.data == outcome.data for e in events)

    def _from_its_workers(self, answer: Answer, op: str) -> bool:
        """With --worker-users, only a broker user listed for the job's operation may
        answer it (any kind, heartbeats too); the job is not touched by anyone else's."""
        users = self.settings.worker_users
        if users is None or users.allows(op, answer.user_id):
            return True
        log.warning(
            "%s answer for job %s of operation %s from broker user %r, not one of its "
            "workers, dropped",
            answer_type(answer.type),
            answer.job_id,
            op,
            answer.user_id,
        )
        self.metrics.answers.labels("forged").inc()
        return False

    async def on_dead_letter(self, answer: Answer) -> None:
        if not answer.job_id:
            log.warning("dead letter without a job id dropped")
            return
        if self.settings.worker_users is not None and answer.user_id != self.broker.user:
            # A genuine dead letter is a request the gateway published, properties kept,
            # user_id included (RabbitMQ lets no one else set it): this one was not.
            # (Checked only with --worker-users: without, any worker may fail any job by
            # an error answer anyway, and requests an older gateway published, without a
            # user_id, still fail as rejected or expired when they are dead-lettered.)
            log.warning(
                "dead letter for job %s published by broker user %r, not by the gateway "
                "(%r), dropped",
                answer.job_id,
                answer.user_id,
                self.broker.user,
            )
            self.metrics.answers.labels("forged").inc()
            return
        await self._record(answer.job_id, dead_letter_outcome(answer))

    async def _heard_for_a_lease(self, job_id: str, now: float) -> bool:
        """Whether RabbitMQ has been healthy for the job's whole lease, up to `now`."""
        if not await self.broker.probe():
            return False
        healthy_since = self.broker.healthy_since()
        job = await self.store.get(job_id)
        if healthy_since is None or job is None:
            return False
        contract = self.contracts.get(job.op)
        lease = contract.settings.lease_seconds if contract is not None else 0
        return now - healthy_since >= lease

    async def _record(
        self,
        job_id: str,
        outcome: Outcome | None,
        *,
        lease_until: float | None = None,
        counted_as: str | None = None,
        answer: Answer | None = None,
    ) -> None:
        """Store an event; `answer`: the worker's answer it comes from (not a dead letter
        or a sweep's verdict), which times the job's queue wait and ends its spans."""
        if outcome is None:
            self.metrics.answers.labels("dropped").inc()
            return
        recorded = await self.store.record(
            job_id, outcome.type, outcome.data, lease_until=lease_until
        )
        if recorded is None:
            log.warning("%s for unknown job %s dropped", outcome.type, job_id)
            self.metrics.answers.labels("unknown_job").inc()
            return
        if recorded.event is None:
            log.info("job %s: %s answer after the job ended ignored", job_id, outcome.type)
            self.metrics.answers.labels("ignored").inc()
            # Most often a redelivery: whoever stored it first may have died before its
            # notice went out, and waiters here would sleep on. Show them the job.
            self.hub.notify(job_id, recorded.job)
            return
        job = recorded.job
        self.metrics.answers.labels(counted_as or outcome.type).inc()
        if job.terminal:
            self._ops_in_flight.pop(job_id, None)
            self.metrics.jobs_finished.labels(job.op, job.status).inc()
        self.metrics.job_event(job, recorded.event, answered=answer is not None)
        if answer is not None and self.telemetry.enabled:
            # Before anyone is told: a client answered with the job finds its spans ended.
            try:
                await self._trace_answer(job, recorded.event, answer)
            except Exception:  # spans are worth less than the answer's delivery
                log.warning("job %s: spans not recorded", job_id, exc_info=True)
        await self._announce(job, recorded.event)

    async def _announce(self, job: Job, event: Event) -> None:
        """A new event is stored: tell the other instances (not of a light job: it is
        followed only where it lives), and wake this instance's waiters. The others are
        told first, and given a moment to get the notice out: waking thousands of waiters
        here would delay it behind them all, and their waiters with it (by ~0.7 s for
        5,000 SSE streams). Not more than a moment: a stalled broker must not hold up
        the waiters here."""
        if self.peers is not None and not self._light(job.op):
            telling = self.peers.tell_soon(job, event)
            await asyncio.wait((telling,), timeout=NOTICE_HEAD_START)
        self.hub.notify(job.id, job, event)

    def _light(self, op: str) -> bool:
        contract = self.contracts.get(op)
        return contract is not None and contract.settings.durability == "light"

    # -- deadlines, leases, retention ---------------------------------------------------

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.sweep_interval_seconds)
            try:
                await self.sweep()
            except ServiceUnavailable:
                pass  # the store or broker is out: said where it is noticed, tried again
            except Exception:
                log.exception(
                    "sweep failed; trying again in %ss", self.settings.sweep_interval_seconds
                )

    async def sweep(self, now: float | None = None) -> None:
        """Expire jobs past their deadline, fail jobs whose worker went silent past its
        lease, and purge finished jobs past their retention. Safe on many instances at
        once: the store records only the first terminal event.

        A lease counts only while RabbitMQ is healthy: a worker cannot be heard while the
        broker is down, paused or blocking publishers, so after such a spell every running
        job's worker gets a whole lease again, from when RabbitMQ recovered, before it is
        counted lost. A deadline is the client's own and counts regardless.

        A keyed job whose publish RabbitMQ never confirmed, and that no retry published,
        fails `not_published` after `unconfirmed_seconds`: whoever comes back with the key
        learns its fate (one that did reach RabbitMQ ran, under its id, long before)."""
        now = time.time() if now is None else now
        unconfirmed_before = now - self.settings.unconfirmed_seconds
        for job_id, why in await self.store.overdue(now, unconfirmed_before=unconfirmed_before):
            if why == "deadline":
                outcome = Outcome(
                    "expired", error_body("expired", "the job did not finish by its deadline")
                )
            elif why == "unconfirmed":
                outcome = Outcome(
                    "error",
                    error_body(
                        "not_published",
                        "RabbitMQ never confirmed the request, and no retry of its "
                        "Idempotency-Key published it",
                    ),
                )
            else:
                if not await self._heard_for_a_lease(job_id, now):
                    continue
                outcome = Outcome(
                    "error",
                    error_body(
                        "worker_lost",
                        "the worker fell silent for longer than its lease",
                    ),
                )
            await self._record(job_id, outcome)
        for contract in self.contracts.values():
            await self.store.purge(contract.op, now - contract.settings.retention_seconds)
