"""A local folder (or a mounted Samba/NFS share) that 1C writes into.

inotify (through watchdog) wakes the daemon as soon as something moves; the
periodic rescan stays the truth, since inotify misses changes made on the
other side of a network share (set ``polling = true`` there).
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from bridge.durable import fsync_dir
from bridge.errors import TransientError
from bridge.transport.base import TAKEN, RemoteFile, Source, SourceSettings, Stability, ignored

log = logging.getLogger(__name__)


class _Wake(FileSystemEventHandler):
    def __init__(self, wakeup: threading.Event) -> None:
        self.wakeup = wakeup

    def on_any_event(self, event: FileSystemEvent) -> None:
        self.wakeup.set()


class FolderSource(Source):
    def __init__(self, settings: SourceSettings) -> None:
        super().__init__(settings)
        self.folder = Path(settings.path)
        self.stability = Stability(settings.min_age)
        self._observer: Observer | None = None

    def scan(self) -> tuple[list[RemoteFile], float | None]:
        try:
            entries = list(os.scandir(self.folder))
        except FileNotFoundError:
            raise TransientError(f"source {self.name}: folder {self.folder} does not exist (yet)") from None
        except OSError as exc:  # a share that went away
            raise TransientError(f"source {self.name}: cannot list {self.folder}: {exc.strerror}") from None
        names = {e.name for e in entries}
        candidates: list[tuple[str, int, float]] = []
        for entry in entries:
            name = entry.name
            if not name.lower().endswith(TAKEN) or ignored(name, self.settings.ignore, self.settings.done_marker):
                continue
            try:
                info = entry.stat()
                is_file = entry.is_file()
            except FileNotFoundError:
                continue  # gone between listing and stat: renamed away by its writer
            except OSError as exc:
                if exc.errno == errno.ELOOP:  # a symbolic link to itself: nothing to take, and no reason to stop
                    log.warning("source.unreadable_entry source=%s name=%r error=%r", self.name, name, exc.strerror)
                    continue
                # A share's stale handle (ESTALE) or an I/O error: the listing is not to be trusted now.
                raise TransientError(f"source {self.name}: cannot read {name} in {self.folder}: {exc.strerror}") from None
            if is_file:
                candidates.append((name, info.st_size, info.st_mtime))
        return self.stability.collect(candidates, names, self.settings.done_marker)

    @contextmanager
    def fetch(self, remote: RemoteFile, spool: Path) -> Iterator[Path]:
        # No copy needed: the pipeline archives the file (hashing and copying it in one read)
        # and reads the archived copy from then on.
        yield self.folder / remote.name

    def dispose(self, remote: RemoteFile) -> None:
        path = self.folder / remote.name
        marker = path.with_name(path.name + self.settings.done_marker) if self.settings.done_marker else None
        try:
            info = path.stat()
        except FileNotFoundError:
            return
        if info.st_size != remote.size or info.st_mtime != remote.mtime:
            # 1C wrote a new export under the same name while we read the old one: keep it for the next scan.
            log.info("source.kept_newer source=%s file=%s", self.name, remote.name)
            return
        if marker is not None:
            marker.unlink(missing_ok=True)  # first: an old marker must never vouch for the next, unfinished file
        if self.settings.after == "move" and self.settings.move_to:
            target_dir = Path(self.settings.move_to)
            target_dir.mkdir(parents=True, exist_ok=True)
            target = target_dir / remote.name
            counter = 1
            while target.exists():  # keep what is there: 1C reuses names like import.xml
                target = target_dir / f"{path.stem}.{counter}{path.suffix}"
                counter += 1
            _move(path, target)
        else:
            path.unlink(missing_ok=True)
        self.stability.forget(remote.name)

    def watch(self, wakeup: threading.Event) -> None:
        if self.settings.polling:
            return
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            observer = Observer()
            observer.schedule(_Wake(wakeup), str(self.folder), recursive=False)
            observer.daemon = True
            observer.start()
            self._observer = observer
        except OSError as exc:  # inotify limits, a share without inotify: rescans still work
            log.warning("source.watch_failed source=%s error=%r; relying on rescans", self.name, str(exc))

    def close(self) -> None:
        if self._observer is not None:
            self._observer.unschedule_all()  # before stop(): no event is queued into a stopping emitter
            self._observer.stop()
            self._observer.join(timeout=5)
            self._observer = None


def _move(path: Path, target: Path) -> None:
    """Rename ``path`` to ``target``; across file systems (move_to on another disk or share, where
    rename fails with EXDEV) copy, sync and rename into place first, and only then delete the source."""
    try:
        os.replace(path, target)
        return
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
    temp = target.with_name(f".{target.name}.moving")
    try:
        shutil.copyfile(path, temp)
        with open(temp, "rb") as copy:
            os.fsync(copy.fileno())
        os.replace(temp, target)
    finally:
        temp.unlink(missing_ok=True)
    fsync_dir(target.parent)  # the copy's name must be on disk before the original goes
    path.unlink()
