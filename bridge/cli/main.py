"""The ``bridge`` command. Errors become messages and exit codes here, and only here."""

from __future__ import annotations

import logging
import sys

import click

from bridge import __version__
from bridge.cli.reading import inspect_command, validate_command
from bridge.cli.orders_commands import deal_group, render_command
from bridge.cli.service import run_command
from bridge.cli.sync_commands import (
    archive_group, ingest_command, journal_command, prune_command, replay_command, sandbox_group,
    status_command,
)
from bridge.errors import BridgeError, PermanentError, TransientError, UserError


class _Group(click.Group):
    """Turns the bridge's own exceptions into one-line messages, never tracebacks."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except UserError as exc:
            click.echo(f"bridge: {exc}", err=True)
            sys.exit(2)
        except TransientError as exc:
            click.echo(f"bridge: temporary failure, try again later: {exc}", err=True)
            sys.exit(75)  # EX_TEMPFAIL
        except (PermanentError, BridgeError) as exc:
            click.echo(f"bridge: {exc}", err=True)
            sys.exit(1)
        except OSError as exc:  # our own disk or folders (full, read-only, no rights): say which file
            where = f" ({exc.filename})" if exc.filename else ""
            click.echo(f"bridge: {exc.strerror or exc}{where}", err=True)
            sys.exit(1)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="bridge")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
def cli(verbose: int) -> None:
    """Exchange bridge between 1C:Enterprise (CommerceML) and a CRM."""
    level = logging.WARNING - 10 * verbose
    logging.basicConfig(level=max(level, logging.DEBUG), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")


cli.add_command(validate_command)
cli.add_command(inspect_command)
sandbox_group.add_command(deal_group)
for command in (run_command, render_command, ingest_command, replay_command, archive_group, journal_command,
                status_command, prune_command, sandbox_group):
    cli.add_command(command)


def main() -> None:
    cli(prog_name="bridge")
