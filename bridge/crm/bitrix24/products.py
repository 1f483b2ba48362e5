"""Products, variants, prices and stock: ``catalog.product.*``, ``catalog.price.modify``, inventory documents.

* A product is keyed by ``xmlId`` = the 1C Ид; a payload with a
  ``parent_external_id`` is a variation (``catalog.product.offer.*``) of it.
* Its 1C group becomes a catalog section (keyed by ``xmlId`` too).
* ``catalog.price.modify`` deletes every price it is not sent, so it is always
  sent all of the product's prices: the ones it already has (read, or known
  from this adapter's own writes) with this operation's merged in.
* Stock changes only through inventory documents: the difference between
  what 1C says and what the portal has goes into an arrival ("S") or a
  deduction ("D") document, which is then posted.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from bridge.crm.base import Operation
from bridge.crm.bitrix24.context import Body, Ctx, ok, refused_by_portal
from bridge.crm.bitrix24.lookups import PriceRow, ProductState, product_state
from bridge.crm.bitrix24.plan import Cmd, Find, Line, Need, Post, Send, concrete
from bridge.crm.bitrix24.values import Refused, currency, decimal, flag, ident, name, offer_parts, text

NO_PRODUCT = "Bitrix24 has no product with this external id (xmlId); it must be sent before its prices or stock"


def _product_fields(ctx: Ctx, payload: dict[str, Any], skip: set[str]) -> tuple[dict[str, Any], list[str]]:
    """The catalog fields the payload sets (only the keys it has: absent keys leave the portal alone)."""
    fields: dict[str, Any] = {}
    warnings: list[str] = []
    has = {key for key in payload if key not in skip}
    if "name" in has:
        fields["name"] = name("name", payload["name"])
    if "active" in has:
        fields["active"] = "Y" if flag("active", payload["active"]) else "N"
    if "description" in has:
        description = text("description", payload["description"])
        fields["detailText"] = description or ""
        fields["detailTextType"] = "text"
    for kind in ("sku", "barcode"):
        if kind in has:
            value = ident(kind, payload[kind])
            prop = ctx.portal.property_field(kind)
            if prop is not None:
                fields[prop] = {"value": value or ""}
            elif value is not None:
                warnings.append(f"{kind} not stored: set crm.{kind}_property")
    if "unit" in has and payload["unit"] is not None:
        unit = payload["unit"]
        if not isinstance(unit, str | int | dict):
            raise Refused("unit must be text or {code, name}")
        measure = ctx.portal.measure(unit)
        if measure is not None:
            fields["measure"] = measure
        else:
            warnings.append(f"unit {unit!r} has no measure in Bitrix24; left as it is")
    return fields, warnings


def _group(payload: dict[str, Any]) -> dict[str, str] | None:
    """The product's first 1C group as {"id", "name"}: a product sits in one catalog section."""
    groups = payload.get("groups")
    if not groups:
        return None
    if not isinstance(groups, list):
        raise Refused("groups must be a list of {id, name}")
    first = groups[0]
    if isinstance(first, str):
        return {"id": first, "name": first}
    if not isinstance(first, dict) or not isinstance(first.get("id"), str) or not first["id"]:
        raise Refused("groups must be a list of {id, name}")
    return {"id": first["id"], "name": str(first.get("name") or first["id"])}


def _hand_made(row: dict[str, Any]) -> bool:
    """Made in the portal, not by an exchange: no xmlId, or the one the portal gives (its own id)."""
    xml_id = str(row.get("xmlId") or "")
    return xml_id in ("", str(row.get("id")))


