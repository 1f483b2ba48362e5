"""bridge run: folders watched, only complete files taken, restarts and signals survived, systemd told."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import exchange as x
from conftest import REPO, SAMPLES

sys.path.insert(0, str(REPO / "bench"))
from generate_catalog import generate  # noqa: E402


def write_config(folder: Path, **source: object) -> Path:
    options = {"name": "ut11", "kind": "folder", "path": "in", "min_age": 0.5, **source}
    lines = ['[state]\npath = "var/bridge.db"', '[archive]\npath = "var/archive"\nquarantine = "var/quarantine"',
             '[crm]\nkind = "sandbox"\npath = "var/crm.db"', "[daemon]\nrescan = 1", "[[source]]"]
    lines += [f"{k} = {json.dumps(v)}" for k, v in options.items()]
    (folder / "in").mkdir(exist_ok=True)
    path = folder / "bridge.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def bridge(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bridge", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


_started: list[subprocess.Popen[str]] = []


@pytest.fixture(autouse=True)
def _no_daemon_left_behind():
    """A failing test must not leave a daemon running (it would hold its folder and a core)."""
    yield
    while _started:
        process = _started.pop()
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=30)


def start(cfg: Path, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    process = subprocess.Popen([sys.executable, "-m", "bridge", "run", "-c", str(cfg)], cwd=REPO, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, **(env or {})})
    _started.append(process)
    return process


def stop(process: subprocess.Popen[str]) -> tuple[int, str]:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    return process.returncode, err


def ledger(folder: Path) -> list[tuple[int, str, str]]:
    db = folder / "var" / "bridge.db"
    if not db.exists():
        return []
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT id, name, status FROM files ORDER BY id").fetchall()
    except sqlite3.OperationalError:  # the daemon is creating the tables right now
        return []
    finally:
        conn.close()


def crm_products(folder: Path) -> dict[str, dict]:
    result = bridge("sandbox", "-c", str(folder / "bridge.toml"), "dump", "--json")
    assert result.returncode == 0, result.stderr
    return {p["external_id"]: p for p in json.loads(result.stdout)["products"]}


def wait_for(condition, timeout: float = 30.0, step: float = 0.05):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(step)
    raise AssertionError("condition not met in time")


def test_run_once_takes_a_package_in_load_order_and_moves_it_away(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, after="move", move_to="done")
    for path in sorted((SAMPLES / "exchange" / "ut11").glob("*.xml"), reverse=True):
        shutil.copy(path, tmp_path / "in")
    result = bridge("run", "-c", str(cfg), "--once")
    assert result.returncode == 0, result.stderr
    rows = ledger(tmp_path)
    kinds = [name.split(":", 1)[1].split("___")[0] for _, name, _ in rows]
    assert kinds == ["import", "offers", "prices", "rests", "contragents", "documents"]
    assert {status for *_, status in rows} == {"applied"}
    assert sorted(p.name for p in (tmp_path / "done").iterdir()) == sorted(
        p.name for p in (SAMPLES / "exchange" / "ut11").glob("*.xml"))
    assert not list((tmp_path / "in").glob("*.xml"))
    assert "289a7cba-73c9-11ef-a3c6-00155d0a4e21" in crm_products(tmp_path)


def test_a_file_being_written_is_never_taken_before_it_is_complete(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, min_age=1.0)
    daemon = start(cfg)
    try:
        text = x.catalog([x.product(f"slow-{i}", f"Товар {i}") for i in range(40)], full=False).encode("utf-8")
        target = tmp_path / "in" / "import.xml"
        pieces = [text[i:i + len(text) // 6 + 1] for i in range(0, len(text), len(text) // 6 + 1)]
        with open(target, "wb") as f:
            for number, piece in enumerate(pieces):  # 1C writing slowly: pauses longer than a rescan
                if number:
                    time.sleep(0.7)
                    assert ledger(tmp_path) == [], "taken while still being written"
                f.write(piece)
                f.flush()
                finished = time.monotonic()
        rows = wait_for(lambda: [r for r in ledger(tmp_path) if r[2] == "applied"], timeout=20)
        assert time.monotonic() - finished >= 1.0  # min_age by our clock
        assert len(rows) == 1 and not list((tmp_path / "var" / "quarantine").glob("*"))
    finally:
        code, err = stop(daemon)
    assert code == 0, err
    assert len(crm_products(tmp_path)) == 40


def test_the_same_file_is_not_taken_twice_across_restarts_and_renames(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, after="move", move_to="done")
    x.write(tmp_path / "in", "import.xml", x.catalog([x.product("p1", "Дрель")], full=False))
    assert bridge("run", "-c", str(cfg), "--once").returncode == 0
    calls = json.loads(bridge("sandbox", "-c", str(cfg), "dump", "--json").stdout)["calls"]
    shutil.copy(tmp_path / "done" / "import.xml", tmp_path / "in" / "import_copy_renamed.xml")
    result = bridge("run", "-c", str(cfg), "--once")
    assert result.returncode == 0, result.stderr
    assert [status for *_, status in ledger(tmp_path)] == ["applied"]  # no second claim
    assert json.loads(bridge("sandbox", "-c", str(cfg), "dump", "--json").stdout)["calls"] == calls
    assert not list((tmp_path / "in").glob("*.xml"))  # disposed all the same
    journal = bridge("journal", "-c", str(cfg)).stdout
    assert "already taken as file #1" in journal


def test_done_marker_mode_and_ignored_names(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, done_marker=".ready", min_age=0)
    x.write(tmp_path / "in", "import.xml", x.catalog([x.product("p1", "Дрель")], full=False))
    x.write(tmp_path / "in", "offers.xml.tmp", x.offers([x.offer("p1", retail="1")]))
    assert bridge("run", "-c", str(cfg), "--once").returncode == 0
    assert ledger(tmp_path) == []  # no marker yet
    (tmp_path / "in" / "import.xml.ready").touch()
    assert bridge("run", "-c", str(cfg), "--once").returncode == 0
    assert [s for *_, s in ledger(tmp_path)] == ["applied"]
    assert sorted(p.name for p in (tmp_path / "in").iterdir()) == ["offers.xml.tmp"]


def test_polling_source_sees_new_files_without_inotify(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, polling=True, interval=0.3, min_age=0.3)
    daemon = start(cfg)
    try:
        time.sleep(0.5)
        x.write(tmp_path / "in", "import.xml", x.catalog([x.product("p1", "Дрель")], full=False))
        wait_for(lambda: [r for r in ledger(tmp_path) if r[2] == "applied"], timeout=20)
    finally:
        code, err = stop(daemon)
    assert code == 0, err


@pytest.fixture(scope="module")
def big_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("big")
    generate(folder, 2500, seed=11)
    return folder / "import0_1.xml"


def test_first_sigterm_finishes_the_current_file_and_exits_0(tmp_path: Path, big_package: Path) -> None:
    cfg = write_config(tmp_path, min_age=0.2)
    daemon = start(cfg)
    shutil.copy(big_package, tmp_path / "in" / "import.xml")
    wait_for(lambda: ledger(tmp_path), timeout=30, step=0.01)  # claimed: now reading it
    daemon.send_signal(signal.SIGTERM)
    code, err = stop(daemon)
    assert code == 0, err
    assert [s for *_, s in ledger(tmp_path)][0] in ("committed", "applied")


def test_second_sigterm_aborts_and_the_claim_is_recovered(tmp_path: Path, big_package: Path) -> None:
    cfg = write_config(tmp_path, min_age=0.2)
    daemon = start(cfg)
    shutil.copy(big_package, tmp_path / "in" / "import.xml")
    wait_for(lambda: ledger(tmp_path), timeout=30, step=0.01)
    daemon.send_signal(signal.SIGTERM)
    time.sleep(0.05)
    if daemon.poll() is None:
        daemon.send_signal(signal.SIGTERM)
    code, err = stop(daemon)
    assert "Traceback" not in err
    result = bridge("run", "-c", str(cfg), "--once")
    assert result.returncode == 0, result.stderr
    assert [s for *_, s in ledger(tmp_path)] == ["applied"]
    assert len(crm_products(tmp_path)) == 2500


def test_kill_9_mid_file_then_restart_ends_as_an_uninterrupted_run(tmp_path: Path, big_package: Path) -> None:
    reference_dir = tmp_path / "reference"
    reference_dir.mkdir()
    reference_cfg = write_config(reference_dir, min_age=0)
    shutil.copy(big_package, reference_dir / "in" / "import.xml")
    assert bridge("run", "-c", str(reference_cfg), "--once").returncode == 0
    crashed = tmp_path / "crashed"
    crashed.mkdir()
    cfg = write_config(crashed, min_age=0)
    shutil.copy(big_package, crashed / "in" / "import.xml")
    result = bridge("run", "-c", str(cfg), "--once", env={"BRIDGE_CRASH_AT": "staged"})
    assert result.returncode == -signal.SIGKILL
    assert [s for *_, s in ledger(crashed)] == ["archived"]
    assert bridge("run", "-c", str(cfg), "--once").returncode == 0
    assert [s for *_, s in ledger(crashed)] == ["applied"]
    assert crm_products(crashed) == crm_products(reference_dir)


def test_systemd_is_told_ready_watchdog_status_and_stopping(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    x.write(tmp_path / "in", "import.xml", x.catalog([x.product("p1", "Дрель")], full=False))
    address = str(tmp_path / "notify.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(address)
    listener.settimeout(0.2)
    messages: list[str] = []
    done = threading.Event()

    def collect() -> None:
        while not done.is_set():
            try:
                messages.append(listener.recv(4096).decode())
            except TimeoutError:
                continue

    thread = threading.Thread(target=collect)
    thread.start()
    try:
        result = bridge("run", "-c", str(cfg), "--once", env={"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "2000000"})
        time.sleep(0.3)
    finally:
        done.set()
        thread.join()
        listener.close()
    assert result.returncode == 0, result.stderr
    text = "\n".join(messages)
    assert messages[0].startswith("READY=1")
    assert "WATCHDOG=1" in text and "STATUS=" in text and "outbox" in text
    assert messages[-1].startswith("STOPPING=1")


def test_names_that_are_not_utf8_or_hold_a_newline_are_taken_and_journaled(tmp_path: Path) -> None:
    """A share can hold names in cp1251 (bytes that are not UTF-8) or with control characters: the
    daemon takes them like any file, under a name the ledger can store, and keeps running."""
    cfg = write_config(tmp_path, after="delete")
    sample = (SAMPLES / "exchange" / "ut11").glob("import*.xml").__next__().read_bytes()
    folder = os.fsencode(tmp_path / "in")
    for name, mark in ((b"\xcf\xf0\xe0\xe9\xf1.xml", b"A"), (b"two\nlines.xml", b"B")):
        with open(os.path.join(folder, name), "wb") as f:
            f.write(sample + b"<!--" + mark + b"-->")  # distinct content: each is its own file
    (tmp_path / "in" / "bad\x1b[31m.xml").write_bytes(b"not xml")
    result = bridge("run", "-c", str(cfg), "--once")
    assert result.returncode == 0, result.stderr
    rows = {name: status for _, name, status in ledger(tmp_path)}
    assert rows == {"ut11:\\xcf\\xf0\\xe0\\xe9\\xf1.xml": "applied", "ut11:two\\nlines.xml": "applied",
                    "ut11:bad\\x1b[31m.xml": "quarantined"}
    assert os.listdir(folder) == []


def test_a_full_export_split_over_files_is_decided_once_its_package_is_in(tmp_path: Path) -> None:
    # 1C writes one full export as import0_1.xml, import0_2.xml, ...; the daemon takes each as soon as
    # it is complete. Decided after the first, the goods of the second would look absent (here: 50%,
    # refused, and then the second file alone would be refused too, so p9 would never go).
    cfg = write_config(tmp_path)
    cfg.write_text(cfg.read_text(encoding="utf-8").replace("rescan = 1", "rescan = 1\ndeactivate_after = 8"),
                   encoding="utf-8")
    goods = [x.product(f"p{i}", f"Товар {i}") for i in range(10)]
    x.write(tmp_path / "first", "import.xml", x.catalog(goods))
    assert bridge("ingest", "-c", str(cfg), str(tmp_path / "first")).returncode == 0
    daemon = start(cfg)
    try:
        x.write(tmp_path / "in", "import0_1.xml", x.catalog(goods[:5]))
        wait_for(lambda: len(ledger(tmp_path)) == 2)
        x.write(tmp_path / "in", "import0_2.xml", x.catalog(goods[5:9]))
        wait_for(lambda: len(ledger(tmp_path)) == 3)
        assert all(p["active"] for p in crm_products(tmp_path).values())  # the package is not settled yet
        wait_for(lambda: not crm_products(tmp_path)["p9"]["active"], timeout=90, step=0.5)
    finally:
        code, err = stop(daemon)
    assert code == 0, err
    assert [i for i, p in sorted(crm_products(tmp_path).items()) if p["active"]] == [f"p{i}" for i in range(9)]
