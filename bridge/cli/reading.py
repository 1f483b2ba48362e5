"""``bridge validate`` and ``bridge inspect``: look at exchange files without changing anything."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from bridge.commerceml.files import expand_inputs
from bridge.commerceml.header import COUNT_KEYS
from bridge.commerceml.schema import SchemaError
from bridge.commerceml.summary import FileSummary, summarize
from bridge.errors import UserError

_paths = click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))


def _summaries(paths: tuple[Path, ...], level: str, schema: Path | None, build: bool = True) -> list[FileSummary]:
    try:
        with expand_inputs(list(paths)) as files:
            if not files:
                raise UserError("no XML files found in " + ", ".join(str(p) for p in paths))
            return [summarize(f, level=level, user_schema=schema, build=build) for f in files]
    except SchemaError as exc:
        raise UserError(str(exc)) from None


@click.command("validate")
@click.option("--strict", is_flag=True, help="Check against our spec-like schema; deviations become errors.")
@click.option("--schema", "schema", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Also validate against this XSD (e.g. the official CommerceML 2.10 one).")
@_paths
def validate_command(strict: bool, schema: Path | None, paths: tuple[Path, ...]) -> None:
    """Check exchange files. Exit 0: all usable (warnings allowed); 1: a file has errors."""
    summaries = _summaries(paths, "strict" if strict else "tolerant", schema)
    failed = 0
    for summary in summaries:
        for problem in summary.problems:
            click.echo(problem.format())
        failed += bool(summary.errors)
    total = len(summaries)
    click.echo(f"{total - failed} of {total} file(s) usable", err=True)
    sys.exit(1 if failed else 0)


@click.command("inspect")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list, one object per file.")
@_paths
def inspect_command(as_json: bool, paths: tuple[Path, ...]) -> None:
    """Show what each exchange file holds: kind, version, encoding, counts, problems."""
    summaries = _summaries(paths, "tolerant", None, build=False)
    if as_json:
        click.echo(json.dumps([s.as_json() for s in summaries], ensure_ascii=False, indent=2))
    else:
        for summary in summaries:
            _print_summary(summary)
    sys.exit(1 if any(s.errors for s in summaries) else 0)


def _print_summary(summary: FileSummary) -> None:
    h = summary.header
    click.echo(f"{h.file}")
    click.echo(f"  kind {h.kind}, CommerceML {h.schema_version or '?'}, namespace {h.namespace or '(none)'}, "
               f"{h.encoding or '?'}{' with BOM' if h.bom else ''}, generated {h.generated_at or '?'}")
    changes = {True: "changes only", False: "full", None: "not stated"}[h.contains_only_changes]
    click.echo(f"  contents: {changes}")
    counts = ", ".join(f"{k.replace('_', ' ')} {summary.counts[k]}" for k in COUNT_KEYS if summary.counts[k])
    click.echo(f"  counts: {counts or 'nothing'}" + (f"; {summary.skipped} skipped" if summary.skipped else ""))
    for problem in summary.problems[:20]:
        click.echo(f"  {problem.format()}")
    if len(summary.problems) > 20:
        click.echo(f"  ... {len(summary.problems) - 20} more problem(s); `bridge validate` lists them all")