def upsert_product(ctx: Ctx, op: Operation, payload: dict[str, Any]) -> Body:
    ext = op.external_id
    parent = ident("parent_external_id", payload.get("parent_external_id"))
    variant = parent is not None
    group = None if variant else _group(payload)
    _product_fields(ctx, payload, set())  # every value is checked before anything is sent
    match_finds = []
    for key, value in (op.match or {}).items():
        if key not in ("sku", "barcode"):
            raise Refused(f"cannot match products by {key} (possible: sku, barcode)")
        if ident(key, value) is not None and ctx.portal.property_field(key) is not None:
            match_finds.append(Find(key, ident(key, value)))
    finds = [Find("product", ext)] + ([Find("product", parent)] if parent else []) \
        + ([Find("section", group["id"])] if group else []) + match_finds
    values = yield Need(finds)
    state: ProductState | None = values[0]
    parent_state: ProductState | None = values[1] if parent else None
    section = values[1 + bool(parent)] if group else None
    adopted = None
    if state is None and match_finds:
        candidate_lists = values[len(finds) - len(match_finds):]
        ids = set.intersection(*({int(r["id"]) for r in rows} for rows in candidate_lists))
        rows = {int(r["id"]): r for rows in candidate_lists for r in rows if int(r["id"]) in ids}
        hand_made = [r for r in rows.values() if _hand_made(r)]
        if len(hand_made) > 1:
            raise Refused(f"match {op.match} is ambiguous: {len(hand_made)} products have it "
                          f"(ids {', '.join(str(r['id']) for r in hand_made)})")
        if hand_made:
            adopted = product_state(hand_made[0], offer=False, fetched=ctx.clock())
            # A later operation of this apply matching the same product must see it taken, not adopt it too
            # (and take the xmlId away from this one).
            for row in (r for candidates in candidate_lists for r in candidates if int(r["id"]) == adopted.id):
                row["xmlId"] = ext
    cmds: list[Cmd] = []
    if group and section is None:  # the first product of a new group creates its section
        add_section = Cmd("catalog.section.add", {"fields": {"iblockId": ctx.portal.iblock, "name": group["name"],
                                                             "xmlId": group["id"]}})
        section = add_section.ref("section", "id")
        ctx.lookups.register("section", group["id"], section)
        cmds.append(add_section)
    if state is None and adopted is None:
        return (yield from _create(ctx, ext, payload, variant, parent, parent_state, section, cmds))
    target = state or adopted
    assert target is not None
    fields, warnings = _product_fields(ctx, payload, set(op.create_only))
    if adopted is not None:
        fields["xmlId"] = ext
        ctx.lookups.register("product", ext, adopted)
    if section is not None and not target.offer and "groups" not in op.create_only:
        fields["iblockSectionId"] = section
    if not fields and not cmds:
        return ok(target.crm_id(), created=False)
    method = "catalog.product.offer.update" if target.offer else "catalog.product.update"
    update = Cmd(method, {"id": target.id, "fields": fields})
    yield Send(cmds + [update])
    for cmd in cmds:
        if not cmd.ok:
            ctx.lookups.cache.drop("section", group["id"] if group else "", section)
    if not update.ok:
        ctx.lookups.cache.drop("product", ext, target)
        raise refused_by_portal(update, method)
    if "active" in fields:
        target.active = fields["active"] == "Y"
    return ok(target.crm_id(), created=False, **({"warnings": warnings} if warnings else {}))


