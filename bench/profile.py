"""Where the gateway's CPU goes: py-spy samples of the gateway process under `wrk` load,
split by layer (HTTP stack, AMQP client, JSON Schema, SQLite writer, the gateway's own
code, the event loop and the rest), for a light and a durable `?wait` RPC.

    .venv/bin/python -m bench.profile                 # both, 15 s each; writes bench/PROFILE.md
    (`make bench` runs it too, as the `profile` scenario of bench.run, into RESULTS.md
    beside bench/PROFILE-before.md: the profile before issue 13's hot-path work)
    .venv/bin/python -m bench.profile --seconds 30 --output /tmp/profile.md

It exists so that "profile first" (issue 13) is one command whose output can be put next
to the benchmark's figures, before and after a change to the hot path. A sample is counted
for the innermost frame that belongs to a known layer, so time spent in the standard
library on a layer's behalf (a socket write for uvicorn, say) counts for that layer.
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
from collections import Counter
from pathlib import Path

from bench.scenarios import OPS, Bench, Settings

ROOT = Path(__file__).resolve().parent.parent
PY_SPY = str(ROOT / ".venv" / "bin" / "py-spy")
POST_LUA = str(ROOT / "bench" / "post.lua")

# (layer, the files of its frames as py-spy names them: "function (package/file.py:line)").
# A sample counts for the innermost frame of a layer; the event loop is a layer too, so
# the loop's own time is not put down to the frames that started it.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("JSON Schema (jsonschema, referencing)", ("(jsonschema/", "(referencing/")),
    # gateway/amqp.py is the gateway's own AMQP plumbing below aio-pika (batched publishes
    # and acks), gateway/server.py its uvicorn protocol: counted with their layers.
    (
        "AMQP client (aio-pika, aiormq, pamqp)",
        ("(aio_pika/", "(aiormq/", "(pamqp/", "(gateway/amqp.py"),
    ),
    (
        "other threads (SQLite writer and reader, contract checker)",
        ("(gateway/store/", "(concurrent/", "(threading"),
    ),
    ("prometheus-client", ("(prometheus_client/",)),
    (
        "HTTP stack (uvicorn, httptools, Starlette)",
        (
            "(uvicorn/protocols/",
            "(uvicorn/middleware/",
            "(httptools/",
            "(starlette/",
            "(gateway/server.py",
        ),
    ),
    ("the gateway's own code", ("(gateway/",)),
    ("event loop (asyncio, uvloop)", ("(asyncio/", "(selectors", "(uvloop/")),
]
# The frames every sample starts with (the command, uvicorn's runner): no layer's work.
SHELL = ("(gateway:", "(click/", "(gateway/cli.py", "(uvicorn/server.py", "(uvicorn/_compat.py")
OTHER = "standard library, other"


def layer_of(stack: str) -> str:
    """The layer of one collapsed stack (`outer;...;inner`), judged from the inside out."""
    for frame in reversed(stack.split(";")):
        if any(shell in frame for shell in SHELL):
            continue
        for name, fragments in LAYERS:
            if any(fragment in frame for fragment in fragments):
                return name
    return OTHER


def profile(bench: Bench, op: str, seconds: int, out: Path) -> Counter[str]:
    """Sample the gateway for `seconds` while wrk drives `?wait` RPCs of `op`."""
    assert bench.gateway is not None
    url = f"{bench.gateway.url}/v1/ops/{op}?wait=5"
    load = subprocess.Popen(
        ["wrk", "-t1", "-c64", f"-d{seconds + 4}s", "-s", POST_LUA, url],
        stdout=subprocess.DEVNULL,
    )
    try:
        time.sleep(2)  # warm-up: connections opened, code paths hot (not a wait for an event)
        subprocess.run(
            [
                *(PY_SPY, "record", "--pid", str(bench.gateway.proc.pid)),
                *("--duration", str(seconds), "--rate", "200", "--format", "raw"),
                *("--output", str(out), "--nonblocking"),
            ],
            check=True,
            capture_output=True,
        )
    finally:
        load.wait()
    samples: Counter[str] = Counter()
    for line in out.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            samples[layer_of(stack)] += int(count)
    return samples


def shares(bench: Bench, seconds: int, work: Path) -> dict[str, dict[str, float]]:
    """Both profiles, as each layer's share of the samples (for bench.run's report)."""
    result: dict[str, dict[str, float]] = {}
    for durability in ("light", "durable"):
        samples = profile(bench, OPS[durability], seconds, work / f"{durability}.txt")
        total = sum(samples.values()) or 1
        result[durability] = {name: count / total for name, count in samples.items()}
        result[durability]["(samples)"] = float(total)
    return result


def table(title: str, samples: Counter[str]) -> list[str]:
    total = sum(samples.values()) or 1
    rows = [f"### {title}", "", "| layer | share of samples |", "| --- | --- |"]
    for name, count in samples.most_common():
        rows.append(f"| {name} | {100 * count / total:.0f}% |")
    rows.append(f"| (samples) | {total:,} |")
    return [*rows, ""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=15, help="sampling time per profile")
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "PROFILE.md")
    parser.add_argument("--keep", type=Path, help="a folder to keep py-spy's raw samples in")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gateway-profile-") as work:
        bench = Bench(Path(work), Settings(args.seconds, 2, 64, 0))
        bench.start()
        try:
            light = profile(bench, OPS["light"], args.seconds, Path(work) / "light.txt")
            durable = profile(bench, OPS["durable"], args.seconds, Path(work) / "durable.txt")
            if args.keep is not None:
                args.keep.mkdir(parents=True, exist_ok=True)
                for name in ("light.txt", "durable.txt"):
                    (args.keep / name).write_bytes((Path(work) / name).read_bytes())
        finally:
            bench.stop()
    lines = [
        "# Where the gateway's CPU goes",
        "",
        f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: `.venv/bin/python -m "
        f"bench.profile --seconds {args.seconds}`. py-spy samples of the gateway process "
        "(every thread) at 200 Hz under `wrk -t1 -c64` `?wait=5` RPCs against the bench's "
        "echo worker; a sample counts for the innermost frame of a known layer.",
        "",
        *table("light RPC (`echo.light`)", light),
        *table("durable RPC (`echo.durable`)", durable),
    ]
    args.output.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
