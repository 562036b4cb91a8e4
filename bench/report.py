"""bench/RESULTS.md: targets against measured medians, per-scenario detail, the machine,
the versions and the command that reproduces it."""

from __future__ import annotations

import datetime
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.scenarios import Settings, machine, versions
from bench.stats import median

Runs = dict[str, list[dict[str, Any]]]
NAN = float("nan")

LABELS = {
    "raw.transient": "raw AMQP RPC, transient (classic queue, no confirms)",
    "raw.durable": "raw AMQP RPC, durable (quorum, persistent, confirms)",
    "rpc.light": "gateway RPC `?wait=5`, light (wrk)",
    "rpc.durable": "gateway RPC `?wait=5`, durable (wrk)",
    "async.poll": "gateway async, 202 + long-poll, durable",
    "async.sse": "gateway async, 202 + SSE, durable",
    "celery": "Celery + Flower API, async-apply + result",
    "c1.raw.transient": "C=1 raw AMQP, transient",
    "c1.rpc.light": "C=1 gateway RPC, light",
    "c1.raw.durable": "C=1 raw AMQP, durable",
    "c1.rpc.durable": "C=1 gateway RPC, durable",
}
CPU_COLUMNS = ("gateway", "worker", "rabbitmq", "celery_worker", "flower")


def med(runs: Runs, key: str, field: str) -> float:
    return median([r[field] for r in runs.get(key, []) if field in r])


def paired(
    runs: Runs, a: str, b: str, field: str, combine: Callable[[float, float], float]
) -> float:
    """Median over repeats of combine(a's figure, b's figure) from the same repeat."""
    values = []
    for x, y in zip(runs.get(a, []), runs.get(b, []), strict=False):
        try:
            values.append(combine(x[field], y[field]))
        except (KeyError, ZeroDivisionError):
            continue
    return median(values)


def _fmt(value: float, digits: int = 1) -> str:
    return "n/a" if value != value else f"{value:,.{digits}f}"


def _met(ok: bool | None) -> str:
    return "n/a" if ok is None else ("yes" if ok else "**no**")


def targets(runs: Runs, waiters_n: int) -> list[tuple[str, str, str, str]]:
    rows = []

    def ratio_row(target: str, a: str, b: str, floor: float) -> None:
        r = paired(runs, a, b, "rps", lambda x, y: x / y)
        measured = f"{_fmt(med(runs, a, 'rps'), 0)}/s vs {_fmt(med(runs, b, 'rps'), 0)}/s"
        rows.append((target, measured, f"{_fmt(r, 2)} x", _met(None if r != r else r >= floor)))

    ratio_row("gateway light RPC ≥ 0.7 x raw transient ceiling", "rpc.light", "raw.transient", 0.7)
    ratio_row("gateway durable RPC ≥ 0.5 x raw durable", "rpc.durable", "raw.durable", 0.5)
    ratio_row("gateway (202 + long-poll) ≥ 5 x Celery+Flower", "async.poll", "celery", 5.0)
    ratio_row("(also) gateway durable RPC vs Celery+Flower", "rpc.durable", "celery", 5.0)

    def added_row(target: str, gw: str, raw: str, limit: float) -> None:
        added = paired(runs, gw, raw, "p50_ms", lambda x, y: x - y)
        measured = (
            f"{_fmt(med(runs, gw, 'p50_ms'), 2)} ms vs {_fmt(med(runs, raw, 'p50_ms'), 2)} ms"
        )
        ok = None if added != added else added <= limit
        rows.append((target, measured, f"+{_fmt(added, 2)} ms", _met(ok)))

    added_row("added p50 at C=1, light vs transient ≤ 1 ms", "c1.rpc.light", "c1.raw.transient", 1)
    added_row("added p50 at C=1, durable vs durable ≤ 3 ms", "c1.rpc.durable", "c1.raw.durable", 3)

    kb = med(runs, "waiters", "rss_per_conn_kb")
    held = med(runs, "waiters", "held")
    rows.append(
        (
            f"{waiters_n:,} idle waiters at ≤ 20 KB RSS each",
            f"{_fmt(held, 0)} held, {_fmt(kb, 1)} KB each",
            f"{_fmt(kb / 20, 2)} x budget",
            _met(None if kb != kb else kb <= 20 and held >= waiters_n),
        )
    )
    fan = med(runs, "waiters", "fanout_all_ms")
    got = med(runs, "waiters", "received")
    rows.append(
        (
            f"one event reaches all {waiters_n:,} within 1 s",
            f"{_fmt(got, 0)} reached in {_fmt(fan, 0)} ms",
            f"{_fmt(fan / 1000, 2)} x budget",
            _met(None if fan != fan else fan <= 1000 and got >= waiters_n),
        )
    )
    return rows


