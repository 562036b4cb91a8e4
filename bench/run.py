"""Run the whole benchmark and write bench/RESULTS.md.

    .venv/bin/python -m bench.run                       # everything, 3 repeats (~12 min)
    .venv/bin/python -m bench.run --duration 5 --repeats 1 --scenarios raw,rpc
    .venv/bin/python -m bench.run --scenarios workers --repeats 2 --output /tmp/w.md
    .venv/bin/python -m bench.run --scenarios waiters,bigwaiters --repeats 1 --output /tmp/x.md
    .venv/bin/python -m bench.run --scenarios topics,topicrate --repeats 1 --output /tmp/t.md

Every figure comes from one run, on one machine and one private RabbitMQ node. The
scenarios take turns within each repeat (round-robin), so a slow spell of the machine
touches all of them alike; each figure reported is the median over the repeats, and each
ratio the median of the per-repeat ratios. The 50,000-waiter run (`bigwaiters`) is
made once, in the last repeat: it takes a minute and its figure varies little.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as `python bench/run.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import profile as bench_profile
from bench.report import write_report
from bench.scenarios import Bench, Settings, has_workers_flag

SCENARIOS = (
    "raw",
    "rpc",
    "profile",
    "workers",
    "async",
    "celery",
    "latency",
    "waiters",
    "bigwaiters",
    "topics",
    "topicrate",
)
ONCE = {"bigwaiters", "profile"}  # measured in the last repeat only


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measurement")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds first")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each measurement")
    parser.add_argument("--concurrency", type=int, default=64, help="requests in flight (C)")
    parser.add_argument(
        "--workers-concurrency", type=int, default=128, help="C of the --workers 1 vs 2 runs"
    )
    parser.add_argument("--waiters", type=int, default=10_000, help="idle connections")
    parser.add_argument(
        "--waiters-workers",
        type=int,
        default=0,
        help="gateway processes for the idle waiters (default 2, or 1 without --workers)",
    )
    parser.add_argument(
        "--big-waiters", type=int, default=50_000, help="idle connections of `bigwaiters`"
    )
    parser.add_argument(
        "--big-waiters-workers",
        type=int,
        default=4,
        help="gateway processes for `bigwaiters` (each holds under the 20,000 open files)",
    )
    parser.add_argument(
        "--topic-subscribers", type=int, default=10_000, help="idle subscribers of `topics`"
    )
    parser.add_argument(
        "--topic-rate", type=float, default=1_000.0, help="messages a second of `topicrate`"
    )
    parser.add_argument(
        "--topic-rate-subscribers", type=int, default=1_000, help="subscribers of `topicrate`"
    )
    parser.add_argument(
        "--topic-rate-seconds", type=float, default=15.0, help="publishing time of `topicrate`"
    )
    parser.add_argument(
        "--topic-rate-drain",
        type=float,
        default=15.0,
        help="seconds `topicrate` waits after the last publish for every subscriber to have "
        "every message (what has not come by then is reported as not delivered)",
    )
    parser.add_argument(
        "--py-spy",
        type=Path,
        help="a folder: record the gateway with py-spy in each topic-stream measurement "
        "(its top functions go into the report)",
    )
    parser.add_argument(
        "--scenarios",
        default=",".join(SCENARIOS),
        help=f"comma-separated, from: {', '.join(SCENARIOS)}",
    )
    parser.add_argument(
        "--output", type=Path, default=Path(__file__).resolve().parent / "RESULTS.md"
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the work directory (logs, stores)"
    )
    args = parser.parse_args(argv)
    args.scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = set(args.scenarios) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    return args


def plan(bench: Bench, scenarios: list[str]) -> list[tuple[str, Any]]:
    """(key, measurement) in the order each repeat runs them."""
    s = bench.settings
    steps: list[tuple[str, Any]] = []
    if "raw" in scenarios:
        steps += [
            ("raw.transient", lambda: bench.raw_rpc("transient")),
            ("raw.durable", lambda: bench.raw_rpc("durable")),
        ]
    if "rpc" in scenarios:
        steps += [
            ("rpc.light", lambda: bench.gateway_rpc("light")),
            ("rpc.durable", lambda: bench.gateway_rpc("durable")),
        ]
    if "profile" in scenarios:
        work = bench.work / "profile"
        work.mkdir(exist_ok=True)
        seconds = max(5, round(s.duration))
        steps += [("profile", lambda: bench_profile.shares(bench, seconds, work))]
    if "workers" in scenarios:
        steps += [
            ("workers.1", lambda: bench.gateway_workers(1)),
            ("workers.2", lambda: bench.gateway_workers(2)),
        ]
    if "async" in scenarios:
        steps += [
            ("async.poll", lambda: bench.gateway_async("poll")),
            ("async.sse", lambda: bench.gateway_async("sse")),
        ]
    if "celery" in scenarios:
        steps += [("celery", bench.celery)]
    if "latency" in scenarios:
        steps += [
            ("c1.raw.transient", lambda: bench.raw_rpc("transient", concurrency=1)),
            ("c1.rpc.light", lambda: bench.gateway_rpc("light", concurrency=1)),
            ("c1.raw.durable", lambda: bench.raw_rpc("durable", concurrency=1)),
            ("c1.rpc.durable", lambda: bench.gateway_rpc("durable", concurrency=1)),
        ]
    if "waiters" in scenarios:
        steps += [("waiters", lambda: bench.idle_waiters(s.waiters, s.waiters_workers))]
    if "bigwaiters" in scenarios:
        steps += [("bigwaiters", lambda: bench.idle_waiters(s.big_waiters, s.big_waiters_workers))]
    if "topics" in scenarios:
        steps += [("topics", lambda: bench.topic_subscribers(s.topic_subscribers))]
    if "topicrate" in scenarios:
        steps += [
            (
                "topicrate",
                lambda: bench.topic_rate(
                    s.topic_rate_subscribers, s.topic_rate, s.topic_rate_seconds
                ),
            )
        ]
    return steps


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    given = list(argv if argv is not None else sys.argv[1:])
    command = " ".join([".venv/bin/python -m bench.run", *map(shlex.quote, given)])
    work = Path(tempfile.mkdtemp(prefix="gateway-bench-"))
    settings = Settings(
        args.duration,
        args.warmup,
        args.concurrency,
        args.waiters,
        waiters_workers=args.waiters_workers or (2 if has_workers_flag() else 1),
        workers_concurrency=args.workers_concurrency,
        big_waiters=args.big_waiters,
        big_waiters_workers=args.big_waiters_workers,
        topic_subscribers=args.topic_subscribers,
        topic_rate=args.topic_rate,
        topic_rate_subscribers=args.topic_rate_subscribers,
        topic_rate_seconds=args.topic_rate_seconds,
        topic_rate_drain=args.topic_rate_drain,
        py_spy=args.py_spy,
    )
    bench = Bench(work, settings)
    runs: dict[str, list[dict[str, Any]]] = defaultdict(list)
    failures: list[str] = []
    started = time.monotonic()
    print(f"benchmark: work directory {work}", flush=True)
    try:
        bench.start()
        steps = plan(bench, args.scenarios)
        for repeat in range(1, args.repeats + 1):
            for key, measure in steps:
                if key in ONCE and repeat != args.repeats:
                    continue
                print(f"[{repeat}/{args.repeats}] {key} ...", end=" ", flush=True)
                try:
                    result = measure()
                except Exception as exc:  # one failed measurement does not sink the run
                    failures.append(f"repeat {repeat}, {key}: {exc}")
                    print(f"FAILED: {exc}", flush=True)
                    continue
                runs[key].append(result)
                print(_brief(result), flush=True)
                # A measurement that ran but found the gateway wrong (a topic message lost
                # or out of order) keeps its figures, and fails the run.
                for problem in result.get("problems", []):
                    failures.append(f"repeat {repeat}, {key}: {problem}")
                    print(f"  FAILED: {problem}", flush=True)
    except KeyboardInterrupt:
        print("\ninterrupted: stopping everything", flush=True)
        failures.append("interrupted by Ctrl-C")
    finally:
        bench.stop()
    elapsed = time.monotonic() - started
    write_report(
        args.output,
        runs,
        failures,
        command,
        settings,
        args.repeats,
        elapsed,
        reproducer(given),
    )
    print(f"wrote {args.output} after {elapsed / 60:.1f} min", flush=True)
    if args.keep:
        print(f"kept {work}", flush=True)
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failures else 0


def reproducer(given: list[str]) -> Callable[[str], str]:
    """The command measuring only some scenarios, with this run's other options, into
    /tmp (so it never overwrites bench/RESULTS.md)."""
    kept: list[str] = []
    repeats: list[str] = []
    pending = ""  # the option whose value comes next
    for arg in given:
        name, has_value, value = arg.partition("=")
        if pending:
            if pending == "--repeats":
                repeats = ["--repeats", arg]
            pending = ""
        elif name == "--repeats" and has_value:
            repeats = ["--repeats", value]
        elif name in ("--scenarios", "--output", "--repeats"):
            pending = "" if has_value else name
        elif name != "--keep":
            kept.append(arg)

    def command(scenarios: str) -> str:
        out = f"/tmp/bench-{scenarios.replace(',', '-')}.md"
        # A scenario measured once per run needs one repeat to reproduce.
        again = ["--repeats", "1"] if set(scenarios.split(",")) <= ONCE else repeats
        return " ".join(
            [".venv/bin/python -m bench.run", *map(shlex.quote, kept + again),
             "--scenarios", scenarios, "--output", out]
        )  # fmt: skip

    return command


def _brief(result: dict[str, Any]) -> str:
    if "light" in result and "durable" in result:  # a profile
        return ", ".join(
            f"{kind}: {max((v, k) for k, v in shares.items() if k != '(samples)')[1]} first"
            for kind, shares in result.items()
        )
    if "delivered_per_s" in result:  # topicrate
        return (
            f"{result['complete']}/{result['n']} subscribers saw all {result['messages']:,} "
            f"in order, {result['delivered']:,} delivered at {result['delivered_per_s']:,.0f}/s, "
            f"gateway {result['gateway_us_per_delivered']:.1f} µs CPU each, "
            f"p50 {result['latency_p50_ms']:.1f} ms p99 {result['latency_p99_ms']:.1f} ms"
        )
    if "rps" in result:
        return (
            f"{result['rps']:.0f}/s p50 {result['p50_ms']:.2f} ms "
            f"p99 {result['p99_ms']:.2f} ms errors {result['errors']}"
        )
    return (
        f"{result['held']} held, {result['rss_per_conn_kb']:.1f} KB each, "
        f"all reached in {result['fanout_all_ms']:.0f} ms"
    )


if __name__ == "__main__":
    sys.exit(main())
