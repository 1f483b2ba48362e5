"""The journal: every step of every file and record, for support to read.

Rows are appended inside the same transactions as the state changes they
describe, so the journal never claims something that did not happen.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from bridge.store.clock import now
from bridge.store.jsontext import compact



@dataclass(slots=True)
class Entry:
    step: str  # claim, archive, validate, map, commit, deliver, deactivate, apply, quarantine, replay, wait
    status: str  # ok, warning, error, skipped, waiting, refused
    message: str
    file_id: int | None = None
    entity: str | None = None
    external_id: str | None = None
    detail: dict[str, Any] | None = None


def write(conn: sqlite3.Connection, entry: Entry) -> None:
    write_many(conn, [entry])


def said(conn: sqlite3.Connection, entry: Entry) -> bool:
    """Whether the journal already holds this message about this record (found through its external id)."""
    if entry.external_id is None:
        return False
    return conn.execute("SELECT 1 FROM journal WHERE external_id = ? AND step = ? AND message = ? LIMIT 1",
                        (entry.external_id, entry.step, entry.message)).fetchone() is not None


def write_many(conn: sqlite3.Connection, entries: Iterable[Entry]) -> None:
    at = now()
    conn.executemany(
        "INSERT INTO journal (at, file_id, entity, external_id, step, status, message, detail) VALUES (?,?,?,?,?,?,?,?)",
        [(at, e.file_id, e.entity, e.external_id, e.step, e.status, e.message,
          compact(e.detail) if e.detail is not None else None) for e in entries])


def query(conn: sqlite3.Connection, *, file_id: int | None = None, external_id: str | None = None,
          since: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
    clauses, params = [], []
    if file_id is not None:
        clauses.append("file_id = ?")
        params.append(file_id)
    if external_id is not None:
        # A variant's journal belongs to its product too: 'p' also finds 'p#c'.
        clauses.append("(external_id = ? OR external_id LIKE ? ESCAPE '\\')")
        params += [external_id, external_id.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "#%"]
    if since is not None:
        clauses.append("at >= ?")
        params.append(since)
    sql = "SELECT id, at, file_id, entity, external_id, step, status, message, detail FROM journal"
    if clauses:
        sql += " WHERE " + " AND ".join(clauses)
    sql += " ORDER BY id"
    if limit:
        sql += f" LIMIT {int(limit)}"
    rows = conn.execute(sql, params).fetchall()
    keys = ("id", "at", "file_id", "entity", "external_id", "step", "status", "message", "detail")
    result = []
    for row in rows:
        item = dict(zip(keys, row))
        item["detail"] = json.loads(item["detail"]) if item["detail"] else None
        result.append(item)
    return result
