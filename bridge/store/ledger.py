"""The file ledger: which files were taken, what became of them.

Statuses: claimed -> archived -> committed (its operations are in the outbox)
-> applied (all delivered) or partial (some failed for good); quarantined
when the file was refused. A file is claimed under a key computed once from
its content, source and name, so the same file is never processed twice.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Any

from bridge.store.clock import now

FINAL = ("applied", "partial", "quarantined")


@dataclass(slots=True)
class FileRow:
    id: int
    claim_key: str
    source: str
    name: str
    sha256: str
    size: int
    received_at: str
    status: str
    archive_path: str | None
    kind: str | None
    catalog_id: str | None
    full_catalog: bool
    deactivation: str | None
    counts: dict[str, Any]
    plan: dict[str, Any]
    error: str | None
    replay_of: int | None
    updated_at: str
    pruned_at: str | None  # when retention removed the archived copy (archive_path is None since)

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "sha256": self.sha256, "size": self.size,
                "received_at": self.received_at, "status": self.status, "source": self.source,
                "kind": self.kind, "counts": self.counts, "plan": self.plan, "error": self.error,
                "archive_path": self.archive_path, "replay_of": self.replay_of, "updated_at": self.updated_at,
                "pruned_at": self.pruned_at}


_COLUMNS = ("id, claim_key, source, name, sha256, size, received_at, status, archive_path, kind, catalog_id, "
            "full_catalog, deactivation, counts, plan, error, replay_of, updated_at, pruned_at")


def _row(values: tuple[Any, ...]) -> FileRow:
    row = FileRow(*values)
    row.full_catalog = bool(row.full_catalog)
    row.counts = json.loads(row.counts) if row.counts else {}
    row.plan = json.loads(row.plan) if row.plan else {}
    return row


def by_claim(conn: sqlite3.Connection, claim_key: str) -> FileRow | None:
    found = conn.execute(f"SELECT {_COLUMNS} FROM files WHERE claim_key = ?", (claim_key,)).fetchone()
    return _row(found) if found else None


def unfinished_replay(conn: sqlite3.Connection, replay_of: int, sha256: str) -> FileRow | None:
    """A replay of ``replay_of`` (these bytes) that a crash interrupted before its outcome was committed."""
    found = conn.execute(f"SELECT {_COLUMNS} FROM files WHERE replay_of = ? AND sha256 = ? AND status IN"
                         " ('claimed', 'archived') ORDER BY id LIMIT 1", (replay_of, sha256)).fetchone()
    return _row(found) if found else None


def get(conn: sqlite3.Connection, file_id: int) -> FileRow | None:
    found = conn.execute(f"SELECT {_COLUMNS} FROM files WHERE id = ?", (file_id,)).fetchone()
    return _row(found) if found else None


def all_files(conn: sqlite3.Connection) -> list[FileRow]:
    return [_row(r) for r in conn.execute(f"SELECT {_COLUMNS} FROM files ORDER BY id")]


def claim(conn: sqlite3.Connection, *, claim_key: str, source: str, name: str, sha256: str, size: int,
          replay_of: int | None = None) -> FileRow:
    stamp = now()
    conn.execute("INSERT INTO files (claim_key, source, name, sha256, size, received_at, status, replay_of, updated_at)"
                 " VALUES (?,?,?,?,?,?,?,?,?)", (claim_key, source, name, sha256, size, stamp, "claimed", replay_of, stamp))
    row = by_claim(conn, claim_key)
    assert row is not None
    return row


def update(conn: sqlite3.Connection, file_id: int, **fields: Any) -> None:
    for key in ("counts", "plan"):
        if key in fields and not isinstance(fields[key], str):
            fields[key] = json.dumps(fields[key], ensure_ascii=False)
    if "full_catalog" in fields:
        fields["full_catalog"] = int(bool(fields["full_catalog"]))
    fields["updated_at"] = now()
    assignments = ", ".join(f"{k} = ?" for k in fields)
    conn.execute(f"UPDATE files SET {assignments} WHERE id = ?", (*fields.values(), file_id))


def status_counts(conn: sqlite3.Connection) -> dict[str, int]:
    return dict(conn.execute("SELECT status, COUNT(*) FROM files GROUP BY status").fetchall())
