"""The chunk writer commits on its own connection and thread, and hands back counts and failures."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from bridge.store import db
from bridge.sync.writer import ChunkWriter, database_path


def _insert(rows: int, fail: bool = False, label: str = "a"):
    def work(conn: sqlite3.Connection) -> int:
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany("INSERT INTO seen (file_id, external_id) VALUES (?, ?)",
                         [(1, f"{threading.get_ident()}-{label}{i}") for i in range(rows)])
        if fail:
            conn.execute("ROLLBACK")
            raise sqlite3.OperationalError("disk I/O error")
        conn.execute("COMMIT")
        return rows
    return work


def test_chunks_commit_from_another_thread_and_are_seen_by_the_reader(tmp_path: Path) -> None:
    conn = db.connect(tmp_path / "state.db")
    path = database_path(conn)
    assert path == tmp_path / "state.db"
    writer = ChunkWriter(path)
    writer.submit(_insert(300))
    with pytest.raises(RuntimeError):
        writer.submit(_insert(1))  # one chunk in flight at a time
    assert writer.wait() == 300
    writer.submit(_insert(200, label="b"))
    assert writer.wait() == 200
    writer.close()
    writers = {row[0].split("-")[0] for row in conn.execute("SELECT external_id FROM seen")}
    assert conn.execute("SELECT COUNT(*) FROM seen").fetchone()[0] == 500
    assert len(writers) == 1 and str(threading.get_ident()) not in writers  # one thread, not this one


def test_a_failed_chunk_is_raised_to_the_pipeline_and_close_still_releases(tmp_path: Path) -> None:
    conn = db.connect(tmp_path / "state.db")
    writer = ChunkWriter(database_path(conn))
    writer.submit(_insert(10, fail=True))
    with pytest.raises(sqlite3.OperationalError, match="disk I/O"):
        writer.wait()
    writer.submit(_insert(10, fail=True))
    writer.close()  # a failure nobody waited for is dropped with the file, not raised from cleanup
    assert conn.execute("SELECT COUNT(*) FROM seen").fetchone()[0] == 0



def test_a_database_without_a_file_has_no_path_for_a_writer() -> None:
    assert database_path(sqlite3.connect(":memory:")) is None
