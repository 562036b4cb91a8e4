"""The Perl distribution (clients/perl/Makefile.PL) builds, tests and installs from a copy
of clients/perl alone, as cpanm builds it; and the README's Perl snippet, run the way the
README says, calls a real gateway."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
from pathlib import Path

from tests.support import ROOT, RabbitNode, RunningGateway
from tests.test_round_trip import adder


async def run(command: str, cwd: Path, env: dict[str, str]) -> str:
    """Run a shell command; its output, asserting it succeeded."""
    process = await asyncio.create_subprocess_shell(
        command,
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), 300)
    text = output.decode(errors="replace")
    assert process.returncode == 0, f"{command} failed:\n{text[-4000:]}"
    return text


def bare_env() -> dict[str, str]:
    """The environment of someone with no gateway and no clone around."""
    return {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("GATEWAY_") and name not in ("PERL5LIB", "PERLLIB")
    }


async def test_the_perl_distribution_builds_tests_and_installs(
    tmp_path: Path, gateway: RunningGateway, rabbit: RabbitNode, run_worker
) -> None:
    assert shutil.which("make") and shutil.which("perl"), "make and perl are required"
    dist = tmp_path / "perl"
    shutil.copytree(
        ROOT / "clients" / "perl",
        dist,
        ignore=shutil.ignore_patterns("blib", "Makefile", "MYMETA.*", "pm_to_blib"),
    )
    env = bare_env()
    await run("perl Makefile.PL", dist, env)
    await run("make", dist, env)
    tested = await run("make test", dist, env)
    assert "Result: PASS" in tested
    # No gateway, no schemas/ beside the copy: those tests skip rather than fail.
    assert re.search(r"t/10-client\.t \.+ skipped", tested), tested
    assert re.search(r"t/01-schema-vectors\.t \.+ skipped", tested), tested
    await run(f"make install INSTALL_BASE={tmp_path / 'installed'}", dist, env)

    # The README's snippet, pointed at a real gateway and worker.
    readme = (ROOT / "README.md").read_text()
    snippet = re.search(r"\*\*Perl\*\*.*?```perl\n(.*?)```", readme, re.S)
    assert snippet, "no Perl snippet in README.md"
    script = tmp_path / "add.pl"
    script.write_text(
        snippet[1]
        .replace("http://127.0.0.1:8000", gateway.url)
        .replace("'math.add'", f"'{gateway.op('math.add')}'")
    )
    await run_worker(adder(gateway, rabbit.url))
    installed = tmp_path / "installed" / "lib" / "perl5"
    assert await run(f"perl -I{installed} {script}", tmp_path, env) == "sum: 5\n"
    # ... and from the clone, as the README shows.
    assert await run(f"perl -Iclients/perl/lib {script}", ROOT, env) == "sum: 5\n"
