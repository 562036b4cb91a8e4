"""bench/RESULTS.md: every target of issues 13 and 14 against its measured median, with the
command that reproduces it; CPU per request of each process; the `--workers` CPU split
and the 16-core projection made from it; per-scenario detail, the idle-waiter runs, the
machine, the versions and the command that reproduces the whole run."""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.scenarios import Settings, machine, versions
from bench.stats import median

Runs = dict[str, list[dict[str, Any]]]
NAN = float("nan")
PROJECTED_CORES = 16

LABELS = {
    "raw.transient": "raw AMQP RPC, transient (classic queue, no confirms)",
    "raw.durable": "raw AMQP RPC, durable (quorum, persistent, confirms)",
    "rpc.light": "gateway RPC `?wait=5`, light (wrk), 1 process",
    "rpc.durable": "gateway RPC `?wait=5`, durable (wrk), 1 process",
    "workers.1": "gateway `--workers 1`, light (wrk)",
    "workers.2": "gateway `--workers 2`, light (wrk)",
    "async.poll": "gateway async, 202 + long-poll, durable",
    "async.sse": "gateway async, 202 + SSE, durable",
    "celery": "Celery + Flower API, async-apply + result",
    "c1.raw.transient": "C=1 raw AMQP, transient",
    "c1.rpc.light": "C=1 gateway RPC, light",
    "c1.raw.durable": "C=1 raw AMQP, durable",
    "c1.rpc.durable": "C=1 gateway RPC, durable",
}
CPU_COLUMNS = ("gateway", "worker", "rabbitmq", "celery_worker", "flower", "machine")
# Whose CPU is "the client's" per scenario: the load generator (wrk or a Python client).
RAW = {"light": "raw.transient", "durable": "raw.durable"}
GATEWAY = {"light": "rpc.light", "durable": "rpc.durable"}


@dataclass(frozen=True)
class Row:
    target: str
    measured: str
    ratio: str
    met: str
    command: str


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


def cpu_per_request(run: dict[str, Any], label: str) -> float:
    """CPU seconds per request of one process (tree): its CPU rate over the request rate.
    "client" is the load generator's own (the raw aio-pika client's, or wrk's)."""
    pct = run["client_cpu_pct"] if label == "client" else run[f"cpu_{label}"]
    return float(pct) / 100.0 / float(run["rps"])


def med_cpu(runs: Runs, key: str, label: str) -> float:
    values = []
    for run in runs.get(key, []):
        try:
            values.append(cpu_per_request(run, label))
        except (KeyError, ZeroDivisionError):
            continue
    return median(values)


def cpu_ratio(runs: Runs, durability: str) -> float:
    """Per repeat: gateway CPU per request / raw client CPU per round trip; median."""
    values = []
    pairs = zip(runs.get(GATEWAY[durability], []), runs.get(RAW[durability], []), strict=False)
    for gateway, raw in pairs:
        try:
            values.append(cpu_per_request(gateway, "gateway") / cpu_per_request(raw, "client"))
        except (KeyError, ZeroDivisionError):
            continue
    return median(values)


def _fmt(value: float, digits: int = 1) -> str:
    return "n/a" if value != value else f"{value:,.{digits}f}"


def _us(seconds: float) -> str:
    return "n/a" if seconds != seconds else f"{seconds * 1e6:,.0f} µs"


def _met(ok: bool | None) -> str:
    return "n/a" if ok is None else ("yes" if ok else "**no**")


def _check(value: float, ok: Callable[[float], bool]) -> str:
    return _met(None if value != value else ok(value))


