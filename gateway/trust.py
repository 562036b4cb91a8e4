"""Which broker users may answer which operations, and which broker user the gateway is.

It exists because RabbitMQ's permissions cannot keep a worker out of the gateway's queues:
a worker must write to the default exchange to answer, and from there a message reaches
any queue by name (`gateway.answers`, `gateway.dead-letters`, another operation's queue).
What RabbitMQ does guarantee is the AMQP `user_id` property: when set, it must be the
publishing connection's user, or RabbitMQ closes the channel. So the gateway stamps its
own user on every request it publishes (a genuine dead letter is one of those, properties
kept), and with `--worker-users` accepts an answer only from a user listed for the job's
operation. Without `--worker-users` every answer is trusted, as before (SECURITY.md).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from fnmatch import fnmatchcase

from yarl import URL

DEFAULT_BROKER_USER = "guest"  # what AMQP clients log in as when the URL names no user


def broker_user(broker_url: str) -> str:
    """The user the gateway logs in to RabbitMQ as: the first address's, URL-decoded."""
    first = broker_url.replace(",", " ").split()[0] if broker_url.strip() else ""
    return URL(first).user or DEFAULT_BROKER_USER


@dataclass(frozen=True, slots=True)
class WorkerUsers:
    """Operation-name globs, each with the broker users allowed to answer its jobs.

    Written `"math.add=worker-math report.*=worker-reports,worker-batch"`: entries
    separated by spaces, fnmatch globs on operation names, the first matching entry wins.
    """

    rules: tuple[tuple[str, tuple[str, ...]], ...]

    @classmethod
    def parse(cls, text: str) -> WorkerUsers:
        rules: list[tuple[str, tuple[str, ...]]] = []
        for entry in text.split():
            pattern, sep, names = entry.partition("=")
            users = tuple(name for name in names.split(",") if name)
            if not sep or not pattern or not users:
                raise ValueError(
                    f"worker users: {entry!r} is not OP_GLOB=USER[,USER...] "
                    f"(e.g. math.add=worker-math report.*=worker-reports,worker-batch)"
                )
            rules.append((pattern, users))
        if not rules:
            raise ValueError("worker users: no OP_GLOB=USER[,USER...] entry given")
        return cls(tuple(rules))

    def users_for(self, op: str) -> tuple[str, ...] | None:
        """The users allowed to answer `op`; None when no entry matches it."""
        for pattern, users in self.rules:
            if fnmatchcase(op, pattern):
                return users
        return None

    def allows(self, op: str, user: str | None) -> bool:
        users = self.users_for(op)
        return user is not None and users is not None and user in users

    def uncovered(self, ops: Iterable[str]) -> list[str]:
        """Operations no entry matches: nobody could ever answer them."""
        return sorted(op for op in ops if self.users_for(op) is None)

    def __str__(self) -> str:
        return " ".join(f"{pattern}={','.join(users)}" for pattern, users in self.rules)