def _create(ctx: Ctx, ext: str, payload: dict[str, Any], variant: bool, parent: str | None,
            parent_state: ProductState | None, section: Any, cmds: list[Cmd]) -> Body:
    fields, warnings = _product_fields(ctx, payload, set())
    if not fields.get("name"):
        raise Refused("cannot create without name")
    fields["xmlId"] = ext
    if variant and (parent_state is None or ctx.portal.offers_iblock is None):
        # Older 1C configurations list variants ("p#c") as goods of their own and never send the
        # parent; a variation needs one, so such a variant becomes a product of its own.
        warnings.append(f"parent product {parent!r} is not in Bitrix24: created as a product of its own"
                        if parent_state is None else "the catalog has no variations: created as a product")
        variant = False
    if variant:
        assert parent_state is not None
        fields.update(iblockId=ctx.portal.offers_iblock, parentId=parent_state.id)
        method, key = "catalog.product.offer.add", "offer"
    else:
        fields["iblockId"] = ctx.portal.iblock
        if section is not None:
            fields["iblockSectionId"] = section
        method, key = "catalog.product.add", "element"
    add = Cmd(method, {"fields": fields})
    state = ProductState(ext, add.ref(key, "id"), offer=variant, active=fields.get("active", "Y") == "Y",
                         prices={}, stock={}, fetched=ctx.clock())
    ctx.lookups.register("product", ext, state)  # its prices and stock may follow in this very batch
    yield Send(cmds + [add])
    if not add.ok:
        ctx.lookups.cache.drop("product", ext, state)
        raise refused_by_portal(add, method)
    state.id = int(concrete(state.id))
    return ok(state.id, created=True, **({"warnings": warnings} if warnings else {}))


def _product(values: list[Any]) -> ProductState:
    state = values[0]
    if state is None:
        raise Refused(NO_PRODUCT)
    return state


def set_prices(ctx: Ctx, op: Operation, payload: dict[str, Any]) -> Body:
    prices = payload.get("prices")
    if not isinstance(prices, dict):
        raise Refused("prices must be an object {price type name: number}")
    currencies = payload.get("currencies") if isinstance(payload.get("currencies"), dict) else {}
    wanted: dict[int, tuple[Decimal, str]] = {}
    for type_name, value in prices.items():
        if not isinstance(type_name, str) or not type_name:
            raise Refused(f"price type name {type_name!r} is not a name")
        number = decimal(f"price {type_name!r}", value)
        type_id, portal_name = ctx.portal.price_type(ctx.settings, type_name)
        if type_id is None:
            raise Refused(f"Bitrix24 has no price type {portal_name!r} (1C price type {type_name!r}): create it in "
                          "the portal or map it in [crm.price_types]")
        wanted[type_id] = (number, currency(currencies.get(type_name), ctx.settings.currency))
    state = _product((yield Need([Find("product", op.external_id)])))
    if state.prices is None:
        yield Need([Find("prices", state)])
    current = dict(state.prices or {})
    merged = dict(current)
    for type_id, (number, code) in wanted.items():
        old = current.get(type_id)
        merged[type_id] = PriceRow(old.id if old else None, number, code)
    if all(type_id in current and (current[type_id].price, current[type_id].currency) == (row.price, row.currency)
           for type_id, row in merged.items()):
        return ok(state.crm_id(), created=False, changed=False)
    # Every price the product has, not only this operation's: the portal deletes the ones left out.
    rows = [{"catalogGroupId": type_id, "price": row.price, "currency": row.currency,
             **({"id": row.id} if row.id else {})} for type_id, row in sorted(merged.items())]
    modify = Cmd("catalog.price.modify", {"fields": {"product": {"id": state.id, "prices": rows}}})
    yield Send([modify])
    if not modify.ok:
        state.prices = None  # what the portal has now is read again next time
        raise refused_by_portal(modify, "catalog.price.modify")
    returned = modify.result.get("prices") if isinstance(modify.result, dict) else None
    ids = {int(r["catalogGroupId"]): int(r["id"]) for r in returned or [] if isinstance(r, dict) and r.get("id")}
    state.prices = {t: PriceRow(ids.get(t, row.id), row.price, row.currency) for t, row in merged.items()}
    return ok(state.crm_id(), created=False, changed=True)


