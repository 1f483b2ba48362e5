"""``bridge render`` and ``bridge sandbox deal ...``: the CRM -> 1C side, for integrators and trials."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from bridge.cli.context import config_option, group_config_option, load_config, open_adapter, state_connection
from bridge.commerceml.render import PROFILES, Renderer, encode
from bridge.errors import UserError
from bridge.store.clock import now
from bridge.sync.orders import NotReady, build_order, generated_at, order_settings


@click.command("render")
@config_option
@click.option("--deal", "deal_id", required=True, help="The CRM's deal id.")
@click.option("--profile", type=click.Choice(sorted(PROFILES)), help="Default: [outgoing] profile.")
@click.option("--encoding", help="Default: [outgoing] encoding.")
def render_command(config_path: Path, deal_id: str, profile: str | None, encoding: str | None) -> None:
    """Print the order XML a deal would produce (nothing is written or sent)."""
    config = load_config(config_path)
    orders = config.orders
    profile = profile or (orders.profile if orders else "ut11")
    encoding = encoding or (orders.encoding if orders else "utf-8-bom")
    with open_adapter(config, read_only=config.crm_kind == "sandbox") as adapter:
        deal = adapter.get_deal(deal_id)  # type: ignore[attr-defined]
    if deal is None:
        raise UserError(f"the CRM has no deal {deal_id}")
    settings = order_settings(config)
    with state_connection(config, read_only=True) as conn:
        row = conn.execute("SELECT updated_at FROM orders WHERE deal_id = ?", (deal_id,)).fetchone()
        try:
            order = build_order(deal, conn, settings, row[0] if row else now())
        except NotReady as exc:
            raise UserError(f"deal {deal_id} cannot become an order yet: {exc}") from None
    renderer = Renderer(orders.template_dir if orders else None)
    data = encode(renderer.render(profile, {"orders": [order], "generated_at": generated_at()}), encoding)
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


@click.group("deal")
@group_config_option
def deal_group(config_path: Path | None) -> None:
    """Deals in the sandbox CRM (as a manager would make them)."""


def _sandbox(ctx: click.Context, own: Path | None):  # type: ignore[no-untyped-def]
    path = own
    node = ctx
    while path is None and node is not None:
        path = node.params.get("config_path")
        node = node.parent
    config = load_config(path or Path("bridge.toml"))
    if config.crm_kind != "sandbox":
        raise UserError(f"crm.kind is '{config.crm_kind}', not 'sandbox'")
    return open_adapter(config)


@deal_group.command("add")
@group_config_option
@click.argument("file", type=click.File("r", encoding="utf-8"))
@click.pass_context
def deal_add(ctx: click.Context, config_path: Path | None, file: object) -> None:
    """Create a deal from FILE.json ({"title", "stage", "company_external_id" or "counterparty", "lines"}); print its id."""
    try:
        spec = json.load(file)  # type: ignore[arg-type]
    except json.JSONDecodeError as exc:
        raise UserError(f"the deal file is not JSON: {exc}") from None
    with _sandbox(ctx, config_path) as crm:
        click.echo(crm.add_deal(spec))


@deal_group.command("stage")
@group_config_option
@click.argument("deal_id")
@click.argument("stage")
@click.pass_context
def deal_stage(ctx: click.Context, config_path: Path | None, deal_id: str, stage: str) -> None:
    """Move deal DEAL_ID to STAGE."""
    with _sandbox(ctx, config_path) as crm:
        crm.move_deal(deal_id, stage)
