"""A local CRM in its own SQLite file: the default target, dry runs and trials.

It behaves like a CRM as far as the bridge can tell: it hands out its own
integer ids, keeps what each operation says, refuses what a CRM would refuse,
and logs every write it receives in ``calls`` (even writes that change
nothing: the bridge must not send unchanged records, and the log proves it).

Writes merge: a payload key that is absent leaves the stored value alone, so
a partial package (offers without names, say) never blanks a record.
"""

from __future__ import annotations

import functools
import json
import math
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar

import orjson

from bridge.crm import sandbox_deals
from bridge.crm import values as checks
from bridge.crm.values import Refused
from bridge.crm.base import (DEACTIVATE_PRODUCT, LINK_DEAL, SET_OFFER, SET_PRICES, SET_STOCK, UPSERT_COMPANY, UPSERT_CONTACT,
                             UPSERT_DEAL, UPSERT_PRODUCT, CrmAdapter, DealSnapshot, Operation, Result)
from bridge.errors import PermanentError, TransientError, UserError
from bridge.private_files import create_owner_only

SCHEMA_VERSION = 2
# How each schema version is reached from the one before (the first is SCHEMA itself).
MIGRATIONS = {2: sandbox_deals.MIGRATION_2}
# Marks the file as ours, so pointing crm.path at the state database (or any
# other SQLite file) is refused instead of sprinkling tables into it.
APPLICATION_ID = int.from_bytes(b"1Csb", "big")

SCHEMA = """
CREATE TABLE products (
    id INTEGER PRIMARY KEY,
    external_id TEXT UNIQUE,              -- NULL: made by hand in the CRM, adoptable through match
    parent_external_id TEXT,              -- a variant; not checked, as offers may precede their goods
    name TEXT NOT NULL,
    sku TEXT,
    barcode TEXT,
    active INTEGER NOT NULL DEFAULT 1 CHECK (active IN (0, 1)),
    quantity TEXT NOT NULL DEFAULT '0',   -- decimals are canonical TEXT: exact, and equal when equal
    data TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX products_sku ON products(sku);
CREATE INDEX products_barcode ON products(barcode);
CREATE TABLE prices (
    product_id INTEGER NOT NULL REFERENCES products(id) ON DELETE CASCADE,
    price_type TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (product_id, price_type)
) WITHOUT ROWID;
CREATE TABLE stock (
    product_id INTEGER NOT NULL REFERENCES products(id) ON DELETE CASCADE,
    warehouse TEXT NOT NULL,
    quantity TEXT NOT NULL,
    PRIMARY KEY (product_id, warehouse)
) WITHOUT ROWID;
CREATE TABLE companies (
    id INTEGER PRIMARY KEY,
    external_id TEXT UNIQUE,
    name TEXT NOT NULL,
    inn TEXT,
    kpp TEXT,
    full_name TEXT,
    data TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX companies_inn ON companies(inn, kpp);
-- Other 1C ids of a company found by ИНН/КПП: both ids must keep hitting it.
CREATE TABLE company_aliases (
    external_id TEXT PRIMARY KEY,
    company_id INTEGER NOT NULL REFERENCES companies(id) ON DELETE CASCADE
) WITHOUT ROWID;
CREATE INDEX company_aliases_company ON company_aliases(company_id);
CREATE TABLE contacts (
    id INTEGER PRIMARY KEY,
    external_id TEXT UNIQUE,
    name TEXT NOT NULL,
    email TEXT,
    phone TEXT,
    data TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE deals (
    id INTEGER PRIMARY KEY,
    external_id TEXT UNIQUE,
    number TEXT NOT NULL,
    date TEXT,
    amount TEXT,
    currency TEXT,
    company_external_id TEXT,             -- as sent; company_id is what it resolved to
    company_id INTEGER REFERENCES companies(id),
    stage TEXT,
    data TEXT NOT NULL DEFAULT '{}'       -- facts, lines and anything else
);
CREATE TABLE calls (
    id INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
    kind TEXT NOT NULL,
    external_id TEXT NOT NULL,
    payload TEXT NOT NULL,
    match TEXT,
    create_only TEXT,
    ok INTEGER NOT NULL,
    outcome TEXT NOT NULL,                -- created, updated, unchanged or failed
    crm_id TEXT,
    error TEXT
);
"""

PRODUCT_KEYS = ("external_id", "parent_external_id", "name", "sku", "barcode", "active", "prices", "stock", "quantity")
COMPANY_KEYS = ("external_id", "name", "inn", "kpp")
CONTACT_KEYS = ("external_id", "name", "email", "phone")
DEAL_KEYS = ("id", "external_id", "title", "number", "date", "amount", "currency", "company_external_id", "stage",
             "facts", "order_external_id", "number_1c", "paid", "shipped")


def _statements(script: str) -> Iterator[str]:
    """The statements of ``script``, line by line until SQLite calls one complete (comments may hold ';')."""
    pending = ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            yield pending
            pending = ""
    if pending.strip():
        raise ValueError(f"incomplete SQL statement: {pending!r}")


class _HalfWritten(Exception):
    """An operation failed after it had written: only a savepoint per operation can undo that."""


# ---------------------------------------------------------------- values

def _flag(key: str, value: Any) -> int:
    return int(checks.flag(key, value))  # stored as SQLite's 0/1


