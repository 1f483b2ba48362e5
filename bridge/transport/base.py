"""Where exchange files come from: the contract every source keeps.

A source lists the files that are *complete* (GUIDE §3: size and mtime stable
across checks and older than ``min_age`` by our own clock, or a done-marker
present), hands each one over as a local file, and afterwards disposes of the
original as configured. It never decides what a file means: the pipeline does.
"""

from __future__ import annotations

import fnmatch
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

TAKEN = (".xml", ".zip")  # what the bridge reads; images and everything else stay where they are
DEFAULT_IGNORE = ("*.tmp", "*.part", "*.partial", "*.crdownload", ".*", "~*", "*.swp")


@dataclass(slots=True)
class SourceSettings:
    name: str
    kind: str
    path: str
    min_age: float = 3.0
    done_marker: str | None = None  # e.g. ".done": "import.xml" is complete when "import.xml.done" exists
    ignore: tuple[str, ...] = DEFAULT_IGNORE
    after: str = "delete"  # "delete", or "move" to ``move_to``
    move_to: str | None = None
    polling: bool = False
    interval: float = 60.0  # seconds between full rescans (SFTP polls at this pace)
    options: dict[str, object] = field(default_factory=dict)  # kind-specific keys (host, port, user, ...)


@dataclass(slots=True)
class RemoteFile:
    """A complete file as the source sees it."""

    name: str  # relative to the source folder, with '/' separators
    size: int
    mtime: float

    @property
    def identity(self) -> tuple[str, int, float]:
        """This version of the file: the same name grown or rewritten is another one."""
        return self.name, self.size, self.mtime


class Stability:
    """Decides completeness by our own clock, never by the writer's timestamps.

    A file is complete once its size and mtime have not changed for ``min_age``
    seconds of *our* monotonic time: 1C's clock, a Samba server's clock and
    ours may disagree, so mtime is compared only with itself.
    """

    def __init__(self, min_age: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.min_age = min_age
        self.clock = clock
        self._seen: dict[str, tuple[int, float, float]] = {}  # name -> (size, mtime, since)

    def observe(self, name: str, size: int, mtime: float) -> float:
        """Record one observation; return how many more seconds until it counts as complete (0: now)."""
        now = self.clock()
        previous = self._seen.get(name)
        if previous is None or previous[0] != size or previous[1] != mtime:
            self._seen[name] = (size, mtime, now)
            return self.min_age if self.min_age > 0 else 0.0
        return max(0.0, previous[2] + self.min_age - now)

    def collect(self, candidates: list[tuple[str, int, float]], names: set[str],
                done_marker: str | None) -> tuple[list[RemoteFile], float | None]:
        """Complete files among ``candidates`` (name, size, mtime) of one listing of ``names``,
        and the seconds until a pending one may be complete (None: none pending)."""
        complete: list[RemoteFile] = []
        pending: float | None = None
        for name, size, mtime in candidates:
            if done_marker:  # the writer tells us: no clock involved
                if name + done_marker in names:
                    complete.append(RemoteFile(name, size, mtime))
                continue
            wait = self.observe(name, size, mtime)
            if wait <= 0:
                complete.append(RemoteFile(name, size, mtime))
            else:
                pending = wait if pending is None else min(pending, wait)
        self.keep_only(names)
        return complete, pending

    def forget(self, name: str) -> None:
        self._seen.pop(name, None)

    def keep_only(self, names: set[str]) -> None:
        for gone in set(self._seen) - names:
            del self._seen[gone]


def ignored(name: str, patterns: tuple[str, ...], done_marker: str | None) -> bool:
    base = name.rsplit("/", 1)[-1]
    if done_marker and base.endswith(done_marker):
        return True
    return any(fnmatch.fnmatch(base, pattern) for pattern in patterns)


class Source(ABC):
    """A place 1C writes exchange files to."""

    def __init__(self, settings: SourceSettings) -> None:
        self.settings = settings
        self.name = settings.name

    @abstractmethod
    def scan(self) -> tuple[list[RemoteFile], float | None]:
        """Complete files (in no particular order) and the seconds until an incomplete one may be
        complete (None: nothing pending). Raises TransientError when the source is unreachable."""

    @abstractmethod
    @contextmanager
    def fetch(self, remote: RemoteFile, spool: Path) -> Iterator[Path]:
        """A local, stable copy of ``remote`` for the duration of the block (``spool`` is ours to use)."""

    @abstractmethod
    def dispose(self, remote: RemoteFile) -> None:
        """After the file is safely archived: delete it or move it, as configured."""

    def watch(self, wakeup: threading.Event) -> None:
        """Set ``wakeup`` whenever the source may have news (inotify); polling sources do nothing.

        Events are only hints: the daemon rescans every source on start and every
        ``interval`` seconds whatever happens, because inotify misses network shares.
        """

    def close(self) -> None:
        """Release connections and watchers."""
