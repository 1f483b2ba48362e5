"""Clean shutdown: the first SIGTERM/SIGINT finishes the current file, a second aborts.

An abort leaves the file being read claimed but not committed; the next start
reads it again from its source (nothing of it was delivered, see the pipeline).
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

log = logging.getLogger(__name__)


class Aborted(BaseException):
    """Raised in the main thread by a second stop signal (BaseException: nothing may swallow it)."""


class Shutdown:
    def __init__(self, wakeup: threading.Event) -> None:
        self.requested = False
        self.wakeup = wakeup
        self._previous: dict[int, object] = {}

    def install(self) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT):
            self._previous[signum] = signal.signal(signum, self._handle)

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.requested:
            log.warning("daemon.abort signal=%s; the current file will be read again at the next start", name)
            raise Aborted(name)
        self.requested = True
        log.info("daemon.stopping signal=%s; finishing the current file (send it again to abort)", name)
        self.wakeup.set()
