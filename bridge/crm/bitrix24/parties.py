"""Companies, contacts and deals: ``crm.item.*`` (entityTypeId 4, 3, 2) and ``crm.requisite.*``.

* A company's 1C Ид is the ``XML_ID`` of its requisite (with ``RQ_INN`` and
  ``RQ_KPP``); the company itself carries it as ``originId`` too. A 1C
  counterparty with a new Ид but a known ИНН/КПП (``op.match``) joins the
  existing company: a company made by hand takes the Ид, one that already
  has a 1C Ид gets one more requisite with the new Ид, so both keep hitting it.
* Contacts and deals carry the 1C Ид as ``originId`` under our ``originatorId``.
* A deal's 1C facts (paid, shipped, numbers and dates) live as JSON in a
  string user field (``deal_data_field``); its lines are product rows.
"""

from __future__ import annotations

import json
from typing import Any

from bridge.crm.base import Operation
from bridge.crm.bitrix24.context import Body, Ctx, ok, refused_by_portal
from bridge.crm.bitrix24.lookups import CompanyState, ItemState
from bridge.crm.bitrix24.plan import Cmd, Find, Need, Ref, Send, concrete
from bridge.crm.bitrix24.values import Refused, currency, decimal, ident, name, plain, text

COMPANY, CONTACT, DEAL = 4, 3, 2


def _requisite_fields(payload: dict[str, Any], skip: set[str]) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    if "inn" in payload:
        fields["RQ_INN"] = ident("inn", payload["inn"]) or ""
    if "kpp" in payload:
        fields["RQ_KPP"] = ident("kpp", payload["kpp"]) or ""
    if "name" in payload and "name" not in skip:
        fields["RQ_COMPANY_NAME"] = name("name", payload["name"])
    if "full_name" in payload and "full_name" not in skip:
        fields["RQ_COMPANY_FULL_NAME"] = text("full_name", payload["full_name"]) or ""
    return fields


def _company_key(value: Any) -> Any:
    """Tell companies apart even while one is still being created (its id a Ref)."""
    value = concrete(value)
    return ("new", id(value.cmd)) if isinstance(value, Ref) else int(value)


