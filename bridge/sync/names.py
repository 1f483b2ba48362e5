"""Names of classifier entries (price types, warehouses, properties, groups).

Package files refer to them by Ид: a prices file names price types declared
in the offers file before it, an import file names groups declared in the
classifier file. The current file's own entries win, then the state database.
"""

from __future__ import annotations

import hashlib
import sqlite3
from typing import Any

from bridge.commerceml.records import Group, PriceType, Property, Record, Unit, Warehouse
from bridge.store import state
from bridge.store.outbox import dumps

DictionaryEntry = tuple[str, str, str, dict[str, Any] | None]


class Names:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.pending: dict[tuple[str, str], DictionaryEntry] = {}  # this file's entries, written at commit
        self._cache: dict[tuple[str, str], str | None] = {}
        self._values: dict[str, dict[str, str]] = {}
        self.generation = 0  # grows with every entry learned: a cached version() is stale when it moved

    def learn(self, record: Record) -> bool:
        """Keep a classifier record; False when the record is not a classifier entry."""
        entry: DictionaryEntry
        if isinstance(record, PriceType):
            entry = ("price_type", record.id, record.name, {"currency": record.currency})
        elif isinstance(record, Warehouse):
            entry = ("warehouse", record.id, record.name, {"address": record.address})
        elif isinstance(record, Property):
            # Merged into what is known: a changes-only classifier may list a property (renamed, say)
            # without its ВариантыЗначений, and goods sent before or after still name those values
            # by Ид. A value 1C no longer offers costs a line here and is never looked up.
            values = {**self._known_values(record.id), **record.values}
            entry = ("property", record.id, record.name, {"values": values, "type": record.value_type})
            self._values[record.id] = values
        elif isinstance(record, Group):
            entry = ("group", record.id, record.name, {"parent": record.parent_id})
        elif isinstance(record, Unit):
            entry = ("unit", record.id, record.name or record.short_name or record.code or record.id, {"code": record.code})
        else:
            return False
        self.pending[(entry[0], entry[1])] = entry
        self._cache[(entry[0], entry[1])] = entry[2]
        self.generation += 1
        return True

    def version(self, entities: tuple[str, ...]) -> bytes:
        """A digest of every name of these kinds (state and this file).

        Goods and offers are skipped by the digest of their XML only while the
        names they depend on stay the same: a renamed price type changes what an
        unchanged offer means. Only the kinds a record uses count, so the price
        types an offers file brings do not make every product of the next
        catalog look changed.
        """
        marks = ",".join("?" * len(entities))
        rows = {(e, i): (n, d) for e, i, n, d in self.conn.execute(
            f"SELECT entity, external_id, name, data FROM dictionary WHERE entity IN ({marks})", entities)}
        for key, (entity, _, name, data) in self.pending.items():
            if entity in entities:
                rows[key] = (name, dumps(data) if data is not None else None)
        digest = hashlib.blake2b(digest_size=16)
        for key in sorted(rows):
            digest.update(repr((key, rows[key])).encode("utf-8"))
        return digest.digest()

    def name(self, entity: str, external_id: str) -> str | None:
        key = (entity, external_id)
        if key not in self._cache:
            self._cache[key] = state.dictionary_names(self.conn, entity, [external_id]).get(external_id)
        return self._cache[key]

    def property_value(self, property_id: str, raw: str) -> str:
        """Resolve a Справочник value id declared in another file."""
        return self._known_values(property_id).get(raw, raw)

    def _known_values(self, property_id: str) -> dict[str, str]:
        if property_id not in self._values:
            data = state.dictionary_data(self.conn, "property", property_id) or {}
            self._values[property_id] = data.get("values") or {}
        return self._values[property_id]

    def flush(self) -> list[DictionaryEntry]:
        entries = list(self.pending.values())
        self.pending.clear()
        return entries