def targets(runs: Runs, settings: Settings, reproduce: Callable[[str], str]) -> list[Row]:
    rows: list[Row] = []
    rr = reproduce("raw,rpc")

    for durability, note in (("light", ""), ("durable", " (reported; same yardstick)")):
        r = cpu_ratio(runs, durability)
        gw, raw = (
            med_cpu(runs, GATEWAY[durability], "gateway"),
            med_cpu(runs, RAW[durability], "client"),
        )
        met = _check(r, lambda x: x <= 1.5)
        if durability == "light":
            met += f"; moonshot ≤ 1.0 x: {_check(r, lambda x: x <= 1.0)}"
        rows.append(
            Row(
                f"CPU per {durability} RPC: gateway ≤ 1.5 x raw client per round trip{note}",
                f"{_us(gw)} vs {_us(raw)}",
                f"{_fmt(r, 2)} x",
                met,
                rr,
            )
        )

    def ratio_row(target: str, a: str, b: str, floor: float, command: str) -> None:
        r = paired(runs, a, b, "rps", lambda x, y: x / y)
        measured = f"{_fmt(med(runs, a, 'rps'), 0)}/s vs {_fmt(med(runs, b, 'rps'), 0)}/s"
        rows.append(
            Row(target, measured, f"{_fmt(r, 2)} x", _check(r, lambda x: x >= floor), command)
        )

    ratio_row(
        "single process: light RPC ≥ 0.7 x raw transient", "rpc.light", "raw.transient", 0.7, rr
    )
    ratio_row(
        "single process: durable RPC ≥ 0.5 x raw durable", "rpc.durable", "raw.durable", 0.5, rr
    )
    ratio_row(
        f"`--workers 2` ≥ 1.15 x `--workers 1`, light, C={settings.workers_concurrency}",
        "workers.2",
        "workers.1",
        1.15,
        reproduce("workers"),
    )
    ac = reproduce("async,celery")
    ratio_row("async (202 + long-poll) ≥ 5 x Celery + Flower", "async.poll", "celery", 5.0, ac)
    ratio_row("(also) async (202 + SSE) vs Celery + Flower", "async.sse", "celery", 5.0, ac)

    def added_row(target: str, gw: str, raw: str, limit: float) -> None:
        added = paired(runs, gw, raw, "p50_ms", lambda x, y: x - y)
        measured = (
            f"{_fmt(med(runs, gw, 'p50_ms'), 2)} ms vs {_fmt(med(runs, raw, 'p50_ms'), 2)} ms"
        )
        rows.append(
            Row(target, measured, f"+{_fmt(added, 2)} ms", _check(added, lambda x: x <= limit),
                reproduce("latency"))
        )  # fmt: skip

    added_row(
        "added p50 at C=1, light vs raw transient ≤ 1 ms", "c1.rpc.light", "c1.raw.transient", 1
    )
    added_row(
        "added p50 at C=1, durable vs raw durable ≤ 3 ms", "c1.rpc.durable", "c1.raw.durable", 3
    )

    for key, n, fan_limit, scenario in (
        ("waiters", settings.waiters, 250, "waiters"),
        ("bigwaiters", settings.big_waiters, 1000, "bigwaiters"),
    ):
        command = reproduce(scenario)
        kb = med(runs, key, "rss_per_conn_kb")
        held = med(runs, key, "held")
        procs = med(runs, key, "workers")
        where = f"{_fmt(procs, 0)} gateway process(es)"
        if key == "waiters":
            rows.append(
                Row(
                    f"{n:,} idle waiters at ≤ 16 KB RSS each, across the gateway's processes",
                    f"{_fmt(held, 0)} held, {_fmt(kb, 1)} KB each ({where})",
                    f"{_fmt(kb / 16, 2)} x budget",
                    _met(None if kb != kb else kb <= 16 and held >= n),
                    command,
                )
            )
        fan = med(runs, key, "fanout_all_ms")
        got = med(runs, key, "received")
        extra = f"; {_fmt(kb, 1)} KB RSS each ({where})" if key == "bigwaiters" else ""
        rows.append(
            Row(
                f"one event reaches all {n:,} waiters within {fan_limit / 1000:g} s",
                f"{_fmt(got, 0)} reached in {_fmt(fan, 0)} ms{extra}",
                f"{_fmt(fan / fan_limit, 2)} x budget",
                _met(None if fan != fan else fan <= fan_limit and got >= n),
                command,
            )
        )
    rows += topic_targets(runs, settings, reproduce)
    return rows


