"""SQLite files shared by several processes: opening one twice in a process must not lose writes.

POSIX drops every lock a process holds on a file when the process closes any descriptor of it.
The bridge opens the state database more than once in one process (the chunk writer's connection
beside the main one) while the delivery process has it open too; the sandbox CRM likewise. Each
scenario here is the one that lost a committed write before private_files.py: a second open in
this process, another process writing and closing, a third process writing, then this process
writing again.
"""

from __future__ import annotations

import sqlite3
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

from bridge.crm.sandbox import SandboxCrm
from bridge.store import db
from crm_contract import assert_ok, product

_STATE_WRITER = """
    import sqlite3, sys
    conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
    conn.execute("INSERT INTO scratch VALUES (?)", (sys.argv[2],))
    conn.close()
"""

_SANDBOX_WRITER = """
    import sys
    from bridge.crm.base import UPSERT_PRODUCT, Operation
    from bridge.crm.sandbox import SandboxCrm
    with SandboxCrm(sys.argv[1]) as crm:
        [result] = crm.apply([Operation(UPSERT_PRODUCT, sys.argv[2], {"external_id": sys.argv[2], "name": sys.argv[2]})])
        assert result.ok, result.error
"""


def _in_another_process(script: str, path: Path, value: str) -> None:
    subprocess.run([sys.executable, "-c", textwrap.dedent(script), str(path), value], check=True, timeout=60)


def test_a_second_state_connection_in_one_process_loses_no_other_process_write(tmp_path: Path) -> None:
    path = tmp_path / "bridge.db"
    main = db.connect(path)
    main.execute("CREATE TABLE scratch (value TEXT)")
    main.execute("INSERT INTO scratch VALUES ('main 1')")
    db.connect(path).close()  # as the chunk writer opens (and closes) its own connection
    _in_another_process(_STATE_WRITER, path, "delivery")  # writes, then closes its last connection
    assert path.with_name("bridge.db-wal").exists(), "the other process deleted the WAL this one still uses"
    main.execute("INSERT INTO scratch VALUES ('main 2')")
    _in_another_process(_STATE_WRITER, path, "later run")
    main.execute("INSERT INTO scratch VALUES ('main 3')")
    main.close()

    with sqlite3.connect(path) as check:
        assert check.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        values = sorted(v for (v,) in check.execute("SELECT value FROM scratch"))
    check.close()
    assert values == ["delivery", "later run", "main 1", "main 2", "main 3"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_second_sandbox_in_one_process_loses_no_other_process_write(tmp_path: Path) -> None:
    path = tmp_path / "crm.db"
    with SandboxCrm(path) as crm:
        assert_ok(crm.apply([product("main-1")]))
        SandboxCrm(path).close()  # as a final delivery opens the sandbox beside an open one
        _in_another_process(_SANDBOX_WRITER, path, "delivery")
        assert path.with_name("crm.db-wal").exists(), "the other process deleted the WAL this one still uses"
        assert_ok(crm.apply([product("main-2")]))
        _in_another_process(_SANDBOX_WRITER, path, "later-run")
        assert_ok(crm.apply([product("main-3")]))

    with SandboxCrm(path, read_only=True) as crm:
        ids = sorted(p["external_id"] for p in crm.dump()["products"])
    assert ids == ["delivery", "later-run", "main-1", "main-2", "main-3"]
    with sqlite3.connect(path) as check:
        assert check.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    check.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def _settling_commits(statements: list[str]) -> list[tuple[str, str]]:
    """(final status, synchronous level in force at its COMMIT) for each transaction that settled a file."""
    level, status, settled = "NORMAL", None, []
    for statement in statements:
        upper = " ".join(statement.split()).upper()
        if upper.startswith("PRAGMA SYNCHRONOUS ="):
            level = upper.rsplit("=", 1)[1].strip()
        elif upper.startswith("UPDATE FILES SET STATUS = 'COMMITTED'"):
            status = "committed"
        elif upper.startswith("UPDATE FILES SET STATUS = 'QUARANTINED'"):
            status = "quarantined"
        elif upper == "COMMIT" and status is not None:
            settled.append((status, level))
            status = None
    return settled


def test_a_files_outcome_is_synced_to_disk_before_its_source_may_go(tmp_path: Path) -> None:
    """With WAL and synchronous=NORMAL a power cut loses commits made since the last checkpoint; the
    daemon deletes a source once its outcome is committed, so that commit (and all before) must be synced."""
    from bridge.cli.context import load_config, state_connection
    from bridge.commerceml.files import expand_inputs
    from bridge.sync.pipeline import Pipeline
    from conftest import SAMPLES

    (tmp_path / "bridge.toml").write_text('[state]\npath = "var/bridge.db"\n[archive]\npath = "var/archive"\n'
                                          'quarantine = "var/quarantine"\n[crm]\nkind = "sandbox"\npath = "var/crm.db"\n',
                                          encoding="utf-8")
    good = SAMPLES / "exchange" / "ut11"
    broken = tmp_path / "broken" / "import.xml"
    broken.parent.mkdir()
    whole = next(good.glob("import*.xml")).read_bytes()
    broken.write_bytes(whole[: len(whole) // 2])  # cut off mid-file, as an interrupted upload
    config = load_config(tmp_path / "bridge.toml")
    statements: list[str] = []
    with state_connection(config) as conn, expand_inputs([good, broken]) as items:
        conn.set_trace_callback(statements.append)
        outcomes = list(Pipeline(conn, config).ingest_all(items))
        assert conn.execute("PRAGMA synchronous").fetchone() == (1,)  # NORMAL again for everything else
    assert {o.status for o in outcomes} == {"committed", "quarantined"}
    settled = _settling_commits(statements)
    assert len(settled) == len(outcomes)
    assert all(level in ("FULL", "2") for _, level in settled), settled
