"""``bridge ingest``, ``replay``, ``archive list``, ``journal``, ``status``, ``prune``, ``sandbox dump``."""

from __future__ import annotations

import json
import re
import sys
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click

from bridge.cli.context import (
    TerminalProgress, config_option, group_config_option, load_config, open_adapter, resolve_config, state_connection,
)
from bridge.commerceml.files import InputFile, expand_inputs
from bridge.errors import UserError
from bridge.store import journal, ledger, outbox, state
from bridge.store.clock import stamp
from bridge.sync.background import BackgroundDelivery
from bridge.sync.batch import fewer_collections
from bridge.sync.deliver import DeliveryStats, deliver
from bridge.sync.pipeline import FileOutcome, Pipeline, finish_files
from bridge.sync import retention


def _print_outcome(outcome: FileOutcome) -> None:
    # A skipped file did nothing now: the plan it carries is the one of the run that took it.
    plan = (outcome.plan or {}) if outcome.status != "skipped" else {}
    parts = []
    for entity, numbers in sorted(plan.items()):
        figures = ", ".join(f"{k} {v}" for k, v in numbers.items() if v)
        if figures:
            parts.append(f"{entity}: {figures}")
    line = f"#{outcome.file_id} {outcome.name}: {outcome.status}"
    if outcome.status == "quarantined":
        line += f" ({outcome.message})"
    elif outcome.status == "skipped":
        line += f" ({outcome.message})"
    click.echo(line + ("\n    " + "; ".join(parts) if parts else ""))


def _print_plan(outcomes: list[FileOutcome], decisions: list[Any]) -> None:
    totals: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for outcome in outcomes:
        for entity, numbers in (outcome.plan or {}).items():
            if outcome.status == "committed":
                for key, value in numbers.items():
                    totals[entity][key] += value
    for decision in decisions:
        if decision.applied:
            totals["product"]["deactivate"] += decision.absent - decision.variants
            totals["variant"]["deactivate"] += decision.variants
    click.echo("Plan (dry run: nothing was changed, the state database included):")
    header = f"  {'entity':<10} {'create':>8} {'update':>8} {'unchanged':>10} {'waiting':>8} {'deactivate':>10}"
    click.echo(header)
    for entity in sorted(totals):
        t = totals[entity]
        click.echo(f"  {entity:<10} {t['create']:>8} {t['update']:>8} {t['unchanged']:>10} {t['waiting']:>8}"
                   f" {t['deactivate']:>10}")
    for decision in decisions:
        click.echo(f"  {decision.message}")


def _run(config_path: Path, items_factory: Any, *, dry_run: bool, force: bool, source: str,
         replay_of: dict[str, int] | None = None) -> None:
    config = load_config(config_path)
    progress = TerminalProgress()
    # Delivery starts in a second process as soon as enough is released, while reading goes on.
    background = None if dry_run else BackgroundDelivery(config.path)
    with fewer_collections(), state_connection(config, dry_run=dry_run) as conn:
        # Progress only for a person watching: counting bytes costs the reader its fastest path.
        pipeline = Pipeline(conn, config, dry_run=dry_run, force=force,
                            progress=progress if progress.enabled else None,
                            on_release=background.released if background is not None else None)
        outcomes: list[FileOutcome] = []
        try:
            with items_factory(conn) as items:
                outcomes.extend(pipeline.ingest_all(items, source=source, replay_of=replay_of))
            progress.done()
            decisions = pipeline.finish()
        finally:
            early = background.stop() if background is not None else DeliveryStats()
        for outcome in outcomes:
            _print_outcome(outcome)
        failed = any(o.status == "quarantined" for o in outcomes) or any(not d.applied for d in decisions)
        if dry_run:
            _print_plan(outcomes, decisions)
            sys.exit(1 if failed else 0)
        for decision in decisions:
            if decision.absent or not decision.applied:
                click.echo(decision.message, err=not decision.applied)
        with open_adapter(config) as adapter:
            stats = deliver(conn, adapter)
        stats.sent, stats.failed = stats.sent + early.sent, stats.failed + early.failed
        finished = finish_files(conn)
        click.echo(f"delivered {stats.sent} operation(s) to {config.crm_kind}"
                   + (f", {stats.failed} refused (see bridge journal)" if stats.failed else "")
                   + (f", {stats.left} still waiting for the CRM" if stats.left else ""))
        waiting = state.waiting_count(conn)
        if waiting:
            click.echo(f"{waiting} offer(s) wait for products not received yet (bridge journal shows which)")
        failed = failed or bool(stats.left) or any(r.status == "partial" for r in finished)
    sys.exit(1 if failed else 0)


