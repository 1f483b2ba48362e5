"""What the sync commands share: config, state connection, CRM adapter, progress."""

from __future__ import annotations

import shutil
import sqlite3
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click

from bridge import config as config_module
from bridge.config import Config
from bridge.crm.registry import open_adapter  # noqa: F401  (the commands open adapters through here)
from bridge.errors import UserError
from bridge.store import db

config_option = click.option("-c", "--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
                             default=Path("bridge.toml"), show_default=True, help="The bridge's TOML configuration.")


# Groups (``bridge archive -c CFG list``) take -c before the subcommand, as the
# documented commands do, and after it too.
group_config_option = click.option("-c", "--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
                                   default=None, help="The bridge's TOML configuration [default: bridge.toml].")


def resolve_config(ctx: click.Context, own: Path | None) -> Path:
    if own is not None:
        return own
    parent = ctx.parent.params.get("config_path") if ctx.parent is not None else None
    return parent or Path("bridge.toml")


def load_config(path: Path) -> Config:
    return config_module.load(path)


def _snapshot_source(path: Path) -> sqlite3.Connection:
    """The state database opened to be copied, leaving its folder as it was.

    A read-only (mode=ro) connection to a WAL database creates its -wal and -shm files and, unable
    to checkpoint, leaves them behind when it closes. A writable connection that only reads
    removes them again on close when it was the last one (another process using the database
    keeps them, as it must); only a folder we may not write falls back to mode=ro.
    """
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA query_only = ON")
        conn.execute("PRAGMA user_version").fetchone()
        return conn
    except sqlite3.OperationalError:
        conn.close()
        return sqlite3.connect(f"file:{path}?mode=ro", uri=True)


@contextmanager
def state_connection(config: Config, *, dry_run: bool = False, read_only: bool = False) -> Iterator[sqlite3.Connection]:
    """The state database; for a dry run, a throwaway copy so nothing real changes."""
    if dry_run:
        folder = Path(tempfile.mkdtemp(prefix="bridge-dry-run-"))
        copy = folder / "state.db"
        try:
            try:
                if config.state_path.exists():
                    source = _snapshot_source(config.state_path)
                    target = sqlite3.connect(copy)
                    try:
                        source.backup(target)
                    finally:
                        source.close()
                        target.close()
                conn = db.connect(copy)
            except sqlite3.Error as exc:
                raise UserError(f"cannot read the state database {config.state_path}: {exc}") from None
            try:
                yield conn
            finally:
                conn.close()
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        return
    try:
        conn = db.connect(config.state_path, read_only=read_only)
    except sqlite3.Error as exc:
        raise UserError(f"cannot open the state database {config.state_path}: {exc}") from None
    try:
        yield conn
    finally:
        conn.close()


class TerminalProgress:
    """Records per second and position in the file, redrawn on one terminal line."""

    def __init__(self) -> None:
        self.enabled = sys.stderr.isatty()
        self._started: dict[str, float] = {}

    def __call__(self, name: str, position: int, size: int, records: int) -> None:
        if not self.enabled:
            return
        started = self._started.setdefault(name, time.monotonic())
        elapsed = max(time.monotonic() - started, 1e-6)
        share = position / size if size else 1.0
        sys.stderr.write(f"\r{Path(name).name}: {share:6.1%} of {size / 1e6:.1f} MB, {records} records, "
                         f"{records / elapsed:,.0f} records/s ")
        sys.stderr.flush()

    def done(self) -> None:
        if self.enabled and self._started:
            sys.stderr.write("\n")
