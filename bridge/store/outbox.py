"""The durable outbox of CRM operations.

Rows are staged while their file is being read (in the connection's
temporary staging_outbox) and become 'pending' outbox rows only when the whole
file has been read without a structural error (in the same transaction that
records their fingerprints), so nothing from a file that ends up in
quarantine ever reaches the CRM. Delivery is at least
once; every operation is an idempotent upsert, so a redelivery is harmless.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from bridge.crm.base import Operation
from bridge.store.clock import now
from bridge.store.db import json_array
from bridge.store.jsontext import canonical, loads


@dataclass(slots=True)
class Intent:
    """An operation the pipeline wants, with the state it implies."""

    entity: str  # what the fingerprint is about: product, price, stock, company, contact, deal
    kind: str  # the CRM operation kind (bridge.crm.base)
    external_id: str
    payload: dict[str, Any]
    match: dict[str, Any] | None = None
    create_only: list[str] | None = None
    catalog_id: str | None = None
    active: bool = True
    payload_json: str | None = field(default=None, repr=False, compare=False)  # serialised once, reused
    # Sent only when its record has a fingerprint already: it undoes an earlier one (a product an
    # offer's deletion mark deactivated), and costs nothing for the records it never concerned.
    only_if_known: bool = field(default=False, compare=False)

    def serialized(self) -> str:
        if self.payload_json is None:
            self.payload_json = dumps(self.payload)
        return self.payload_json

    def to_json(self) -> dict[str, Any]:
        return {"entity": self.entity, "kind": self.kind, "external_id": self.external_id, "payload": self.payload,
                "match": self.match, "create_only": self.create_only, "catalog_id": self.catalog_id,
                "active": self.active}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Intent:
        return cls(**data)


def dumps(value: Any) -> str:
    """Canonical (sorted, compact) so equal payloads are equal text."""
    return canonical(value)


def add(conn: sqlite3.Connection, file_id: int | None, intents: Iterable[Intent], status: str) -> int:
    """Enqueue ``intents`` as 'pending', or as 'staged' for the file being read (see db._STAGING)."""
    rows = [(i.kind, i.entity, i.external_id, i.serialized(), dumps(i.match) if i.match else None,
             dumps(i.create_only) if i.create_only else None) for i in intents]
    if not rows:
        return 0
    if status == "staged":
        conn.execute("INSERT INTO staging_outbox (file_id, kind, entity, external_id, payload, match, create_only,"
                     " created_at) SELECT ?, value->>0, value->>1, value->>2, value->>3, value->>4, value->>5, ?"
                     " FROM json_each(?)", (file_id, now(), json_array(rows)))
    else:
        conn.execute("INSERT INTO outbox (file_id, kind, entity, external_id, payload, match, create_only, status,"
                     " created_at) SELECT ?, value->>0, value->>1, value->>2, value->>3, value->>4, value->>5, ?, ?"
                     " FROM json_each(?)", (file_id, status, now(), json_array(rows)))
    return len(rows)


def release_staged(conn: sqlite3.Connection, file_id: int) -> int:
    """The file committed: its staged operations become pending, in the order they were staged."""
    released = conn.execute(
        "INSERT INTO outbox (file_id, kind, entity, external_id, payload, match, create_only, status, created_at)"
        " SELECT file_id, kind, entity, external_id, payload, match, create_only, 'pending', created_at"
        " FROM staging_outbox WHERE file_id = ? ORDER BY id", (file_id,)).rowcount
    conn.execute("DELETE FROM staging_outbox WHERE file_id = ?", (file_id,))
    return released


def discard_staged(conn: sqlite3.Connection, file_id: int) -> int:
    dropped = conn.execute("DELETE FROM staging_outbox WHERE file_id = ?", (file_id,)).rowcount
    # Rows an earlier schema staged in the outbox itself, left by an interrupted run.
    return dropped + conn.execute("DELETE FROM outbox WHERE file_id = ? AND status = 'staged'", (file_id,)).rowcount


@dataclass(slots=True)
class Pending:
    operation: Operation
    entity: str
    file_id: int | None
    attempts: int


def due(conn: sqlite3.Connection, limit: int, *, kinds: tuple[str, ...] | None = None,
        exclude: tuple[str, ...] = ()) -> list[Pending]:
    """Pending rows whose time has come, oldest first; ``kinds``/``exclude`` pick who carries them
    (the CRM adapter, or the writer of files for 1C)."""
    clauses, params = ["status = 'pending'", "next_attempt_at <= ?"], [time.time()]
    if kinds is not None:
        clauses.append(f"kind IN ({','.join('?' * len(kinds))})")
        params += kinds
    if exclude:
        clauses.append(f"kind NOT IN ({','.join('?' * len(exclude))})")
        params += exclude
    rows = conn.execute(
        "SELECT id, file_id, kind, entity, external_id, payload, match, create_only, attempts FROM outbox"
        f" WHERE {' AND '.join(clauses)} ORDER BY id LIMIT ?", (*params, limit)).fetchall()
    return [Pending(Operation(kind=r[2], external_id=r[4], payload=loads(r[5]),
                              match=loads(r[6]) if r[6] else None,
                              create_only=loads(r[7]) if r[7] else [], id=r[0], payload_text=r[5]),
                    entity=r[3], file_id=r[1], attempts=r[8]) for r in rows]


def mark_done(conn: sqlite3.Connection, ids: list[int]) -> None:
    # One statement for the batch: a delivery marks every operation it sends.
    if ids:
        conn.execute("UPDATE outbox SET status = 'done', done_at = ?, last_error = NULL"
                     " WHERE id IN (SELECT value FROM json_each(?))", (now(), json_array(ids)))


def supersede(conn: sqlite3.Connection, kind: str, external_id: str, reason: str) -> int:
    """Settle the pending operations of ``kind`` for ``external_id`` unsent: a newer one replaces them.
    For whole-document writes (an order file), where an older version sent last would win."""
    ids = [i for (i,) in conn.execute("SELECT id FROM outbox WHERE kind = ? AND external_id = ? AND status = 'pending'",
                                      (kind, external_id))]
    return settle_unsent(conn, ids, reason)


def settle_unsent(conn: sqlite3.Connection, ids: list[int], reason: str) -> int:
    """Pending operations that must not be sent any more: done, with ``reason`` kept as their last word."""
    cursor = conn.execute("UPDATE outbox SET status = 'done', done_at = ?, last_error = ? WHERE status = 'pending'"
                          " AND id IN (SELECT value FROM json_each(?))", (now(), reason, json_array(ids)))
    return cursor.rowcount


def mark_failed(conn: sqlite3.Connection, failures: list[tuple[int, str]]) -> None:
    stamp = now()
    conn.executemany("UPDATE outbox SET status = 'failed', done_at = ?, last_error = ?, attempts = attempts + 1"
                     " WHERE id = ?", [(stamp, error, i) for i, error in failures])


def postpone(conn: sqlite3.Connection, retries: list[tuple[int, str, float]]) -> None:
    conn.executemany("UPDATE outbox SET attempts = attempts + 1, last_error = ?, next_attempt_at = ? WHERE id = ?",
                     [(error, at, i) for i, error, at in retries])


def depth(conn: sqlite3.Connection) -> dict[str, int]:
    return dict(conn.execute("SELECT status, COUNT(*) FROM outbox WHERE status IN ('pending','staged','failed')"
                             " GROUP BY status").fetchall())


def refused_of_file(conn: sqlite3.Connection, file_id: int) -> list[tuple[str, str]]:
    """(entity, external_id) of the file's operations the CRM refused for good."""
    return conn.execute("SELECT entity, external_id FROM outbox WHERE file_id = ? AND status = 'failed'",
                        (file_id,)).fetchall()


def open_for_file(conn: sqlite3.Connection, file_id: int) -> dict[str, int]:
    return dict(conn.execute("SELECT status, COUNT(*) FROM outbox WHERE file_id = ? GROUP BY status",
                             (file_id,)).fetchall())
