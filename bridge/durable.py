"""Making a rename or a new file's name survive a power cut.

A file's own fsync puts its bytes on disk, not its name: the directory entry lives in the folder,
which must be synced after the rename (the archive, the outgoing folder, a source's move_to).
"""

from __future__ import annotations

import os
from pathlib import Path


def fsync_dir(folder: Path) -> None:
    """Sync ``folder``'s entries (a file renamed or created in it) to disk."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