def topic_targets(runs: Runs, settings: Settings, reproduce: Callable[[str], str]) -> list[Row]:
    """Issue 14's topic-stream targets: idle subscribers' RSS, one message's fan-out, and
    a sustained rate delivered whole and in order (with the gateway's CPU per delivery)."""
    rows: list[Row] = []
    if "topics" in runs:
        command = reproduce("topics")
        n = settings.topic_subscribers
        kb = med(runs, "topics", "rss_per_conn_kb")
        held = med(runs, "topics", "held")
        rows.append(
            Row(
                f"{n:,} idle topic subscribers (SSE) at ≤ 16 KB RSS each, one gateway process",
                f"{_fmt(held, 0)} held, {_fmt(kb, 1)} KB each",
                f"{_fmt(kb / 16, 2)} x budget",
                _met(None if kb != kb else kb <= 16 and held >= n),
                command,
            )
        )
        fan = med(runs, "topics", "fanout_all_ms")
        got = med(runs, "topics", "received")
        cpu = med(runs, "topics", "gateway_fanout_us_each")
        rows.append(
            Row(
                f"one message (`POST /v1/topics/<topic>`) reaches all {n:,} subscribers "
                "within 0.5 s",
                f"{_fmt(got, 0)} reached in {_fmt(fan, 0)} ms (gateway CPU {_fmt(cpu, 0)} µs "
                "per subscriber)",
                f"{_fmt(fan / 500, 2)} x budget",
                _met(None if fan != fan else fan <= 500 and got >= n),
                command,
            )
        )
    if "topicrate" in runs:
        command = reproduce("topicrate")
        r = runs["topicrate"]
        subs, rate = settings.topic_rate_subscribers, settings.topic_rate
        target = subs * rate
        complete = med(runs, "topicrate", "complete")
        lost = med(runs, "topicrate", "with_loss")
        disorder = med(runs, "topicrate", "with_disorder")
        behind = med(runs, "topicrate", "cut_short")
        delivered = med(runs, "topicrate", "delivered_per_s")
        whole = all(x.get("complete") == x.get("n") for x in r)
        rows.append(
            Row(
                f"{rate:,.0f} messages/s (plain AMQP publisher) to {subs:,} SSE subscribers for "
                f"{settings.topic_rate_seconds:g} s: every subscriber sees every message, in "
                "order",
                f"{_fmt(complete, 0)} of {subs:,} saw all; {_fmt(lost, 0)} with a loss, "
                f"{_fmt(disorder, 0)} out of order, {_fmt(behind, 0)} still behind "
                f"{settings.topic_rate_drain:g} s after the last publish; delivered "
                f"{_fmt(delivered, 0)}/s of the {target:,.0f}/s published to them",
                f"{_fmt(delivered / target, 2)} x the rate",
                _met(whole),
                command,
            )
        )
        us = med(runs, "topicrate", "gateway_us_per_delivered")
        pct = med(runs, "topicrate", "gateway_cpu_pct")
        rows.append(
            Row(
                "(reported) gateway CPU per delivered topic message (one message to one "
                "subscriber)",
                f"{_fmt(us, 1)} µs (the gateway at {_fmt(pct, 0)}% of a core): one core "
                f"delivers ~{_fmt(1e6 / us if us else NAN, 0)}/s",
                f"{_fmt(us * target / 1e6, 1)} cores at {target:,.0f}/s",
                "n/a",
                command,
            )
        )
    return rows


def topics_detail(runs: Runs) -> list[str]:
    """The idle topic subscribers' figures, median and each run."""
    fields = [
        ("subscribers asked / held / reached", None),
        ("client processes", "clients"),
        ("gateway RSS before, MB", "rss_before_mb"),
        ("gateway RSS with all held, MB", "rss_after_mb"),
        ("RSS per subscriber, KB", "rss_per_conn_kb"),
        ("time to open all, s", "connect_seconds"),
        ("gateway CPU to accept one subscriber, ms", "gateway_cpu_connect_ms_each"),
        ("`POST` answered 202 after, ms (RabbitMQ's confirm)", "post_ms"),
        ("fan-out to the first one, ms (POST to the first arrival)", "fanout_first_ms"),
        ("fan-out p50, ms", "fanout_p50_ms"),
        ("fan-out p99, ms", "fanout_p99_ms"),
        ("fan-out to the last one, ms", "fanout_all_ms"),
        ("gateway CPU for the fan-out, s", "gateway_fanout_cpu_s"),
        ("gateway CPU per subscriber reached, µs", "gateway_fanout_us_each"),
        ("client CPU during the fan-out, s (all clients)", "client_fanout_cpu_s"),
        ("client peak RSS, MB (largest client)", "client_max_rss_mb"),
    ]
    lasts = ", ".join(
        "/".join(_fmt(t, 0) for t in r.get("fanout_last_per_client_ms", [])) for r in runs["topics"]
    )
    causes = "; ".join(
        ", ".join(f"{why}: {count}" for why, count in r.get("failures", {}).items()) or "none"
        for r in runs["topics"]
    )
    return [
        *_figures(runs, "topics", fields),
        f"| each client's last arrival, ms | | {lasts} |",
        f"| failed subscribers, by cause | | {causes} |",
    ]


