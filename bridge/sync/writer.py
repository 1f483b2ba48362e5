"""Commit the chunks of a sound file from a second thread while the reader goes on with the next one.

Each chunk's operations are committed to the outbox (deliverable at once) from a
thread with a connection of its own; SQLite lets go of the interpreter lock while
it works, so that overlaps the parsing and building of the next chunk, which need
the lock. The chunk's fingerprints are staged in the same connection's temporary
table and go into records in key order once the file is read (pipeline
``_merge_direct``): records is keyed by 1C's random GUIDs, and inserting chunk
by chunk rewrote pages all over it at every commit. Since those fingerprints are
visible only on this connection, the pipeline's lookups run here too (``run`` or
``ask``, once the chunk in flight is committed), so every lookup sees every earlier chunk.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from bridge.store import db

T = TypeVar("T")


def database_path(conn: sqlite3.Connection) -> Path | None:
    """The file behind ``conn``'s main database (None in memory)."""
    for _, name, file in conn.execute("PRAGMA database_list").fetchall():
        if name == "main":
            return Path(file) if file else None
    return None


class ChunkWriter:
    """One thread and one connection to the state database; ``wait`` returns what the last chunk enqueued."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._conn: sqlite3.Connection | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bridge-writer")
        self._future: Future[int] | None = None

    def submit(self, work: Callable[[sqlite3.Connection], int]) -> None:
        """Run ``work`` (one transaction, returning the operations it enqueued) once the last one is done."""
        if self._future is not None:
            raise RuntimeError("a chunk is still being written: wait() for it first")
        self._future = self._executor.submit(self._run, work)

    def wait(self) -> int:
        """Block until the chunk in flight is committed; its failure is raised here."""
        future, self._future = self._future, None
        return 0 if future is None else future.result()

    def run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work`` on the writer's connection and return its result: what the writer staged is
        visible only there. The chunk in flight must have been waited for first."""
        return self.ask(work).result()

    def ask(self, work: Callable[[sqlite3.Connection], T]) -> Future[T]:
        """``run`` without waiting: the caller may go on computing while the writer queries."""
        if self._future is not None:
            raise RuntimeError("a chunk is still being written: wait() for it first")
        return self._executor.submit(self._run, work)

    def close(self) -> None:
        """Finish (a failure was already raised by ``wait``, or is dropped with the file) and release."""
        future, self._future = self._future, None
        if future is not None:
            future.exception()  # waits; whoever stops early has reported its own error
        self._executor.submit(self._close).result()
        self._executor.shutdown()

    def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        if self._conn is None:  # opened in the thread that uses it, as sqlite3 requires
            self._conn = db.connect(self._path)
        return work(self._conn)

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

