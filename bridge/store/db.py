"""The state database: one SQLite file, WAL, owner-only, versioned schema.

Every table of the bridge's state lives here (the file ledger, id map and
fingerprints, outbox, journal), so one transaction can change a record's
state and enqueue the CRM operation it causes: a crash can never leave one
without the other.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bridge.errors import UserError
from bridge.private_files import create_owner_only
from bridge.store.jsontext import compact

CACHE_KIB = 32 * 1024


class NewerSchemaError(UserError):
    """The state database was written by a newer bridge: this one must not read or migrate it."""

# Each entry migrates from version i to i+1. Never edit a released entry; append.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE files (
        id INTEGER PRIMARY KEY,
        claim_key TEXT NOT NULL UNIQUE,
        source TEXT NOT NULL,
        name TEXT NOT NULL,
        sha256 TEXT NOT NULL,
        size INTEGER NOT NULL,
        received_at TEXT NOT NULL,
        status TEXT NOT NULL,
        archive_path TEXT,
        kind TEXT,
        catalog_id TEXT,
        full_catalog INTEGER NOT NULL DEFAULT 0,
        deactivation TEXT,
        counts TEXT,
        plan TEXT,
        error TEXT,
        replay_of INTEGER REFERENCES files(id),
        updated_at TEXT NOT NULL
    );
    CREATE INDEX files_status ON files(status);
    CREATE INDEX files_sha ON files(sha256);
    CREATE TABLE records (
        entity TEXT NOT NULL,
        external_id TEXT NOT NULL,
        fingerprint TEXT,
        crm_id TEXT,
        catalog_id TEXT,
        active INTEGER NOT NULL DEFAULT 1,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (entity, external_id)
    ) WITHOUT ROWID;
    CREATE INDEX records_catalog ON records(entity, catalog_id, active);
    CREATE TABLE staged (
        file_id INTEGER NOT NULL,
        entity TEXT NOT NULL,
        external_id TEXT NOT NULL,
        fingerprint TEXT,
        catalog_id TEXT,
        active INTEGER NOT NULL DEFAULT 1,
        PRIMARY KEY (file_id, entity, external_id)
    ) WITHOUT ROWID;
    CREATE INDEX staged_lookup ON staged(entity, external_id);
    CREATE TABLE dictionary (
        entity TEXT NOT NULL,
        external_id TEXT NOT NULL,
        name TEXT NOT NULL,
        data TEXT,
        PRIMARY KEY (entity, external_id)
    ) WITHOUT ROWID;
    CREATE TABLE waiting (
        id INTEGER PRIMARY KEY,
        file_id INTEGER NOT NULL,
        external_id TEXT NOT NULL,
        need TEXT NOT NULL,
        record TEXT NOT NULL,
        since TEXT NOT NULL
    );
    CREATE INDEX waiting_need ON waiting(need);
    CREATE TABLE seen (
        file_id INTEGER NOT NULL,
        external_id TEXT NOT NULL,
        PRIMARY KEY (file_id, external_id)
    ) WITHOUT ROWID;
    CREATE TABLE outbox (
        id INTEGER PRIMARY KEY,
        file_id INTEGER,
        kind TEXT NOT NULL,
        entity TEXT NOT NULL,
        external_id TEXT NOT NULL,
        payload TEXT NOT NULL,
        match TEXT,
        create_only TEXT,
        status TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL NOT NULL DEFAULT 0,
        last_error TEXT,
        created_at TEXT NOT NULL,
        done_at TEXT
    );
    CREATE INDEX outbox_status ON outbox(status, id);
    CREATE INDEX outbox_file ON outbox(file_id, status);
    CREATE TABLE journal (
        id INTEGER PRIMARY KEY,
        at TEXT NOT NULL,
        file_id INTEGER,
        entity TEXT,
        external_id TEXT,
        step TEXT NOT NULL,
        status TEXT NOT NULL,
        message TEXT,
        detail TEXT
    );
    CREATE INDEX journal_file ON journal(file_id, id);
    CREATE INDEX journal_entity ON journal(external_id, id);
    CREATE INDEX journal_at ON journal(at);
    """,
    # 2: the CRM -> 1C orders flow.
    """
    CREATE TABLE cursors (
        name TEXT PRIMARY KEY,
        value TEXT
    );
    CREATE TABLE orders (
        deal_id TEXT PRIMARY KEY,
        order_id TEXT NOT NULL UNIQUE,
        fingerprint TEXT,
        status TEXT NOT NULL,
        reason TEXT,
        file_name TEXT,
        snapshot TEXT,
        updated_at TEXT NOT NULL
    );
    CREATE TABLE deal_facts (
        external_id TEXT PRIMARY KEY,
        facts_at TEXT NOT NULL
    );
    """,
    # 3: staged rows are only ever looked up by file (the primary key); the second index cost
    # every staged fingerprint of a big catalog an extra random write.
    """
    DROP INDEX IF EXISTS staged_lookup;
    """,
    # 4: a waiting offer sent again replaces its older row, found by its Ид.
    """
    CREATE INDEX waiting_external ON waiting(external_id);
    """,
    # 5: staging moved to the connection's temporary tables (_STAGING below). Rows left here by
    # an interrupted run belong to a file that is still claimed, so it is read again anyway.
    """
    DROP TABLE IF EXISTS staged;
    """,
    # 6: retention (sync/retention.py) removes old archived copies; the ledger row stays and says when.
    """
    ALTER TABLE files ADD COLUMN pruned_at TEXT;
    """,
    # 7: only products are ever looked up by catalog (deactivation of a full export), yet every
    # fingerprint row (prices, stock, XML digests: 740,000 at 100k products) had an entry here.
    """
    DROP INDEX IF EXISTS records_catalog;
    CREATE INDEX records_catalog ON records(catalog_id, active, external_id) WHERE entity = 'product';
    """,
    # 8: with one file name for every order (outgoing.file_name without {id}), the writer must know
    # which order it wrote there last (sync/orders.py, OrderWriter._taken_by_another).
    """
    ALTER TABLE orders ADD COLUMN written_at TEXT;
    """,
]


