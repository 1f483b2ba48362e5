"""systemd's notify protocol (sd_notify), without a dependency.

It is one datagram per message on the Unix socket named by $NOTIFY_SOCKET
(a leading '@' means the abstract namespace). Outside systemd the variable is
unset and every call is a no-op.
"""

from __future__ import annotations

import logging
import os
import socket
import time

log = logging.getLogger(__name__)


class Notifier:
    def __init__(self) -> None:
        address = os.environ.get("NOTIFY_SOCKET")
        self._address: str | None = None
        self._socket: socket.socket | None = None
        if address:
            self._address = "\0" + address[1:] if address.startswith("@") else address
            self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        usec = os.environ.get("WATCHDOG_USEC")
        watchdog_pid = os.environ.get("WATCHDOG_PID")
        enabled = bool(usec) and (not watchdog_pid or watchdog_pid == str(os.getpid()))
        # Ping at half the watchdog interval, as sd_watchdog_enabled(3) advises.
        self.watchdog_interval = int(usec) / 2e6 if enabled and usec and usec.isdigit() else None
        self._last_ping = 0.0

    def send(self, *lines: str) -> None:
        if self._socket is None or self._address is None:
            return
        try:
            self._socket.sendto("\n".join(lines).encode("utf-8"), self._address)
        except OSError as exc:  # systemd went away or the socket is wrong: never fatal
            log.debug("notify.failed error=%r", str(exc))

    def ready(self, status: str) -> None:
        self.send("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")

    def status(self, status: str) -> None:
        self.send(f"STATUS={status}")

    def stopping(self) -> None:
        self.send("STOPPING=1", "STATUS=stopping")

    def ping(self) -> None:
        """WATCHDOG=1, at most once per half interval (callers may call it as often as they like)."""
        if self.watchdog_interval is None:
            return
        now = time.monotonic()
        if now - self._last_ping >= self.watchdog_interval * 0.9:
            self._last_ping = now
            self.send("WATCHDOG=1")

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None
