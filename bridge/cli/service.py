"""``bridge run``: the daemon (systemd unit), or one full cycle with --once."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from bridge.cli.context import config_option, load_config, open_adapter, state_connection
from bridge.daemon.loop import Daemon
from bridge.daemon.signals import Aborted


@click.command("run")
@config_option
@click.option("--once", is_flag=True, help="One full cycle (scan every source, process, deliver), then exit.")
def run_command(config_path: Path, once: bool) -> None:
    """Watch the configured sources and keep the CRM in step until stopped (SIGTERM)."""
    root = logging.getLogger()
    if root.level > logging.INFO:
        root.setLevel(logging.INFO)  # the service logs one line per event to stderr (journald)
    config = load_config(config_path)
    with state_connection(config) as conn, open_adapter(config) as adapter:
        try:
            code = Daemon(config, conn, adapter, once=once).run()
        except Aborted:
            click.echo("bridge: aborted; the file being read is taken again at the next start", err=True)
            sys.exit(1)
    sys.exit(code)
