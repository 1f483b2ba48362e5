"""SftpSource against a real OpenSSH sshd on loopback (see tests/sshd.py).

sshd serves the local filesystem, so a test plays 1C by writing into ``remote_dir`` directly and
checks what the source saw, fetched, deleted or moved through SFTP.
"""

from __future__ import annotations

pytest_plugins = ["conftest_sshd"]

import dataclasses
import hashlib
import logging
import os
import subprocess
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import paramiko
import pytest

import sshd
from bridge.errors import TransientError, UserError
from bridge.transport.base import DEFAULT_IGNORE, RemoteFile, SourceSettings
from bridge.transport.sftp import SftpSource

Make = Callable[..., SftpSource]


@pytest.fixture
def make(sftp_settings: SourceSettings) -> Iterator[Make]:
    """Sources over the test sshd (``options=`` entries are merged); all closed afterwards."""
    made: list[SftpSource] = []

    def factory(**changes: object) -> SftpSource:
        options = {**sftp_settings.options, **changes.pop("options", {})}  # type: ignore[dict-item]
        source = SftpSource(dataclasses.replace(sftp_settings, options=options, **changes))  # type: ignore[arg-type]
        made.append(source)
        return source

    yield factory
    for source in made:
        source.close()
    # A closed source must not leave paramiko's reader thread (and its socket) behind.
    assert not [t for t in threading.enumerate() if isinstance(t, paramiko.Transport)]


@pytest.fixture
def spool(tmp_path: Path) -> Path:
    return tmp_path / "spool"


def names(files: list[RemoteFile]) -> list[str]:
    return sorted(f.name for f in files)


def test_complete_file_is_listed_and_fetched_with_its_bytes_and_sha256(
        make: Make, remote_dir: Path, spool: Path, caplog: pytest.LogCaptureFixture) -> None:
    data = os.urandom(700_000) + "<Ид>1</Ид>".encode()  # several read requests, not one
    (remote_dir / "import.xml").write_bytes(data)
    source = make()
    files, pending = source.scan()
    assert [(f.name, f.size) for f in files] == [("import.xml", len(data))] and pending is None
    with caplog.at_level(logging.INFO, logger="bridge.transport.sftp"):
        with source.fetch(files[0], spool) as local:
            assert local.parent == spool and local.read_bytes() == data
    assert f"sha256={hashlib.sha256(data).hexdigest()}" in caplog.text
    assert list(spool.iterdir()) == []  # the temp copy is gone after the block
    assert (remote_dir / "import.xml").exists()  # fetching is not disposing


