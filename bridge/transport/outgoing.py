"""Where the files for 1C go: a folder (maybe a share 1C reads) or an SFTP server.

Every write is atomic: a temporary name in the same folder, written, synced,
then renamed onto the deterministic final name. 1C never sees half a file,
and a retry after a crash overwrites the same file instead of adding another.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any, Protocol

from bridge.durable import fsync_dir
from bridge.errors import TransientError

TEMP_PREFIX = ".bridge-"
TEMP_SUFFIX = ".tmp"  # neither *.xml nor visible: 1C's exchange ignores it


class Target(Protocol):
    def write(self, name: str, data: bytes) -> str:
        """Publish ``data`` as ``name``; return where it went."""

    def exists(self, name: str) -> bool:
        """Whether a file ``name`` is there, not yet taken by 1C."""

    def close(self) -> None: ...


class FolderTarget:
    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def write(self, name: str, data: bytes) -> str:
        if "/" in name or name.startswith("."):
            raise ValueError(f"refusing to write outside the outgoing folder: {name!r}")
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            temp = self.folder / f"{TEMP_PREFIX}{name}.{secrets.token_hex(4)}{TEMP_SUFFIX}"
            with open(temp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(temp, self.folder / name)
            fsync_dir(self.folder)  # the rename itself must survive a power cut
        except OSError as exc:  # a share that went away: try again later
            raise TransientError(f"cannot write {name} to {self.folder}: {exc.strerror or exc}") from None
        return str(self.folder / name)

    def exists(self, name: str) -> bool:
        return (self.folder / name).exists()

    def sweep(self) -> int:
        """Remove temporary files a crash left behind (they never became visible to 1C)."""
        removed = 0
        if self.folder.is_dir():
            for leftover in self.folder.glob(f"{TEMP_PREFIX}*{TEMP_SUFFIX}"):
                leftover.unlink(missing_ok=True)
                removed += 1
        return removed

    def close(self) -> None:
        pass


class SftpTarget:
    """Uploads under a temporary name and renames (posix-rename where the server has it)."""

    def __init__(self, settings: Any, config_dir: Path) -> None:
        from bridge.secrets import credential_path
        from bridge.transport.base import SourceSettings
        from bridge.transport.sftp import SftpSource
        options = dict(settings.sftp)
        options["key_file"] = str(credential_path(str(options["key_file"]), config_dir))
        # The SFTP source knows how to connect safely (pinned host keys, timeouts, reconnects).
        self.connection = SftpSource(SourceSettings(name="outgoing", kind="sftp", path=settings.path, options=options))
        self.folder = settings.path

    def write(self, name: str, data: bytes) -> str:
        import tempfile
        with tempfile.NamedTemporaryFile(suffix=".xml") as local:
            local.write(data)
            local.flush()
            self.connection.upload_atomic(Path(local.name), self.folder, name)
        return f"sftp:{self.folder}/{name}"

    def exists(self, name: str) -> bool:
        return self.connection.exists(self.folder, name)

    def close(self) -> None:
        self.connection.close()


def open_target(settings: Any, config_dir: Path) -> Target:
    if settings.target_kind == "sftp":
        return SftpTarget(settings, config_dir)
    target = FolderTarget(Path(settings.path))
    target.sweep()
    return target
