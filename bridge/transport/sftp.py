"""An SFTP folder that 1C (or the integrator's server) drops exchange files into.

SFTP has no change notification, so this source only polls: the daemon rescans it every
``interval``. Security follows GUIDE §3: key authentication only, host keys from a pinned
known_hosts file, and an unknown or changed host key is refused with a message that tells the
operator how to approve it safely. Nothing is downloaded from a server we cannot identify.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import logging
import os
import posixpath
import secrets
import socket
import stat
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import paramiko
from paramiko.sftp import CMD_CLOSE, CMD_HANDLE, CMD_NAME, CMD_OPENDIR, CMD_READDIR

from bridge.errors import BridgeError, TransientError, UserError
from bridge.secrets import credential_path
from bridge.transport.base import TAKEN, RemoteFile, Source, SourceSettings, Stability, ignored

log = logging.getLogger(__name__)
_READ = 1 << 20  # bytes per local write
# Bytes asked for per SFTP read request; downloads make one request per round trip. paramiko's
# default is 32 KiB; OpenSSH answers up to 255 KiB (its limits@openssh.com read-length), and a
# server that answers less is asked again for the rest. paramiko's prefetch() would pipeline
# instead, but its helper thread dies with an unhandled exception when the connection drops
# mid-file (and spins forever when given a request cap).
READ_REQUEST = 261120
_KEEPALIVE = 30  # seconds: keeps NAT/firewall state alive between polls
# What paramiko and sockets raise when a request or the connection fails (SFTP status codes arrive
# as IOError too: ``_failure`` tells them apart by whether the connection survived).
_FAILURES = (OSError, EOFError, paramiko.SSHException, paramiko.SFTPError)


@dataclass(frozen=True, slots=True)
class SftpOptions:
    host: str
    port: int
    user: str
    key_file: Path
    known_hosts: Path
    connect_timeout: float
    io_timeout: float

    @classmethod
    def parse(cls, source: str, options: Mapping[str, object]) -> SftpOptions:
        """Check ``SourceSettings.options`` (config_sources did too; this guards direct construction)."""
        problems: list[str] = []

        def text(key: str) -> str:
            value = options.get(key)
            if not isinstance(value, str) or not value:
                problems.append(f"{key} is required")
                return ""
            return value

        def number(key: str, default: float) -> float:
            value = options.get(key, default)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                problems.append(f"{key} must be a positive number")
                return default
            return float(value)

        host, user, key_file, known_hosts = text("host"), text("user"), text("key_file"), text("known_hosts")
        port = number("port", 22)
        if problems:
            raise UserError(f"source {source}: " + "; ".join(problems))
        # A bare key name is a systemd credential (LoadCredential=NAME:/etc/bridge/keys/...), else a
        # path relative to the config file's folder.
        base = Path(str(options.get("config_dir") or "."))
        return cls(host, int(port), user, credential_path(key_file, base), Path(known_hosts),
                   number("connect_timeout", 10), number("io_timeout", 30))

    @property
    def entry(self) -> str:
        """The host as known_hosts names it: OpenSSH brackets every port but 22."""
        return self.host if self.port == 22 else f"[{self.host}]:{self.port}"


def fingerprint(key: paramiko.PKey) -> str:
    """The SHA256 fingerprint exactly as ``ssh-keygen -l`` and ``ssh`` print it."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode().rstrip("=")


def _keyscan(options: SftpOptions, key: paramiko.PKey) -> str:
    # "ssh-ed25519" -> "ed25519", "ecdsa-sha2-nistp256" -> "ecdsa": only the checked key type is appended.
    kind = key.get_name().removeprefix("ssh-").split("-")[0]
    return f"ssh-keyscan -p {options.port} -t {kind} {options.host} >> {options.known_hosts}"


class _PinnedOnly(paramiko.RejectPolicy):
    """Refuses unknown hosts like RejectPolicy, but says which key was offered and how to approve it."""

    def __init__(self, source: str, options: SftpOptions) -> None:
        self.source, self.options = source, options

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        o = self.options
        raise UserError(
            f"source {self.source}: the SFTP server {o.entry} is not in the pinned known_hosts file "
            f"{o.known_hosts}; it offered a {key.get_name()} host key with fingerprint {fingerprint(key)}. "
            "Nothing was downloaded. To approve it, confirm this fingerprint with the server's administrator "
            "(on the server: ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub), then run "
            f"`{_keyscan(o, key)}` and check that `ssh-keygen -lf {o.known_hosts}` shows the same fingerprint.")