def connect(path: Path, *, read_only: bool = False) -> sqlite3.Connection:
    """Open (and create or migrate) the state database.

    read_only opens an existing file without changing it; a missing file
    gives an empty in-memory database so dry runs work on a fresh install.
    """
    if read_only:
        if not path.exists():
            conn = sqlite3.connect(":memory:", isolation_level=None)
            _migrate(conn)
            return conn
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
        try:
            conn.execute("PRAGMA query_only = ON")
            # Read the header now (a file that is not a database, or a WAL database whose folder
            # is read-only, fails here rather than in the middle of a command), and refuse a
            # schema this bridge does not know.
            _check_version(conn)
        except BaseException:
            conn.close()
            raise
        return conn
    path.parent.mkdir(parents=True, exist_ok=True)
    # Owner-only: the id map and the journal name customers (private_files.py says why an
    # existing file must not be opened here).
    create_owner_only(path)
    conn = sqlite3.connect(path, isolation_level=None, timeout=30)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")  # WAL + NORMAL: durable at checkpoints, never corrupt
    # A big catalog writes hundreds of MB of outbox and journal: checkpoint (and fsync) every
    # ~40 MB of WAL instead of every 4 MB.
    conn.execute("PRAGMA wal_autocheckpoint = 10000")
    # The id map, outbox and journal indexes are keyed by 1C's random GUIDs: every insert lands
    # on a random page. With SQLite's default 2 MB cache a 100k catalog reads and writes the same
    # pages over and over; 32 MB holds the hot part of the indexes.
    conn.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
    conn.execute("PRAGMA foreign_keys = ON")
    _migrate(conn)
    _create_staging(conn)
    return conn


# What a file being read has produced so far: fingerprints and operations that become real in the
# transaction that commits the file. They live in this connection's temporary database: they
# never need to outlive the process (a file interrupted by a crash is read again from the start),
# so writing them to the WAL, and deleting them again at commit, was pure cost (a 100k catalog
# stages 740,000 fingerprints and 480,000 operations). Temporary tables share the connection's
# transactions, so the commit moves them into the real tables atomically.
_STAGING = """
    CREATE TEMP TABLE IF NOT EXISTS staging_records (
        file_id INTEGER NOT NULL,
        entity TEXT NOT NULL,
        external_id TEXT NOT NULL,
        fingerprint TEXT,
        catalog_id TEXT,
        active INTEGER NOT NULL DEFAULT 1,
        PRIMARY KEY (file_id, entity, external_id)
    ) WITHOUT ROWID;
    CREATE TEMP TABLE IF NOT EXISTS staging_outbox (
        id INTEGER PRIMARY KEY,
        file_id INTEGER,
        kind TEXT NOT NULL,
        entity TEXT NOT NULL,
        external_id TEXT NOT NULL,
        payload TEXT NOT NULL,
        match TEXT,
        create_only TEXT,
        created_at TEXT NOT NULL
    );
    CREATE INDEX IF NOT EXISTS temp.staging_outbox_file ON staging_outbox(file_id);
"""


def _create_staging(conn: sqlite3.Connection) -> None:
    conn.execute(f"PRAGMA temp.cache_size = -{CACHE_KIB}")
    for statement in _statements(_STAGING):
        conn.execute(statement)


def _check_version(conn: sqlite3.Connection) -> int:
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > len(MIGRATIONS):
        raise NewerSchemaError(f"the state database has schema version {version}, newer than this bridge "
                               f"({len(MIGRATIONS)}); upgrade the bridge")
    return int(version)


def _migrate(conn: sqlite3.Connection) -> None:
    version = _check_version(conn)
    for number in range(version, len(MIGRATIONS)):
        with transaction(conn):
            for statement in _statements(MIGRATIONS[number]):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {number + 1}")


def _statements(script: str) -> Iterator[str]:
    for statement in script.split(";"):
        if statement.strip():
            yield statement


def json_array(values: list[Any]) -> str:
    """``values`` as the JSON array a bulk statement reads with json_each: one statement inserts every
    row without coming back to Python, so SQLite holds no interpreter lock while it works (the pipeline
    commits from a thread while the reader runs) and pays no call per row."""
    return compact(values)


@contextmanager
def transaction(conn: sqlite3.Connection, *, durable: bool = False) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any exception.

    durable: the commit is on disk when this returns. With WAL and synchronous=NORMAL a commit
    survives a crash of the process but not a power cut until the next checkpoint; that is fine
    for everything that can be done again, but not for a commit after which something outside the
    database is undone for good (a file's outcome, after which its source is deleted). FULL for
    this one commit syncs the WAL, and with it every commit before.
    """
    if durable:
        conn.execute("PRAGMA synchronous = FULL")
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
    finally:
        if durable:
            conn.execute("PRAGMA synchronous = NORMAL")