def topicrate_detail(runs: Runs) -> list[str]:
    fields = [
        ("subscribers (all opened)", "opened"),
        ("messages published / publishing time, s", None),
        ("publisher's furthest behind its schedule, s", "publisher_behind_s"),
        ("subscribers that saw every message in order", "complete"),
        ("... with a message missing (a gap)", "with_loss"),
        ("... with a message out of order", "with_disorder"),
        ("... still behind when the drain time ran out", "cut_short"),
        ("messages lost (in gaps), all subscribers", "missing"),
        ("messages not yet delivered at the end, all subscribers", "undelivered"),
        ("deliveries (messages x subscribers)", "delivered"),
        ("window, s (first publish to last arrival or the drain's end)", "window_s"),
        ("deliveries a second", "delivered_per_s"),
        ("latency p50, ms (publish to arrival; one subscriber in ten)", "latency_p50_ms"),
        ("latency p99, ms", "latency_p99_ms"),
        ("latency max, ms", "latency_max_ms"),
        ("gateway CPU, s", "gateway_cpu_s"),
        ("gateway CPU, % of one core", "gateway_cpu_pct"),
        ("gateway CPU per delivery, µs", "gateway_us_per_delivered"),
        ("gateway CPU per message published, µs", "gateway_us_per_message"),
        ("RabbitMQ CPU, % of one core", "rabbitmq_cpu_pct"),
        ("clients' CPU, % of one core (all client processes)", "client_cpu_pct"),
        ("clients' CPU per delivery, µs", "client_us_per_delivered"),
        ("publisher CPU, s", "publisher_cpu_s"),
        ("whole machine busy, % of one core", "machine_busy_pct"),
        ("gateway RSS before / with the subscribers / peak, MB", "rss"),
    ]
    lines = _figures(runs, "topicrate", fields)
    timeline = runs["topicrate"][-1].get("timeline", [])
    if timeline:
        step = max(1, len(timeline) // 30)
        lines += [
            "",
            "How the subscribers kept pace (the last run; seconds from the first publish; a",
            "subscriber's messages are those it has seen, counted from the first):",
            "",
            "| second | deliveries in it | slowest subscriber's messages | fastest's "
            "| messages published | messages the gateway's feed had taken in (/metrics) |",
            "| --- | --- | --- | --- | --- | --- |",
            *(
                f"| {row[0]:.0f} | {row[1]:,.0f} | {row[2]:,.0f} | {row[3]:,.0f} | {row[4]:,.0f} "
                f"| {_fmt(row[5] if len(row) > 5 else NAN, 0)} |"
                for row in timeline[::step]
            ),
        ]
    return lines


def _figures(runs: Runs, key: str, fields: list[tuple[str, str | None]]) -> list[str]:
    lines = ["| figure | median | runs |", "| --- | --- | --- |"]
    for label, field in fields:
        if field is None and key == "topics":
            value = " / ".join(_fmt(med(runs, key, f), 0) for f in ("n", "held", "received"))
            each = ", ".join(f"{r['held']}/{r['received']}" for r in runs[key])
        elif field is None:
            value = (
                f"{_fmt(med(runs, key, 'sent'), 0)} / {_fmt(med(runs, key, 'publish_seconds'), 2)}"
            )
            each = ", ".join(f"{r['sent']}/{r['publish_seconds']:.2f}" for r in runs[key])
        elif field == "rss":
            parts = ("rss_before_mb", "rss_held_mb", "rss_peak_mb")
            value = " / ".join(_fmt(med(runs, key, f), 1) for f in parts)
            each = ", ".join("/".join(_fmt(r[f], 1) for f in parts) for r in runs[key])
        else:
            value = _fmt(med(runs, key, field), 2)
            each = ", ".join(_fmt(r[field], 2) for r in runs[key] if field in r)
        lines.append(f"| {label} | {value} | {each} |")
    return lines


def topic_profiles(runs: Runs) -> list[str]:
    """py-spy's view of the gateway in the last topic-stream runs (with `--py-spy`)."""
    lines: list[str] = []
    for key, what in (
        ("topics", "during the fan-out of one message"),
        ("topicrate", "while the publisher ran"),
    ):
        profile = next((r["profile"] for r in reversed(runs.get(key, [])) if r.get("profile")),
                       None)  # fmt: skip
        if not profile or not profile.get("samples"):
            continue
        lines += [
            f"### `{key}`, {what} ({profile['samples']:,} samples; raw: `{profile['file']}`)",
            "",
            "| function (innermost frame: its own time) | share | | function (inclusive) | share |",
            "| --- | --- | --- | --- | --- |",
        ]
        inclusive = [
            (f, x) for f, x in profile["inclusive"]
            if not f.startswith(("Command.", "Context.", "Group.", "<module>", "serve (",
                                 "asyncio_run", "Server.run", "Runner.run", "Thread."))
        ]  # fmt: skip
        own = profile["self"]
        for i in range(min(15, max(len(own), len(inclusive)))):
            a = own[i] if i < len(own) else ("", NAN)
            b = inclusive[i] if i < len(inclusive) else ("", NAN)
            lines.append(f"| {a[0]} | {_pct(a[1])} | | {b[0]} | {_pct(b[1])} |")
        lines.append("")
    return lines


def _pct(share: float) -> str:
    return "" if share != share else f"{100 * share:.1f}%"


def cpu_table(runs: Runs) -> list[str]:
    """CPU seconds per request of every process, per scenario (medians over repeats)."""
    keys = [k for k in ("raw.transient", "raw.durable", "rpc.light", "rpc.durable",
                        "workers.1", "workers.2") if k in runs]  # fmt: skip
    if not keys:
        return []
    lines = [
        "| scenario | req/s | client (aio-pika or wrk) | gateway, all processes | echo worker "
        "| RabbitMQ |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for key in keys:
        cells = [
            LABELS[key],
            _fmt(med(runs, key, "rps"), 0),
            *(
                _us(med_cpu(runs, key, label)) if _has(runs, key, label) else ""
                for label in ("client", "gateway", "worker", "rabbitmq")
            ),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def workers_split(runs: Runs, settings: Settings) -> list[str]:
    if "workers.1" not in runs and "workers.2" not in runs:
        return []
    cores = os.cpu_count() or 0
    lines = [
        f"Light `?wait` RPC at C={settings.workers_concurrency} from wrk against a fresh",
        "`gateway serve --workers N` (its own vhost and echo worker). CPU is % of one core",
        f"over the window; this machine has {cores} core(s), {100 * cores}% in all.",
        '"everything else" is the machine\'s busy time not in these columns (other',
        "processes on a shared machine, the kernel's softirq work for loopback traffic).",
        "",
        "| run | req/s | p50 ms | gateway (sum) | echo worker | RabbitMQ | wrk | these together "
        "| whole machine busy | everything else |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for key in ("workers.1", "workers.2"):
        if key not in runs:
            continue
        parts = [med(runs, key, f"cpu_{c}") for c in ("gateway", "worker", "rabbitmq")]
        parts.append(med(runs, key, "client_cpu_pct"))
        together = sum(parts)
        busy = med(runs, key, "cpu_machine")
        lines.append(
            "| "
            + " | ".join(
                [
                    f"`--workers {key.split('.')[1]}`",
                    _fmt(med(runs, key, "rps"), 0),
                    _fmt(med(runs, key, "p50_ms"), 2),
                    *(f"{_fmt(p, 0)}%" for p in parts),
                    f"{_fmt(together, 0)}%",
                    f"{_fmt(busy, 0)}%",
                    f"{_fmt(busy - together, 0)}%",
                ]
            )
            + " |"
        )
    return lines


def projection(runs: Runs, settings: Settings) -> list[str]:
    """Requests a second on 16 cores given to gateway processes alone, from the CPU each
    process spent per request here; the broker's and the workers' cores that rate would
    take elsewhere, from theirs."""
    sources = [(k, LABELS[k]) for k in ("rpc.light", "workers.2", "rpc.durable") if k in runs]
    if not sources:
        return []
    n = PROJECTED_CORES
    lines = [
        f"**A projection, not a measurement.** Requests per second that {n} cores given to",
        f"`gateway serve --workers {n}` would serve, computed as {n} / (the gateway's CPU",
        "seconds per request measured above, all its processes summed). It assumes: RabbitMQ,",
        "the workers and the clients run on other machines (their cores below are what that",
        "rate would take there, from their CPU per request here); the gateway's CPU per",
        "request stays as measured (no contention between processes, the kernel spreading",
        "connections evenly, the network not the limit); for durable RPC, a store that keeps",
        "up (PostgreSQL elsewhere: SQLite's single writer on the same disk would not), whose",
        "CPU is not counted. The raw aio-pika client's row is the same sum for bare AMQP",
        "round trips: what 16 cores of the ceiling's client would drive.",
        "",
        f"| from | gateway CPU per request | projected req/s on {n} cores | RabbitMQ cores "
        "at that rate | echo worker cores at that rate |",
        "| --- | --- | --- | --- | --- |",
    ]

    def row(label: str, key: str, process: str) -> str:
        """`process` ("gateway", or the raw ceiling's "client") on `n` cores."""
        cpu = med_cpu(runs, key, process)
        rate = n / cpu if cpu == cpu and cpu > 0 else NAN
        return (
            f"| {label} | {_us(cpu)} | {_fmt(rate, 0)} | "
            f"{_fmt(rate * med_cpu(runs, key, 'rabbitmq'), 1)} | "
            f"{_fmt(rate * med_cpu(runs, key, 'worker'), 1)} |"
        )

    lines += [row(label, key, "gateway") for key, label in sources]
    lines += [row(f"(ceiling) {LABELS[key]}", key, "client") for key in RAW.values() if key in runs]
    return lines


def detail(runs: Runs) -> list[str]:
    head = "| scenario | C | req/s | p50 ms | p99 ms | errors | client CPU % | "
    head += " | ".join(f"{c} CPU %" for c in CPU_COLUMNS) + " |"
    lines = [head, "|" + " --- |" * (7 + len(CPU_COLUMNS))]
    for key, label in LABELS.items():
        if key not in runs:
            continue
        errors = med(runs, key, "errors") + (med(runs, key, "not_200") if _wrk(key) else 0)
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


def _wrk(key: str) -> bool:
    return key.startswith(("rpc.", "c1.rpc.", "workers."))


def _has(runs: Runs, key: str, column: str) -> bool:
    field = "client_cpu_pct" if column == "client" else f"cpu_{column}"
    return any(field in r for r in runs.get(key, []))


def waiters_detail(runs: Runs, key: str) -> list[str]:
    if key not in runs:
        return []
    fields = [
        ("connections asked / held / reached", None),
        ("gateway processes (workers) / client processes", "workers"),
        ("gateway RSS before, MB (all its processes)", "rss_before_mb"),
        ("gateway RSS with all held, MB", "rss_after_mb"),
        ("RSS per connection, KB", "rss_per_conn_kb"),
        ("time to open all, s", "connect_seconds"),
        ("gateway CPU to accept them all, s", "gateway_cpu_connect_s"),
        ("fan-out to the first one, ms (the AMQP hop)", "fanout_first_ms"),
        ("fan-out p50, ms", "fanout_p50_ms"),
        ("fan-out p99, ms", "fanout_p99_ms"),
        ("fan-out to the last one, ms", "fanout_all_ms"),
        ("client CPU during the fan-out, s (all clients)", "client_fanout_cpu_s"),
        ("client peak RSS, MB (largest client)", "client_max_rss_mb"),
    ]
    lines = ["| figure | median | runs |", "| --- | --- | --- |"]
    for label, field in fields:
        if field is None:
            value = " / ".join(_fmt(med(runs, key, f), 0) for f in ("n", "held", "received"))
            each = ", ".join(f"{r['held']}/{r['received']}" for r in runs[key])
        elif field == "workers":
            value = f"{_fmt(med(runs, key, 'workers'), 0)} / {_fmt(med(runs, key, 'clients'), 0)}"
            each = ", ".join(f"{r.get('workers', '?')}/{r.get('clients', '?')}" for r in runs[key])
        else:
            value = _fmt(med(runs, key, field), 2)
            each = ", ".join(_fmt(r[field], 2) for r in runs[key] if field in r)
        lines.append(f"| {label} | {value} | {each} |")
    lasts = [
        "/".join(_fmt(t, 0) for t in r.get("fanout_last_per_client_ms", [])) for r in runs[key]
    ]
    lines.append(f"| each client's last arrival, ms | | {', '.join(lasts)} |")
    per_process = [
        ", ".join(
            f"{count:.0f}: {_fmt(first, 0)} to {_fmt(last, 0)}"
            for count, first, last in r.get("fanout_per_process", [])
        )
        for r in runs[key]
    ]
    lines.append(
        "| each gateway process's waiters: first to last arrival, ms | | "
        + "; ".join(per_process)
        + " |"
    )
    spread = ["/".join(str(c) for c in r.get("held_per_process", [])) for r in runs[key]]
    lines.append(f"| connections per gateway process | | {', '.join(spread)} |")
    failures = [
        ", ".join(f"{why}: {count}" for why, count in r.get("failures", {}).items()) or "none"
        for r in runs[key]
    ]
    lines.append(f"| failed connections, by cause | | {'; '.join(failures)} |")
    return lines


PROFILE_BEFORE = Path(__file__).resolve().parent / "PROFILE-before.md"


def profile_before() -> dict[str, dict[str, str]]:
    """The layer shares of bench/PROFILE-before.md (the profile before issue 13's work),
    by kind (`light`, `durable`), as printed there."""
    shares: dict[str, dict[str, str]] = {}
    kind = ""
    if not PROFILE_BEFORE.exists():
        return shares
    for line in PROFILE_BEFORE.read_text().splitlines():
        if line.startswith("### "):
            kind = "light" if "light" in line else "durable"
        elif kind and line.startswith("| ") and not line.startswith(("| layer", "| ---")):
            layer, value = (cell.strip() for cell in line.strip("|").split("|"))
            shares.setdefault(kind, {})[layer] = value
    return shares


def profile_section(runs: Runs) -> list[str]:
    """Each layer's share of the gateway's py-spy samples, before and after (this run)."""
    if not runs.get("profile"):
        return []
    after: dict[str, dict[str, float]] = runs["profile"][-1]
    before = profile_before()
    layers = sorted(
        {layer for shares in after.values() for layer in shares} - {"(samples)"},
        key=lambda layer: -after["light"].get(layer, 0.0),
    )
    lines = [
        "| layer | light, before | light, after | durable, before | durable, after |",
        "| --- | --- | --- | --- | --- |",
    ]
    for layer in [*layers, "(samples)"]:
        cells = [layer]
        for kind in ("light", "durable"):
            cells.append(before.get(kind, {}).get(layer, ""))
            value = after[kind].get(layer, 0.0)
            cells.append(f"{value:,.0f}" if layer == "(samples)" else f"{100 * value:.0f}%")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def write_report(
    output: Path,
    runs: Runs,
    failures: list[str],
    command: str,
    settings: Settings,
    repeats: int,
    elapsed: float,
    reproduce: Callable[[str], str] | None = None,
) -> None:
    """`reproduce(scenarios)`: the command that measures just those scenarios again."""
    again = reproduce or (lambda s: f".venv/bin/python -m bench.run --scenarios {s}")
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    out = [
        "# Benchmark results",
        "",
        f"Run {now}, {elapsed / 60:.1f} min. Reproduce with `{command}` (or `make bench`).",
        f"Each figure is the median of {repeats} repeat(s) of {settings.duration:g} s "
        f"(after {settings.warmup:g} s of unmeasured warm-up); C = {settings.concurrency} "
        "unless stated. Ratios are medians of the per-repeat ratios.",
        "CPU is utime + stime over the measurement window (psutil; a gateway's summed over",
        "all its processes; wrk's from its rusage), as % of one core or per request.",
        f"The {settings.big_waiters:,}-waiter run is made once, in the last repeat.",
        "Each target's command measures that figure alone (its scenarios side by side),",
        "into /tmp.",
        "",
        "## Targets",
        "",
        "| target | measured | ratio | met? | reproduce |",
        "| --- | --- | --- | --- | --- |",
        *(
            f"| {r.target} | {r.measured} | {r.ratio} | {r.met} | `{r.command}` |"
            for r in targets(runs, settings, again)
        ),
        "",
    ]
    section = cpu_table(runs)
    if section:
        out += [
            "## CPU per request",
            "",
            "CPU seconds of each process per request (its CPU rate over the request rate, same",
            "window). The CPU target compares the gateway's column with the raw client's: both",
            "are what one request costs the process that turns it into an AMQP round trip.",
            "",
            *section,
            "",
        ]
    section = workers_split(runs, settings)
    if section:
        out += ["## `--workers 2` vs `--workers 1`: where the CPU goes", "", *section, ""]
    section = projection(runs, settings)
    if section:
        out += [f"## Projection to {PROJECTED_CORES} cores", "", *section, ""]
    section = profile_section(runs)
    if section:
        out += [
            "## Where the gateway's CPU goes, before and after",
            "",
            "py-spy samples of the gateway process (every thread) at 200 Hz under `wrk -t1",
            "-c64` `?wait=5` RPCs, each sample counted for the innermost frame of a known",
            "layer (`bench/profile.py`). Before: [PROFILE-before.md](PROFILE-before.md), the",
            "profile ahead of issue 13's hot-path work; after: this run (`profile` scenario;",
            f"alone: `{again('profile')}`, or `.venv/bin/python -m bench.profile`). A share",
            "is of the samples, not of the CPU: a thread waiting on an fsync is sampled too.",
            "",
            *section,
            "",
        ]
    out += ["## Throughput, latency and CPU", "", *detail(runs), ""]
    for key, n in (("waiters", settings.waiters), ("bigwaiters", settings.big_waiters)):
        if key in runs:
            out += [
                f"## {n:,} idle waiters",
                "",
                "Half SSE streams, half long-polls (`?after=1`, waiting longer than the run),",
                "all on one job no worker serves, on a fresh `gateway serve --workers N`",
                "(waiter caps raised for the run; open-file limit 20,000 per process). The",
                "connections are held by several client processes, each from its own loopback",
                "address (127.0.0.2, ...). The fan-out is timed from publishing one `progress`",
                "answer to `gateway.answers` to the last arrival on any client (CLOCK_MONOTONIC,",
                "one clock for all processes). RSS is summed over the gateway's processes",
                "(with all held, minus before, over the connections held).",
                "",
                *waiters_detail(runs, key),
                "",
            ]
    if "topics" in runs:
        out += [
            f"## {settings.topic_subscribers:,} idle topic subscribers",
            "",
            "SSE streams on `GET /v1/topics/chat.room.fanout/events` (no `after`: each starts",
            "at the next message) on a fresh one-process gateway (`--workers 1 --topics",
            "bench/topic-contracts`, waiter caps raised), held by client processes from their",
            "own loopback addresses (bench/topic_streams.py: a bare asyncio Protocol on uvloop",
            "per connection, one regular expression per read). The fan-out is timed from",
            "sending one `POST /v1/topics/chat.room.fanout` to the last arrival on any client",
            "(CLOCK_MONOTONIC); the subscribers stay open until all have it. RSS: the gateway's",
            "with all held, minus before, over the subscribers held.",
            "",
            *topics_detail(runs),
            "",
        ]
    if "topicrate" in runs:
        out += [
            f"## {settings.topic_rate:,.0f} messages/s to "
            f"{settings.topic_rate_subscribers:,} topic subscribers",
            "",
            "A plain aio-pika publisher in a process of its own (publisher confirms, each 10 ms",
            "tick's messages in flight together) publishes to exchange `gateway.topics` with",
            "routing key `chat.room.rate`, as any daemon does, for "
            f"{settings.topic_rate_seconds:g} s; each",
            "message carries its index and the publisher's CLOCK_MONOTONIC stamp. The",
            "subscribers (SSE, as above) check that indexes come 0, 1, 2, ... and the ids",
            "(stream offsets) strictly increase. Latency is arrival minus publish stamp, for",
            "every delivery to one subscriber in ten, which read as soon as data comes (a",
            "50 µs / 1 ms histogram); the other nine read every 10 ms, many frames a read, to",
            "spare the clients' CPU. CPU: utime + stime from the first publish to the last",
            "arrival (or the drain time's end); per delivery = over messages x subscribers",
            "delivered. The clients share the machine's two cores with the gateway: their CPU",
            "is beside it. Messages not delivered when the drain time ran out, with no gap",
            "before them, are a backlog (the gateway behind), not a loss; either fails the run.",
            "",
            *topicrate_detail(runs),
            "",
        ]
    section = topic_profiles(runs)
    if section:
        out += [
            "## Where the gateway's CPU goes in the topic-stream runs",
            "",
            "py-spy (`--py-spy DIR`: 500 Hz, non-blocking) on the gateway process during the",
            "measured window. A share is of the samples in which the gateway was not idle;",
            "time inside uvloop's C code (task steps, epoll) shows as `Runner.run`, omitted",
            "from the inclusive column with the other frames every sample has.",
            "",
            *section,
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
        "  one gateway (`gateway serve --workers 1`, SQLite store in the temp dir), one echo",
        "  worker process (`bench/echo_worker.py`, aio-pika, prefetch 256, answers without",
        "  confirms) that serves both the raw-AMQP queues and the gateway's `echo`/`echo.light`",
        "  queues.",
        "- Raw AMQP (`bench/amqp_rpc.py`): C callers in one aio-pika process. transient: a",
        "  classic non-durable queue, transient messages, no confirms, exclusive reply queue",
        "  without acks. durable: quorum queue, persistent messages, publisher confirms, a",
        "  quorum reply queue with acks (as the gateway's `gateway.answers`).",
        "- Gateway RPC: `wrk -t1 -cC -s bench/post.lua URL/v1/ops/<op>?wait=5`; responses",
        "  other than 200 (a 202 means no answer within 5 s) are counted as errors by wrk.",
        "- `--workers` (`workers`): the same light RPC at C=128 against a fresh",
        "  `gateway serve --workers 1`, then `--workers 2`, on a vhost of their own with an",
        "  echo worker of their own.",
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
