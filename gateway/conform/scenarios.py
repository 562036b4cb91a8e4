"""Drive the worker through the cases: what to send, in which order, and what to await.

It exists to keep the sending apart from the judging (gateway/conform/cases.py): each
scenario publishes its requests, awaits the answers as they arrive (never a sleep, but
for the silence a cancel must bring), and notes in `Roles` which job played which part.

Two phases. First the quick ones, together: the valid vectors (then a second copy of an
answered job, then one more request), the redelivered request, the error request. Then,
together, those around the slow request: the slow request itself; with the long claims a
second slow one that gets cancelled, the off-contract and non-JSON requests, and the
request past its deadline. Each phase's scenarios run at once, as a gateway's traffic
would; a worker of the long-job pattern keeps serving while a slow job runs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import orjson

from gateway.conform.gateway_double import GatewayDouble
from gateway.conform.plan import Plan
from gateway.conform.records import Job, Record, Roles
from gateway.types import JSON
from gateway.wire import AnswerType

__all__ = ["NOT_JSON", "prepare", "run_scenarios"]

NOT_JSON = b"{this is not JSON"


def _body(value: JSON) -> bytes:
    return orjson.dumps(value)


class Scenarios:
    def __init__(self, plan: Plan, double: GatewayDouble, record: Record, roles: Roles) -> None:
        self.plan = plan
        self.double = double
        self.record = record
        self.roles = roles

    def _job(self, job_id: str) -> Job:
        return self.record.jobs[job_id]

    async def _final(self, job_id: str, after: float = 0.0) -> bool:
        """Await the job's final answer (received at or after `after`), `--timeout` long."""
        job = self._job(job_id)
        return await self.record.until(lambda: job.final(after) is not None, self.plan.timeout)

    async def _another(self, purpose: str) -> str:
        """One more valid request, answered: does the worker keep serving?"""
        sample = self.plan.valid[0]
        job_id = await self.double.send(
            f"another {sample.label}", _body(sample.body), purpose=purpose
        )
        await self._final(job_id)
        return job_id

    # -- phase 1 --------------------------------------------------------------------------

    async def answers(self) -> None:
        ids = [
            await self.double.send(sample.label, _body(sample.body), purpose="answers")
            for sample in self.plan.valid
        ]
        self.roles.answers = ids
        await asyncio.gather(*(self._final(job_id) for job_id in ids))
        answered = next((i for i in ids if self._job(i).final() is not None), None)
        if answered is None:
            return
        # The gateway's republish of a job: same ids and body, x-attempt 2.
        job = self._job(answered)
        sample = self.plan.valid[ids.index(answered)]
        message = self.double.request(answered, _body(sample.body), purpose="redelivery", attempt=2)
        self.roles.copied = answered
        self.roles.copy_sent_at = await self.double.publish(message, job.label)
        await self._final(answered, after=self.roles.copy_sent_at)
        self.roles.after_copies = await self._another("redelivery")

    async def redelivered(self) -> None:
        assert self.roles.redelivered is not None
        await self._final(self.roles.redelivered)

    async def error(self) -> None:
        recorded = self.plan.error
        if recorded is None:
            return
        self.roles.error = await self.double.send(
            "the error request", _body(recorded.request), purpose="error"
        )
        await self._final(self.roles.error)

    # -- phase 2 --------------------------------------------------------------------------

    async def slow(self) -> None:
        self.roles.slow = job_id = await self._send_slow("the slow request", "slow")
        job = self._job(job_id)
        # However long it runs: it fails only after `--timeout` without a word.
        while job.final() is None:
            if not await self.record.until(_news(job), self.plan.timeout):
                return

    async def _send_slow(self, label: str, purpose: str) -> str:
        return await self.double.send(
            label,
            _body(self.plan.slow),
            purpose=purpose,
            lease_seconds=self.plan.lease_seconds,
        )

    async def cancel(self) -> None:
        job_id = await self._send_slow("the slow request to cancel", "cancel")
        self.roles.cancelled = job_id
        job = self._job(job_id)
        started = await self.record.until(
            lambda: any(a.type == AnswerType.STARTED for a in job.answers), self.plan.timeout
        )
        if not started:
            return
        self.roles.cancel_sent_at = await self.double.cancel(job_id)
        # Silence is the answer: watch the grace and one lease go by.
        await self.record.quiet(self.plan.cancel_grace + self.plan.lease_seconds)
        self.roles.after_cancel = await self._another("cancel")

    async def reject(self) -> None:
        sent = []
        if self.plan.invalid is not None:
            self.roles.off_contract = await self.double.send(
                self.plan.invalid.label, _body(self.plan.invalid.body), purpose="reject"
            )
            sent.append(self.roles.off_contract)
        self.roles.not_json = await self.double.send(
            "a body that is not JSON", NOT_JSON, purpose="reject"
        )
        sent.append(self.roles.not_json)

        await asyncio.gather(
            *(self.record.until(_settled(self._job(j)), self.plan.timeout) for j in sent)
        )
        self.roles.after_reject = await self._another("reject")

    async def deadline(self) -> None:
        past = int(time.time() * 1000) - 60_000
        self.roles.expired = await self.double.send(
            "a request past its deadline",
            _body(self.plan.valid[0].body),
            purpose="deadline",
            deadline_ms=past,
        )
        self.roles.after_expired = await self._another("deadline")
        expired = self._job(self.roles.expired)
        await self.record.until(lambda: bool(expired.settled), self.plan.timeout)


def _news(job: Job) -> Callable[[], bool]:
    """Has the job had an answer since this was called?"""
    heard = len(job.answers)
    return lambda: len(job.answers) > heard


def _settled(job: Job) -> Callable[[], bool]:
    """Has the job had a final answer, or been dead-lettered?"""
    return lambda: job.final() is not None or bool(job.dead_letters)


async def prepare(plan: Plan, double: GatewayDouble, roles: Roles) -> None:
    """Before the worker starts: the request RabbitMQ will redeliver to it."""
    sample = plan.valid[0]
    roles.redelivered = await double.redeliverable(
        f"redelivered {sample.label}", _body(sample.body)
    )


async def run_scenarios(plan: Plan, double: GatewayDouble, record: Record, roles: Roles) -> None:
    scenarios = Scenarios(plan, double, record, roles)
    await asyncio.gather(scenarios.answers(), scenarios.redelivered(), scenarios.error())
    second = []
    if plan.sends_slow:
        second.append(scenarios.slow())
        if plan.long:
            second.append(scenarios.cancel())
    if plan.long:
        second += [scenarios.reject(), scenarios.deadline()]
    await asyncio.gather(*second)
    # A quick worker acks after its answer: let the last acks reach the tap.
    answered = [record.jobs[job_id] for job_id in roles.answers]
    await record.until(
        lambda: all(len(j.settled) >= len(j.delivered) for j in answered), plan.timeout
    )
