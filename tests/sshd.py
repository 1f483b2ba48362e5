"""A real OpenSSH server for the SFTP tests: its own host key, one authorized ed25519 key, loopback only.

A real ``sshd`` (not paramiko's server classes) is what production talks to, so the tests see its
actual host-key negotiation, ``internal-sftp`` behaviour, posix-rename support and how a killed
session looks from the client side.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

SSHD_CANDIDATES = ("/usr/sbin/sshd", "/usr/local/sbin/sshd")
PRIVSEP_DIR = Path("/run/sshd")  # compiled into Debian's sshd; it refuses to start as root without it


def find_sshd() -> str | None:
    for candidate in SSHD_CANDIDATES:
        if os.access(candidate, os.X_OK):
            return candidate
    return shutil.which("sshd")


def keygen(path: Path, comment: str) -> Path:
    """A fresh unencrypted ed25519 key pair; returns the private key's path."""
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
                   check=True, stdin=subprocess.DEVNULL, capture_output=True)
    return path


def fingerprint(public_key: Path) -> str:
    """``SHA256:...`` as ssh-keygen prints it: the operator compares exactly this string."""
    out = subprocess.run(["ssh-keygen", "-l", "-E", "sha256", "-f", str(public_key)],
                         check=True, capture_output=True, text=True).stdout
    return out.split()[1]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _banner(port: int) -> bool:
    """True once something on the port speaks SSH (a bare accept could be another process)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            return sock.recv(64).startswith(b"SSH-2.0-")
    except OSError:
        return False


@dataclass
class SshServer:
    host: str
    port: int
    user: str
    host_key: Path  # the server's private host key; ``.pub`` beside it
    client_key: Path  # authorized for ``user``
    log: Path
    process: subprocess.Popen[bytes]

    def known_hosts_line(self) -> str:
        """What ``ssh-keyscan -p PORT 127.0.0.1`` would print: port 22 is the only one without brackets."""
        kind, blob = self.host_key.with_suffix(".pub").read_text().split()[:2]
        return f"[{self.host}]:{self.port} {kind} {blob}\n"

    def sessions(self) -> list[psutil.Process]:
        """The per-connection processes sshd forked (privsep monitor and the session child)."""
        try:
            return psutil.Process(self.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def kill_sessions(self) -> int:
        """Drop every open connection the hard way, as a crashed or rebooted server would."""
        victims = self.sessions()
        _kill(victims)
        return len(victims)

    def stop(self) -> None:
        # Sessions outlive the listener (they are separate processes): collect them first.
        victims = self.sessions()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        _kill(victims)


def _kill(victims: list[psutil.Process]) -> None:
    for proc in victims:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    # psutil.wait_procs polls non-children with a growing sleep (over a second here); and a killed
    # grandchild may stay a zombie under a PID 1 that does not reap, which is dead enough.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(_running(p) for p in victims):
        time.sleep(0.01)


def _running(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def start(sshd: str, folder: Path) -> SshServer:
    """Start ``sshd -D -e`` on a free loopback port with keys and config under ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    host_key = keygen(folder / "ssh_host_ed25519_key", "bridge-test-host")
    client_key = keygen(folder / "client_ed25519", "bridge-test-client")
    authorized = folder / "authorized_keys"
    authorized.write_text(client_key.with_suffix(".pub").read_text())
    user = pwd.getpwuid(os.getuid()).pw_name
    if os.geteuid() == 0 and not PRIVSEP_DIR.is_dir():
        # Normally systemd's ssh.service creates it (RuntimeDirectory=sshd); containers have none.
        PRIVSEP_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
    last_error = ""
    for _attempt in range(3):  # the free port may be taken between probing and binding
        port = free_port()
        config = folder / "sshd_config"
        config.write_text("\n".join([
            f"Port {port}",
            "ListenAddress 127.0.0.1",
            f"HostKey {host_key}",
            f"PidFile {folder / 'sshd.pid'}",
            f"AuthorizedKeysFile {authorized}",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PermitRootLogin prohibit-password",
            "UsePAM no",
            "StrictModes no",  # pytest's tmp folders are not owned the way StrictModes insists on
            "Subsystem sftp internal-sftp",
            "AllowTcpForwarding no",
            "X11Forwarding no",
            "PrintMotd no",
            "LogLevel VERBOSE",
            "",
        ]))
        log = folder / "sshd.log"
        with open(log, "ab") as sink:
            process = subprocess.Popen([sshd, "-D", "-e", "-f", str(config)], stdin=subprocess.DEVNULL,
                                       stdout=sink, stderr=sink)
        server = SshServer("127.0.0.1", port, user, host_key, client_key, log, process)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and process.poll() is None:
            if _banner(port):
                return server
            time.sleep(0.05)
        server.stop()
        last_error = log.read_text(errors="replace")[-2000:]
    raise RuntimeError(f"sshd did not start; its log:\n{last_error}")