def set_stock(ctx: Ctx, op: Operation, payload: dict[str, Any]) -> Body:
    stock, quantity = payload.get("stock"), payload.get("quantity")
    if stock is None and quantity is None:
        raise Refused("set_stock needs stock {warehouse name: number} or quantity")
    if stock is not None and not isinstance(stock, dict):
        raise Refused("stock must be an object {warehouse name: number}")
    wanted: dict[int, Decimal] = {}
    for warehouse, value in (stock or {}).items():
        if not isinstance(warehouse, str) or not warehouse:
            raise Refused(f"warehouse name {warehouse!r} is not a name")
        number = decimal(f"stock {warehouse!r}", value)
        store_id, portal_name = ctx.portal.store(ctx.settings, warehouse)
        if store_id is None:
            raise Refused(f"Bitrix24 has no warehouse {portal_name!r} (1C warehouse {warehouse!r}): create it in "
                          "the portal or map it in [crm.warehouses]")
        wanted[store_id] = number
    total = None if quantity is None else decimal("quantity", quantity)
    state = _product((yield Need([Find("product", op.external_id)])))
    solo = False
    for _attempt in range(3):
        if state.stock is None:
            yield Need([Find("stock", state)])
        current = dict(state.stock or {})
        lines = [Line(state.id, store, number - current.get(store, Decimal(0)))
                 for store, number in wanted.items() if number != current.get(store, Decimal(0))]
        post: Post = yield Post(lines, solo=solo)
        for line in lines:  # what was posted is what the portal has now, whatever became of the rest
            if line.posted:
                assert state.stock is not None
                state.stock[line.store] = state.stock.get(line.store, Decimal(0)) + line.delta
                state.quantity += line.delta
        if post.outcome == "ok":
            break
        if post.outcome == "failed":
            raise Refused(f"Bitrix24 refused the stock document: {post.error}")
        solo = solo or post.outcome == "solo"  # a shared document failed: find out alone whether it was us
        state.stock = None
    else:
        raise Refused("Bitrix24 kept refusing the stock documents", retryable=True)
    assert state.stock is not None
    target = total if total is not None else sum(state.stock.values(), Decimal(0))
    if target != state.quantity:  # a total of 1C's own, or one the portal lost track of
        method = "catalog.product.offer.update" if state.offer else "catalog.product.update"
        update = Cmd(method, {"id": state.id, "fields": {"quantity": target}})
        yield Send([update])
        if not update.ok:
            raise refused_by_portal(update, f"{method} (quantity)")
        state.quantity = target
    return ok(state.crm_id(), created=False, posted=sum(1 for line in lines if line.posted))


def set_offer(ctx: Ctx, op: Operation, payload: dict[str, Any]) -> Body:
    """The prices, then the stock of one offer: each part the payload has, as its own operation would.

    The stock part checks its payload before its first request, so it is started first: a bad
    quantity refuses the whole operation before the prices are written.
    """
    has_prices, has_stock = offer_parts(payload)
    stock_body = set_stock(ctx, op, payload) if has_stock else None
    first_request = next(stock_body) if stock_body is not None else None
    results = []
    if has_prices:
        results.append((yield from set_prices(ctx, op, payload)))
    if stock_body is not None:
        results.append((yield from _resumed(stock_body, first_request)))
    return ok(results[0].answer["id"], created=False, parts=[r.answer for r in results])


def _resumed(body: Body, first: Any) -> Body:
    """``yield from`` a body that has already yielded ``first``."""
    request = first
    while True:
        answer = yield request
        try:
            request = body.send(answer)
        except StopIteration as stop:
            return stop.value


def deactivate(ctx: Ctx, op: Operation, payload: dict[str, Any]) -> Body:
    state = _product((yield Need([Find("product", op.external_id)])))
    if state.active is False:
        return ok(state.crm_id(), created=False, changed=False)
    method = "catalog.product.offer.update" if state.offer else "catalog.product.update"
    update = Cmd(method, {"id": state.id, "fields": {"active": "N"}})
    yield Send([update])
    if not update.ok:
        ctx.lookups.cache.drop("product", op.external_id, state)
        raise refused_by_portal(update, method)
    state.active = False
    return ok(state.crm_id(), created=False, changed=True)

