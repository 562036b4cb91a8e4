"""One SQLite file shared by several gateway processes (`gateway serve --workers N`).

Real OS processes, each with its own `SQLiteStore` on the same file, all at once: opening
a fresh file together (schema, WAL, identity), then creating, recording and reading jobs
concurrently. No "database is locked" may escape, every process sees every job, an
idempotency key makes one job, a job gets one terminal event, and the file stays sound.
And a process that holds the file without taking turns (a `sqlite3` shell) is waited out.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import sqlite3
import time
import traceback
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

import pytest

from gateway.jobs import new_job
from gateway.store import sqlite as sqlite_store
from gateway.store.sqlite import SQLiteStore

PROCESSES = 4
OPEN_RACES = 8  # fresh files opened by every process at once
OWN_JOBS = 150  # per process
KEYS = 60  # keyed jobs that every process creates, and all finish at once
OLD_JOBS = 40  # per process, finished, then purged by all processes at once
CHUNK = 30  # concurrent calls in flight per process


async def _gather_chunked(calls: list[Any]) -> list[Any]:
    out: list[Any] = []
    for start in range(0, len(calls), CHUNK):
        out += await asyncio.gather(*calls[start : start + CHUNK])
    return out


async def _hammer(index: int, directory: Path, barrier: Barrier) -> dict[str, Any]:
    report: dict[str, Any] = {"identities": []}
    for race in range(OPEN_RACES):
        barrier.wait()
        store = SQLiteStore(directory / f"race-{race}.sqlite3")
        await store.open()
        job, first = new_job("op", idempotency_key="k", request_hash="h")
        created = await store.create(job, first, b"{}")
        report["identities"].append((store.identity, created.job.id))
        await store.close()

    store = SQLiteStore(directory / "jobs.sqlite3")
    barrier.wait()
    await store.open()
    try:
        report["identity"] = store.identity
        own = [new_job("own") for _ in range(OWN_JOBS)]
        keyed = [new_job("keyed", idempotency_key=f"k{n}", request_hash="h") for n in range(KEYS)]
        old = [new_job("old") for _ in range(OLD_JOBS)]
        barrier.wait()
        # Everyone creates at once: its own jobs, and the same keys as every other process.
        created = await _gather_chunked(
            [store.create(job, first, b"{}") for job, first in (*own, *keyed, *old)]
        )
        report["keyed"] = {
            o.job.idempotency_key: (o.job.id, o.created) for o in created[OWN_JOBS:][:KEYS]
        }
        calls = []
        for job, _ in own:
            calls += [
                store.record(job.id, "started", None),
                store.record(job.id, "progress", {"p": index}),
            ]
        for job, _ in old:
            calls.append(store.record(job.id, "result", {"old": index}))
        await _gather_chunked(calls)
        barrier.wait()
        # Every process finishes every keyed job at once: one terminal event may win.
        finishes = []
        for key, (job_id, _) in sorted(report["keyed"].items()):
            finishes.append(store.record(job_id, "progress", {"by": index, "key": key}))
            if index % 2:
                finishes.append(store.record(job_id, "result", {"by": index}))
            else:
                finishes.append(store.record(job_id, "error", {"code": "x", "message": "y"}))
        recorded = await _gather_chunked(finishes)
        report["terminal"] = [
            (r.event.job_id, r.event.seq, r.event.type)
            for r in recorded
            if r is not None and r.event is not None and r.event.type in ("result", "error")
        ]
        # Own jobs finish, and every process sweeps and purges at once.
        await _gather_chunked([store.record(job.id, "result", {"r": index}) for job, _ in own])
        barrier.wait()
        overdue = await store.overdue(time.time() + 1)
        report["purged"] = await store.purge("old", time.time() + 1)
        report["overdue"] = overdue
        barrier.wait()
        # Every process reads every job, whoever made it.
        with sqlite3.connect(directory / "jobs.sqlite3") as db:
            ids = [row[0] for row in db.execute("SELECT id FROM jobs")]
        report["seen"] = {}
        for job_id in ids:
            job = await store.get(job_id)
            events = await store.events(job_id)
            assert job is not None, job_id
            report["seen"][job_id] = (job.status, job.seq, [(e.seq, e.type) for e in events])
    finally:
        await store.close()
    return report


def hammer(index: int, directory: str, barrier: Barrier, results: Any) -> None:
    """A process of the test (spawned: a module-level function)."""
    try:
        results.put((index, asyncio.run(_hammer(index, Path(directory), barrier)), None))
    except BaseException:
        barrier.abort()  # the others must not wait for us
        results.put((index, None, traceback.format_exc()))


def test_processes_share_one_sqlite_file(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(PROCESSES, timeout=60)
    results = context.Queue()
    processes = [
        context.Process(target=hammer, args=(n, str(tmp_path), barrier, results))
        for n in range(PROCESSES)
    ]
    for process in processes:
        process.start()
    reports: dict[int, dict[str, Any]] = {}
    errors = []
    for _ in processes:
        index, report, error = results.get(timeout=120)
        if error is not None:
            errors.append(f"process {index}:\n{error}")
        else:
            reports[index] = report
    for process in processes:
        process.join(timeout=30)
    assert not errors, "\n".join(errors)
    assert all(p.exitcode == 0 for p in processes)

    # Opening a fresh file together: one schema, one identity, one job for the key.
    for race in range(OPEN_RACES):
        assert len({r["identities"][race] for r in reports.values()}) == 1
    assert len({r["identity"] for r in reports.values()}) == 1

    # One job per key, and every process was answered with it.
    for n in range(KEYS):
        answers = [r["keyed"][f"k{n}"] for r in reports.values()]
        assert len({job_id for job_id, _ in answers}) == 1
        assert sum(created for _, created in answers) == 1

    # One terminal event per keyed job, across all processes.
    terminal = [t for r in reports.values() for t in r["terminal"]]
    assert len(terminal) == KEYS
    assert len({job_id for job_id, _, _ in terminal}) == KEYS

    # The old jobs were purged once, by whichever process got to each.
    assert sum(r["purged"] for r in reports.values()) == PROCESSES * OLD_JOBS

    # Every process read every job, the same way; events without gaps, one terminal.
    seen = [r["seen"] for r in reports.values()]
    assert all(s == seen[0] for s in seen)
    assert len(seen[0]) == PROCESSES * OWN_JOBS + KEYS
    for status, seq, events in seen[0].values():
        assert [s for s, _ in events] == list(range(1, seq + 1))
        assert sum(t in ("result", "error") for _, t in events) == 1
        assert events[-1][1] in ("result", "error") and status in ("succeeded", "failed")

    with sqlite3.connect(tmp_path / "jobs.sqlite3") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)


async def test_a_write_waits_out_a_lock_held_past_the_busy_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_store, "BUSY_TIMEOUT", 0.05)
    path = tmp_path / "jobs.sqlite3"
    store = SQLiteStore(path)
    await store.open()
    try:
        shell = sqlite3.connect(path, isolation_level=None)  # takes no turn: a sqlite3 shell
        shell.execute("BEGIN IMMEDIATE")
        job, first = new_job("op")
        creating = asyncio.ensure_future(store.create(job, first, b"{}"))
        done, _ = await asyncio.wait([creating], timeout=0.5)  # ten busy timeouts
        assert not done
        shell.execute("COMMIT")
        shell.close()
        assert (await asyncio.wait_for(creating, 5)).created
        assert await store.get(job.id) == job
    finally:
        await store.close()
