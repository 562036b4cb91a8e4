"""The cases: what each proves, and its verdict on what a run saw.

It exists apart from the driving (gateway/conform/scenarios.py) so that every rule a
worker is held to reads in one place, as plain functions of the `Record`, the `Roles`
and the `Plan`. docs/conform.md lists the same cases for people.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

import orjson
from jsonschema import Draft7Validator
from jsonschema.exceptions import ValidationError

from gateway.conform.plan import Plan
from gateway.conform.records import Job, Received, Record, Roles
from gateway.contracts import validation_details
from gateway.types import JSON
from gateway.wire import AnswerType

__all__ = ["LONG_CASES", "QUICK_CASES", "Verdict", "judge"]

Outcome = Literal["PASS", "FAIL", "n/a"]

QUICK_CASES = ("answers", "on-contract", "progress", "error", "redelivery")
LONG_CASES = ("reject", "started", "lease", "cancel", "deadline")

# The error answer's body: the worker's part of schemas/wire/error.json.
ERROR_ANSWER = Draft7Validator(
    {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
            }
        },
    }
)
IGNORED_BODIES = frozenset({AnswerType.STARTED, AnswerType.HEARTBEAT})


@dataclass(frozen=True, slots=True)
class Verdict:
    case: str
    outcome: Outcome
    saw: str
    """What conform saw, in one line."""


def _pass(case: str, saw: str) -> Verdict:
    return Verdict(case, "PASS", saw)


def _fail(case: str, saw: str) -> Verdict:
    return Verdict(case, "FAIL", saw)


def _na(case: str, why: str) -> Verdict:
    return Verdict(case, "n/a", why)


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def _s(seconds: float) -> str:
    return f"{seconds:.1f} s"


class Judge:
    def __init__(self, plan: Plan, record: Record, roles: Roles, tap_blind: str | None) -> None:
        self.plan = plan
        self.record = record
        self.roles = roles
        self.tap_blind = tap_blind

    def job(self, job_id: str | None) -> Job | None:
        return self.record.jobs.get(job_id or "")

    def silence(self, job: Job) -> str:
        """Why a job has no final answer, in words."""
        exited = self.record.worker_exit
        if exited is not None:
            return f"no final answer for {job.label}: the worker exited (status {exited})"
        if job.dead_letters:
            return f"{job.label} was rejected (it reached the dead-letter queue), not answered"
        return f"no final answer for {job.label} (job {job.id}) within {_s(self.plan.timeout)}"

    def answered(self, job: Job, after: float = 0.0) -> str | None:
        """Why the job's final answer (at or after `after`) is missing or late; None if
        it came in time."""
        final = job.final(after)
        if final is None:
            return self.silence(job)
        sent = max([s for s in job.sent if s <= final.at] or [final.at])
        if final.at - max(sent, after) > self.plan.timeout:
            return f"{job.label} answered after {_s(final.at - sent)}, over --timeout"
        return None

    # -- the quick cases --------------------------------------------------------------------

    def answers(self) -> Verdict:
        case = "answers"
        if self.record.strays:
            stray = self.record.strays[0]
            more = (
                f" (and {len(self.record.strays) - 1} more)" if len(self.record.strays) > 1 else ""
            )
            return _fail(
                case,
                f"an answer for correlation_id {stray.correlation_id}, which no request "
                f"carried{more}",
            )
        jobs = [j for j in map(self.job, self.roles.answers) if j is not None]
        for job in jobs:
            problem = self.answered(job)
            if problem is not None:
                return _fail(case, problem)
        if self.tap_blind is None:
            for job in jobs:
                if job.acked() is None:
                    how = ", ".join(s.how for s in job.settled) or "never settled"
                    return _fail(
                        case, f"{job.label} was answered, but its request not acked ({how})"
                    )
        if self.record.queue_left:
            return _fail(
                case, f"{self.record.queue_left} request(s) left in the queue {self.plan.op}"
            )
        finals = [j.final() for j in jobs]
        times = [f.at - j.sent[0] for j, f in zip(jobs, finals, strict=True) if f is not None]
        kinds = Counter(f.type for f in finals if f is not None)
        acked = "each acked" if self.tap_blind is None else f"acks not seen: {self.tap_blind}"
        return _pass(
            case,
            f"{len(jobs)} request(s) answered ({_counts(kinds)}) in "
            f"{min(times) * 1000:.0f}-{_ms(max(times))}, carrying their correlation_id; "
            f"{acked}; nothing left in the queue",
        )

    def on_contract(self) -> Verdict:
        case = "on-contract"
        problems = [p for p in map(self._off_contract, self.record.answers) if p is not None]
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            return _fail(case, problems[0] + more)
        kinds = Counter(a.type for a in self.record.answers)
        if not kinds:
            return _fail(case, "no answer at all")
        return _pass(
            case, f"{len(self.record.answers)} answers, all on contract ({_counts(kinds)})"
        )

    def _off_contract(self, answer: Received) -> str | None:
        if answer.type in IGNORED_BODIES:
            return None
        whose = self.record.label(answer.correlation_id)
        checks: dict[str, Callable[[JSON], list[str]]] = {
            AnswerType.RESULT: lambda b: _paths(self.plan.contract.result.iter_errors(b)),
            AnswerType.ERROR: lambda b: _paths(ERROR_ANSWER.iter_errors(b)),
        }
        progress = self.plan.contract.progress
        if progress is not None:
            checks[AnswerType.PROGRESS] = lambda b: _paths(progress.iter_errors(b))
        elif answer.type == AnswerType.PROGRESS:
            return f"a progress answer for {whose}, but the contract has no progress"
        check = checks.get(answer.type)
        if check is None:
            return f"an answer of type {answer.type!r} for {whose}: no such answer type"
        try:
            body = orjson.loads(answer.body)
        except orjson.JSONDecodeError:
            return f"the {answer.type} answer for {whose} is not JSON"
        errors = check(body)
        return f"{answer.type} for {whose} off contract: {errors[0]}" if errors else None

    def progress(self) -> Verdict:
        case = "progress"
        if self.plan.contract.progress is None:
            return _na(case, "the contract has no progress")
        job = self.job(self.roles.slow)
        if job is None:
            return _na(case, "no slow request recorded")
        final = job.final()
        if final is None:
            return _fail(case, self.silence(job))
        before = [a for a in job.answers if a.type == AnswerType.PROGRESS and a.at <= final.at]
        after = [a for a in job.answers if a.type == AnswerType.PROGRESS and a.at > final.at]
        if after:
            return _fail(case, f"{len(after)} progress answer(s) after the final {final.type}")
        if not before:
            return _fail(case, f"no progress answer before the final {final.type}")
        off = [p for p in map(self._off_contract, before) if p is not None]
        if off:
            return _fail(case, off[0])
        return _pass(case, f"{len(before)} progress answers, on contract, before the {final.type}")

    def error(self) -> Verdict:
        case = "error"
        recorded, job = self.plan.error, self.job(self.roles.error)
        if recorded is None or job is None:
            return _na(case, "no error request recorded")
        problem = self.answered(job)
        if problem is not None:
            return _fail(case, problem)
        final = job.final()
        assert final is not None
        if final.type != AnswerType.ERROR:
            return _fail(case, f"answered {final.type}, not an error {recorded.code!r}")
        code = _error_code(final.body)
        if code != recorded.code:
            return _fail(case, f"answered error {code!r}, not {recorded.code!r}")
        return _pass(case, f"answered error {code!r} in {_ms(final.at - job.sent[0])}")

    def redelivery(self) -> Verdict:
        case = "redelivery"
        again = self.job(self.roles.redelivered)
        assert again is not None  # sent before the worker started
        problem = self.answered(again)
        if problem is not None:
            return _fail(case, f"the redelivered request: {problem}")
        copied, after = self.job(self.roles.copied), self.job(self.roles.after_copies)
        if copied is None or self.roles.copy_sent_at is None:
            return _fail(case, "no job was answered, so no second copy was sent")
        problem = self.answered(copied, after=self.roles.copy_sent_at)
        if problem is not None:
            return _fail(case, f"the second copy (x-attempt 2): {problem}")
        if after is None or (problem := self.answered(after)) is not None:
            return _fail(case, f"after the copies: {problem or 'nothing sent'}")
        flagged = any(d.redelivered for d in again.delivered)
        how = "with the redelivered flag" if flagged else "(redelivered flag not seen)"
        return _pass(
            case,
            f"a request delivered again {how} answered, a second copy (x-attempt 2) "
            f"answered, and the next request too",
        )

    # -- the long cases ---------------------------------------------------------------------

    def _slow(self, case: str) -> Job | Verdict:
        job = self.job(self.roles.slow)
        if job is None:
            return _fail(
                case,
                f'no slow request recorded: add "worker": {{"slow": <a valid request that '
                f"runs over 3 leases>}} to {self.plan.vectors}, or pass --slow-request JSON",
            )
        return job

    def reject(self) -> Verdict:
        case = "reject"
        seen = []
        for job in filter(None, map(self.job, (self.roles.off_contract, self.roles.not_json))):
            final = job.final()
            if final is not None and final.type != AnswerType.ERROR:
                return _fail(case, f"{job.label} got a {final.type}, not an error or a rejection")
            if final is not None:
                seen.append(f"{job.label}: error {_error_code(final.body)!r}")
            elif job.dead_letters:
                seen.append(f"{job.label}: rejected, dead-lettered")
            elif any(s.requeue for s in job.settled if s.how != "released"):
                return _fail(case, f"{job.label} was requeued (nack/reject with requeue=true)")
            else:
                return _fail(case, self.silence(job))
        after = self.job(self.roles.after_reject)
        if after is None or (problem := self.answered(after)) is not None:
            return _fail(case, f"then: {problem or 'nothing sent'}")
        return _pass(case, "; ".join(seen) + "; the next request answered")

    def started(self) -> Verdict:
        case = "started"
        job = self._slow(case)
        if isinstance(job, Verdict):
            return job
        final = job.final()
        if final is None:
            return _fail(case, self.silence(job))
        started = next((a for a in job.answers if a.type == AnswerType.STARTED), None)
        if started is None or started.at > final.at:
            return _fail(case, f"no started answer before the final {final.type}")
        if self.tap_blind is not None:
            return _pass(
                case, f"started, then the {final.type}; the ack not seen: {self.tap_blind}"
            )
        acked = job.acked()
        # The worker's own publish of the final answer, as the tap saw it (one TCP stream
        # gives their order); the reply consumer's clock would race a quick ack.
        published = next(
            (p for p in job.published if (p.type or AnswerType.RESULT) == final.type), None
        )
        final_at = published.at if published is not None else final.at
        if acked is None:
            return _fail(case, "its request was never acked")
        if acked.at > final_at:
            return _fail(case, f"its request was acked only after the final {final.type}")
        return _pass(
            case,
            f"started {_ms(started.at - job.sent[0])} after sending, acked "
            f"{_s(final_at - acked.at)} before the final {final.type}",
        )

    def lease(self) -> Verdict:
        case = "lease"
        job = self._slow(case)
        if isinstance(job, Verdict):
            return job
        lease = self.plan.lease_seconds
        final = job.final()
        if final is None:
            return _fail(case, self.silence(job))
        times = [a.at for a in job.answers if a.at <= final.at]
        gaps = [b - a for a, b in itertools.pairwise(times)]
        longest = max(gaps, default=0.0)
        if longest > lease:
            return _fail(case, f"{_s(longest)} without an answer, over the {_s(lease)} lease")
        ran = final.at - times[0]
        if ran <= 2 * lease:
            return _fail(
                case,
                f"the slow request ran only {_s(ran)}, not over two leases ({_s(2 * lease)}): "
                f"record a slower one, or pass a shorter --lease-seconds",
            )
        return _pass(
            case,
            f"ran {_s(ran)} ({ran / lease:.1f} leases of {_s(lease)}), {len(times)} answers, "
            f"the longest gap {_s(longest)}, then a {final.type}",
        )

    def cancel(self) -> Verdict:
        case = "cancel"
        slow = self._slow(case)
        if isinstance(slow, Verdict):
            return slow
        job = self.job(self.roles.cancelled)
        assert job is not None
        cancelled_at = self.roles.cancel_sent_at
        if cancelled_at is None:
            return _fail(case, f"no started answer for {job.label}, so no cancel was sent")
        grace = self.plan.cancel_grace
        late = [a for a in job.answers if a.at > cancelled_at + grace]
        if late:
            return _fail(
                case,
                f"a {late[0].type} answer {_s(late[0].at - cancelled_at)} after the cancel "
                f"notice (grace {_s(grace)}); {len(late)} in all",
            )
        after = self.job(self.roles.after_cancel)
        if after is None or (problem := self.answered(after)) is not None:
            return _fail(case, f"after the cancel: {problem or 'nothing sent'}")
        last = max((a.at for a in job.answers), default=cancelled_at)
        when = (
            "from the cancel notice on"
            if last <= cancelled_at
            else f"from {_ms(last - cancelled_at)} after the cancel notice"
        )
        return _pass(
            case,
            f"silent {when}, for over {_s(self.plan.lease_seconds)}; the next request answered",
        )

    def deadline(self) -> Verdict:
        case = "deadline"
        job = self.job(self.roles.expired)
        assert job is not None
        if job.answers:
            return _fail(case, f"{job.label} got a {job.answers[0].type} answer")
        after = self.job(self.roles.after_expired)
        if after is None or (problem := self.answered(after)) is not None:
            return _fail(case, f"the request after it: {problem or 'nothing sent'}")
        if self.tap_blind is not None:
            return _pass(case, f"never answered; the ack not seen: {self.tap_blind}")
        if job.acked() is None:
            how = ", ".join(s.how for s in job.settled) or "never settled"
            return _fail(case, f"{job.label} was not acked ({how})")
        return _pass(case, "acked and never answered; the request after it answered")


def _paths(errors: Iterable[ValidationError]) -> list[str]:
    details = validation_details(errors)
    return [f"{d['path'] or '/'}: {d['message']}" for d in details]


def _error_code(body: bytes) -> object:
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    error = parsed.get("error") if isinstance(parsed, dict) else None
    return error.get("code") if isinstance(error, dict) else None


def _counts(kinds: Counter[str]) -> str:
    return ", ".join(f"{kind} {count}" for kind, count in sorted(kinds.items()))


def judge(plan: Plan, record: Record, roles: Roles, tap_blind: str | None) -> list[Verdict]:
    """The verdicts of the claimed cases, in the order of the table."""
    j = Judge(plan, record, roles, tap_blind)
    verdicts = [j.answers(), j.on_contract(), j.progress(), j.error(), j.redelivery()]
    if plan.long:
        verdicts += [j.reject(), j.started(), j.lease(), j.cancel(), j.deadline()]
    return verdicts