@click.command("ingest")
@config_option
@click.option("--dry-run", is_flag=True, help="Print the plan; change nothing (the state database included).")
@click.option("--force", is_flag=True, help="Allow a full export to deactivate more than max_deactivate_share.")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
def ingest_command(config_path: Path, dry_run: bool, force: bool, paths: tuple[Path, ...]) -> None:
    """Process exchange files, folders or zips once. Exit 1 if any file was quarantined or not applied."""
    _run(config_path, lambda conn: expand_inputs(list(paths)), dry_run=dry_run, force=force, source="cli")


@click.command("replay")
@config_option
@click.option("--dry-run", is_flag=True, help="Print the plan; change nothing.")
@click.option("--force", is_flag=True, help="Allow a full export to deactivate more than max_deactivate_share.")
@click.argument("ids", nargs=-1, required=True, type=int)
def replay_command(config_path: Path, dry_run: bool, force: bool, ids: tuple[int, ...]) -> None:
    """Run archived files (by ledger id) through the pipeline again."""
    from contextlib import ExitStack, contextmanager

    replay_of: dict[str, int] = {}

    @contextmanager
    def archived(conn: Any) -> Any:
        items = []
        with ExitStack() as unpacked:
            for file_id in ids:
                row = ledger.get(conn, file_id)
                if row is None:
                    raise UserError(f"no file #{file_id} in the archive (bridge archive list shows them)")
                if row.pruned_at and not row.archive_path:
                    raise UserError(f"file #{file_id}'s archived copy was removed by retention at {row.pruned_at} "
                                    "([archive] keep_days); it cannot be replayed")
                if not row.archive_path or not Path(row.archive_path).exists():
                    raise UserError(f"file #{file_id} has no archived copy at {row.archive_path}")
                # A zip (one a source sent, or one refused whole): its XML members are replayed, and a
                # zip refused before is checked again as a zip, not read as if it were XML.
                if row.status == "unpacked" or Path(row.archive_path).suffix.lower() == ".zip":
                    for member in unpacked.enter_context(expand_inputs([Path(row.archive_path)])):
                        member.name = (row.name if member.error is not None
                                       else f"{row.name}!{member.name.rsplit('!', 1)[-1]}")
                        items.append(member)
                        replay_of[member.name] = file_id
                    continue
                items.append(InputFile(Path(row.archive_path), row.name))
                replay_of[row.name] = file_id
            yield items

    _run(config_path, archived, dry_run=dry_run, force=force, source="replay", replay_of=replay_of)


@click.group("archive")
@group_config_option
def archive_group(config_path: Path | None) -> None:
    """The archive of every file taken."""


@archive_group.command("list")
@group_config_option
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def archive_list(ctx: click.Context, config_path: Path | None, as_json: bool) -> None:
    """Every file taken: id, name, sha256, received_at, status, counts."""
    config = load_config(resolve_config(ctx, config_path))
    with state_connection(config, read_only=True) as conn:
        rows = ledger.all_files(conn)
    if as_json:
        click.echo(json.dumps([r.as_json() for r in rows], ensure_ascii=False, indent=2))
        return
    for r in rows:
        counts = ", ".join(f"{k} {v}" for k, v in r.counts.items() if v)
        click.echo(f"{r.id:>5}  {r.received_at}  {r.status:<11}  {r.sha256[:12]}  {r.name}" + (f"  [{counts}]" if counts else ""))


_RELATIVE = re.compile(r"^(\d+)\s*([smhdw])$")


def _since(value: str | None, option: str = "--since") -> str | None:
    if value is None:
        return None
    match = _RELATIVE.match(value.strip())
    if match:
        unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}[match.group(2)]
        moment = datetime.now(UTC) - timedelta(**{unit: int(match.group(1))})
    else:
        try:
            moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise click.BadParameter(f"'{value}' is not a time: use an ISO time such as 2026-11-28T10:00 or "
                                     "a span such as 2h, 3d", param_hint=f"'{option}'") from None
        if moment.tzinfo is None:
            moment = moment.astimezone()  # a person types local time
    return stamp(moment)


@click.command("journal")
@config_option
@click.option("--json", "as_json", is_flag=True)
@click.option("--file", "file_id", type=int, help="Only this file (ledger id).")
@click.option("--entity", "external_id", help="Only this 1C Ид (a product's also shows its variants).")
@click.option("--since", help="ISO time (2026-11-28T10:00) or a span back from now (30m, 2h, 7d).")
@click.option("--limit", type=int, default=None, help="At most this many entries.")
def journal_command(config_path: Path, as_json: bool, file_id: int | None, external_id: str | None,
                    since: str | None, limit: int | None) -> None:
    """What happened to a file or a record, step by step, with the CRM's answers."""
    config = load_config(config_path)
    with state_connection(config, read_only=True) as conn:
        entries = journal.query(conn, file_id=file_id, external_id=external_id, since=_since(since), limit=limit)
    if as_json:
        click.echo(json.dumps(entries, ensure_ascii=False, indent=2))
        return
    for e in entries:
        where = f"file #{e['file_id']}" if e["file_id"] is not None else "-"
        record = f" {e['entity']} {e['external_id']}" if e["external_id"] else ""
        line = f"{e['at']}  {where:<9} {e['step']:<10} {e['status']:<8}{record}  {e['message']}"
        answer = (e["detail"] or {}).get("answer")
        click.echo(line + (f"  answer={json.dumps(answer, ensure_ascii=False)}" if answer else ""))