def detail(runs: Runs) -> list[str]:
    head = "| scenario | C | req/s | p50 ms | p99 ms | errors | client CPU % | "
    head += " | ".join(f"{c} CPU %" for c in CPU_COLUMNS) + " |"
    lines = [head, "|" + " --- |" * (7 + len(CPU_COLUMNS))]
    for key, label in LABELS.items():
        if key not in runs:
            continue
        errors = med(runs, key, "errors") + (med(runs, key, "not_200") if "rpc" in key else 0)
        cells = [
            label,
            _fmt(med(runs, key, "concurrency"), 0),
            _fmt(med(runs, key, "rps"), 0),
            _fmt(med(runs, key, "p50_ms"), 2),
            _fmt(med(runs, key, "p99_ms"), 2),
            _fmt(errors, 0),
            _fmt(med(runs, key, "client_cpu_pct"), 0),
            *(
                _fmt(med(runs, key, f"cpu_{c}"), 0) if _has(runs, key, c) else ""
                for c in CPU_COLUMNS
            ),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _has(runs: Runs, key: str, column: str) -> bool:
    return any(f"cpu_{column}" in r for r in runs.get(key, []))


def waiters_detail(runs: Runs) -> list[str]:
    if "waiters" not in runs:
        return []
    fields = [
        ("connections asked / held / reached", None),
        ("gateway RSS before, MB", "rss_before_mb"),
        ("gateway RSS with all held, MB", "rss_after_mb"),
        ("RSS per connection, KB", "rss_per_conn_kb"),
        ("time to open all, s", "connect_seconds"),
        ("gateway CPU to accept them all, s", "gateway_cpu_connect_s"),
        ("fan-out p50, ms", "fanout_p50_ms"),
        ("fan-out p99, ms", "fanout_p99_ms"),
        ("fan-out to the last one, ms", "fanout_all_ms"),
        ("client CPU during the fan-out, s", "client_fanout_cpu_s"),
        ("client peak RSS, MB", "client_max_rss_mb"),
    ]
    lines = ["| figure | median | runs |", "| --- | --- | --- |"]
    for label, field in fields:
        if field is None:
            value = " / ".join(_fmt(med(runs, "waiters", f), 0) for f in ("n", "held", "received"))
            each = ", ".join(f"{r['held']}/{r['received']}" for r in runs["waiters"])
        else:
            value = _fmt(med(runs, "waiters", field), 2)
            each = ", ".join(_fmt(r[field], 2) for r in runs["waiters"])
        lines.append(f"| {label} | {value} | {each} |")
    return lines


def write_report(
    output: Path,
    runs: Runs,
    failures: list[str],
    command: str,
    settings: Settings,
    repeats: int,
    elapsed: float,
) -> None:
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    out = [
        "# Benchmark results",
        "",
        f"Run {now}, {elapsed / 60:.1f} min. Reproduce with `{command}` (or `make bench`).",
        f"Each figure is the median of {repeats} repeat(s) of {settings.duration:g} s "
        f"(after {settings.warmup:g} s of unmeasured warm-up); C = {settings.concurrency} "
        "unless stated. Ratios are medians of the per-repeat ratios. CPU is % of one core "
        "over the measurement window (psutil; wrk's from its rusage).",
        "",
        "## Targets",
        "",
        "| target | measured | ratio | met? |",
        "| --- | --- | --- | --- |",
        *(f"| {a} | {b} | {c} | {d} |" for a, b, c, d in targets(runs, settings.waiters)),
        "",
        "## Throughput, latency and CPU",
        "",
        *detail(runs),
        "",
    ]
    if "waiters" in runs:
        out += [
            f"## {settings.waiters:,} idle waiters on one gateway process",
            "",
            "Half SSE streams, half long-polls (`?wait=60&after=1`), all on one job no worker",
            "serves; a fresh gateway process (`--max-waiters 20000`,",
            "`--max-waiters-per-client 20000`: one client holds them all; raised open-file",
            "limit).",
            "The fan-out is timed from publishing one `progress` answer to `gateway.answers`",
            "to the moment the (single, asyncio) client has read it on every connection.",
            "",
            *waiters_detail(runs),
            "",
        ]
    if failures:
        out += ["## Failed measurements", "", *(f"- {f}" for f in failures), ""]
    out += [
        "## Machine",
        "",
        *(f"- {k}: {v}" for k, v in machine().items()),
        "",
        "## Versions",
        "",
        *(f"- {k}: {v}" for k, v in versions().items()),
        "",
        "## How it is measured",
        "",
        "- One private RabbitMQ node (`tests/support.py`'s `RabbitNode`, free ports, temp dir),",
        "  one gateway process (`gateway serve`, SQLite store in the temp dir), one echo worker",
        "  process (`bench/echo_worker.py`, aio-pika, prefetch 256, answers without confirms)",
        "  that serves both the raw-AMQP queues and the gateway's `echo`/`echo.light` queues.",
        "- Raw AMQP (`bench/amqp_rpc.py`): C callers in one aio-pika process. transient: a",
        "  classic non-durable queue, transient messages, no confirms, exclusive reply queue",
        "  without acks. durable: quorum queue, persistent messages, publisher confirms, a",
        "  quorum reply queue with acks (as the gateway's `gateway.answers`).",
        "- Gateway RPC: `wrk -t1 -cC -s bench/post.lua URL/v1/ops/<op>?wait=5`; responses",
        "  other than 200 (a 202 means no answer within 5 s) are counted as errors, from",
        "  the gateway's own `/metrics`.",
        "- Gateway async and Celery+Flower (`bench/http_async.py`): C asyncio clients with a",
        "  minimal keep-alive HTTP/1.1 client; latency is submit-to-result.",
        "- Celery + Flower (`bench/celery_peer.py`): a prefork worker (concurrency 2) and",
        "  Flower 2 on the same node; results in Celery's `file://` backend, which Flower",
        "  reads. `GET /api/task/result/<id>?timeout=10` blocks a Flower executor thread in",
        "  `AsyncResult.get`, which polls that backend every 0.5 s.",
        "- C=1 latency: the same clients with one request in flight; added latency is the",
        "  gateway's p50 minus the raw client's p50, per repeat.",
        "- All traffic is on loopback; every process started is stopped at the end.",
        "",
    ]
    output.write_text("\n".join(out))
