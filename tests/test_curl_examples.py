"""The curl scripts in examples/curl, run as a user would, against the polyglot gateway."""

from __future__ import annotations

import asyncio
import json
import re

import orjson

from tests.polyglot import Polyglot
from tests.support import ROOT

CURL = ROOT / "examples" / "curl"
REPORT = '{"title": "Q3", "sections": 3, "seconds_per_section": 0.1}'


async def run(polyglot: Polyglot, script: str, *args: str) -> str:
    process = await asyncio.create_subprocess_exec(
        str(CURL / script),
        *args,
        env=polyglot.env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()
    return out.decode()


async def test_submit_and_wait(polyglot: Polyglot) -> None:
    job = orjson.loads(await run(polyglot, "submit-and-wait.sh", "math.add", '{"a": 2, "b": 3}'))
    assert job["status"] == "succeeded"
    assert job["result"] == {"sum": 5}


async def test_long_poll_loop(polyglot: Polyglot) -> None:
    lines = (await run(polyglot, "long-poll.sh", "report.generate", REPORT)).splitlines()
    events = [orjson.loads(line) for line in lines[:-1]]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert [e["type"] for e in events].count("progress") == 3
    assert events[-1]["type"] == "result"
    assert orjson.loads(lines[-1])["status"] == "succeeded"


async def test_sse_stream(polyglot: Polyglot) -> None:
    text = await run(polyglot, "stream.sh", "report.generate", REPORT)
    ids = [line.removeprefix("id: ") for line in text.splitlines() if line.startswith("id: ")]
    types = [
        line.removeprefix("event: ") for line in text.splitlines() if line.startswith("event: ")
    ]
    assert ids == [str(n) for n in range(1, len(ids) + 1)]
    assert types[0] == "queued" and types[-1] == "result"
    assert types.count("progress") == 3


def readme_try_it() -> str:
    """The shell block of README.md's "Try it" section, as a user pastes it."""
    section = (ROOT / "README.md").read_text().split("\n## Try it\n", 1)[1]
    return section.split("```sh\n", 1)[1].split("```", 1)[0]


async def test_readme_try_it(polyglot: Polyglot) -> None:
    script = readme_try_it().replace("http://127.0.0.1:8000", polyglot.gateway.url)
    process = await asyncio.create_subprocess_exec(
        "bash",
        "-euo",
        "pipefail",
        "-c",
        script,
        env=polyglot.env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()
    text = out.decode()
    # The curls print jobs back to back (and SSE text between): pick out each job.
    decoder = json.JSONDecoder()
    jobs = [decoder.raw_decode(text, m.start())[0] for m in re.finditer(r'\{"id":', text)]
    assert jobs[0]["result"] == {"sum": 5}
    assert jobs[1]["op"] == "report.generate" and jobs[1]["status"] == "succeeded"
    assert "event: result" in text
    # The cancel example cancels a job that is still running, never a finished one.
    running, cancelled = jobs[-2:]
    assert running["id"] == cancelled["id"] and running["status"] == "running"
    assert cancelled["status"] == "cancelled"
