"""The daemon against files and folders that fail in ways 1C, Windows and the disks really produce.

Each case must end with the daemon alive (`run --once` exits 0), every other file of the source
taken, nothing lost from the source that was not settled, and the failure named in the journal.
"""

from __future__ import annotations

import os
import resource
import shutil
import sqlite3
import struct
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from conftest import REPO, SAMPLES
from test_daemon import ledger, write_config

PACKAGE = SAMPLES / "exchange" / "ut11"


def run_once(cfg: Path, **popen: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bridge", "run", "-c", str(cfg), "--once"], cwd=REPO,
                          capture_output=True, text=True, timeout=120, env=dict(os.environ), **popen)  # type: ignore[call-overload]


def journal_messages(folder: Path, status: str | None = None) -> list[str]:
    conn = sqlite3.connect(folder / "var" / "bridge.db")
    try:
        return [m for (m, s) in conn.execute("SELECT message, status FROM journal ORDER BY id") if status in (None, s)]
    finally:
        conn.close()


def copy_package(folder: Path) -> list[str]:
    names = []
    for path in sorted(PACKAGE.glob("*.xml")):
        shutil.copy(path, folder / path.name)
        names.append(path.name)
    return names


def goods_zip(path: Path, method: int = zipfile.ZIP_DEFLATED) -> bytes:
    data = next(PACKAGE.glob("import*.xml")).read_bytes()
    with zipfile.ZipFile(path, "w", compression=method) as z:
        z.writestr("import.xml", data)
    return data


def test_a_damaged_zip_and_a_deflate64_zip_are_quarantined_and_the_rest_is_taken(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, min_age=0)
    names = copy_package(tmp_path / "in")
    damaged = tmp_path / "in" / "damaged.zip"
    goods_zip(damaged)
    raw = bytearray(damaged.read_bytes())
    data_start = 30 + len("import.xml")  # the first entry's compressed bytes
    for i in range(data_start + 10, data_start + 40):
        raw[i] ^= 0x5A
    damaged.write_bytes(bytes(raw))
    deflate64 = tmp_path / "in" / "explorer.zip"  # Windows Explorer compresses big folders with Deflate64
    goods_zip(deflate64)
    raw = bytearray(deflate64.read_bytes())
    raw[8:10] = struct.pack("<H", 9)
    central = raw.rfind(b"PK\x01\x02")
    raw[central + 10:central + 12] = struct.pack("<H", 9)
    deflate64.write_bytes(bytes(raw))

    result = run_once(cfg)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    statuses = {name.split(":", 1)[1]: status for _, name, status in ledger(tmp_path)}
    assert statuses["damaged.zip"] == "quarantined" and statuses["explorer.zip"] == "quarantined"
    assert all(statuses[name] == "applied" for name in names)
    reports = "".join(p.read_text(encoding="utf-8") for p in (tmp_path / "var" / "quarantine").glob("*.report.txt"))
    assert "the archive is damaged" in reports and "compression method" in reports
    assert list((tmp_path / "in").iterdir()) == []


