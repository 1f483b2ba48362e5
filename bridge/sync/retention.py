"""Retention: remove what is old and settled, so the archive and the state database stop growing.

Three things grow with every file taken: archived copies (a full 1C export is hundreds of MB,
and each re-export is new bytes), delivered outbox rows (each keeps the payload it sent) and the
journal. With ``[archive] keep_days`` and ``[state] keep_days`` set (0, the default, keeps
everything), what is older than that and needs nobody any more goes:

* the archived copy of a file whose operations were all delivered (status ``applied``). Its ledger
  row stays, with ``pruned_at``, so the file is still never taken twice, ``archive list`` still
  tells its story and ``replay`` says why it cannot run it;
* outbox rows that were delivered (``done``); pending and failed ones stay until they are settled;
* journal entries, except those of files that still need someone (partial, quarantined, unfinished).

Quarantined copies are never removed: each waits for a person. One archived copy may serve
several ledger rows (the same bytes taken twice): it goes only when none of them needs it.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bridge import faults
from bridge.config import Config
from bridge.store import journal
from bridge.store.clock import now, stamp
from bridge.store.db import json_array, transaction
from bridge.sync import archive

log = logging.getLogger(__name__)
DAILY = 24 * 3600.0  # seconds between two prunes of the daemon


@dataclass(slots=True)
class Cutoffs:
    """ISO times (the journal's format): what is older may go; None keeps that kind forever."""

    archive: str | None
    state: str | None

    @property
    def active(self) -> bool:
        return self.archive is not None or self.state is not None


@dataclass(slots=True)
class Pruned:
    archived_copies: int = 0
    archived_bytes: int = 0
    outbox_rows: int = 0
    journal_entries: int = 0

    def as_json(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        return (f"{self.archived_copies} archived cop{'y' if self.archived_copies == 1 else 'ies'} "
                f"({self.archived_bytes} bytes), {self.outbox_rows} delivered outbox row(s), "
                f"{self.journal_entries} journal entr{'y' if self.journal_entries == 1 else 'ies'}")


def cutoffs(config: Config, before: str | None = None) -> Cutoffs:
    """From the configuration's keep_days, or one time for both (``before``, an ISO time)."""
    if before is not None:
        return Cutoffs(before, before)
    moment = datetime.now(UTC)

    def cut(days: float) -> str | None:
        return stamp(moment - timedelta(days=days)) if days > 0 else None

    return Cutoffs(cut(config.archive_keep_days), cut(config.state_keep_days))


def prune(conn: sqlite3.Connection, archive_dir: Path, limits: Cutoffs, *, dry_run: bool = False) -> Pruned:
    """Remove what ``limits`` lets go (see the module docstring); with dry_run only count it."""
    result = Pruned()
    if limits.archive is not None:
        _prune_archive(conn, archive_dir, limits.archive, result, dry_run)
    if limits.state is not None:
        _prune_state(conn, limits.state, result, dry_run)
    if not dry_run and (result.archived_copies or result.outbox_rows or result.journal_entries):
        with transaction(conn):
            journal.write(conn, journal.Entry("prune", "ok", f"retention removed {result.describe()}",
                                              detail={"archive_before": limits.archive, "state_before": limits.state,
                                                      **result.as_json()}))
        log.info("retention.pruned %s", result.describe())
    return result


def _prune_archive(conn: sqlite3.Connection, archive_dir: Path, before: str, result: Pruned, dry_run: bool) -> None:
    # Under the archive's lock: a file being taken right now may be finding one of these very
    # copies already stored (archive.store) and is about to point its ledger row at it.
    with archive.locked(archive_dir) if not dry_run else nullcontext():
        rows = conn.execute("SELECT id, archive_path FROM files WHERE status IN ('applied', 'unpacked')"
                            " AND archive_path IS NOT NULL AND updated_at < ? ORDER BY id", (before,)).fetchall()
        if not rows:
            _remove_orphans(conn, archive_dir, result, dry_run)
            return
        # As JSON arrays (db.json_array), not one SQL variable each: the first prune of a busy daemon's
        # year may cover more files than SQLite allows variables in a statement (32,766 by default).
        ids = json_array([file_id for file_id, _ in rows])
        paths = sorted({path for _, path in rows})
        # A copy another ledger row still points to (the same bytes taken again, later) stays.
        kept = {path for (path,) in conn.execute(
            "SELECT DISTINCT archive_path FROM files WHERE archive_path IN (SELECT value FROM json_each(?))"
            " AND id NOT IN (SELECT value FROM json_each(?))", (json_array(paths), ids))}
        doomed = [Path(path) for path in paths if path not in kept]
        result.archived_copies = len(doomed)
        result.archived_bytes = sum(_size(path) for path in doomed)
        if dry_run:
            return
        stamp = now()
        # Synced before any copy goes: under synchronous=NORMAL a power cut could undo the commit and
        # leave rows pointing at copies already deleted.
        with transaction(conn, durable=True):
            conn.execute("UPDATE files SET archive_path = NULL, pruned_at = ? WHERE id IN (SELECT value FROM json_each(?))",
                         (stamp, ids))
        faults.checkpoint("pruned")
        for path in doomed:  # after the commit: a crash in between leaves a copy behind, never a dangling row
            _unlink(path)
        # ... and the copies an earlier prune left behind that way go now.
        _remove_orphans(conn, archive_dir, result, dry_run)


def _remove_orphans(conn: sqlite3.Connection, archive_dir: Path, result: Pruned, dry_run: bool) -> None:
    """Copies whose rows were all pruned but which are still on disk: a prune killed between its commit
    and its unlinks left them, and no row points at them any more, so nothing else would ever remove them.
    A copy is kept while any row points at it, and one no pruned row knows (a take killed between storing
    its copy and recording it) is left to that take. Under the archive's lock (the caller's)."""
    copies = {p.name.split(".", 1)[0]: p for p in archive_dir.glob("??/*") if p.is_file()}
    if not copies:
        return
    shas = json_array(sorted(copies))
    orphans = [sha for (sha,) in conn.execute(
        "SELECT DISTINCT sha256 FROM files WHERE sha256 IN (SELECT value FROM json_each(?)) AND pruned_at IS NOT NULL"
        " AND sha256 NOT IN (SELECT sha256 FROM files WHERE archive_path IS NOT NULL"
        " AND sha256 IN (SELECT value FROM json_each(?)))", (shas, shas))]
    for sha in orphans:
        path = copies[sha]
        result.archived_copies += 1
        result.archived_bytes += _size(path)
        if not dry_run:
            _unlink(path)


def _prune_state(conn: sqlite3.Connection, before: str, result: Pruned, dry_run: bool) -> None:
    outbox_where = "status = 'done' AND done_at < ?"
    # Entries about nothing in particular (a prune, an order) or about a file that is settled.
    journal_where = ("at < ? AND (file_id IS NULL OR file_id IN"
                     " (SELECT id FROM files WHERE status IN ('applied', 'unpacked')))")
    if dry_run:
        result.outbox_rows = conn.execute(f"SELECT COUNT(*) FROM outbox WHERE {outbox_where}", (before,)).fetchone()[0]
        result.journal_entries = conn.execute(f"SELECT COUNT(*) FROM journal WHERE {journal_where}",
                                              (before,)).fetchone()[0]
        return
    with transaction(conn):
        result.outbox_rows = conn.execute(f"DELETE FROM outbox WHERE {outbox_where}", (before,)).rowcount
        result.journal_entries = conn.execute(f"DELETE FROM journal WHERE {journal_where}", (before,)).rowcount


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        return
    except OSError as exc:  # read-only archive, permissions: the row is pruned, the bytes stay
        log.error("retention.unlink_failed path=%s error=%s", path, exc)
        return
    try:
        os.rmdir(path.parent)  # the <sha[:2]> folder, once empty
    except OSError:
        pass