def _changed(source: str, o: SftpOptions, error: paramiko.BadHostKeyException) -> UserError:
    return UserError(
        f"source {source}: WARNING: THE HOST KEY OF {o.entry} HAS CHANGED. It offered a {error.key.get_name()} "
        f"key {fingerprint(error.key)}, but {o.known_hosts} pins {error.expected_key.get_name()} "
        f"{fingerprint(error.expected_key)}. Someone may be intercepting the connection (man in the middle), "
        "or the server was reinstalled. Nothing was downloaded and the bridge keeps refusing this server. "
        "Only after the server's administrator confirms the new fingerprint out of band: "
        f"`ssh-keygen -R '{o.entry}' -f {o.known_hosts}` then `{_keyscan(o, error.key)}`.")


def _wire(path: str) -> bytes:
    """A path as sent to the server: names that were not UTF-8 go back as the bytes they were."""
    return path.encode("utf-8", "surrogateescape")


def _listdir(sftp: paramiko.SFTPClient, folder: str) -> list[paramiko.SFTPAttributes]:
    """``listdir_attr`` that survives names which are not UTF-8 (a cp1251 share, say).

    paramiko decodes every name strictly and raises UnicodeDecodeError for the whole listing, so one
    such file would hide every other one (and, not being an OSError, stop the daemon). Here such
    bytes become surrogates, as os.listdir gives them, and ``_wire`` turns them back into bytes.
    """
    kind, msg = sftp._request(CMD_OPENDIR, sftp._adjust_cwd(folder))
    if kind != CMD_HANDLE:
        raise paramiko.SFTPError("Expected handle")
    handle = msg.get_binary()
    entries: list[paramiko.SFTPAttributes] = []
    while True:
        try:
            kind, msg = sftp._request(CMD_READDIR, handle)
        except EOFError:  # the end of the listing
            break
        if kind != CMD_NAME:
            raise paramiko.SFTPError("Expected name response")
        for _ in range(msg.get_int()):
            filename = msg.get_string().decode("utf-8", "surrogateescape")
            msg.get_string()  # longname: ls -l text, not needed
            attr = paramiko.SFTPAttributes._from_msg(msg, filename)
            if filename not in (".", ".."):
                entries.append(attr)
    sftp._request(CMD_CLOSE, handle)
    return entries


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


