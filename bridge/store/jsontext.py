"""JSON text for the state database: fingerprints, outbox payloads, bulk statements, the journal.

Every record of a catalog is encoded at least twice (its fingerprint and its outbox row)
and decoded once more on delivery, so the encoder is orjson, which does it five times
faster than the standard library. Its output is what ``json`` writes with
``ensure_ascii=False`` and compact separators. Whatever orjson refuses (integers beyond
64 bits, dictionaries with keys that are not text) goes through the standard library
instead, so every value that encoded before still does.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

# Dates, times and dataclasses go to ``default`` (str) as they did with the standard library,
# instead of orjson's own forms: the same value must keep giving the same text.
_PASSTHROUGH = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
_SORTED = _PASSTHROUGH | orjson.OPT_SORT_KEYS
_CANONICAL = json.JSONEncoder(ensure_ascii=False, sort_keys=True, separators=(",", ":"), default=str)
_COMPACT = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str)


def canonical(value: Any) -> str:
    """Sorted and compact: equal values give equal text (fingerprints compare it)."""
    try:
        return orjson.dumps(value, default=str, option=_SORTED).decode("utf-8")
    except TypeError:
        return _CANONICAL.encode(value)


def compact(value: Any) -> str:
    """Compact, in the value's own order (rows of a bulk statement, journal details)."""
    try:
        return orjson.dumps(value, default=str, option=_PASSTHROUGH).decode("utf-8")
    except TypeError:
        return _COMPACT.encode(value)


def loads(text: str | bytes) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)  # raises the standard error, or reads what only it accepts
