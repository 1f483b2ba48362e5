"""Deals changed in the portal since a cursor: ``crm.item.list`` by ``updatedTime``, paged by 50.

The cursor is the ``updatedTime`` of the last deal reported and the ids of
the deals reported with that very time: the portal's clock counts whole
seconds, so the next call asks for ``>= time`` and leaves out only those.
Pages are fetched several to a request once the total is known.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Any

from bridge.crm.base import DealLine, DealSnapshot
from bridge.crm.bitrix24.client import LIMIT_ERRORS, MAX_COMMANDS, BatchAnswer
from bridge.crm.bitrix24.lookups import PAGE, _json_object, _rows
from bridge.crm.bitrix24.portal import Portal
from bridge.crm.bitrix24.settings import Settings
from bridge.crm.bitrix24.values import plain
from bridge.errors import PermanentError, TransientError

Send = Callable[[list[tuple[str, str, dict[str, Any]]]], BatchAnswer]


def _cursor(cursor: str | None) -> tuple[str | None, set[int]]:
    if not cursor:
        return None, set()
    try:
        data = json.loads(cursor)
        return str(data["t"]), {int(i) for i in data["ids"]}
    except (ValueError, KeyError, TypeError):
        raise PermanentError(f"not a Bitrix24 deal cursor: {cursor[:80]!r}") from None


def _when(value: Any) -> datetime:
    return datetime.fromisoformat(str(value))


def _run(send: Send, commands: list[tuple[str, str, dict[str, Any]]]) -> dict[str, Any]:
    """Results by key, 50 commands to a request; any refusal fails the whole read."""
    results: dict[str, Any] = {}
    for start in range(0, len(commands), MAX_COMMANDS):
        answer = send(commands[start:start + MAX_COMMANDS])
        for key, (code, text) in answer.errors.items():
            error = TransientError if code in LIMIT_ERRORS else PermanentError
            raise error(f"Bitrix24 refused to list deals ({code}: {text})")
        results.update(answer.results)
    return results


def changed_deals(send: Send, settings: Settings, portal: Portal, cursor: str | None,
                  limit: int) -> tuple[list[DealSnapshot], str | None]:
    since, seen = _cursor(cursor)
    data_field = settings.deal_data_field
    select = ["id", "title", "stageId", "updatedTime", "originatorId", "originId", "companyId", "contactId",
              "currencyId", "opportunity"] + ([data_field] if data_field else [])
    base: dict[str, Any] = {"entityTypeId": 2, "useOriginalUfNames": "Y", "select": select,
                            "order": {"updatedTime": "ASC", "id": "ASC"},
                            "filter": {">=updatedTime": since} if since else {}}
    rows: dict[int, dict[str, Any]] = {}  # by id, in the order met: a deal changed while paging counts once
    start, pages = 0, 1
    while len(rows) < limit:
        starts = [start + PAGE * i for i in range(pages)]
        answer = send([(f"p{i}", "crm.item.list", {**base, "start": s}) for i, s in enumerate(starts)])
        finished = False
        for i, _ in enumerate(starts):
            key = f"p{i}"
            if key in answer.errors:
                code, text = answer.errors[key]
                error = TransientError if code in LIMIT_ERRORS else PermanentError
                raise error(f"Bitrix24 refused to list deals ({code}: {text})")
            for row in _rows(answer.results.get(key)):
                deal_id = int(row["id"])
                if since is not None and _when(row["updatedTime"]) == _when(since) and deal_id in seen:
                    continue
                rows.pop(deal_id, None)
                rows[deal_id] = row
            if key not in answer.nexts:
                finished = True
                break
        if finished:
            break
        start = starts[-1] + PAGE
        total = max(answer.totals.values(), default=start)
        pages = max(1, min(MAX_COMMANDS, math.ceil((total - start) / PAGE), math.ceil((limit - len(rows)) / PAGE)))
    deals = sorted(rows.values(), key=lambda r: (_when(r["updatedTime"]), int(r["id"])))[:limit]
    if not deals:
        return [], cursor
    snapshots = _snapshots(send, settings, portal, deals)
    last = _when(deals[-1]["updatedTime"])
    same = {int(d["id"]) for d in deals if _when(d["updatedTime"]) == last}
    if since is not None and _when(since) == last:
        same |= seen
    return snapshots, json.dumps({"t": deals[-1]["updatedTime"], "ids": sorted(same)})


def _snapshots(send: Send, settings: Settings, portal: Portal, deals: list[dict[str, Any]]) -> list[DealSnapshot]:
    """Deals with their companies', contacts' and products' 1C ids, read in bulk."""
    commands: list[tuple[str, str, dict[str, Any]]] = []
    for entity, field in ((4, "companyId"), (3, "contactId")):
        ids = sorted({int(d[field]) for d in deals if d.get(field)})
        for n in range(0, len(ids), PAGE):
            commands.append((f"e{entity}_{n}", "crm.item.list", {
                "entityTypeId": entity, "select": ["id", "originatorId", "originId"],
                "filter": {"@id": ids[n:n + PAGE]}}))
    for deal in deals:
        commands.append((f"r{deal['id']}", "crm.item.productrow.list", {
            "filter": {"=ownerType": "D", "=ownerId": int(deal["id"])}}))
    found = _run(send, commands)
    origin: dict[tuple[int, int], str | None] = {}
    for key, result in found.items():
        if key.startswith("e"):
            entity = int(key[1:].split("_")[0])
            for row in _rows(result):
                origin[(entity, int(row["id"]))] = _ours(settings, row)
    product_rows = {int(key[1:]): _rows(result) for key, result in found.items() if key.startswith("r")}
    product_ids = sorted({int(r["productId"]) for rows in product_rows.values() for r in rows if r.get("productId")})
    xml_ids: dict[int, str] = {}
    commands = []
    for iblock in filter(None, (portal.iblock, portal.offers_iblock)):
        for n in range(0, len(product_ids), PAGE):
            commands.append((f"x{iblock}_{n}", "catalog.product.list", {
                "select": ["id", "iblockId", "xmlId"], "filter": {"iblockId": iblock, "id": product_ids[n:n + PAGE]}}))
    for result in _run(send, commands).values():
        for row in _rows(result):
            xml_ids[int(row["id"])] = str(row.get("xmlId") or "")
    stages = {portal_stage: stage for stage, portal_stage in settings.stages.items()}
    snapshots = []
    for deal in deals:
        lines = [DealLine(product_external_id=xml_ids.get(int(r.get("productId") or 0)) or None,
                          name=str(r.get("productName") or ""), quantity=_number(r.get("quantity")),
                          price=_number(r.get("price")),
                          discount=_number(r["discountSum"]) if r.get("discountSum") else None,
                          vat_rate=_number(r["taxRate"]) if r.get("taxRate") not in (None, "") else None,
                          unit=r.get("measureName"),
                          unit_code=str(r["measureCode"]) if r.get("measureCode") not in (None, "") else None)
                 for r in product_rows.get(int(deal["id"]), [])]
        data = _json_object(deal.get(settings.deal_data_field or ""))
        snapshots.append(DealSnapshot(
            crm_id=str(deal["id"]), title=str(deal.get("title") or ""),
            stage=stages.get(str(deal.get("stageId")), str(deal.get("stageId") or "")),
            updated_at=str(deal["updatedTime"]), external_id=_ours(settings, deal),
            company_external_id=origin.get((4, int(deal.get("companyId") or 0))),
            contact_external_id=origin.get((3, int(deal.get("contactId") or 0))),
            currency=deal.get("currencyId"), amount=_number(deal.get("opportunity")),
            lines=lines, extra={"data": data} if data else {}))
    return snapshots


def _ours(settings: Settings, row: dict[str, Any]) -> str | None:
    """The 1C Ид a record carries, when this bridge put it there."""
    if row.get("originatorId") == settings.originator and row.get("originId"):
        return str(row["originId"])
    return None


def _number(value: Any) -> str:
    return plain(Decimal(str(value if value not in (None, "") else 0)))