class SftpSource(Source):
    """A remote folder over SFTP (paramiko), one connection kept open between polls."""

    reconnect_first = 1.0  # seconds to wait after the first failed reconnect, doubling after each
    reconnect_max = 300.0  # cap: a server that is down for hours is still tried every 5 minutes

    def __init__(self, settings: SourceSettings) -> None:
        super().__init__(settings)
        self.options = SftpOptions.parse(settings.name, settings.options)
        self.folder = settings.path  # as the server sees it
        self.stability = Stability(settings.min_age)
        self._client: paramiko.SSHClient | None = None
        self._sftp: paramiko.SFTPClient | None = None
        self._failures = 0  # consecutive failed connection attempts
        self._not_before = 0.0  # monotonic time before which we do not try again
        self._last_error: BridgeError | None = None

    # --- the Source contract -------------------------------------------------------------------

    def scan(self) -> tuple[list[RemoteFile], float | None]:
        sftp = self._session()
        try:
            entries = _listdir(sftp, self.folder)
        except _FAILURES as exc:
            raise self._failure(exc, f"listing {self.folder}") from None
        names = {e.filename for e in entries}
        marker = self.settings.done_marker
        candidates: list[tuple[str, int, float]] = []
        for entry in entries:
            name = entry.filename
            if not name.lower().endswith(TAKEN) or ignored(name, self.settings.ignore, marker):
                continue
            if entry.st_mode is None or not stat.S_ISREG(entry.st_mode) or entry.st_size is None \
                    or entry.st_mtime is None:
                continue  # folders, links and servers that omit attributes: nothing we can judge
            candidates.append((name, entry.st_size, float(entry.st_mtime)))
        return self.stability.collect(candidates, names, marker)

    @contextmanager
    def fetch(self, remote: RemoteFile, spool: Path) -> Iterator[Path]:
        spool.mkdir(parents=True, exist_ok=True)
        # The remote name's extension is kept: a zip is known as one by its name (commerceml/files.py).
        fd, temp = tempfile.mkstemp(dir=spool, prefix=".sftp-", suffix=".part" + Path(remote.name).suffix.lower())
        local = Path(temp)
        try:
            with os.fdopen(fd, "wb") as sink:
                sha256 = self._download(remote, sink)
            log.info("sftp.fetched source=%s name=%r size=%d sha256=%s", self.name, remote.name, remote.size, sha256)
            yield local
        finally:
            local.unlink(missing_ok=True)  # a failed or finished download leaves nothing in the spool

    def dispose(self, remote: RemoteFile) -> None:
        sftp = self._session()
        path = self._path(remote.name)
        try:
            now = sftp.stat(_wire(path))
            if now.st_size != remote.size or now.st_mtime != remote.mtime:
                # 1C wrote a new export under the same name after we took ours: deleting or moving it
                # would lose it. Left for the next scan (its content hash makes it a new claim).
                log.warning("sftp.dispose_skipped source=%s name=%r reason=changed-after-taken", self.name, remote.name)
                self.stability.forget(remote.name)
                return
            if self.settings.done_marker:
                # Marker first: a marker that outlived its file would vouch for the next, half-written one.
                self._remove(sftp, path + self.settings.done_marker)
            if self.settings.after == "move" and self.settings.move_to:
                self._rename(sftp, path, self._free_name(sftp, self.settings.move_to, remote.name), replace=False)
            else:
                self._remove(sftp, path)
        except _FAILURES as exc:
            raise self._failure(exc, f"disposing of {remote.name}") from None
        self.stability.forget(remote.name)

    def close(self) -> None:
        self._disconnect()

    # --- outgoing files (orders for 1C) --------------------------------------------------------

    def upload_atomic(self, local: Path, remote_dir: str, name: str) -> str:
        """Upload ``local`` as ``remote_dir/name`` so that 1C never sees a partial file; returns the path.

        Written under a dot-name first (1C and our own scans skip dot-files), verified by size, then
        renamed over the target in one step. paramiko offers no fsync: flush and close wait until the
        server acknowledged every write, which is as far as SFTP v3 lets a client go.
        """
        if not name or "/" in name or name in (".", ".."):
            raise ValueError(f"not a plain file name: {name!r}")
        size = local.stat().st_size
        sftp = self._session()
        target = posixpath.join(remote_dir, name)
        temp = posixpath.join(remote_dir, f".{name}.tmp-{secrets.token_hex(6)}")
        try:
            try:
                with open(local, "rb") as source, sftp.open(temp, "wbx") as sink:  # x: never reuse a name
                    sink.set_pipelined(True)  # do not wait for each write's ack; close() collects them all
                    while chunk := source.read(_READ):
                        sink.write(chunk)
                    sink.flush()
                uploaded = sftp.stat(temp).st_size
                if uploaded != size:
                    raise TransientError(f"source {self.name}: upload of {name} to {self.options.entry} "
                                         f"stored {uploaded} bytes instead of {size}; not published")
                self._rename(sftp, temp, target, replace=True)
            except BaseException:
                if self._alive():
                    try:
                        self._remove(sftp, temp)
                    except _FAILURES:  # the original error matters more; a dot-file is harmless
                        pass
                raise
        except _FAILURES as exc:
            raise self._failure(exc, f"uploading {name}") from None
        log.info("sftp.uploaded source=%s name=%r size=%d", self.name, target, size)
        return target

    def exists(self, remote_dir: str, name: str) -> bool:
        """Whether ``remote_dir/name`` is there (an order file 1C has not taken yet)."""
        sftp = self._session()
        try:
            return self._exists(sftp, posixpath.join(remote_dir, name))
        except _FAILURES as exc:
            raise self._failure(exc, f"looking for {name}") from None

    # --- connection ----------------------------------------------------------------------------

    def _session(self) -> paramiko.SFTPClient:
        """The open SFTP session, reconnecting when it is gone (backing off after failed attempts)."""
        if self._sftp is not None and self._alive():
            return self._sftp
        self._disconnect()
        wait = self._not_before - time.monotonic()
        if wait > 0 and self._last_error is not None:
            raise type(self._last_error)(f"{self._last_error} (next attempt in {wait:.0f} s)")
        try:
            self._sftp = self._connect()
        except BridgeError as exc:
            self._disconnect()
            self._failures += 1
            delay = min(self.reconnect_max, self.reconnect_first * 2 ** min(self._failures - 1, 20))
            self._not_before, self._last_error = time.monotonic() + delay, exc
            raise
        self._failures, self._not_before, self._last_error = 0, 0.0, None
        return self._sftp

    def _connect(self) -> paramiko.SFTPClient:
        o = self.options
        key = self._load_key()
        client = self._client = paramiko.SSHClient()
        try:
            # Only the pinned file: not ~/.ssh/known_hosts, and RejectPolicy never writes to it.
            client.get_host_keys().load(str(o.known_hosts))
        except OSError as exc:
            raise UserError(f"source {self.name}: cannot read known_hosts {o.known_hosts}: {exc.strerror or exc}; "
                            f"create it with the server's host key (see docs/deploy.md)") from None
        client.set_missing_host_key_policy(_PinnedOnly(self.name, o))
        try:
            client.connect(o.host, port=o.port, username=o.user, pkey=key, allow_agent=False, look_for_keys=False,
                           timeout=o.connect_timeout, banner_timeout=o.connect_timeout,
                           auth_timeout=o.connect_timeout, channel_timeout=o.connect_timeout)
            transport = client.get_transport()
            assert transport is not None  # connect() succeeded
            # One read request at a time (see READ_REQUEST): without NODELAY, Nagle and delayed ACKs
            # stall every request by tens of milliseconds (64 MiB: 11 s instead of 1 s on loopback).
            transport.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            transport.set_keepalive(_KEEPALIVE)
            sftp = client.open_sftp()
        except paramiko.BadHostKeyException as exc:
            raise _changed(self.name, o, exc) from None
        except paramiko.AuthenticationException as exc:
            raise UserError(f"source {self.name}: {o.entry} refused user {o.user!r} with key {o.key_file} "
                            f"({key.get_name()} {fingerprint(key)}): {_describe(exc)}; add its public key "
                            "to that user's authorized_keys on the server") from None
        except _FAILURES as exc:
            raise TransientError(f"source {self.name}: cannot connect to {o.entry}: {_describe(exc)}") from None
        log.info("sftp.connected source=%s host=%s user=%s host_key=%s", self.name, o.entry, o.user,
                 fingerprint(transport.get_remote_server_key()))
        sftp.get_channel().settimeout(o.io_timeout)  # every request waits at most io_timeout
        return sftp

    def _load_key(self) -> paramiko.PKey:
        path = self.options.key_file
        try:
            return paramiko.PKey.from_path(path)
        except FileNotFoundError:
            raise UserError(f"source {self.name}: the SSH key {path} does not exist (key_file; under systemd "
                            "a bare name is a LoadCredential= name)") from None
        except (TypeError, paramiko.PasswordRequiredException):  # cryptography: "Password was not given"
            raise UserError(f"source {self.name}: the SSH key {path} is protected by a passphrase, which a "
                            "daemon cannot type; use a dedicated key without one, readable only by the service "
                            "(systemd LoadCredential)") from None
        except (OSError, ValueError, paramiko.SSHException) as exc:
            raise UserError(f"source {self.name}: cannot read the SSH key {path}: {_describe(exc)}") from None

    def _alive(self) -> bool:
        transport = self._client.get_transport() if self._client is not None else None
        return (self._sftp is not None and transport is not None and transport.is_active()
                and not self._sftp.get_channel().closed)

    def _disconnect(self) -> None:
        sftp, client = self._sftp, self._client
        self._sftp = self._client = None
        transport = client.get_transport() if client is not None else None
        for closing in (sftp, client):
            if closing is not None:
                try:
                    closing.close()
                except _FAILURES:  # already broken: closing is best effort
                    pass
        # paramiko's close() does not wait for its reader thread; a closed source must not leave one.
        if transport is not None and transport.is_alive():
            transport.join(5)

    def _failure(self, exc: BaseException, doing: str) -> BridgeError:
        """Our error for a failed request; a broken connection is dropped so the next call reconnects."""
        where = f"source {self.name}: {doing} on {self.options.entry}"
        answered = isinstance(exc, OSError) and not isinstance(exc, TimeoutError) and self._alive()
        if not answered:  # timeout, EOF, protocol error or a dead transport: the session is unusable
            self._disconnect()
            return TransientError(f"{where}: connection lost ({_describe(exc)}); will reconnect on the next call")
        assert isinstance(exc, OSError)
        if exc.errno == errno.EACCES:
            return UserError(f"{where}: permission denied ({exc.strerror}); the SFTP user needs read, write "
                             "and delete rights on the exchange folder")
        if exc.errno == errno.ENOENT:
            return TransientError(f"{where}: no such file or folder (moved away, or not created yet)")
        return TransientError(f"{where}: the server refused: {_describe(exc)}")

    # --- remote file helpers -------------------------------------------------------------------

    def _path(self, name: str) -> str:
        return posixpath.join(self.folder, name)

    def _download(self, remote: RemoteFile, sink: BinaryIO) -> str:
        """Copy ``remote`` into ``sink``; sha256 of what was written. Refuses a file that changed meanwhile."""
        sftp = self._session()
        path = self._path(remote.name)
        digest, size = hashlib.sha256(), 0
        try:
            self._unchanged(remote, sftp.stat(_wire(path)), "since it was listed")
            with sftp.open(_wire(path), "rb") as source:
                source.MAX_REQUEST_SIZE = READ_REQUEST
                while size < remote.size and (chunk := source.read(min(_READ, remote.size - size))):
                    sink.write(chunk)
                    digest.update(chunk)
                    size += len(chunk)
            after = sftp.stat(_wire(path))
        except _FAILURES as exc:
            raise self._failure(exc, f"downloading {remote.name}") from None
        self._unchanged(remote, after, "during the download", size)
        return digest.hexdigest()

    def _unchanged(self, remote: RemoteFile, now: paramiko.SFTPAttributes, when: str, got: int | None = None) -> None:
        if now.st_size == remote.size and now.st_mtime == remote.mtime and got in (None, remote.size):
            return
        self.stability.forget(remote.name)  # its min_age starts again from the next scan
        raise TransientError(f"source {self.name}: {remote.name} changed {when} (listed {remote.size} bytes, "
                             f"now {now.st_size}" + ("" if got is None else f", downloaded {got}")
                             + "); it will be taken once it is stable again")

    def _remove(self, sftp: paramiko.SFTPClient, path: str) -> None:
        try:
            sftp.remove(_wire(path))
        except OSError as exc:
            if exc.errno != errno.ENOENT or not self._alive():
                raise  # already gone is what we wanted; anything else is not

    def _free_name(self, sftp: paramiko.SFTPClient, folder: str, name: str) -> str:
        """``folder/name``, or ``stem.N.ext`` when taken: 1C reuses names like import.xml, keep what is there."""
        try:
            sftp.stat(folder)
        except OSError as exc:
            if exc.errno != errno.ENOENT or not self._alive():
                raise
            sftp.mkdir(folder)
        stem, suffix = posixpath.splitext(name)
        candidate, counter = posixpath.join(folder, name), 1
        while self._exists(sftp, candidate):
            candidate = posixpath.join(folder, f"{stem}.{counter}{suffix}")
            counter += 1
        return candidate

    def _exists(self, sftp: paramiko.SFTPClient, path: str) -> bool:
        try:
            sftp.stat(_wire(path))
        except OSError as exc:
            if exc.errno == errno.ENOENT and self._alive():
                return False
            raise
        return True

    def _rename(self, sftp: paramiko.SFTPClient, source: str, target: str, *, replace: bool) -> None:
        """posix-rename@openssh.com (atomic, replaces the target) when the server has it, else plain rename.

        Plain SFTP v3 rename refuses an existing target, so with ``replace`` the target is removed
        first: a short moment without the file beats never publishing it.
        """
        try:
            sftp.posix_rename(_wire(source), _wire(target))
            return
        except OSError as exc:
            if exc.errno is not None or not self._alive():
                raise  # ENOENT/EACCES or a dead connection; a bare IOError is "operation unsupported"
            log.debug("sftp.no_posix_rename source=%s error=%r", self.name, _describe(exc))
        if replace:
            self._remove(sftp, target)
        sftp.rename(_wire(source), _wire(target))
