"""The `gateway conform` command: its options, and its exit statuses.

It exists apart from gateway/cli.py (which only adds it to the group) to keep the CLI
module small; it imports only click at the top, and the rest when the command runs. The
base install is enough for it (aio-pika, jsonschema, httpx); should a module be missing
all the same, it says which, in one line.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from gateway.options import contracts_option

__all__ = ["EXIT_FAILED", "EXIT_PASSED", "EXIT_SETUP", "conform"]

EXIT_PASSED = 0
EXIT_FAILED = 1
EXIT_SETUP = 2
MISSING_MODULE = (
    "gateway conform cannot import {name}: pip install 'amqp-http-gateway[server]' brings "
    "everything it may need"
)


@click.command(context_settings={"allow_interspersed_args": False, "show_default": True})
@click.option("--op", required=True, help="The operation whose contract the worker serves.")
@click.option(
    "--claims",
    type=click.Choice(["quick", "long"]),
    default="quick",
    help="What the worker claims: quick (RabbitMQ's RPC tutorial: answer, then ack) or "
    "long (the long-job pattern: started, ack, heartbeats, cancels, deadlines; includes "
    "the quick cases).",
)
@contracts_option("Folder of <op>.json contract files (as gateway serve's).")
@click.option(
    "--vectors",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The op's vectors file. Default: <contracts>/../vectors/<op>.json, else "
    "<contracts>/vectors/<op>.json.",
)
@click.option(
    "--broker-url",
    help="Use this RabbitMQ (on a fresh virtual host if its management API allows, else as "
    "it is). Default: a throwaway node of its own (needs rabbitmq-server installed).",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.1),
    default=10.0,
    help="Seconds a request may wait for its final answer (the slow one: between answers).",
)
@click.option(
    "--start-timeout",
    type=click.FloatRange(min=0.1),
    default=30.0,
    help="Seconds the worker has to start consuming the operation's queue.",
)
@click.option(
    "--lease-seconds",
    type=click.FloatRange(min=0.1),
    default=2.0,
    help="The x-lease-seconds of the slow requests (long claims: no gap between a job's "
    "answers may be longer).",
)
@click.option("--slow-request", metavar="JSON", help="A valid request that runs several leases.")
@click.option("--error-request", metavar="JSON", help="A valid request the worker must fail.")
@click.option("--error-code", metavar="CODE", help="The error code it must fail with.")
@click.option("--json", "as_json", is_flag=True, help="Print the table as JSON lines.")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def conform(
    op: str,
    claims: str,
    contracts_dir: Path,
    vectors: Path | None,
    broker_url: str | None,
    timeout: float,
    start_timeout: float,
    lease_seconds: float,
    slow_request: str | None,
    error_request: str | None,
    error_code: str | None,
    as_json: bool,
    command: tuple[str, ...],
) -> None:
    """Prove a worker against OP's contract: start COMMAND (with GATEWAY_BROKER_URL set),
    play the gateway, drive it through the cases and print what was seen.

    \b
      gateway conform --op math.add -- python my_worker.py
      gateway conform --op report.generate --claims long -- perl worker.pl

    \b
    Exit status:
      0  every claimed case passed (or is n/a)
      1  a claimed case failed
      2  the cases could not run (unknown op, broker unreachable, the worker exited
         before serving...): one line on stderr saying why
    """
    try:
        import asyncio

        from gateway.conform import SetupError
        from gateway.conform.plan import load_plan
        from gateway.conform.report import render_json, render_table
        from gateway.conform.run import conform as run_conform
    except ModuleNotFoundError as exc:
        if (exc.name or "").partition(".")[0] == "gateway":
            raise  # our own bug, not a missing extra
        click.echo(MISSING_MODULE.format(name=exc.name), err=True)
        sys.exit(EXIT_SETUP)

    # Libraries' warnings (a failed connect attempt...) would print before our one line.
    logging.getLogger().addHandler(logging.NullHandler())
    try:
        plan = load_plan(
            op=op,
            contracts_dir=contracts_dir,
            vectors=vectors,
            claims="long" if claims == "long" else "quick",
            slow_request=slow_request,
            error_request=error_request,
            error_code=error_code,
            timeout=timeout,
            start_timeout=start_timeout,
            lease_seconds=lease_seconds,
        )
        outcome = asyncio.run(run_conform(plan, command, broker_url))
    except SetupError as exc:
        click.echo(f"gateway conform: {exc}", err=True)
        sys.exit(EXIT_SETUP)
    if as_json:
        click.echo(render_json(outcome.verdicts, outcome.worker_output))
    else:
        click.echo(render_table(outcome.verdicts, outcome.worker_output, outcome.preamble))
    failed = any(v.outcome == "FAIL" for v in outcome.verdicts)
    sys.exit(EXIT_FAILED if failed else EXIT_PASSED)
