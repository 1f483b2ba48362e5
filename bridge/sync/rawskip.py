"""Skip goods and offers whose XML is what was last sent, before they are checked or built.

1C sends the whole catalog again and again with only a few records changed.
The digest of a record's bytes (keyed by the mapping rules and by the names
the record's payload depends on) tells an unchanged record from its XML
alone, so an unchanged re-export costs a parse, a hash and a lookup per
record: no schema check (the same bytes passed it when they were first
sent), no building, no mapping.
"""

from __future__ import annotations

import hashlib
import sqlite3
from array import array
from bisect import bisect_left
from collections import defaultdict
from typing import Any

from lxml import etree

from bridge import __version__
from bridge.commerceml.header import Header
from bridge.store import state
from bridge.store.db import transaction
from bridge.store.outbox import dumps
from bridge.sync.names import Names

# The classifier kinds each record's CRM payload is made from: a renamed group
# changes what an unchanged product means, a renamed price type an offer.
DEPENDS = {"product": ("group", "property", "unit"), "offer": ("price_type", "warehouse", "unit")}
# Until this many lookups a file asks the database per record (a changes-only
# package of ten offers must not load a million digests); after that it loads
# the kind's digests once, which costs less than the lookups still to come.
BULK_AFTER = 2000
SEEN_CHUNK = 2000


class DigestIndex:
    """The stored digests of one kind, 16 bytes a record: sorted keys, bisected.

    Keys are the process's string hash of the Ид and values the first 64 bits
    of the digest; a false "unchanged" would need both to collide.
    """

    def __init__(self, conn: sqlite3.Connection, entity: str) -> None:
        # Key and value packed in one int: sorting ints costs half of sorting pairs.
        packed = sorted([(hash(external_id) & _MASK) << 64 | int(fingerprint[:16], 16)
                         for external_id, fingerprint in conn.execute(
                             "SELECT external_id, fingerprint FROM records WHERE entity = ? AND fingerprint IS NOT NULL",
                             (entity,))])
        self.keys = array("Q", [item >> 64 for item in packed])
        self.values = array("Q", [item & _MASK for item in packed])

    def matches(self, external_id: str, digest: bytes) -> bool:
        key = hash(external_id) & _MASK
        at = bisect_left(self.keys, key)
        return at < len(self.keys) and self.keys[at] == key and self.values[at] == int.from_bytes(digest[:8], "big")


_MASK = (1 << 64) - 1


class RawSkip:
    """The reader's ``skip`` hook for one file; keeps the digests of the records it lets through."""

    def __init__(self, conn: sqlite3.Connection, file_id: int, names: Names, rules: Any,
                 plan: defaultdict[str, dict[str, int]]) -> None:
        self.conn = conn
        self.file_id = file_id
        self.names = names
        self.rules = (__version__ + dumps(rules.__class__.__name__)
                      + dumps({k: getattr(rules, k) for k in rules.__slots__})).encode("utf-8")
        self.plan = plan
        self.header: Header | None = None
        self.digests: dict[tuple[str, str], str] = {}  # records let through: stored once they are staged
        self._hashers: dict[str, tuple[int, Any]] = {}  # kind -> (names generation, keyed hasher)
        self._indexes: dict[str, DigestIndex] = {}
        self._lookups = 0
        self._seen: list[str] = []

    def __call__(self, kind: str, record_id: str, element: Any) -> bool:
        # UTF-8 serialisation of the subtree: the default (ASCII with character references for
        # every Cyrillic letter) costs five times as much.
        hasher = self._hasher(kind).copy()
        hasher.update(etree.tostring(element, encoding="utf-8", with_tail=False))
        digest = hasher.digest()[:16]
        if not self._unchanged(kind, record_id, digest):
            self.digests[(kind, record_id)] = digest.hex()
            return False
        self.plan[kind]["unchanged"] += 1
        if kind == "product" and self.header is not None and self.header.is_full_catalog:
            self._seen.append(record_id)  # a full export lists it: it must not be deactivated
            if len(self._seen) >= SEEN_CHUNK:
                self.flush_seen()
        return True

    def _hasher(self, kind: str) -> Any:
        generation, hasher = self._hashers.get(kind, (-1, None))
        if generation != self.names.generation:
            # SHA-256 runs in the CPU's SHA instructions: twice as fast here as BLAKE2 in software.
            # The salt goes in first, once; each record's hash starts from a copy.
            hasher = hashlib.sha256(self.rules + self.names.version(DEPENDS[kind]))
            self._hashers[kind] = (self.names.generation, hasher)
        return hasher

    def _unchanged(self, kind: str, record_id: str, digest: bytes) -> bool:
        index = self._indexes.get(kind)
        if index is None:
            self._lookups += 1
            if self._lookups <= BULK_AFTER:
                return state.fingerprint(self.conn, f"raw:{kind}", record_id) == digest.hex()
            index = self._indexes[kind] = DigestIndex(self.conn, f"raw:{kind}")
        return index.matches(record_id, digest)

    def flush_seen(self) -> None:
        if self._seen:
            with transaction(self.conn):
                state.mark_seen(self.conn, self.file_id, self._seen)
            self._seen = []
