"""`gateway conform`: prove a worker, written in any language, against an operation's
contract and the pinned AMQP wire protocol (docs/workers.md, docs/conform.md).

It exists so that "any server written after RabbitMQ's RPC tutorial is a working backend"
is something a worker's author can check before a gateway ever sends it a job. Conform
starts the worker's command against a private RabbitMQ, plays the gateway (the same
topology, the same request messages, cancel notices) and drives the worker through a set
of cases, then prints what it saw.

The modules, in the order a run uses them: `plan` (the contract, the vectors, what to
send), `where` (the broker: a throwaway `node`, or a given one), `tap` (a relay that sees
the worker's acks), `gateway_double` (plays the gateway), `process` (the worker's
command), `scenarios` (drives the worker), `cases` (judges what was seen), `report`
(prints it), `run` (ties them together) and `command` (the click command); `records`
holds what a run saw, between the scenarios and the cases.
"""

from __future__ import annotations

__all__ = ["SetupError"]


class SetupError(Exception):
    """Conform could not run the cases (an unknown operation, a broker it cannot reach,
    a worker that exited before serving...): exit status 2, with this one-line message."""