def upsert_company(ctx: Ctx, op: Operation, payload: dict[str, Any]) -> Body:
    ext = op.external_id
    skip = set(op.create_only)
    match = op.match or {}
    if not isinstance(match, dict):
        raise Refused("match must be an object")
    unknown = sorted(set(match) - {"inn", "kpp"})
    if unknown:
        raise Refused(f"cannot match companies by {', '.join(unknown)} (possible: inn, kpp)")
    match_inn, match_kpp = ident("inn", match.get("inn")), ident("kpp", match.get("kpp"))
    requisite = _requisite_fields(payload, skip)
    title = name("name", payload["name"]) if "name" in payload else None
    inn = ident("inn", payload.get("inn"))
    finds = [Find("company", ext)] + ([Find("inn", match_inn)] if match_inn else [])
    values = yield Need(finds)
    state: CompanyState | None = values[0]
    item_fields = {"title": title} if title is not None and "name" not in skip else {}
    cmds: list[Cmd] = []
    if state is None and match_inn:
        rows = [r for r in values[1] if not match_kpp or (r.get("RQ_KPP") or "") == match_kpp]
        if not match_kpp and len({_company_key(r["ENTITY_ID"]) for r in rows}) > 1:
            rows = [r for r in rows if not r.get("RQ_KPP")] or rows  # a sole proprietor has no КПП
        companies = {_company_key(r["ENTITY_ID"]) for r in rows}
        if len(companies) > 1:
            ids = ", ".join(str(concrete(r["ENTITY_ID"])) for r in rows)
            raise Refused(f"{len(companies)} companies have ИНН {match_inn}"
                          + (f" and КПП {match_kpp}" if match_kpp else "")
                          + f" (ids {ids}); cannot tell which one is meant")
        if rows:
            row = rows[0]
            company_id = row["ENTITY_ID"]
            owned = any(r.get("XML_ID") for r in values[1] if _company_key(r["ENTITY_ID"]) == _company_key(company_id))
            if owned:  # another 1C Ид of a counterparty we already have: one more requisite carries it
                add = _add_requisite(ctx, company_id, title or ext, ext, match_inn,
                                     {"RQ_INN": match_inn, "RQ_KPP": match_kpp or "", **requisite})
                state = CompanyState(company_id, add.ref(), ctx.clock())
                cmds.append(add)
            else:  # made by hand: it becomes ours
                for taken in (r for r in values[1] if r.get("ID") == row["ID"]):
                    taken["XML_ID"] = ext  # a later operation of this apply with this ИНН joins it, not takes it
                item_fields.update(originatorId=ctx.settings.originator, originId=ext)
                cmds.append(Cmd("crm.requisite.update", {"id": row["ID"], "fields": {"XML_ID": ext, **requisite}}))
                state = CompanyState(company_id, row["ID"], ctx.clock())
            requisite = {}
            ctx.lookups.register("company", ext, state)
    if state is None:
        if title is None:
            raise Refused("cannot create without name")
        add_item = Cmd("crm.item.add", {"entityTypeId": COMPANY, "fields": {
            "title": title, "originatorId": ctx.settings.originator, "originId": ext}})
        company_id = add_item.ref("item", "id")
        add_requisite = _add_requisite(ctx, company_id, title, ext, inn, requisite)
        state = CompanyState(company_id, add_requisite.ref(), ctx.clock())
        ctx.lookups.register("company", ext, state)
        if inn:  # a later operation of this batch matching this ИНН must find it
            ctx.lookups.add_row("inn", inn, {"ID": add_requisite.ref(), "ENTITY_ID": company_id, "XML_ID": ext,
                                            "RQ_INN": inn, "RQ_KPP": requisite.get("RQ_KPP", "")})
        yield Send([add_item, add_requisite])
        if not add_item.ok:
            ctx.lookups.cache.drop("company", ext, state)
            raise refused_by_portal(add_item, "crm.item.add (company)")
        if not add_requisite.ok:  # a company nobody could find again would be duplicated next time
            ctx.lookups.cache.drop("company", ext, state)
            yield Send([Cmd("crm.item.delete", {"entityTypeId": COMPANY, "id": concrete(company_id)})])
            raise refused_by_portal(add_requisite, "crm.requisite.add")
        state.company_id, state.requisite_id = concrete(company_id), concrete(add_requisite.ref())
        return ok(state.company_id, created=True)
    if item_fields:
        cmds.insert(0, Cmd("crm.item.update", {"entityTypeId": COMPANY, "id": state.company_id,
                                               "fields": item_fields}))
    add_requisite = None
    if state.requisite_id is None:  # our company, but its requisite (which carries the 1C Ид) was never made
        add_requisite = _add_requisite(ctx, state.company_id, title or ext, ext, inn, requisite)
        cmds.append(add_requisite)
    elif requisite:
        cmds.append(Cmd("crm.requisite.update", {"id": state.requisite_id, "fields": requisite}))
    yield Send(cmds)
    for cmd in cmds:
        if not cmd.ok:
            ctx.lookups.cache.drop("company", ext, state)
            raise refused_by_portal(cmd, cmd.method)
    if add_requisite is not None:
        state.requisite_id = concrete(add_requisite.ref())
    return ok(concrete(state.company_id), created=False)


def _add_requisite(ctx: Ctx, company_id: Any, name: str, ext: str, inn: str | None, fields: dict[str, Any]) -> Cmd:
    """The requisite that carries a company's 1C Ид (XML_ID), with its ИНН/КПП and the rest in ``fields``."""
    return Cmd("crm.requisite.add", {"fields": {"ENTITY_TYPE_ID": COMPANY, "ENTITY_ID": company_id,
                                                "PRESET_ID": _preset(ctx, inn), "NAME": name, "XML_ID": ext, **fields}})


def _preset(ctx: Ctx, inn: str | None) -> int:
    """A 12-digit ИНН is a sole proprietor's (ИП); a 10-digit one an organisation's."""
    return ctx.settings.requisite_preset_person if inn and len(inn) == 12 else ctx.settings.requisite_preset_company


