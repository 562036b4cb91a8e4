"""Group commit for SQLite: many concurrent write transactions, one fsync; and the reads
beside it, answered in batches too.

One thread owns the write connection. It takes every write waiting in its queue, runs
them all in one transaction (a failing write is rolled back alone: see `_commit`),
commits once, and only then answers all of them. Under load the cost of a durable commit
(an fsync, ~0.5 ms here) is shared by the whole batch; at low load a batch is one write.
A second thread owns a read connection the same way, so reads never wait behind a commit.
Both answer a batch with one wake-up of the event loop (where `run_in_executor` costs a
concurrent future, its chaining and a wake-up for every call).

Processes sharing the file (`gateway serve --workers N`) take turns through a lock file
beside it, held from BEGIN to COMMIT: a waiting writer sleeps in the kernel and wakes the
moment the lock is free, where SQLite's own busy handler would poll, sleeping up to 100 ms
between tries (seconds of tail latency, one process starved by another, and past the busy
timeout a "database is locked" error). SQLITE_BUSY can still come from a process that does
not take the lock file (a `sqlite3` shell): that attempt is simply made again.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

try:
    import fcntl
except ImportError:  # not on Windows: there, processes wait in SQLite's busy handler
    fcntl = None  # type: ignore[assignment]

T = TypeVar("T")

MAX_BATCH = 512

_Call = tuple[Callable[[sqlite3.Connection], Any], asyncio.Future[Any]]
_Outcome = tuple[asyncio.Future[Any], bool, Any]


class _ConnectionThread:
    """A thread that owns one connection and runs the calls queued for it, in batches."""

    name = "sqlite"

    def __init__(self, connect: Callable[[], sqlite3.Connection]) -> None:
        self._connect = connect
        self._queue: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def start(self) -> None:
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error

    def stop(self) -> None:
        if self._thread.ident is None:  # never started
            return
        self._queue.put(None)
        self._thread.join()

    async def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.put((fn, future))
        return await future

    def _open(self) -> sqlite3.Connection:
        return self._connect()

    def _close(self, db: sqlite3.Connection) -> None:
        db.close()

    def _run(self, db: sqlite3.Connection, batch: list[_Call]) -> None:
        raise NotImplementedError

    def _loop(self) -> None:
        try:
            db = self._open()
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            while True:
                first = self._queue.get()
                if first is None:
                    return
                batch = [first]
                stop = False
                while len(batch) < MAX_BATCH:
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if item is None:
                        stop = True
                        break
                    batch.append(item)
                self._run(db, batch)
                if stop:
                    return
        finally:
            self._close(db)


class GroupCommitWriter(_ConnectionThread):
    name = "sqlite-writer"

    def __init__(
        self, connect: Callable[[], sqlite3.Connection], lock_path: Path | None = None
    ) -> None:
        super().__init__(connect)
        self._lock_path = lock_path
        self._lock_fd: int | None = None

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn` in a transaction; return once that transaction is committed. `fn` may
        be run twice (the first run rolled back, see `_commit`): it must only touch the
        database, and decide from what it reads there."""
        return await self._call(fn)

    @contextlib.contextmanager
    def _turn(self) -> Iterator[None]:
        """This process's turn to write the file (see the module docstring)."""
        if self._lock_fd is None:
            yield
            return
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def _open(self) -> sqlite3.Connection:
        try:
            if self._lock_path is not None and fcntl is not None:
                self._lock_fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
            with self._turn():
                return self._connect()
        except BaseException:
            self._close_lock()
            raise

    def _close(self, db: sqlite3.Connection) -> None:
        db.close()
        self._close_lock()

    def _close_lock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _run(self, db: sqlite3.Connection, batch: list[_Call]) -> None:
        with self._turn():
            outcomes = self._commit(db, batch)
        _answer(outcomes)

    @staticmethod
    def _commit(db: sqlite3.Connection, batch: list[_Call]) -> list[_Outcome]:
        """The batch in one transaction, optimistically: a write seldom fails, so none
        gets a savepoint of its own (two statements fewer each); if one does fail, the
        transaction is rolled back and the batch run again, each write in a savepoint,
        so that the failing one alone is undone."""
        try:
            _begin(db, batch)
        except Exception as exc:
            return [(future, False, exc) for _, future in batch]
        try:
            outcomes: list[_Outcome] = [(future, True, fn(db)) for fn, future in batch]
        except Exception:
            db.execute("ROLLBACK")
            return GroupCommitWriter._commit_each(db, batch)
        return GroupCommitWriter._finish(db, outcomes)

    @staticmethod
    def _commit_each(db: sqlite3.Connection, batch: list[_Call]) -> list[_Outcome]:
        """The batch in one transaction, each write in a savepoint of its own."""
        outcomes: list[_Outcome] = []
        try:
            _begin(db, batch)
            for fn, future in batch:
                db.execute("SAVEPOINT write")
                try:
                    outcomes.append((future, True, fn(db)))
                    db.execute("RELEASE write")
                except Exception as exc:
                    db.execute("ROLLBACK TO write")
                    db.execute("RELEASE write")
                    outcomes.append((future, False, exc))
        except Exception as exc:
            if db.in_transaction:
                db.execute("ROLLBACK")
            return [(future, False, exc) for _, future in batch]
        return GroupCommitWriter._finish(db, outcomes)

    @staticmethod
    def _finish(db: sqlite3.Connection, outcomes: list[_Outcome]) -> list[_Outcome]:
        try:
            db.execute("COMMIT")
        except Exception as exc:  # the commit itself failed: nothing of the batch holds
            if db.in_transaction:
                db.execute("ROLLBACK")
            return [(future, False, exc) for future, _, _ in outcomes]
        return outcomes


class Reader(_ConnectionThread):
    """Reads, each in a transaction of its own (autocommit), on a connection of their own."""

    name = "sqlite-reader"

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self._call(fn)

    def _run(self, db: sqlite3.Connection, batch: list[_Call]) -> None:
        outcomes: list[_Outcome] = []
        for fn, future in batch:
            if future.cancelled():  # a read nobody waits for any more
                continue
            try:
                outcomes.append((future, True, fn(db)))
            except Exception as exc:
                outcomes.append((future, False, exc))
        _answer(outcomes)


def _begin(db: sqlite3.Connection, batch: list[_Call]) -> None:
    """BEGIN IMMEDIATE, waiting while anyone waits for the batch: SQLITE_BUSY past the busy
    timeout means a process outside the lock file holds the file, and the callers' own
    timeouts (gateway/store/bounded.py) decide how long they wait, not SQLite's. Once all
    gave up, the batch fails as a failed BEGIN always did (nobody was told it happened)."""
    while True:
        try:
            db.execute("BEGIN IMMEDIATE")
            return
        except sqlite3.OperationalError as exc:
            if not is_busy(exc) or all(f.cancelled() for _, f in batch):
                raise


def is_busy(exc: BaseException) -> bool:
    """SQLITE_BUSY ("database is locked"): another connection holds the lock."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and code & 0xFF == sqlite3.SQLITE_BUSY


def _answer(outcomes: list[_Outcome]) -> None:
    """Resolve the futures on their event loop, with one wake-up per loop."""
    by_loop: dict[asyncio.AbstractEventLoop, list[_Outcome]] = {}
    for outcome in outcomes:
        by_loop.setdefault(outcome[0].get_loop(), []).append(outcome)
    for loop, items in by_loop.items():
        loop.call_soon_threadsafe(_resolve, items)


def _resolve(items: list[_Outcome]) -> None:
    for future, ok, value in items:
        if future.cancelled():
            continue
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)