def test_a_zip_fetched_into_the_spool_is_unpacked_as_a_zip(make: Make, remote_dir: Path, spool: Path,
                                                           tmp_path: Path) -> None:
    """The spool copy has a temporary name (.sftp-….part…): it must still be known as a zip."""
    from bridge.commerceml.files import expand_inputs

    xml = "<?xml version='1.0' encoding='UTF-8'?><КоммерческаяИнформация/>".encode()
    with zipfile.ZipFile(remote_dir / "goods.zip", "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("import0_1.xml", xml)
    source = make()
    files, _ = source.scan()
    with source.fetch(files[0], spool) as local, expand_inputs([local], unpack_in=tmp_path) as items:
        assert local.name.startswith(".sftp-")
        assert [(item.name.rsplit("!", 1)[1], item.error) for item in items] == [("import0_1.xml", None)]
        assert items[0].path.read_bytes() == xml


def test_file_written_slowly_is_not_returned_before_stable_for_min_age(
        make: Make, remote_dir: Path, spool: Path) -> None:
    source = make(min_age=1.5)  # far longer than the pauses between pieces, even on a busy CI machine
    pieces = [f"<piece n='{i}'/>\n".encode() * 2000 for i in range(5)]
    last_write = [time.monotonic()]
    done = threading.Event()

    def writer() -> None:  # 1C writing a large export in pieces
        try:
            for piece in pieces:
                last_write[0] = time.monotonic()  # taken before the bytes land: a lower bound
                with open(remote_dir / "import.xml", "ab") as f:
                    f.write(piece)
                time.sleep(0.3)
        finally:
            done.set()

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            files, pending = source.scan()
            if files:
                assert done.is_set(), "returned while the writer was still writing"
                assert time.monotonic() - last_write[0] >= source.settings.min_age
                break
            time.sleep(0.1)
        else:
            pytest.fail("the file was never returned")
    finally:
        thread.join()
    with source.fetch(files[0], spool) as local:
        assert local.read_bytes() == b"".join(pieces)


def test_ignore_patterns_and_non_exchange_files_are_skipped(make: Make, remote_dir: Path) -> None:
    for name in ("import.xml", "offers0_1.xml", "goods.zip", "a.tmp", "b.xml.part", ".hidden.xml", "~lock.xml",
                 "notes.txt", "skip-me.xml"):
        (remote_dir / name).write_text("<x/>")
    (remote_dir / "folder.xml").mkdir()
    files, _ = make(ignore=(*DEFAULT_IGNORE, "skip*")).scan()
    assert names(files) == ["goods.zip", "import.xml", "offers0_1.xml"]


def test_done_marker_mode_takes_a_file_only_with_its_marker_and_disposes_both(make: Make, remote_dir: Path) -> None:
    source = make(done_marker=".done", min_age=60.0)  # the marker, not the age, decides
    (remote_dir / "import.xml").write_text("<x/>")
    assert source.scan() == ([], None)
    (remote_dir / "import.xml.done").write_text("")
    files, _ = source.scan()
    assert names(files) == ["import.xml"]
    source.dispose(files[0])
    assert list(remote_dir.iterdir()) == []  # a leftover marker would vouch for the next, half-written file


def test_dispose_delete_removes_the_remote_file(make: Make, remote_dir: Path) -> None:
    (remote_dir / "import.xml").write_text("<x/>")
    (remote_dir / "offers.xml").write_text("<y/>")
    source = make()
    files, _ = source.scan()
    source.dispose(next(f for f in files if f.name == "import.xml"))
    assert sorted(p.name for p in remote_dir.iterdir()) == ["offers.xml"]


def test_dispose_move_keeps_every_copy_under_a_free_name(make: Make, remote_dir: Path, tmp_path: Path) -> None:
    done = tmp_path / "processed"  # missing: dispose creates it
    source = make(after="move", move_to=str(done))
    for content in ("<first/>", "<second/>"):  # 1C reuses import.xml for every export
        (remote_dir / "import.xml").write_text(content)
        files, _ = source.scan()
        source.dispose(files[0])
    assert list(remote_dir.iterdir()) == []
    assert {p.name: p.read_text() for p in done.iterdir()} == {"import.xml": "<first/>", "import.1.xml": "<second/>"}


def test_dispose_leaves_a_file_that_1c_rewrote_after_it_was_taken(make: Make, remote_dir: Path, spool: Path) -> None:
    (remote_dir / "import.xml").write_text("<first/>")
    source = make()
    files, _ = source.scan()
    with source.fetch(files[0], spool):
        pass
    (remote_dir / "import.xml").write_text("<second export/>")  # 1C was quicker than our pipeline
    source.dispose(files[0])
    assert (remote_dir / "import.xml").read_text() == "<second export/>"  # taken on the next scan, not lost


def test_file_changed_after_listing_is_refused_and_leaves_no_temp_file(
        make: Make, remote_dir: Path, spool: Path) -> None:
    (remote_dir / "import.xml").write_text("<x/>")
    source = make()
    files, _ = source.scan()
    with open(remote_dir / "import.xml", "a") as f:
        f.write("<more/>")  # 1C started again after our scan
    with pytest.raises(TransientError, match="changed since it was listed"):
        with source.fetch(files[0], spool):
            pytest.fail("a changed file must not be handed over")
    assert list(spool.iterdir()) == []


def _expect_refused(source: SftpSource, remote_dir: Path, spool: Path) -> str:
    """The host is refused on every path in, and nothing is downloaded."""
    with pytest.raises(UserError) as refused:
        source.scan()
    with pytest.raises(UserError):
        with source.fetch(RemoteFile("import.xml", 4, 0.0), spool):
            pytest.fail("nothing may be downloaded from an unverified server")
    assert not spool.exists() or list(spool.iterdir()) == []
    assert (remote_dir / "import.xml").exists()
    return str(refused.value)


def test_changed_host_key_is_refused_loudly_with_both_fingerprints(
        make: Make, ssh_server: sshd.SshServer, known_hosts: Path, remote_dir: Path, spool: Path,
        tmp_path: Path) -> None:
    impostor = sshd.keygen(tmp_path / "impostor", "not-the-server").with_suffix(".pub")
    kind, blob = impostor.read_text().split()[:2]
    known_hosts.write_text(f"[{ssh_server.host}]:{ssh_server.port} {kind} {blob}\n")
    (remote_dir / "import.xml").write_text("<x/>")
    message = _expect_refused(make(), remote_dir, spool)
    assert "HAS CHANGED" in message and "intercepting" in message
    assert sshd.fingerprint(ssh_server.host_key.with_suffix(".pub")) in message  # what the server offered
    assert sshd.fingerprint(impostor) in message  # what the pinned file expects
    assert f"ssh-keyscan -p {ssh_server.port} -t ed25519 {ssh_server.host} >> {known_hosts}" in message


def test_unknown_host_is_refused_with_its_fingerprint_and_the_approval_command_works(
        make: Make, ssh_server: sshd.SshServer, known_hosts: Path, remote_dir: Path, spool: Path) -> None:
    known_hosts.write_text("")
    (remote_dir / "import.xml").write_text("<x/>")
    message = _expect_refused(make(), remote_dir, spool)
    assert "is not in the pinned known_hosts file" in message
    assert f"ssh-ed25519 host key with fingerprint {sshd.fingerprint(ssh_server.host_key.with_suffix('.pub'))}" \
        in message
    command = f"ssh-keyscan -p {ssh_server.port} -t ed25519 {ssh_server.host}"
    assert f"{command} >> {known_hosts}" in message
    # The operator checked the fingerprint and ran the command: the server is accepted from then on.
    scanned = subprocess.run(command.split(), capture_output=True, text=True, timeout=30, check=True).stdout
    known_hosts.write_text(scanned)
    assert names(make().scan()[0]) == ["import.xml"]


def test_refused_key_is_a_user_error(make: Make, tmp_path: Path) -> None:
    stranger = sshd.keygen(tmp_path / "stranger", "not-authorized")
    with pytest.raises(UserError, match="refused user"):
        make(options={"key_file": str(stranger)}).scan()


def test_key_from_systemd_credentials_directory(make: Make, ssh_server: sshd.SshServer, tmp_path: Path,
                                                remote_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "sftp-key").write_bytes(ssh_server.client_key.read_bytes())
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    (remote_dir / "import.xml").write_text("<x/>")
    assert names(make(options={"key_file": "sftp-key"}).scan()[0]) == ["import.xml"]


def test_unreachable_server_backs_off_before_trying_again(make: Make) -> None:
    source = make(options={"port": sshd.free_port()})  # nothing listens there
    with pytest.raises(TransientError, match="cannot connect"):
        source.scan()
    with pytest.raises(TransientError, match=r"next attempt in \d+ s"):  # no new attempt yet
        source.scan()


def test_connection_dropped_mid_download_is_transient_and_the_next_call_reconnects(
        make: Make, ssh_server: sshd.SshServer, remote_dir: Path, spool: Path) -> None:
    with open(remote_dir / "big.xml", "wb") as f:
        f.truncate(32 << 20)  # sparse: large enough to be cut off halfway, free to create
    (remote_dir / "small.xml").write_bytes(b"<small/>")
    source = make()
    files = {f.name: f for f in source.scan()[0]}
    killed: list[int] = []

    def kill_when_halfway() -> None:  # the server crashes while the file is coming in
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not killed:
            partial = list(spool.glob(".sftp-*")) if spool.exists() else []
            if partial and partial[0].stat().st_size >= 4 << 20:
                killed.append(ssh_server.kill_sessions())
            time.sleep(0.002)

    killer = threading.Thread(target=kill_when_halfway)
    killer.start()
    try:
        with pytest.raises(TransientError, match="connection lost"):
            with source.fetch(files["big.xml"], spool):
                pytest.fail("the download finished before the connection was dropped")
    finally:
        killer.join()
    assert killed and killed[0] > 0
    assert list(spool.iterdir()) == []
    assert names(source.scan()[0]) == ["big.xml", "small.xml"]  # reconnected
    with source.fetch(files["small.xml"], spool) as local:
        assert local.read_bytes() == b"<small/>"


def test_exists_tells_whether_1c_has_taken_a_file_yet(make: Make, remote_dir: Path) -> None:
    (remote_dir / "orders.xml").write_text("<waiting/>")
    source = make()
    assert source.exists(str(remote_dir), "orders.xml")
    (remote_dir / "orders.xml").unlink()  # 1C imported it
    assert not source.exists(str(remote_dir), "orders.xml")


def test_upload_atomic_replaces_the_target_and_leaves_no_temp_file(
        make: Make, remote_dir: Path, tmp_path: Path) -> None:
    outgoing = remote_dir / "to-1c"
    outgoing.mkdir()
    (outgoing / "orders.xml").write_text("<old/>")  # the previous export 1C has not taken yet
    local = tmp_path / "orders.xml"
    local.write_bytes(b"\xef\xbb\xbf" + os.urandom(600_000))
    target = make().upload_atomic(local, str(outgoing), "orders.xml")
    assert target == str(outgoing / "orders.xml")
    assert [p.name for p in outgoing.iterdir()] == ["orders.xml"]
    assert (outgoing / "orders.xml").read_bytes() == local.read_bytes()


def test_servers_without_posix_rename_get_a_plain_rename(
        make: Make, remote_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def unsupported(self: paramiko.SFTPClient, old: str, new: str) -> None:
        raise OSError("Operation unsupported")  # what paramiko raises for SSH_FX_OP_UNSUPPORTED

    monkeypatch.setattr(paramiko.SFTPClient, "posix_rename", unsupported)
    (remote_dir / "orders.xml").write_text("<old/>")
    local = tmp_path / "orders.xml"
    local.write_text("<new/>")
    make().upload_atomic(local, str(remote_dir), "orders.xml")
    assert [p.name for p in remote_dir.iterdir()] == ["orders.xml"]
    assert (remote_dir / "orders.xml").read_text() == "<new/>"


def test_names_that_are_not_utf8_are_listed_fetched_and_disposed_beside_the_others(
        make: Make, remote_dir: Path, spool: Path, tmp_path: Path) -> None:
    """A cp1251 name must not hide the whole folder (paramiko's listdir decodes strictly, and its
    UnicodeDecodeError stopped the daemon): it is taken like any file, under its own bytes."""
    (remote_dir / "import.xml").write_text("<x/>")
    folder = os.fsencode(remote_dir)
    with open(os.path.join(folder, b"\xcf\xf0\xe0\xe9\xf1.xml"), "wb") as f:
        f.write(b"<cp1251/>")
    (remote_dir / "two\nlines\x1b[31m.xml").write_text("<z/>")
    done = tmp_path / "processed"
    source = make(after="move", move_to=str(done))
    files = {f.name: f for f in source.scan()[0]}
    odd = os.fsdecode(b"\xcf\xf0\xe0\xe9\xf1.xml")
    assert sorted(files) == sorted(["import.xml", odd, "two\nlines\x1b[31m.xml"])
    with source.fetch(files[odd], spool) as local:
        assert local.read_bytes() == b"<cp1251/>"
    for remote in files.values():
        source.dispose(remote)
    assert os.listdir(folder) == []
    assert sorted(os.listdir(os.fsencode(done))) == sorted([b"import.xml", b"\xcf\xf0\xe0\xe9\xf1.xml",
                                                            b"two\nlines\x1b[31m.xml"])


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: the server side logs in as 'nobody' to be refused a read")
def test_an_unreadable_remote_file_is_journaled_and_does_not_hold_back_the_files_after_it(
        ssh_server: sshd.SshServer, known_hosts: Path, tmp_path: Path) -> None:
    import shutil
    import sqlite3
    import tempfile

    from conftest import SAMPLES
    from test_daemon import bridge, ledger, write_config

    # sshd reads authorized_keys and serves files as 'nobody': everything it needs must be reachable.
    for folder in (*ssh_server.client_key.parents, *known_hosts.parents):
        if str(folder).startswith(tempfile.gettempdir() + "/") and folder.is_dir():
            os.chmod(folder, folder.stat().st_mode | 0o055)
    os.chmod(ssh_server.client_key.parent / "authorized_keys", 0o644)
    remote = Path(tempfile.mkdtemp(prefix="bridge-sftp-"))
    try:
        os.chmod(remote, 0o777)
        cfg = write_config(tmp_path, kind="sftp", path=str(remote), min_age=0, host=ssh_server.host,
                           port=ssh_server.port, user="nobody", key_file=str(ssh_server.client_key),
                           known_hosts=str(known_hosts))
        sample = next((SAMPLES / "exchange" / "ut11").glob("import*.xml")).read_bytes()
        (remote / "import0_1.xml").write_bytes(sample + b"<!--1-->")
        os.chmod(remote / "import0_1.xml", 0)  # 1C's account wrote it with a umask that locks us out
        (remote / "import0_2.xml").write_bytes(sample + b"<!--2-->")
        result = bridge("run", "-c", str(cfg), "--once")
        assert result.returncode == 0, result.stderr
        assert [(name, status) for _, name, status in ledger(tmp_path)] == [("ut11:import0_2.xml", "applied")]
        assert sorted(os.listdir(remote)) == ["import0_1.xml"]  # left where it is, not lost
        conn = sqlite3.connect(tmp_path / "var" / "bridge.db")
        try:
            said = conn.execute("SELECT message FROM journal WHERE external_id = 'ut11:import0_1.xml'").fetchall()
        finally:
            conn.close()
        assert len(said) == 1 and "permission denied" in said[0][0]
    finally:
        shutil.rmtree(remote, ignore_errors=True)