def test_a_zip_our_own_disk_cannot_unpack_stays_in_its_source(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, min_age=0)
    zipped = tmp_path / "in" / "goods.zip"
    data = goods_zip(zipped)
    padded = data + b"\n" * (3 << 20)  # 3 MiB unpacked, a few KB packed
    with zipfile.ZipFile(zipped, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("import.xml", padded)
    limit = 1 << 20  # files of at most 1 MiB: writing the unpacked entry fails with EFBIG, as a full disk would

    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    result = run_once(cfg, preexec_fn=small_files)
    assert result.returncode == 0, result.stderr
    assert [p.name for p in (tmp_path / "in").iterdir()] == ["goods.zip"]  # taken again later, not lost
    assert ledger(tmp_path) == []  # and not quarantined as "damaged" for a fault of ours
    assert not list((tmp_path / "var" / "spool").glob(".bridge-zip-*"))  # nothing half-unpacked stays

    result = run_once(cfg)  # the disk has room again
    assert result.returncode == 0, result.stderr
    assert [status for _, _, status in ledger(tmp_path)] == ["unpacked", "applied"]  # the zip, its XML
    assert list((tmp_path / "in").iterdir()) == []


def test_a_file_that_cannot_be_moved_away_is_journaled_once_and_the_rest_still_taken(tmp_path: Path) -> None:
    (tmp_path / "done").write_text("a file where the done folder should be", encoding="utf-8")
    cfg = write_config(tmp_path, min_age=0, after="move", move_to=str(tmp_path / "done" / "sub"))
    names = copy_package(tmp_path / "in")

    for _ in range(2):
        result = run_once(cfg)
        assert result.returncode == 0, result.stderr
    assert sorted(name.split(":", 1)[1] for _, name, _ in ledger(tmp_path)) == sorted(names)
    assert {status for _, _, status in ledger(tmp_path)} == {"applied"}
    errors = [m for m in journal_messages(tmp_path, "error") if "could not be removed from its source" in m]
    assert len(errors) == len(names)  # each file once, however many scans see it again
    assert sorted(p.name for p in (tmp_path / "in").iterdir()) == sorted(names)  # nothing deleted unmoved


def _other_file_system(tmp_path: Path) -> Path | None:
    for candidate in (Path("/dev/shm"), Path("/run/user") / str(os.getuid())):
        if candidate.is_dir() and os.access(candidate, os.W_OK) and candidate.stat().st_dev != tmp_path.stat().st_dev:
            return candidate
    return None


def test_move_to_on_another_file_system_moves_every_file(tmp_path: Path) -> None:
    other = _other_file_system(tmp_path)
    if other is None:
        pytest.skip("no writable folder on another file system here")
    done = Path(os.path.join(other, f"bridge-test-done-{os.getpid()}"))
    try:
        cfg = write_config(tmp_path, min_age=0, after="move", move_to=str(done))
        names = copy_package(tmp_path / "in")
        result = run_once(cfg)
        assert result.returncode == 0, result.stderr
        assert {status for _, _, status in ledger(tmp_path)} == {"applied"}
        assert list((tmp_path / "in").iterdir()) == []
        assert sorted(p.name for p in done.iterdir()) == sorted(names)
        assert all((done / n).read_bytes() == (PACKAGE / n).read_bytes() for n in names)
    finally:
        shutil.rmtree(done, ignore_errors=True)


def test_what_a_killed_daemon_left_in_the_spool_is_swept_at_start(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, min_age=0)
    spool = tmp_path / "var" / "spool"
    (spool / ".bridge-zip-abc" / "sub").mkdir(parents=True)
    (spool / ".bridge-zip-abc" / "sub" / "import.xml").write_text("<half/>", encoding="utf-8")
    (spool / ".sftp-x1y2.part.xml").write_bytes(b"half a download")
    (spool / ".sftp-a3b4.part").write_bytes(b"half a download, as named before")
    incoming = tmp_path / "var" / "archive" / ".incoming"
    incoming.mkdir(parents=True)
    (incoming / "take-old").write_bytes(b"half a copy from last week")
    os.utime(incoming / "take-old", (time.time() - 7 * 86400,) * 2)
    (incoming / "take-new").write_bytes(b"a copy another process is making now")
    result = run_once(cfg)
    assert result.returncode == 0, result.stderr
    assert list(spool.iterdir()) == []
    assert [p.name for p in incoming.iterdir()] == ["take-new"]


def _archive_paths(folder: Path) -> dict[str, str]:
    conn = sqlite3.connect(folder / "var" / "bridge.db")
    try:
        return {name: path for name, path in conn.execute("SELECT name, archive_path FROM files")}
    finally:
        conn.close()


def test_a_zip_is_archived_whole_with_its_pictures_and_replays_as_its_members(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, min_age=0)
    picture = os.urandom(5000)
    with zipfile.ZipFile(tmp_path / "in" / "goods.zip", "w", compression=zipfile.ZIP_DEFLATED) as z:
        for path in sorted(PACKAGE.glob("*.xml")):
            z.write(path, path.name)
        z.writestr("import_files/ab/picture.jpg", picture)
    with zipfile.ZipFile(tmp_path / "in" / "pictures.zip", "w") as z:  # 1C sent the pictures alone
        z.writestr("import_files/cd/other.jpg", picture)

    result = run_once(cfg)
    assert result.returncode == 0, result.stderr
    assert list((tmp_path / "in").iterdir()) == []
    statuses = {name: status for _, name, status in ledger(tmp_path)}
    assert statuses["ut11:goods.zip"] == "unpacked" and statuses["ut11:pictures.zip"] == "unpacked"
    members = [name for name in statuses if name.startswith("ut11:goods.zip!")]
    assert len(members) == len(list(PACKAGE.glob("*.xml"))) and {statuses[m] for m in members} == {"applied"}
    archived = _archive_paths(tmp_path)
    with zipfile.ZipFile(archived["ut11:goods.zip"]) as z:
        assert z.read("import_files/ab/picture.jpg") == picture  # kept, not lost with the source
    with zipfile.ZipFile(archived["ut11:pictures.zip"]) as z:
        assert z.namelist() == ["import_files/cd/other.jpg"]
    assert any("pictures.zip" in m and "no XML file" in m for m in journal_messages(tmp_path))

    [container_id] = [i for i, name, _ in ledger(tmp_path) if name == "ut11:goods.zip"]
    replay = subprocess.run([sys.executable, "-m", "bridge", "replay", "-c", str(cfg), str(container_id)], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert replay.returncode == 0, replay.stdout + replay.stderr
    assert replay.stdout.count(": committed") == len(members)


def test_a_file_cut_off_while_1c_pauses_stays_in_its_source_and_is_taken_once_complete(tmp_path: Path) -> None:
    """1C may pause mid-export for longer than min_age: the half file is refused, but not deleted, since
    the rest of the export would then go into an unlinked file."""
    cfg = write_config(tmp_path, min_age=0)
    whole = next(PACKAGE.glob("import*.xml")).read_bytes()
    inbox = tmp_path / "in" / "import.xml"
    with open(inbox, "wb") as writer:  # 1C keeps the file open across its pause, as it does
        writer.write(whole[: len(whole) // 2])
        writer.flush()
        for _ in range(2):  # a restart in between must not delete it either
            result = run_once(cfg)
            assert result.returncode == 0, result.stderr
            assert inbox.exists() and os.stat(inbox).st_nlink == 1
        assert [status for _, _, status in ledger(tmp_path)] == ["quarantined"]
        assert any("stays in its source" in m for m in journal_messages(tmp_path))
        writer.write(whole[len(whole) // 2:])  # 1C goes on and finishes
    result = run_once(cfg)
    assert result.returncode == 0, result.stderr
    assert [status for _, _, status in ledger(tmp_path)] == ["quarantined", "applied"]
    assert list((tmp_path / "in").iterdir()) == []


def test_a_file_broken_in_its_middle_is_still_removed_from_its_source(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, min_age=0)
    whole = next(PACKAGE.glob("import*.xml")).read_bytes()
    middle = len(whole) // 2
    (tmp_path / "in" / "import.xml").write_bytes(whole[:middle] + b"<<<" + whole[middle:])
    result = run_once(cfg)
    assert result.returncode == 0, result.stderr
    assert [status for _, _, status in ledger(tmp_path)] == ["quarantined"]
    assert list((tmp_path / "in").iterdir()) == []  # not a pause of its writer: refused for good


def test_a_symbolic_link_loop_in_the_folder_is_passed_over(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, min_age=0)
    names = copy_package(tmp_path / "in")
    (tmp_path / "in" / "loop.xml").symlink_to("loop.xml")  # stat() fails with ELOOP
    result = run_once(cfg)
    assert result.returncode == 0, result.stderr
    assert sorted(name.split(":", 1)[1] for _, name, _ in ledger(tmp_path)) == sorted(names)