def _multifields(payload: dict[str, Any], current: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """E-mail and phone as crm multifields: the first one of each type is replaced, or added."""
    changes = []
    for key, type_id in (("email", "EMAIL"), ("phone", "PHONE")):
        if key not in payload:
            continue
        value = ident(key, payload[key])
        existing = next((f for f in current if f.get("typeId") == type_id), None)
        if existing is not None:
            changes.append({"id": existing["id"], "typeId": type_id, "valueType": existing.get("valueType", "WORK"),
                            "value": value or ""})  # an empty value deletes it
        elif value:
            changes.append({"typeId": type_id, "valueType": "WORK", "value": value})
    return changes


def upsert_contact(ctx: Ctx, op: Operation, payload: dict[str, Any]) -> Body:
    ext = op.external_id
    skip = set(op.create_only)
    fields: dict[str, Any] = {}
    if "name" not in skip:
        if any(payload.get(k) for k in ("first_name", "last_name")):
            for key, field in (("first_name", "name"), ("last_name", "lastName"), ("middle_name", "secondName")):
                fields[field] = text(key, payload.get(key)) or ""
        elif "name" in payload:
            fields["name"] = name("name", payload["name"])
    for key in ("email", "phone"):
        if key in payload:
            ident(key, payload[key])
    [state] = yield Need([Find("contact", ext)])
    if state is None:
        if not fields.get("name") and not fields.get("lastName"):
            raise Refused("cannot create without name")
        fields.update(originatorId=ctx.settings.originator, originId=ext, fm=_multifields(payload, []))
        add = Cmd("crm.item.add", {"entityTypeId": CONTACT, "fields": fields})
        state = ItemState(add.ref("item", "id"), fetched=ctx.clock())
        ctx.lookups.register("contact", ext, state)
        yield Send([add])
        if not add.ok:
            ctx.lookups.cache.drop("contact", ext, state)
            raise refused_by_portal(add, "crm.item.add (contact)")
        state.id = concrete(state.id)
        state.fm = [dict(f, id=None) for f in fields["fm"]]
        ctx.lookups.cache.drop("contact", ext, state)  # the new multifields' ids are not known: read it next time
        return ok(state.id, created=True)
    fm = [f for f in _multifields({k: v for k, v in payload.items() if k not in skip}, state.fm)
          if not f.get("id") or f["value"] != next((c.get("value") for c in state.fm if c.get("id") == f["id"]), None)]
    if fm:
        fields["fm"] = fm
    if fields:
        update = Cmd("crm.item.update", {"entityTypeId": CONTACT, "id": state.id, "fields": fields})
        yield Send([update])
        ctx.lookups.cache.drop("contact", ext, state)
        if not update.ok:
            raise refused_by_portal(update, "crm.item.update (contact)")
    return ok(concrete(state.id), created=False)


_DEAL_DATA = ("number", "date", "facts", "operation", "comment", "rate", "requisites")


def upsert_deal(ctx: Ctx, op: Operation, payload: dict[str, Any]) -> Body:
    ext = op.external_id
    skip = set(op.create_only)
    if ctx.deal_problem and any(k in payload for k in ("facts", "number")):
        raise Refused(ctx.deal_problem)
    if "facts" in payload and payload["facts"] is not None and not isinstance(payload["facts"], dict):
        raise Refused("facts must be an object")
    company_ext = ident("company_external_id", payload.get("company_external_id"))
    contact_ext = ident("contact_external_id", payload.get("contact_external_id"))
    lines = payload.get("lines")
    if lines is not None and (not isinstance(lines, list) or not all(isinstance(x, dict) for x in lines)):
        raise Refused("lines must be a list of objects")
    rows = [_row_values(i, line) for i, line in enumerate(lines or [])]
    product_ids = list(dict.fromkeys(r["product_external_id"] for r in rows if r["product_external_id"]))
    finds = [Find("deal", ext)] + ([Find("company", company_ext)] if company_ext else []) \
        + ([Find("contact", contact_ext)] if contact_ext else []) + [Find("product", p) for p in product_ids]
    values = yield Need(finds)
    state: ItemState | None = values[0]
    position = 1
    company = contact = None
    if company_ext:
        company, position = values[position], position + 1
        if company is None:
            raise Refused(f"Bitrix24 has no company with external id {company_ext!r}")
    if contact_ext:
        contact, position = values[position], position + 1
        if contact is None:
            raise Refused(f"Bitrix24 has no contact with external id {contact_ext!r}")
    products = dict(zip(product_ids, values[position:]))
    fields: dict[str, Any] = {}
    if "number" in payload and "number" not in skip:
        fields["title"] = f"Заказ {text('number', payload['number']) or ext}"
    if "stage" in payload and payload["stage"] is not None:
        stage = name("stage", payload["stage"])
        fields["stageId"] = ctx.settings.stages.get(stage, stage)
    if "amount" in payload and payload["amount"] is not None:
        fields.update(opportunity=decimal("amount", payload["amount"]), isManualOpportunity="Y")
    if "currency" in payload:
        fields["currencyId"] = currency(payload["currency"], ctx.settings.currency)
    if "date" in payload and payload["date"]:
        fields["begindate"] = text("date", payload["date"])
    if "company_external_id" in payload:
        fields["companyId"] = company.company_id if company is not None else 0
    if "contact_external_id" in payload:
        fields["contactId"] = contact.id if contact is not None else 0
    data_field = ctx.settings.deal_data_field
    data = {k: payload[k] for k in _DEAL_DATA if k in payload and k not in skip}
    if data_field and data:
        merged = {**(state.data if state is not None else {}), **data}
        fields[data_field] = json.dumps(merged, ensure_ascii=False, sort_keys=True, default=str)
    product_rows = None
    if lines is not None:
        product_rows = [{"productId": products[r["product_external_id"]].id
                         if r["product_external_id"] and products.get(r["product_external_id"]) else 0,
                         "productName": r["name"], "price": r["price"], "quantity": r["quantity"],
                         **({"discountTypeId": 1, "discountSum": r["discount"]} if r["discount"] is not None else {}),
                         **({"taxRate": r["tax"], "taxIncluded": "Y"} if r["tax"] is not None else {}),
                         "sort": 10 * (i + 1)} for i, r in enumerate(rows)]
    created = state is None
    cmds: list[Cmd] = []
    if created:
        fields.update(originatorId=ctx.settings.originator, originId=ext)
        fields.setdefault("title", f"Заказ {ext}")
        main = Cmd("crm.item.add", {"entityTypeId": DEAL, "useOriginalUfNames": "Y", "fields": fields})
        state = ItemState(main.ref("item", "id"), data=json.loads(fields.get(data_field or "", "{}") or "{}"),
                          fetched=ctx.clock())
        ctx.lookups.register("deal", ext, state)
        cmds.append(main)
    elif fields:
        main = Cmd("crm.item.update", {"entityTypeId": DEAL, "useOriginalUfNames": "Y", "id": state.id,
                                       "fields": fields})
        cmds.append(main)
    if product_rows is not None:
        cmds.append(Cmd("crm.item.productrow.set", {"ownerType": "D", "ownerId": state.id,
                                                    "productRows": product_rows}))
    yield Send(cmds)
    for cmd in cmds:
        if not cmd.ok:
            ctx.lookups.cache.drop("deal", ext, state)
            raise refused_by_portal(cmd, cmd.method)
    state.id = concrete(state.id)
    if data_field and data:
        state.data = {**state.data, **data}
    return ok(state.id, created=created)


def _row_values(index: int, line: dict[str, Any]) -> dict[str, Any]:
    where = f"line {index + 1}"
    product = ident(f"{where} product_external_id", line.get("product_external_id"))
    discounts = line.get("discounts") or []
    discount = line.get("discount")
    if discount is None and isinstance(discounts, list) and discounts:
        discount = sum((decimal(f"{where} discount", d.get("amount") or 0) for d in discounts if isinstance(d, dict)))
    taxes = line.get("taxes") or []
    tax = line.get("vat_rate")
    if tax is None and isinstance(taxes, list) and taxes and isinstance(taxes[0], dict):
        tax = taxes[0].get("rate")
    return {"product_external_id": product,
            "name": text(f"{where} name", line.get("name")) or product or f"line {index + 1}",
            "quantity": decimal(f"{where} quantity", line.get("quantity", 1)),
            "price": decimal(f"{where} price", line.get("price") or 0),
            "discount": None if discount is None else decimal(f"{where} discount", discount),
            "tax": None if tax in (None, "") else plain(decimal(f"{where} vat rate", tax))}
