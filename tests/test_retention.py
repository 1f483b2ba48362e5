"""Retention: old archived copies, delivered outbox rows and settled journal entries go; nothing pending does."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bridge.config import load
from bridge.store import db
from bridge.sync import retention
from conftest import REPO, SAMPLES, run_cli

UT11 = SAMPLES / "exchange" / "ut11"


def write_config(folder: Path, archive_keep_days: float = 0) -> Path:
    path = folder / "bridge.toml"
    path.write_text('[state]\npath = "var/bridge.db"\n[archive]\npath = "var/archive"\nquarantine = "var/quarantine"\n'
                    f'keep_days = {archive_keep_days}\n[crm]\nkind = "sandbox"\npath = "var/crm.db"\n', encoding="utf-8")
    return path


def files(folder: Path) -> dict[int, dict]:
    code, output = run_cli("archive", "-c", folder / "bridge.toml", "list", "--json")
    assert code == 0, output
    return {row["id"]: row for row in json.loads(output)}


def count(folder: Path, sql: str) -> int:
    with sqlite3.connect(folder / "var" / "bridge.db") as conn:
        return conn.execute(sql).fetchone()[0]


def stored_copies(folder: Path) -> list[Path]:
    return sorted(p for p in (folder / "var" / "archive").rglob("*") if p.is_file() and p.name != ".lock"
                  and ".incoming" not in p.parts)


def later() -> str:
    """An ISO time just after everything done so far (the journal's own clock)."""
    time.sleep(0.01)
    moment = datetime.now(UTC).isoformat(timespec="milliseconds")
    time.sleep(0.01)
    return moment


def test_retention_is_off_unless_asked(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    assert run_cli("ingest", "-c", cfg, UT11)[0] == 0
    before = (stored_copies(tmp_path), count(tmp_path, "SELECT COUNT(*) FROM journal"))
    code, output = run_cli("prune", "-c", cfg)
    assert code == 0 and "retention is off" in output
    assert (stored_copies(tmp_path), count(tmp_path, "SELECT COUNT(*) FROM journal")) == before


def test_prune_removes_settled_history_and_keeps_the_ledger(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    assert run_cli("ingest", "-c", cfg, UT11)[0] == 0
    copies = stored_copies(tmp_path)
    assert len(copies) == 6 and {row["status"] for row in files(tmp_path).values()} == {"applied"}
    delivered = count(tmp_path, "SELECT COUNT(*) FROM outbox WHERE status = 'done'")
    assert delivered > 0

    cut = later()
    code, output = run_cli("prune", "-c", cfg, "--before", cut, "--dry-run", "--json")
    assert code == 0
    planned = json.loads(output)
    assert planned["archived_copies"] == 6 and planned["outbox_rows"] == delivered
    assert planned["archived_bytes"] == sum(p.stat().st_size for p in copies)
    assert stored_copies(tmp_path) == copies  # a dry run changes nothing

    code, output = run_cli("prune", "-c", cfg, "--before", cut, "--json")
    assert code == 0
    assert json.loads(output) == {**planned, "dry_run": False}  # what the dry run said, done
    assert stored_copies(tmp_path) == []
    assert count(tmp_path, "SELECT COUNT(*) FROM outbox WHERE status = 'done'") == 0
    # The ledger keeps every file, so none is ever taken twice; each says when its copy went.
    rows = files(tmp_path)
    assert len(rows) == 6 and all(row["pruned_at"] and row["archive_path"] is None for row in rows.values())
    code, output = run_cli("ingest", "-c", cfg, UT11)
    assert code == 0 and output.count("already taken") == 6
    # The journal keeps the prune itself (and what came after it), not the settled past.
    code, output = run_cli("journal", "-c", cfg, "--json")
    steps = [entry["step"] for entry in json.loads(output)]
    assert "prune" in steps and "deliver" not in steps
    code, output = run_cli("replay", "-c", cfg, "1")
    assert code == 2 and "removed by retention" in output


def test_a_copy_still_needed_by_a_newer_file_stays(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    first = tmp_path / "first"
    shutil.copytree(UT11, first)
    assert run_cli("ingest", "-c", cfg, first)[0] == 0
    cut = later()
    # The same bytes again from another source (a replay): a second ledger row, the same stored copy.
    assert run_cli("replay", "-c", cfg, "1")[0] == 0
    rows = files(tmp_path)
    assert rows[7]["archive_path"] == rows[1]["archive_path"]
    code, output = run_cli("prune", "-c", cfg, "--before", cut, "--json")
    assert code == 0 and json.loads(output)["archived_copies"] == 5
    rows = files(tmp_path)
    assert rows[1]["pruned_at"] and rows[1]["archive_path"] is None
    assert rows[7]["pruned_at"] is None and Path(rows[7]["archive_path"]).is_file()
    assert run_cli("replay", "-c", cfg, "7")[0] == 0


def test_work_that_needs_a_person_is_never_pruned(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    broken = tmp_path / "import.xml"
    broken.write_bytes((UT11 / next(p.name for p in UT11.glob("import*.xml"))).read_bytes()[:3000])
    assert run_cli("ingest", "-c", cfg, broken)[0] == 1
    [row] = files(tmp_path).values()
    assert row["status"] == "quarantined"
    journal_before = count(tmp_path, "SELECT COUNT(*) FROM journal")
    # An offer whose product never came waits in the outbox's neighbour table; a pending operation too.
    offers = next(UT11.glob("offers*.xml"))
    assert run_cli("ingest", "-c", cfg, offers)[0] == 0
    waiting = count(tmp_path, "SELECT COUNT(*) FROM waiting")
    assert waiting > 0
    with sqlite3.connect(tmp_path / "var" / "bridge.db") as conn:
        conn.execute("INSERT INTO outbox (kind, entity, external_id, payload, status, created_at)"
                     " VALUES ('upsert_product', 'product', 'later', '{}', 'pending', '2000-01-01T00:00:00.000Z')")
    code, output = run_cli("prune", "-c", cfg, "--before", later(), "--json")
    assert code == 0
    assert row["archive_path"] and Path(row["archive_path"]).is_file()
    assert list((tmp_path / "var" / "quarantine").glob("*.report.txt"))
    assert count(tmp_path, f"SELECT COUNT(*) FROM journal WHERE file_id = {row['id']}") > 0
    assert count(tmp_path, "SELECT COUNT(*) FROM journal") >= journal_before
    assert count(tmp_path, "SELECT COUNT(*) FROM waiting") == waiting
    assert count(tmp_path, "SELECT COUNT(*) FROM outbox WHERE status = 'pending'") == 1


@pytest.mark.parametrize("value", ["-1", '"90"', "true"])
def test_keep_days_is_checked_with_the_rest_of_the_configuration(tmp_path: Path, value: str) -> None:
    path = tmp_path / "bridge.toml"
    path.write_text(f"[archive]\nkeep_days = {value}\n[state]\nkeep_days = {value}\n", encoding="utf-8")
    code, output = run_cli("status", "-c", path)
    assert code == 2
    assert "archive.keep_days must be a number of days" in output and "state.keep_days must be" in output


def test_the_daemon_prunes_by_itself(tmp_path: Path) -> None:
    # keep_days may be a fraction: 0.00002 days is under two seconds.
    cfg = write_config(tmp_path, archive_keep_days=0.00002)
    assert run_cli("ingest", "-c", cfg, UT11)[0] == 0
    assert len(stored_copies(tmp_path)) == 6
    time.sleep(2)
    result = subprocess.run([sys.executable, "-m", "bridge", "run", "-c", str(cfg), "--once"], cwd=REPO,
                            capture_output=True, text=True, timeout=120, env={**os.environ})
    assert result.returncode == 0, result.stderr
    assert stored_copies(tmp_path) == []
    # Only the archive was asked for: the state's history stays.
    assert count(tmp_path, "SELECT COUNT(*) FROM outbox WHERE status = 'done'") > 0
    assert all(row["pruned_at"] for row in files(tmp_path).values())


def test_a_prune_of_more_files_than_sqlite_allows_variables_still_runs(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    assert run_cli("ingest", "-c", cfg, UT11)[0] == 0
    config = load(cfg)
    conn = db.connect(config.state_path)
    try:
        # Six settled files (six ids and six copies) against eight variables per statement, the most a
        # journal row needs: a year of a busy daemon against SQLite's default of 32,766, in small.
        conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 8)
        pruned = retention.prune(conn, config.archive_path, retention.Cutoffs(later(), None))
    finally:
        conn.close()
    assert pruned.archived_copies == 6 and stored_copies(tmp_path) == []
    assert all(row["pruned_at"] and row["archive_path"] is None for row in files(tmp_path).values())


def test_the_prune_is_synced_before_any_archived_copy_is_deleted(tmp_path: Path) -> None:
    """Under synchronous=NORMAL a power cut could undo the prune's commit after its copies were deleted,
    leaving ledger rows that point at nothing: the commit must be synced first."""
    cfg = write_config(tmp_path)
    assert run_cli("ingest", "-c", cfg, UT11)[0] == 0
    config = load(cfg)
    conn = db.connect(config.state_path)
    events: list[str] = []
    conn.set_trace_callback(events.append)
    real_unlink = Path.unlink

    def unlink(path: Path, missing_ok: bool = False) -> None:
        events.append(f"unlink {path}")
        real_unlink(path, missing_ok=missing_ok)

    try:
        Path.unlink = unlink  # type: ignore[method-assign]
        retention.prune(conn, config.archive_path, retention.Cutoffs(later(), None))
    finally:
        Path.unlink = real_unlink  # type: ignore[method-assign]
        conn.close()
    first_unlink = next(i for i, e in enumerate(events) if e.startswith("unlink ") and "archive" in e)
    before = [" ".join(e.split()).upper() for e in events[:first_unlink]]
    update = max(i for i, e in enumerate(before) if e.startswith("UPDATE FILES SET ARCHIVE_PATH = NULL"))
    levels = [e for e in before[:update] if e.startswith("PRAGMA SYNCHRONOUS")]
    assert levels and levels[-1].endswith("FULL") and "COMMIT" in before[update:]


def test_a_prune_killed_between_its_commit_and_its_unlinks_is_finished_by_the_next(tmp_path: Path) -> None:
    """kill -9 after the prune's commit and before its copies are deleted: the rows no longer point at the
    copies, so the next prune must still find and remove them, or they stay in the archive forever."""
    cfg = write_config(tmp_path)
    assert run_cli("ingest", "-c", cfg, UT11)[0] == 0
    assert len(stored_copies(tmp_path)) == 6
    cut = later()
    env = {**os.environ, "BRIDGE_CRASH_AT": "pruned"}
    crashed = subprocess.run([sys.executable, "-m", "bridge", "prune", "-c", str(cfg), "--before", cut], cwd=REPO,
                             env=env, capture_output=True, text=True, timeout=120)
    assert crashed.returncode == -9, crashed.stdout + crashed.stderr
    assert all(row["pruned_at"] and row["archive_path"] is None for row in files(tmp_path).values())
    code, output = run_cli("prune", "-c", cfg, "--before", cut, "--json")
    assert code == 0, output
    assert stored_copies(tmp_path) == []  # as after an uninterrupted prune
    assert json.loads(output)["archived_copies"] == 6
