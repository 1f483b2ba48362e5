"""What the bridge knows about each 1C record: fingerprints, CRM ids, names.

* records    - the id map (1C Ид -> CRM id per entity) and the fingerprint of
               what was last enqueued, so unchanged records are skipped.
* staging_records (temporary, per connection) - the same for the file being
               read; merged into records when
               the file commits, dropped when it is quarantined.
* dictionary - classifier entries (price types, warehouses, properties,
               groups, units) that later package files refer to by Ид.
* waiting    - operations that need something not known yet (an offer whose
               product has not arrived); released when it arrives.
* seen       - products listed by a full catalog export, for deactivation.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any

from bridge.store.clock import now
from bridge.store.db import json_array
from bridge.store.outbox import Intent, dumps

_CHUNK = 500  # SQLite's variable limit is far above; this keeps statements short


def _chunks(items: Sequence[str]) -> Iterable[Sequence[str]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start:start + _CHUNK]


def fingerprints(conn: sqlite3.Connection, entity: str, ids: Sequence[str], file_id: int | None) -> dict[str, str | None]:
    """Current fingerprint per id (staged in this file wins); absent ids are unknown records."""
    result: dict[str, str | None] = {}
    for part in _chunks(list(dict.fromkeys(ids))):
        marks = ",".join("?" * len(part))
        result.update(conn.execute(f"SELECT external_id, fingerprint FROM records WHERE entity = ? AND external_id IN ({marks})",
                                   (entity, *part)).fetchall())
        if file_id is not None:
            result.update(conn.execute(f"SELECT external_id, fingerprint FROM staging_records WHERE file_id = ? AND entity = ?"
                                       f" AND external_id IN ({marks})", (file_id, entity, *part)).fetchall())
    return result


PRODUCT_ENTITIES = ("product", "variant")  # a variant made from an offer is a product too


def known_products(conn: sqlite3.Connection, ids: Sequence[str], file_id: int | None) -> set[str]:
    known: set[str] = set()
    wanted = list(dict.fromkeys(ids))
    for entity in PRODUCT_ENTITIES:  # an id known as a product is not looked for among the variants
        if not wanted:
            break
        found = fingerprints(conn, entity, wanted, file_id)
        known.update(found)
        wanted = [i for i in wanted if i not in found]
    return known


def _rows(intents: Iterable[tuple[Intent, str]]) -> list[tuple[str, str, str, str | None, int]]:
    """(entity, external_id, fingerprint, catalog_id, active): what records and staging keep of an intent."""
    return [(i.entity, i.external_id, fp, i.catalog_id, int(i.active)) for i, fp in intents]


# How a fingerprint row goes into records, from remember and from merge_staged alike.
_INTO_RECORDS = "INSERT INTO records (entity, external_id, fingerprint, catalog_id, active, updated_at)"
_ON_CONFLICT = (" ON CONFLICT(entity, external_id) DO UPDATE SET fingerprint = excluded.fingerprint,"
                " catalog_id = COALESCE(excluded.catalog_id, records.catalog_id), active = excluded.active,"
                " updated_at = excluded.updated_at")


def stage(conn: sqlite3.Connection, file_id: int, intents: Iterable[tuple[Intent, str]]) -> None:
    rows = _rows(intents)
    if rows:  # one statement over a JSON array (db.json_array); the last of two rows for a record wins
        conn.execute("INSERT OR REPLACE INTO staging_records (file_id, entity, external_id, fingerprint, catalog_id, active)"
                     " SELECT ?, value->>0, value->>1, value->>2, value->>3, value->>4 FROM json_each(?)",
                     (file_id, json_array(rows)))


def remember(conn: sqlite3.Connection, intents: Iterable[tuple[Intent, str]]) -> None:
    """Record fingerprints directly (operations enqueued outside a file's reading: offers that waited)."""
    rows = _rows(intents)
    if not rows:
        return
    # One statement over a JSON array (db.json_array). Rows are applied in order, so the last of two
    # fingerprints for one record wins, as it did.
    conn.execute(_INTO_RECORDS + " SELECT value->>0, value->>1, value->>2, value->>3, value->>4, ?"
                 " FROM json_each(?) WHERE true" + _ON_CONFLICT, (now(), json_array(rows)))


def merge_staged(conn: sqlite3.Connection, file_id: int) -> None:
    """Move the file's staged fingerprints into records, in key order.

    records is keyed by 1C's random GUIDs: rows inserted as they come land on pages all over
    the table, and each commit writes every page it touched. In key order each page is written
    once (740,000 fingerprints of a 100k catalog: 8.6 s in one sorted statement, 62 s in
    chunks of 11,400 rows committed one by one, measured in a scratch database).
    """
    conn.execute(_INTO_RECORDS + " SELECT entity, external_id, fingerprint, catalog_id, active, ?"
                 " FROM staging_records WHERE file_id = ? ORDER BY entity, external_id" + _ON_CONFLICT,
                 (now(), file_id))
    conn.execute("DELETE FROM staging_records WHERE file_id = ?", (file_id,))


def discard_file(conn: sqlite3.Connection, file_id: int) -> None:
    for table in ("staging_records", "waiting", "seen"):
        conn.execute(f"DELETE FROM {table} WHERE file_id = ?", (file_id,))


RAW_ENTITIES = ("raw:product", "raw:offer")  # digests of the XML of goods and offers


# The fingerprints behind an outbox entity that stands for several (an offer's set_offer).
PARTS = {"offer": ("price", "stock")}


def forget_fingerprint(conn: sqlite3.Connection, entity: str, external_id: str) -> None:
    """After a permanent failure or a deactivation: the next export must send the record again,
    even if its XML is the same as before."""
    entities = (*PARTS.get(entity, (entity,)), *RAW_ENTITIES)
    conn.execute(f"UPDATE records SET fingerprint = NULL WHERE external_id = ? AND entity IN ({','.join('?' * len(entities))})",
                 (external_id, *entities))


def fingerprint(conn: sqlite3.Connection, entity: str, external_id: str) -> str | None:
    row = conn.execute("SELECT fingerprint FROM records WHERE entity = ? AND external_id = ?",
                       (entity, external_id)).fetchone()
    return row[0] if row else None


def set_crm_ids(conn: sqlite3.Connection, rows: list[tuple[str, str, str]]) -> None:
    """rows: (crm_id, entity, external_id).

    An operation of a file still being read may be delivered before the file's fingerprints
    are merged (merge_staged): its row is created here, and the merge fills in the rest.
    """
    if rows:
        conn.execute("INSERT INTO records (entity, external_id, crm_id, updated_at)"
                     " SELECT value->>1, value->>2, value->>0, ? FROM json_each(?) WHERE true"
                     " ON CONFLICT(entity, external_id) DO UPDATE SET crm_id = excluded.crm_id",
                     (now(), json_array(rows)))


def crm_id(conn: sqlite3.Connection, entity: str, external_id: str) -> str | None:
    row = conn.execute("SELECT crm_id FROM records WHERE entity = ? AND external_id = ?", (entity, external_id)).fetchone()
    return row[0] if row else None


# -- dictionary ---------------------------------------------------------------
def put_dictionary(conn: sqlite3.Connection, entries: Iterable[tuple[str, str, str, dict[str, Any] | None]]) -> None:
    conn.executemany("INSERT OR REPLACE INTO dictionary (entity, external_id, name, data) VALUES (?,?,?,?)",
                     [(e, i, n, dumps(d) if d is not None else None) for e, i, n, d in entries])


def dictionary_names(conn: sqlite3.Connection, entity: str, ids: Sequence[str]) -> dict[str, str]:
    result: dict[str, str] = {}
    for part in _chunks(list(dict.fromkeys(ids))):
        marks = ",".join("?" * len(part))
        result.update(conn.execute(f"SELECT external_id, name FROM dictionary WHERE entity = ? AND external_id IN ({marks})",
                                   (entity, *part)).fetchall())
    return result


def dictionary_data(conn: sqlite3.Connection, entity: str, external_id: str) -> dict[str, Any] | None:
    row = conn.execute("SELECT data FROM dictionary WHERE entity = ? AND external_id = ?", (entity, external_id)).fetchone()
    return json.loads(row[0]) if row and row[0] else None


# -- waiting ------------------------------------------------------------------
def _part(record: dict[str, Any]) -> str:
    """What of an offer a waiting row carries: package files split one offer into its card,
    prices and stock (offers, prices, rests), and each part waits on its own."""
    parts = ["card" if record.get("name") or record.get("characteristics") else "",
             "prices" if record.get("prices") else "",
             "stock" if record.get("stock") is not None or record.get("quantity") is not None else ""]
    return "+".join(parts)


def wait(conn: sqlite3.Connection, file_id: int, rows: Iterable[tuple[str, str, dict[str, Any]]]) -> None:
    """rows: (external_id, need such as 'product:<Ид>', the record as JSON, mapped again once the need is met).

    A newer row for the same offer and part replaces the older one: 1C sends the same offers
    again with every exchange while their goods are missing, and a replay sends them once more;
    only the latest of each needs to wait.
    """
    latest = {(ext, _part(record)): (ext, need, record) for ext, need, record in rows}
    if not latest:
        return
    superseded = []
    for part in _chunks(list({ext for ext, _ in latest})):
        marks = ",".join("?" * len(part))
        for row_id, ext, record in conn.execute(
                f"SELECT id, external_id, record FROM waiting WHERE external_id IN ({marks})", tuple(part)):
            if (ext, _part(json.loads(record))) in latest:
                superseded.append((row_id,))
    conn.executemany("DELETE FROM waiting WHERE id = ?", superseded)
    stamp = now()
    conn.executemany("INSERT INTO waiting (file_id, external_id, need, record, since) VALUES (?,?,?,?,?)",
                     [(file_id, ext, need, dumps(record), stamp) for ext, need, record in latest.values()])


def waiting_rows(conn: sqlite3.Connection) -> list[tuple[int, int, str, str, dict[str, Any]]]:
    """Waiting rows of committed files, oldest first: (id, file_id, external_id, need, record)."""
    rows = conn.execute("SELECT w.id, w.file_id, w.external_id, w.need, w.record FROM waiting w"
                        " JOIN files f ON f.id = w.file_id WHERE f.status IN ('committed','applied','partial')"
                        " ORDER BY w.id").fetchall()
    return [(r[0], r[1], r[2], r[3], json.loads(r[4])) for r in rows]


def unwait(conn: sqlite3.Connection, ids: list[int]) -> None:
    conn.executemany("DELETE FROM waiting WHERE id = ?", [(i,) for i in ids])


def rewait(conn: sqlite3.Connection, rows: list[tuple[str, int]]) -> None:
    conn.executemany("UPDATE waiting SET need = ? WHERE id = ?", rows)


def waiting_count(conn: sqlite3.Connection) -> int:
    return conn.execute("SELECT COUNT(*) FROM waiting").fetchone()[0]


# -- seen (full exports) --------------------------------------------------------
def mark_seen(conn: sqlite3.Connection, file_id: int, ids: Iterable[str]) -> None:
    listed = list(ids)
    if listed:
        conn.execute("INSERT OR IGNORE INTO seen (file_id, external_id) SELECT ?, value FROM json_each(?)",
                     (file_id, json_array(listed)))
