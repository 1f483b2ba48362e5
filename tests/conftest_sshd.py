"""Fixtures around a real sshd; load with ``pytest_plugins = ["conftest_sshd"]`` at the top of a test module.

A plugin module rather than tests/conftest.py, so only the SFTP tests pay for (and depend on) sshd.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import sshd
from bridge.transport.base import SourceSettings


@pytest.fixture(scope="session")
def ssh_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[sshd.SshServer]:
    """One sshd for the whole session: starting one costs keygen + fork, a test should not pay it."""
    binary = sshd.find_sshd()
    if binary is None:
        pytest.skip("OpenSSH sshd is not installed (apt-get install openssh-server; .ci/run does it)")
    server = sshd.start(binary, tmp_path_factory.mktemp("sshd"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def known_hosts(ssh_server: sshd.SshServer, tmp_path: Path) -> Path:
    """A pinned known_hosts holding exactly the test server's host key."""
    path = tmp_path / "known_hosts"
    path.write_text(ssh_server.known_hosts_line())
    return path


@pytest.fixture
def remote_dir(tmp_path: Path) -> Path:
    """The folder the source reads; sshd serves the local filesystem, so tests write here directly."""
    path = tmp_path / "exchange"
    path.mkdir()
    return path


@pytest.fixture
def sftp_settings(ssh_server: sshd.SshServer, known_hosts: Path, remote_dir: Path) -> SourceSettings:
    """A ready ``kind = "sftp"`` source over the test sshd; tests adjust fields as they need."""
    return SourceSettings(
        name="branch", kind="sftp", path=str(remote_dir), min_age=0.0,
        options={
            "host": ssh_server.host, "port": ssh_server.port, "user": ssh_server.user,
            "key_file": str(ssh_server.client_key), "known_hosts": str(known_hosts),
            "connect_timeout": 5.0, "io_timeout": 10.0,
        })
