"""Database files that only their owner may read, created without breaking SQLite's locks.

The state database and the sandbox CRM name customers, so they are created with mode 0600
before SQLite opens them (SQLite gives the -wal and -shm files the database file's mode).

Only a file that does not exist yet is opened here. POSIX releases every fcntl lock a process
holds on a file as soon as the process closes *any* descriptor of that file, and SQLite keeps
its locks on the database file. Opening and closing a database that another connection of this
process has open (the chunk writer opens a second connection beside the main one) would silently
drop that connection's locks. Another process closing its last connection would then believe it
was alone, checkpoint and delete the WAL that this process is still writing to; writes made
after that by a third process were lost (tests/test_state_file.py reproduces it).
"""

from __future__ import annotations

import os
from pathlib import Path


def create_owner_only(path: Path) -> None:
    """Create ``path`` empty with mode 0600 unless it exists; an existing file is never opened."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    os.close(fd)  # a file that did not exist is open in no SQLite connection: no lock to lose
