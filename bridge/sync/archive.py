"""The archive (every file taken, immutable) and the quarantine (refused files + report).

Archived copies are content-addressed: ``<archive>/<sha[:2]>/<sha256>.<ext>``.
The same bytes are stored once and a stored copy is never overwritten, so an
archive entry is exactly what 1C sent, whatever happens later, until retention
(sync/retention.py, off by default) removes it.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bridge.commerceml.problems import Problem
from bridge.durable import fsync_dir

_CHUNK = 1 << 20


@dataclass(slots=True)
class Taken:
    sha256: str
    size: int
    temp: Path | None  # the copy made while hashing, not yet in its final place
    durable: bool = True  # the copy was on disk (fsync) before take returned


def hash_file(path: Path) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def take(path: Path, archive: Path | None, *, durable: bool = True) -> Taken:
    """Hash ``path``; with an archive, copy it there in the same read. durable=False leaves the
    fsync to the caller (``Syncing``), who must see it done before the file's outcome is committed."""
    if archive is None:
        sha, size = hash_file(path)
        return Taken(sha, size, None)
    incoming = archive / ".incoming"
    incoming.mkdir(parents=True, exist_ok=True)
    digest, size = hashlib.sha256(), 0
    fd, name = tempfile.mkstemp(dir=incoming, prefix="take-")
    try:
        with open(path, "rb") as source, os.fdopen(fd, "wb") as sink:
            while chunk := source.read(_CHUNK):
                digest.update(chunk)
                sink.write(chunk)
                size += len(chunk)
            sink.flush()
            if durable:
                os.fsync(sink.fileno())
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
    return Taken(digest.hexdigest(), size, Path(name), durable)


def store(taken: Taken, archive: Path, original_name: str) -> Path:
    """Put the taken copy in its content address (or drop it if that exists already)."""
    suffix = Path(original_name).suffix.lower() or ".bin"
    final = archive / taken.sha256[:2] / f"{taken.sha256}{suffix}"
    # A copy already there is trusted only when its bytes are right: one stored without its fsync
    # (take(durable=False)) may have been torn by a power cut before the file was committed.
    if final.exists() and hash_file(final)[0] == taken.sha256:
        if taken.temp is not None:
            taken.temp.unlink(missing_ok=True)
        return final
    if taken.temp is None:
        raise RuntimeError("nothing to archive")
    created = not final.parent.exists()
    final.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(taken.temp, 0o440)  # archived means immutable
    os.replace(taken.temp, final)
    fsync_dir(final.parent)
    if created:  # a new <ab>/ folder's own name must be on disk too, or the copy is unreachable after a power cut
        fsync_dir(archive)
    return final


@contextmanager
def locked(archive: Path) -> Iterator[None]:
    """The archive's exclusive lock, across processes. Taking a file holds it from ``store`` until
    its ledger row points to the copy; retention holds it while it decides which copies no row
    needs and removes them. So a copy found already stored cannot vanish before it is claimed."""
    archive.mkdir(parents=True, exist_ok=True)
    fd = os.open(archive / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


class Syncing:
    """The fsync of a stored copy, on a thread while the file is read (os.fsync lets go of the
    interpreter lock). ``wait`` before committing what became of the file: only then may its source
    be disposed of."""

    def __init__(self, path: Path) -> None:
        self.error: OSError | None = None
        self._thread = threading.Thread(target=self._sync, args=(path,), name="bridge-archive-fsync")
        self._thread.start()

    def _sync(self, path: Path) -> None:
        try:
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            self.error = exc

    def wait(self) -> None:
        self._thread.join()
        if self.error is not None:
            raise self.error

    def join(self) -> None:
        """Wait without raising (leaving after an error of its own)."""
        self._thread.join()


def sweep_incoming(archive: Path, *, older_than: float = 86400.0) -> int:
    """Remove copies a killed process left half-taken in ``.incoming`` (none of them was ever stored).
    Only old ones: a copy being made right now by another process (a CLI ingest beside the daemon)
    is younger than a day."""
    incoming = archive / ".incoming"
    if not incoming.is_dir():
        return 0
    limit, removed = time.time() - older_than, 0
    for leftover in incoming.glob("take-*"):
        try:
            if leftover.stat().st_mtime < limit:
                leftover.unlink()
                removed += 1
        except FileNotFoundError:
            continue
    return removed


def discard(taken: Taken) -> None:
    if taken.temp is not None:
        taken.temp.unlink(missing_ok=True)


def quarantine(source: Path, quarantine_dir: Path, file_id: int, name: str, problems: list[Problem],
               reason: str) -> Path:
    """Copy a refused file to quarantine with a report beside it; return the report's path."""
    quarantine_dir.mkdir(parents=True, exist_ok=True)
    safe = Path(name.replace("!", "_")).name
    target = quarantine_dir / f"{file_id:06d}-{safe}"
    if source.exists():
        shutil.copyfile(source, target)
    report = target.with_name(target.name + ".report.txt")
    lines = [f"Quarantined file: {name}", f"Ledger id: {file_id} (replay with: bridge replay {file_id})",
             f"Reason: {reason}", "", "Problems (FILE:LINE: ELEMENT-PATH: message):"]
    lines += [p.format() for p in problems] or ["(none recorded)"]
    report.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return report
