"""The JavaScript and Perl client suites, run against the polyglot gateway (see
tests/polyglot.py): they share the conformance vectors and call workers in other
languages."""

from __future__ import annotations

import asyncio
import shutil

from tests.polyglot import Polyglot
from tests.support import ROOT

JS = ROOT / "clients" / "js"
PERL = ROOT / "clients" / "perl"


async def run_suite(command: list[str], polyglot: Polyglot, cwd) -> None:
    process = await asyncio.create_subprocess_exec(
        *command,
        cwd=cwd,
        env=polyglot.env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), 600)
    print(output.decode(errors="replace"))
    assert process.returncode == 0, f"{' '.join(command)} failed:\n{output.decode()[-4000:]}"


async def test_example_workers_serve_the_example_operations(polyglot: Polyglot) -> None:
    async with polyglot.gateway.client() as http:
        add = await http.post("/v1/ops/math.add?wait=10", json={"a": 1, "b": 2})
        echo = await http.post("/v1/ops/echo?wait=10", json={"x": [1]})
        report = await http.post(
            "/v1/ops/report.generate?wait=30",
            json={"title": "T", "sections": 2, "seconds_per_section": 0},
        )
        stats = await http.post("/v1/ops/text.stats?wait=10", json={"text": "a b\nc"})
    assert add.json()["result"] == {"sum": 3}
    assert stats.json()["result"] == {"characters": 5, "words": 3, "lines": 2}, stats.text
    assert echo.json()["result"] == {"x": [1]}
    assert report.json()["result"]["sections"] == ["T: section 1 of 2", "T: section 2 of 2"]


async def test_javascript_client_suite(polyglot: Polyglot) -> None:
    assert shutil.which("node"), "node is required"
    await run_suite(["npm", "test", "--silent"], polyglot, JS)


async def test_perl_client_suite(polyglot: Polyglot) -> None:
    assert shutil.which("prove"), "prove (perl) is required"
    await run_suite(["prove", "-l", "-r", "t"], polyglot, PERL)