# Text that is already canonical decimal TEXT: what the pipeline sends (bridge.sync.mapping.number),
# so most values skip the round trip through Decimal, which would give them back unchanged.
_CANONICAL_DECIMAL = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]*[1-9])?")


def decimal_text(key: str, value: Any, name: str | None = None) -> str:
    """A JSON number or decimal string as canonical decimal TEXT ('12.5', '-3', '0').

    A refusal calls the value ``key``, or ``key 'name'`` when a name is given (so
    that label is only built when needed: most values take the first return).
    """
    if type(value) is str and len(value) <= 64 and value != "-0" and _CANONICAL_DECIMAL.fullmatch(value):
        return value
    if type(value) is int:  # exact already: Decimal(str(n)) formats back to str(n)
        return str(value)
    if name is not None:
        key = f"{key} {name!r}"
    text = format(checks.exact_decimal(key, value), "f")  # no exponent; no rounding to the context's precision either
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _number_or_none(key: str, value: Any) -> str | None:
    return None if value is None else decimal_text(key, value)


def json_number(text: str | None) -> int | float | None:
    """Stored decimal TEXT back to a JSON number: int when integral."""
    if text is None:
        return None
    number = Decimal(text)
    return int(number) if number == number.to_integral_value() else float(number)


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return json_number(decimal_text("value", value))
    if isinstance(value, date | datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON")


def _now() -> str:
    return _stamp(time.time_ns() // 1_000_000)


@functools.lru_cache(maxsize=1)
def _stamp(milliseconds: int) -> str:
    """The time as bridge.store.clock writes it (without an adapter depending on the state package).

    Cached for the current millisecond: formatting a datetime costs more than the
    rest of logging a call, and the calls of a batch mostly share their millisecond.
    """
    seconds, rest = divmod(milliseconds, 1000)
    at = datetime.fromtimestamp(seconds, timezone.utc).replace(microsecond=rest * 1000)
    return at.isoformat(timespec="milliseconds").replace("+00:00", "Z")


# json.dumps with these options would build the same encoder on every call.
_ENCODER = json.JSONEncoder(ensure_ascii=False, sort_keys=True, default=_json_default, allow_nan=False)
# orjson writes the same sorted JSON (compact) about five times faster: every product a catalog
# creates stores its extra fields this way. Dates, dataclasses and subclasses of the plain types go
# to the standard encoder instead (through _not_plain), so what it refused is still refused.
_FAST = orjson.OPT_SORT_KEYS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS | \
    orjson.OPT_PASSTHROUGH_SUBCLASS


def _not_plain(value: Any) -> Any:
    """orjson's ``default``: whatever it raises, orjson raises as a TypeError (JSONEncodeError)."""
    if isinstance(value, Decimal):
        return json_number(decimal_text("value", value))
    raise TypeError(f"{type(value).__name__} is left to the standard encoder")


def _finite(value: Any) -> bool:
    """False when a float in ``value`` is NaN or infinite: orjson would write null, JSON has no such number."""
    stack = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is dict:
            stack.extend(item.values())
        elif kind is list or kind is tuple:
            stack.extend(item)
        elif kind is float and not math.isfinite(item):
            return False
    return True


def _dumps(value: Any) -> str:
    try:
        if _finite(value):
            return orjson.dumps(value, default=_not_plain, option=_FAST).decode("utf-8")
    except TypeError:
        pass  # the standard encoder decides (int keys, big ints, dates) or refuses
    try:
        return _ENCODER.encode(value)
    except (TypeError, ValueError) as exc:
        raise Refused(f"payload is not plain JSON: {exc}") from None


def _dumps_for_log(value: Any) -> str:
    """The audit log must record even the payload that was refused for not being JSON."""
    try:
        return _dumps(value)
    except Refused:
        return json.dumps(repr(value), ensure_ascii=False)


# ---------------------------------------------------------------- entities

Converter = Callable[[str, Any], Any]


@dataclass(frozen=True, slots=True)
class _Entity:
    """How one upsert kind maps a payload onto a table; keys not in ``columns`` go to ``data``."""

    table: str
    columns: dict[str, Converter]
    required: tuple[str, ...]  # to create; an update may leave them out
    matchable: tuple[str, ...]
    shapes: dict[str, type] = field(default_factory=dict)  # data keys that must be dict or list
    derived: tuple[str, ...] = ()  # columns the adapter fills from other fields (a deal's company_id)

    @property
    def stored(self) -> tuple[str, ...]:
        """The columns an upsert may write besides external_id and data, in the order rows are read."""
        return (*self.columns, *self.derived)


PRODUCT = _Entity("products", {"parent_external_id": checks.text, "name": checks.name, "sku": checks.ident,
                               "barcode": checks.ident, "active": _flag}, ("name",), ("sku", "barcode"))
COMPANY = _Entity("companies", {"name": checks.name, "inn": checks.ident, "kpp": checks.ident,
                                "full_name": checks.text}, ("name",), ("inn", "kpp"))
CONTACT = _Entity("contacts", {"name": checks.name, "email": checks.ident, "phone": checks.ident}, ("name",),
                  ("email", "phone"))
DEAL = _Entity("deals", {"number": checks.name, "date": checks.text, "amount": _number_or_none, "currency": checks.text,
                         "company_external_id": checks.text, "contact_external_id": checks.text,
                         "stage": checks.text}, ("number",), ("number",),
               {"facts": dict, "lines": list}, ("company_id",))
_ENTITIES = {UPSERT_PRODUCT: PRODUCT, UPSERT_COMPANY: COMPANY, UPSERT_CONTACT: CONTACT, UPSERT_DEAL: DEAL}


# ---------------------------------------------------------------- statements
# Built once: the sqlite3 module caches prepared statements by their text, so
# handing it the same string object skips both the formatting and the parse.

def _row_sql(entity: _Entity, where: str) -> str:
    """SELECT of what an upsert compares against: id, the stored columns, then data."""
    return f"SELECT id, {', '.join(entity.stored)}, data FROM {entity.table} WHERE {where}"


_ROW_BY_EXTERNAL_ID = {entity.table: _row_sql(entity, "external_id = ?") for entity in _ENTITIES.values()}
_ROW_BY_ID = {entity.table: _row_sql(entity, "id = ?") for entity in _ENTITIES.values()}
_COMPANY_BY_ALIAS = _row_sql(COMPANY, "id = (SELECT company_id FROM company_aliases WHERE external_id = ?)")
_COMPANY_ID = ("SELECT coalesce((SELECT id FROM companies WHERE external_id = ?), "
               "(SELECT company_id FROM company_aliases WHERE external_id = ?))")
# A product with its current child rows in one query (LEFT JOIN: a product without any still comes back once).
_PRODUCT_PRICES = ("SELECT p.id, c.price_type, c.value FROM products p "
                   "LEFT JOIN prices c ON c.product_id = p.id WHERE p.external_id = ?")
_PRODUCT_STOCK = ("SELECT p.id, p.quantity, c.warehouse, c.quantity FROM products p "
                  "LEFT JOIN stock c ON c.product_id = p.id WHERE p.external_id = ?")
_PRODUCT_ACTIVE = "SELECT id, active FROM products WHERE external_id = ?"
_UPSERT_PRICE = ("INSERT INTO prices (product_id, price_type, value) VALUES (?, ?, ?) "
                 "ON CONFLICT DO UPDATE SET value = excluded.value")
_UPSERT_STOCK = ("INSERT INTO stock (product_id, warehouse, quantity) VALUES (?, ?, ?) "
                 "ON CONFLICT DO UPDATE SET quantity = excluded.quantity")
_SET_QUANTITY = "UPDATE products SET quantity = ? WHERE id = ?"
_DEACTIVATE = "UPDATE products SET active = 0 WHERE id = ?"  # never deleted
_ADD_ALIAS = "INSERT INTO company_aliases (external_id, company_id) VALUES (?, ?)"
# The nullable columns travel as '' (never a real value: JSON text, ids and messages are never
# empty) because the sqlite3 module binds None through its adapter lookup, which fails with a
# formatted AttributeError each time: that costs more than binding the rest of the row.
_LOG_CALLS = ("INSERT INTO calls (at, kind, external_id, payload, match, create_only, ok, outcome, crm_id, error)"
              " VALUES (?, ?, ?, ?, NULLIF(?, ''), NULLIF(?, ''), ?, ?, NULLIF(?, ''), NULLIF(?, ''))")


_BY_TABLE = {entity.table: entity for entity in _ENTITIES.values()}
_NO_PRODUCT = "the CRM has no product with this external id"


@functools.cache
def _adopt_sql(table: str, keys: tuple[str, ...]) -> str:
    """The rows made by hand (no external id yet) that have all these values, oldest first."""
    where = " AND ".join(("external_id IS NULL", *(f"{key} = ?" for key in keys)))
    return _row_sql(_BY_TABLE[table], where) + " ORDER BY id"


@functools.cache
def _insert_sql(table: str, columns: tuple[str, ...]) -> str:
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"


@functools.cache
def _update_sql(table: str, columns: tuple[str, ...]) -> str:
    """UPDATE of just these columns: only what differs is written (a few dozen shapes in practice)."""
    return f"UPDATE {table} SET {', '.join(f'{column} = ?' for column in columns)} WHERE id = ?"


# A call-log row, in the column order of _LOG_CALLS ('' for NULL).
CallRow = tuple[str, str, str, str, str, str, int, str, str, str]


@dataclass(slots=True)
class _Done:
    row_id: int
    created: bool
    changed: bool  # False for a write that left the record as it was


class SandboxCrm(CrmAdapter):
    """A CRM kept in the SQLite file ``path`` (created owner-only when missing).

    ``read_only`` never writes: a missing file reads as an empty CRM, and
    ``apply`` raises ``UserError``.
    """

    name: ClassVar[str] = "sandbox"
    batch_size: ClassVar[int] = 500
    busy_timeout: ClassVar[float] = 30.0  # seconds to wait for another process's write

    def __init__(self, path: Path, *, read_only: bool = False) -> None:
        self.path = Path(path)
        self.read_only = read_only
        # One connection, shared by whichever thread calls: the lock keeps its use serial.
        self._lock = threading.Lock()
        self._closed = False
        self._conn: sqlite3.Connection | None = self._open()

    # ------------------------------------------------------------ opening

    def _open(self) -> sqlite3.Connection | None:
        if self.read_only:
            if not self.path.exists():
                return None
            target, uri = self.path.resolve().as_uri() + "?mode=ro", True
        else:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                create_owner_only(self.path)  # it names customers (and see private_files.py)
            except OSError as exc:
                raise UserError(f"cannot create the sandbox CRM {self.path}: {exc.strerror}") from None
            target, uri = str(self.path), False
        conn = sqlite3.connect(target, uri=uri, isolation_level=None, timeout=self.busy_timeout,
                               check_same_thread=False)
        try:
            conn.execute("PRAGMA foreign_keys = ON")
            if self._prepare_schema(conn):
                if not self.read_only:  # only once the file is known to be ours: it rewrites the header
                    conn.execute("PRAGMA journal_mode = WAL")
                    # With WAL, NORMAL syncs at checkpoints rather than at every commit: a crash
                    # may lose the last batches, never corrupt the file; fine for a sandbox.
                    conn.execute("PRAGMA synchronous = NORMAL")
                    conn.execute("PRAGMA wal_autocheckpoint = 10000")  # fewer checkpoints (fsyncs) in bulk loads
                    # Lookups by external id land on random index pages; the 2 MB default cache
                    # holds almost none of a 100k catalog's.
                    conn.execute("PRAGMA cache_size = -32768")
                return conn
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise UserError(f"{self.path} is not a usable sandbox CRM: {exc}") from None
        except BaseException:
            conn.close()
            raise
        conn.close()  # an empty file opened read-only: nothing to read
        return None

    def _prepare_schema(self, conn: sqlite3.Connection) -> bool:
        """Check (and on a fresh file create) the schema; False when read-only and still empty."""
        if not self.read_only:
            conn.execute("BEGIN IMMEDIATE")  # a racing process waits here, then finds the schema made
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            app = conn.execute("PRAGMA application_id").fetchone()[0]
            if version == 0:
                if conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
                    raise UserError(f"{self.path} is an SQLite file of something else, not a sandbox CRM")
                if self.read_only:
                    return False
                for statement in _statements(SCHEMA):  # not executescript: it would COMMIT first
                    conn.execute(statement)
                conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                conn.execute("PRAGMA user_version = 1")
                version, app = 1, APPLICATION_ID
            if app != APPLICATION_ID:
                raise UserError(f"{self.path} is an SQLite file of something else, not a sandbox CRM")
            if version > SCHEMA_VERSION:
                raise UserError(f"the sandbox CRM {self.path} has schema version {version}, newer than this "
                                f"bridge ({SCHEMA_VERSION}); upgrade the bridge")
            if version < SCHEMA_VERSION:
                if self.read_only:
                    raise UserError(f"the sandbox CRM {self.path} has schema version {version}; open it once "
                                    "with a writing command (bridge ingest or run) to upgrade it")
                for step in range(version + 1, SCHEMA_VERSION + 1):
                    for statement in MIGRATIONS[step]:
                        conn.execute(statement)
                    conn.execute(f"PRAGMA user_version = {step}")
            if conn.in_transaction:
                conn.execute("COMMIT")
            return True
        finally:
            if conn.in_transaction:
                conn.execute("ROLLBACK")

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    # ------------------------------------------------------------ writing

    def apply(self, ops: Sequence[Operation]) -> list[Result]:
        if len(ops) > self.batch_size:
            raise ValueError(f"{len(ops)} operations given; the sandbox takes at most {self.batch_size} per call")
        if self.read_only:
            raise UserError(f"the sandbox CRM {self.path} is open read-only; it cannot apply operations")
        with self._lock:
            conn = self._connection()
            if conn is None:
                raise RuntimeError("unreachable: a writable sandbox always has a connection")
            if not ops:
                return []
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    results, calls = self._apply_batch(conn, ops)
                    # One statement for the batch's audit log instead of one per operation.
                    conn.executemany(_LOG_CALLS, calls)
                    conn.execute("COMMIT")
                finally:
                    if conn.in_transaction:  # an exception escaped: nothing of the batch applies
                        conn.execute("ROLLBACK")
            except sqlite3.OperationalError as exc:  # locked, disk full, I/O: may pass
                raise TransientError(f"sandbox CRM {self.path}: {exc}") from exc
            except sqlite3.DatabaseError as exc:  # corrupt file: will not pass by itself
                raise PermanentError(f"sandbox CRM {self.path}: {exc}") from exc
        return results

    def _apply_batch(self, conn: sqlite3.Connection, ops: Sequence[Operation]) -> tuple[list[Result], list[CallRow]]:
        """The results and call-log rows of ``ops``, written inside the caller's transaction.

        Every operation checks all it may refuse before its first write, and writes
        only rows it has just read (or found missing) in this same transaction, so no
        constraint can fail half-way through one: the batch runs without a savepoint
        per operation, which would cost about as much as the rest of an unchanged
        write. Should an operation fail after writing anyway (a constraint such as a
        trigger someone added to the CRM, or a refusal that came too late), it may be
        half-written: the batch is undone and run again with a savepoint per
        operation, which makes the failure that one operation's refusal, as always.
        """
        conn.execute("SAVEPOINT batch")
        try:
            done = self._apply_ops(conn, ops, careful=False)
        except (sqlite3.IntegrityError, _HalfWritten):
            conn.execute("ROLLBACK TO batch")
            done = self._apply_ops(conn, ops, careful=True)
        conn.execute("RELEASE batch")
        return done

    def _apply_ops(self, conn: sqlite3.Connection, ops: Sequence[Operation], *,
                   careful: bool) -> tuple[list[Result], list[CallRow]]:
        calls: list[CallRow] = []
        at = _now()  # the batch is one call to the CRM: its operations are logged as received together
        return [self._apply_one(conn, op, calls, at, careful=careful) for op in ops], calls

    def _apply_one(self, conn: sqlite3.Connection, op: Operation, calls: list[CallRow], at: str, *,
                   careful: bool) -> Result:
        written = conn.total_changes  # rows written so far, triggers included
        try:
            done = self._perform_undoably(conn, op) if careful else self._perform(conn, op)
        except Refused as exc:
            if not careful and conn.total_changes != written:
                raise _HalfWritten from exc
            result = Result(ok=False, retryable=False, error=f"{op.kind} {op.external_id!r}: {exc}")
            self._log(calls, op, result, "failed", at)
            return result
        answer = {"id": done.row_id, "created": done.created, "changed": done.changed}
        result = Result(ok=True, crm_id=str(done.row_id), created=done.created, answer=answer)
        self._log(calls, op, result, "created" if done.created else "updated" if done.changed else "unchanged", at)
        return result

    def _perform_undoably(self, conn: sqlite3.Connection, op: Operation) -> _Done:
        """``_perform`` inside a savepoint: a failed constraint undoes the operation's writes and refuses it."""
        conn.execute("SAVEPOINT op")
        try:
            done = self._perform(conn, op)
        except (Refused, sqlite3.IntegrityError) as exc:
            conn.execute("ROLLBACK TO op")
            conn.execute("RELEASE op")
            if isinstance(exc, sqlite3.IntegrityError):
                raise Refused(str(exc)) from exc
            raise
        conn.execute("RELEASE op")
        return done

    def _log(self, calls: list[CallRow], op: Operation, result: Result, outcome: str, at: str) -> None:
        """Add the call-log row of ``op``; ``apply`` inserts the batch's rows together, before COMMIT."""
        payload = op.payload_text if op.payload_text is not None else _dumps_for_log(op.payload)
        calls.append((at, str(op.kind), str(op.external_id), payload,
                      "" if op.match is None else _dumps_for_log(op.match),
                      _dumps_for_log(list(op.create_only)) if op.create_only else "",
                      int(result.ok), outcome, result.crm_id or "", result.error or ""))

    def _perform(self, conn: sqlite3.Connection, op: Operation) -> _Done:
        """Carry out ``op``: every check (and ``Refused``) first, then only the writes that change something."""
        payload = checks.checked_payload(op)
        entity = _ENTITIES.get(op.kind)
        if entity is not None:
            return self._upsert(conn, entity, op)
        if op.kind == SET_PRICES:
            return self._set_prices(conn, op.external_id, payload)
        if op.kind == SET_STOCK:
            return self._set_stock(conn, op.external_id, payload)
        if op.kind == SET_OFFER:
            return self._set_offer(conn, op.external_id, payload)
        if op.kind == DEACTIVATE_PRODUCT:
            return self._deactivate(conn, op.external_id)
        if op.kind == LINK_DEAL:
            try:
                row_id, changed = sandbox_deals.link_deal(conn, payload)
            except LookupError as exc:
                raise Refused(str(exc)) from None
            return _Done(row_id, created=False, changed=changed)
        raise Refused(f"unknown operation kind {op.kind!r}")

    def _upsert(self, conn: sqlite3.Connection, entity: _Entity, op: Operation) -> _Done:
        payload = op.payload
        values = {key: convert(key, payload[key]) for key, convert in entity.columns.items() if key in payload}
        extra = {key: value for key, value in payload.items() if key not in entity.columns and key != "external_id"}
        for key, shape in entity.shapes.items():
            if extra.get(key) is not None and not isinstance(extra[key], shape):
                raise Refused(f"{key} must be {'an object' if shape is dict else 'a list'}")
        row = self._current(conn, entity, op.external_id)
        adoption = None if row is not None else self._adoptable(conn, entity, op)
        if adoption is not None:
            row = adoption[0]
        if row is not None:  # the CRM owns these fields once the record exists
            for key in op.create_only:
                values.pop(key, None)
                extra.pop(key, None)
        if entity is DEAL and "company_external_id" in values:
            company = values["company_external_id"]
            values["company_id"] = None if company is None else self._company_id(conn, company)
            if company is not None and values["company_id"] is None:
                raise Refused(f"the CRM has no company with external id {company!r}")
        if row is None:
            missing = [key for key in entity.required if values.get(key) is None]
            if missing:
                raise Refused(f"cannot create without {', '.join(missing)}")
            values.update(external_id=op.external_id, data=_dumps(extra))
            cursor = conn.execute(_insert_sql(entity.table, tuple(values)), tuple(values.values()))
            return _Done(int(cursor.lastrowid or 0), created=True, changed=True)
        # "Changed" is whether a stored value differs from what the payload says, so only
        # those columns are written; data is compared as the canonical text it is kept as.
        row_id, stored_data = int(row[0]), row[-1]
        current = dict(zip(entity.stored, row[1:-1]))
        changes = {key: value for key, value in values.items() if current[key] != value}
        # data merges: keys the payload leaves out keep their stored values. When the payload's
        # own keys encode to the stored text, the merge would give that same text back, so the
        # usual re-send skips decoding the stored JSON. (Only with text keys: an int key would
        # sit beside its text twin in the merge.)
        data = _dumps(extra)  # may refuse: still before any write
        if data != stored_data or not all(type(key) is str for key in extra):
            data = _dumps({**json.loads(stored_data), **extra})
        if data != stored_data:
            changes["data"] = data
        if adoption is not None:  # the record now answers to this external id: that alone is a change
            if adoption[1]:  # it has a 1C id of its own already: this one becomes an alias
                conn.execute(_ADD_ALIAS, (op.external_id, row_id))
            else:
                changes["external_id"] = op.external_id
        if changes:
            conn.execute(_update_sql(entity.table, tuple(changes)), (*changes.values(), row_id))
        return _Done(row_id, created=False, changed=adoption is not None or bool(changes))

    @staticmethod
    def _current(conn: sqlite3.Connection, entity: _Entity, external_id: str) -> tuple[Any, ...] | None:
        """The row (as ``_row_sql`` reads it) that carries ``external_id``, or for a company has it as alias."""
        row: tuple[Any, ...] | None = conn.execute(_ROW_BY_EXTERNAL_ID[entity.table], (external_id,)).fetchone()
        if row is None and entity is COMPANY:
            row = conn.execute(_COMPANY_BY_ALIAS, (external_id,)).fetchone()
        return row

    @staticmethod
    def _company_id(conn: sqlite3.Connection, external_id: str) -> int | None:
        (found,) = conn.execute(_COMPANY_ID, (external_id, external_id)).fetchone()
        return None if found is None else int(found)

    @staticmethod
    def _adoptable(conn: sqlite3.Connection, entity: _Entity,
                   op: Operation) -> tuple[tuple[Any, ...], bool] | None:
        """The row ``op.match`` names, and whether ``op.external_id`` joins it as an alias; None when none.

        Reads only: the caller writes the adoption once nothing can be refused any more.
        """
        if not op.match:
            return None
        if not isinstance(op.match, dict):
            raise Refused("match must be an object")
        unknown = sorted(set(op.match) - set(entity.matchable))
        if unknown:
            raise Refused(f"cannot match {entity.table} by {', '.join(unknown)} "
                           f"(possible: {', '.join(entity.matchable)})")
        fields = {key: checks.ident(key, value) for key, value in op.match.items()}
        if entity is COMPANY:
            row_id, owned = _match_company(conn, fields.get("inn"), fields.get("kpp"))
            if row_id is None:
                return None
            # owned: another 1C id of the same counterparty, kept as an alias.
            return conn.execute(_ROW_BY_ID[entity.table], (row_id,)).fetchone(), owned
        # Only records made by hand (no external id) are adopted: one that belongs to another
        # 1C record is a different item that happens to share an SKU.
        fields = {key: value for key, value in fields.items() if value is not None}
        if not fields:
            return None
        rows = conn.execute(_adopt_sql(entity.table, tuple(fields)), tuple(fields.values())).fetchall()
        if len(rows) > 1:
            raise Refused(f"match {fields} is ambiguous: {len(rows)} {entity.table} have it "
                           f"(ids {', '.join(str(r[0]) for r in rows)})")
        return (rows[0], False) if rows else None

    @staticmethod
    def _set_prices(conn: sqlite3.Connection, external_id: str, payload: dict[str, Any]) -> _Done:
        rows = conn.execute(_PRODUCT_PRICES, (external_id,)).fetchall()
        if not rows:
            raise Refused(_NO_PRODUCT)
        product_id = int(rows[0][0])
        current = {price_type: value for _, price_type, value in rows if price_type is not None}
        prices = payload.get("prices")
        if not isinstance(prices, dict):
            raise Refused("prices must be an object {price type name: number}")
        writes = []
        for price_type, value in prices.items():
            if not isinstance(price_type, str) or not price_type:
                raise Refused(f"price type name {price_type!r} is not a name")
            text = decimal_text("price", value, price_type)
            if current.get(price_type) != text:
                writes.append((product_id, price_type, text))
        if writes:  # merged: price types the payload leaves out stay as they are
            conn.executemany(_UPSERT_PRICE, writes)
        return _Done(product_id, created=False, changed=bool(writes))

    @staticmethod
    def _set_stock(conn: sqlite3.Connection, external_id: str, payload: dict[str, Any]) -> _Done:
        rows = conn.execute(_PRODUCT_STOCK, (external_id,)).fetchall()
        if not rows:
            raise Refused(_NO_PRODUCT)
        product_id, stored_total = int(rows[0][0]), rows[0][1]
        merged = {warehouse: quantity for _, _, warehouse, quantity in rows if warehouse is not None}
        stock, quantity = payload.get("stock"), payload.get("quantity")
        if stock is None and quantity is None:
            raise Refused("set_stock needs stock {warehouse name: number} or quantity")
        if stock is not None and not isinstance(stock, dict):
            raise Refused("stock must be an object {warehouse name: number}")
        writes = []
        for warehouse, value in (stock or {}).items():
            if not isinstance(warehouse, str) or not warehouse:
                raise Refused(f"warehouse name {warehouse!r} is not a name")
            text = decimal_text("stock", value, warehouse)
            if merged.get(warehouse) != text:
                writes.append((product_id, warehouse, text))
                merged[warehouse] = text
        if quantity is not None:
            total = decimal_text("quantity", quantity)
        else:  # the total follows the warehouses when 1C gives no total of its own
            # In warehouse order, as a scan of the stock table adds them (only beyond 28 digits could it matter).
            total = decimal_text("quantity", sum((Decimal(merged[w]) for w in sorted(merged)), Decimal(0)))
        if writes:
            conn.executemany(_UPSERT_STOCK, writes)
        if total != stored_total:
            conn.execute(_SET_QUANTITY, (total, product_id))
        return _Done(product_id, created=False, changed=bool(writes) or total != stored_total)

    def _set_offer(self, conn: sqlite3.Connection, external_id: str, payload: dict[str, Any]) -> _Done:
        """Prices, then stock: each part the payload has. A stock refused after the prices were written
        is a half-written operation, which ``_apply_batch`` undoes and refuses as a whole."""
        has_prices, has_stock = checks.offer_parts(payload)
        done = []
        if has_prices:
            done.append(self._set_prices(conn, external_id, payload))
        if has_stock:
            done.append(self._set_stock(conn, external_id, payload))
        return _Done(done[0].row_id, created=False, changed=any(d.changed for d in done))

    @staticmethod
    def _deactivate(conn: sqlite3.Connection, external_id: str) -> _Done:
        row = conn.execute(_PRODUCT_ACTIVE, (external_id,)).fetchone()
        if row is None:
            raise Refused(_NO_PRODUCT)
        product_id, active = int(row[0]), row[1]
        if active != 0:
            conn.execute(_DEACTIVATE, (product_id,))
        return _Done(product_id, created=False, changed=active != 0)

    # ------------------------------------------------------------ reading

    def _connection(self) -> sqlite3.Connection | None:
        if self._closed:
            raise RuntimeError("the sandbox CRM is closed")
        return self._conn

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection | None]:
        """The connection inside one read transaction, so a read sees one consistent state."""
        with self._lock:
            conn = self._connection()
            if conn is None:
                yield None
                return
            conn.execute("BEGIN")
            try:
                yield conn
            finally:
                conn.execute("ROLLBACK")

    def state(self) -> dict[str, list[dict[str, Any]]]:
        """Every record with every field (extra payload fields flattened in), sorted by external id; no calls."""
        with self._reading() as conn:
            return _state(conn)

    def dump(self) -> dict[str, Any]:
        """The CRM as the README and the tests show it: the call count and each record's main fields."""
        with self._reading() as conn:  # one read: the count and the records agree
            calls = 0 if conn is None else int(conn.execute("SELECT count(*) FROM calls").fetchone()[0])
            state = _state(conn)
        keys = {"products": PRODUCT_KEYS, "companies": COMPANY_KEYS, "contacts": CONTACT_KEYS, "deals": DEAL_KEYS}
        return {"calls": calls, **{name: [{key: record[key] for key in keys[name]} for record in records]
                                   for name, records in state.items()}}

    def calls(self, limit: int | None = None) -> list[dict[str, Any]]:
        """The audit log, newest last; ``limit`` keeps only the newest ones."""
        with self._reading() as conn:
            if conn is None:
                return []
            rows = conn.execute("SELECT * FROM (SELECT * FROM calls ORDER BY id DESC LIMIT ?) ORDER BY id",
                                (-1 if limit is None else limit,)).fetchall()
            names = [column[0] for column in conn.execute("SELECT * FROM calls LIMIT 0").description]
        calls = []
        for row in rows:
            call = dict(zip(names, row))
            call["ok"] = bool(call["ok"])
            for key in ("payload", "match", "create_only"):
                call[key] = None if call[key] is None else json.loads(call[key])
            calls.append(call)
        return calls

    def find_company(self, inn: str, kpp: str | None = None) -> str | None:
        """The external id of the company with this ИНН (and КПП when given); None if none or ambiguous."""
        with self._reading() as conn:
            if conn is None:
                return None
            try:
                row_id, _ = _match_company(conn, checks.ident("inn", inn), checks.ident("kpp", kpp))
            except Refused:
                return None
            if row_id is None:
                return None
            return conn.execute("SELECT external_id FROM companies WHERE id = ?", (row_id,)).fetchone()[0]

    def get_product(self, external_id: str) -> dict[str, Any] | None:
        """The product with every field (as in ``state``), or None."""
        with self._reading() as conn:
            if conn is None:
                return None
            found = _products(conn, external_id)
        return found[0] if found else None

    def changed_deals(self, cursor: str | None, limit: int = 500) -> tuple[list[DealSnapshot], str | None]:
        """Deals changed after ``cursor`` (a position in the deals' change sequence), oldest first."""
        with self._reading() as conn:
            if conn is None:
                return [], cursor
            return sandbox_deals.changed_deals(conn, cursor, limit)

    def get_deal(self, crm_id: str) -> DealSnapshot | None:
        with self._reading() as conn:
            return None if conn is None else sandbox_deals.get_deal(conn, crm_id)

    # -- what a manager does in the CRM (bridge sandbox deal ...) -----------------------------
    def _writing(self, action: Any, *args: Any) -> Any:
        if self.read_only:
            raise UserError(f"the sandbox CRM {self.path} is open read-only")
        with self._lock:
            conn = self._connection()
            assert conn is not None
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = action(conn, *args)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return result

    def add_deal(self, spec: dict[str, Any]) -> str:
        return self._writing(sandbox_deals.add_deal, spec)

    def update_deal(self, crm_id: str, spec: dict[str, Any]) -> None:
        self._writing(sandbox_deals.update_deal, crm_id, spec)

    def move_deal(self, crm_id: str, stage: str) -> None:
        self._writing(sandbox_deals.move_deal, crm_id, stage)


# ---------------------------------------------------------------- queries

def _state(conn: sqlite3.Connection | None) -> dict[str, list[dict[str, Any]]]:
    if conn is None:
        return {"products": [], "companies": [], "contacts": [], "deals": []}
    return {"products": _products(conn), "companies": _companies(conn), "contacts": _contacts(conn),
            "deals": _deals(conn)}


def _match_company(conn: sqlite3.Connection, inn: str | None, kpp: str | None) -> tuple[int | None, bool]:
    """The company with this ИНН (and КПП when given), and whether it already has an external id.

    Without a КПП (a sole proprietor, or 1C left it out) a company without
    one wins; among several branches of one ИНН nothing can choose, which is
    refused rather than guessed.
    """
    if inn is None:
        return None, False
    sql = "SELECT id, external_id, kpp FROM companies WHERE inn = ?" + (" AND kpp = ?" if kpp else "") + " ORDER BY id"
    rows = conn.execute(sql, (inn, kpp) if kpp else (inn,)).fetchall()
    if not kpp and len(rows) > 1:
        rows = [row for row in rows if row[2] is None] or rows
    if len(rows) > 1:
        raise Refused(f"{len(rows)} companies have ИНН {inn}" + (f" and КПП {kpp}" if kpp else "")
                       + f" (ids {', '.join(str(r[0]) for r in rows)}); cannot tell which one is meant")
    return (int(rows[0][0]), rows[0][1] is not None) if rows else (None, False)


def _records(conn: sqlite3.Connection, table: str, columns: str, external_id: str | None,
             ) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(columns, data) of each record, sorted by external id (records made by hand first)."""
    where = "" if external_id is None else " WHERE external_id = ?"
    cursor = conn.execute(f"SELECT id, external_id, {columns}, data FROM {table}{where} ORDER BY external_id, id",
                          () if external_id is None else (external_id,))
    names = [column[0] for column in cursor.description]
    return [(dict(zip(names[:-1], row[:-1])), json.loads(row[-1])) for row in cursor.fetchall()]


def _children(conn: sqlite3.Connection, table: str, key: str, value: str,
              external_id: str | None) -> dict[int, dict[str, int | float | None]]:
    """{product id: {key: number}} of the prices or stock of all products, or of one."""
    sql = f"SELECT product_id, {key}, {value} FROM {table}"
    if external_id is not None:
        sql += " WHERE product_id IN (SELECT id FROM products WHERE external_id = ?)"
    found: dict[int, dict[str, int | float | None]] = {}
    for owner, name, number in conn.execute(sql + f" ORDER BY {key}", () if external_id is None else (external_id,)):
        found.setdefault(owner, {})[name] = json_number(number)
    return found


def _products(conn: sqlite3.Connection, external_id: str | None = None) -> list[dict[str, Any]]:
    prices = _children(conn, "prices", "price_type", "value", external_id)
    stock = _children(conn, "stock", "warehouse", "quantity", external_id)
    products = []
    for columns, data in _records(conn, "products", "parent_external_id, name, sku, barcode, active, quantity",
                                  external_id):
        columns.update(active=bool(columns["active"]), quantity=json_number(columns["quantity"]),
                       prices=prices.get(columns["id"], {}), stock=stock.get(columns["id"], {}),
                       id=str(columns["id"]))
        products.append({**data, **columns})
    return products


def _companies(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    aliases: dict[int, list[str]] = {}
    for alias, company_id in conn.execute("SELECT external_id, company_id FROM company_aliases ORDER BY 1"):
        aliases.setdefault(company_id, []).append(alias)
    return [{**data, **columns, "id": str(columns["id"]), "aliases": aliases.get(columns["id"], [])}
            for columns, data in _records(conn, "companies", "name, inn, kpp, full_name", None)]


def _contacts(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    return [{**data, **columns, "id": str(columns["id"])}
            for columns, data in _records(conn, "contacts", "name, email, phone", None)]


def _deals(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    # The company as the CRM links it: its own external id, even when the deal named it by an alias.
    owners = dict(conn.execute("SELECT id, external_id FROM companies").fetchall())
    deals = []
    for columns, data in _records(conn, "deals", "number, title, date, amount, currency, company_external_id, "
                                  "company_id, contact_external_id, stage", None):
        company_id = columns.pop("company_id")
        if owners.get(company_id) is not None:
            columns["company_external_id"] = owners[company_id]
        facts = data.get("facts") or {}
        columns.update(amount=json_number(columns["amount"]), id=str(columns["id"]), title=columns["title"] or
                       columns["number"], order_external_id=columns["external_id"], number_1c=facts.get("number_1c"),
                       paid=bool(facts.get("paid")), shipped=bool(facts.get("shipped")))
        deals.append({**data, **columns, "facts": facts, "lines": data.get("lines") or []})
    return deals