@click.command("status")
@config_option
@click.option("--json", "as_json", is_flag=True)
def status_command(config_path: Path, as_json: bool) -> None:
    """Files by state, outbox depth, last success, last error."""
    config = load_config(config_path)
    with state_connection(config, read_only=True) as conn:
        files = ledger.status_counts(conn)
        depth = outbox.depth(conn)
        success = conn.execute("SELECT id, name, updated_at FROM files WHERE status = 'applied'"
                               " ORDER BY updated_at DESC, id DESC LIMIT 1").fetchone()
        error = conn.execute("SELECT at, file_id, external_id, message FROM journal WHERE status IN ('error','refused')"
                             " ORDER BY id DESC LIMIT 1").fetchone()
        waiting = state.waiting_count(conn)
    result = {
        "files": files, "outbox": {"pending": depth.get("pending", 0), "failed": depth.get("failed", 0)},
        "waiting_offers": waiting,
        "last_success": {"file_id": success[0], "name": success[1], "at": success[2]} if success else None,
        "last_error": {"at": error[0], "file_id": error[1], "external_id": error[2], "message": error[3]} if error else None,
    }
    if as_json:
        click.echo(json.dumps(result, ensure_ascii=False, indent=2))
        return
    click.echo("files: " + (", ".join(f"{k} {v}" for k, v in sorted(files.items())) or "none yet"))
    click.echo(f"outbox: {result['outbox']['pending']} pending, {result['outbox']['failed']} refused by the CRM")
    click.echo(f"offers waiting for their product: {waiting}")
    s = result["last_success"]
    click.echo(f"last success: {s['at']} file #{s['file_id']} {s['name']}" if s else "last success: none")
    e = result["last_error"]
    click.echo(f"last error: {e['at']} file #{e['file_id']}: {e['message']}" if e else "last error: none")


@click.command("prune")
@config_option
@click.option("--before", help="Remove what is older than this ISO time or span (90d) instead of what the "
                               "configured keep_days say.")
@click.option("--dry-run", is_flag=True, help="Count what would be removed; change nothing.")
@click.option("--json", "as_json", is_flag=True)
def prune_command(config_path: Path, before: str | None, dry_run: bool, as_json: bool) -> None:
    """Remove archived copies of applied files, delivered outbox rows and settled journal entries older than
    [archive] keep_days and [state] keep_days. Quarantined, partial and pending work is never removed."""
    config = load_config(config_path)
    limits = retention.cutoffs(config, _since(before, "--before"))
    if not limits.active:
        result = retention.Pruned()
        message = "retention is off ([archive] keep_days and [state] keep_days are 0, no --before): nothing removed"
    else:
        with state_connection(config, read_only=dry_run) as conn:
            result = retention.prune(conn, config.archive_path, limits, dry_run=dry_run)
        message = ("would remove " if dry_run else "removed ") + result.describe()
    if as_json:
        click.echo(json.dumps({**result.as_json(), "dry_run": dry_run, "archive_before": limits.archive,
                               "state_before": limits.state}, ensure_ascii=False, indent=2))
    else:
        click.echo(message)


@click.group("sandbox")
@group_config_option
def sandbox_group(config_path: Path | None) -> None:
    """The local sandbox CRM."""


@sandbox_group.command("dump")
@group_config_option
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def sandbox_dump(ctx: click.Context, config_path: Path | None, as_json: bool) -> None:
    """The sandbox CRM's contents."""
    config = load_config(resolve_config(ctx, config_path))
    if config.crm_kind != "sandbox":
        raise UserError(f"crm.kind is '{config.crm_kind}', not 'sandbox'")
    with open_adapter(config, read_only=True) as adapter:
        data = adapter.dump()  # type: ignore[attr-defined]
    if as_json:
        click.echo(json.dumps(data, ensure_ascii=False, indent=2))
        return
    click.echo(f"write calls received: {data['calls']}")
    for p in data["products"]:
        flag = "" if p["active"] else " [inactive]"
        click.echo(f"product {p['external_id']}{flag}: {p['name']} sku={p['sku']} prices={p['prices']} "
                   f"stock={p['stock']} quantity={p['quantity']}")
    for c in data["companies"]:
        click.echo(f"company {c['external_id']}: {c['name']} ИНН {c['inn']} КПП {c['kpp']}")
    for c in data["contacts"]:
        click.echo(f"contact {c['external_id']}: {c['name']} {c['email'] or ''} {c['phone'] or ''}")
    for d in data["deals"]:
        click.echo(f"deal {d['external_id']}: {json.dumps(d, ensure_ascii=False)}")
