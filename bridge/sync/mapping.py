"""From 1C records to the CRM operations they imply (pure functions, no I/O but names).

Each function returns the intents for one record and what they still need
("product:<Ид>", "price_type:<Ид>", "warehouse:<Ид>") before they can be sent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from collections.abc import Iterable
from typing import Any

from bridge.commerceml.records import Counterparty, Document, Offer, Product, PropertyValue
from bridge.config import Mapping
from bridge.crm.base import SET_PRICES, SET_STOCK, UPSERT_COMPANY, UPSERT_CONTACT, UPSERT_DEAL, UPSERT_PRODUCT
from bridge.store.outbox import Intent
from bridge.sync.names import Names

_EMPTY_DATES = {"", "T", "0001-01-01", "0001-01-01T00:00:00"}


@dataclass(slots=True)
class Mapped:
    intents: list[Intent] = field(default_factory=list)
    needs: list[str] = field(default_factory=list)  # all must be met before any intent is sent
    creates_product: str | None = None  # a product this record itself creates (variants from offers)


def number(value: Decimal | None) -> str | None:
    """Decimals travel as strings: no binary rounding of money on the way."""
    return None if value is None else format(value.normalize(), "f")


def _first_match(candidates: dict[str, str | None], order: list[str]) -> dict[str, Any] | None:
    for key in order:
        if key != "id" and candidates.get(key):
            return {key: candidates[key]}
    return None


def _unit(code: str | None, name: str | None, names: Names) -> dict[str, str | None]:
    """The base unit; a bare code is named from the classifier's ЕдиницыИзмерения.

    CommerceML 3.1 (and УТ 11 with units in the classifier) writes only the unit's Ид
    (<БазоваяЕдиница>796</БазоваяЕдиница>); its name travels once, in Классификатор.
    """
    if name is None and code is not None:
        known = names.name("unit", code)
        if known is not None and known != code:
            name = known
    return {"code": code, "name": name}


def _properties(values: list[PropertyValue], names: Names) -> dict[str, str]:
    """Property name -> value text. A value may be the Ид of an entry in the property's list, and that
    list may have come in an earlier file of the package (the classifier before the goods), so every
    value is looked up there; a property with several Значение keeps them all, joined."""
    return _joined((names.name("property", value.property_id) or value.property_id,
                    names.property_value(value.property_id, value.value)) for value in values)


def _characteristics(pairs: list[tuple[str, str]]) -> dict[str, str]:
    """Characteristic name -> value. A good may list one name several times (УТ 11 writes every size
    it comes in as its own ХарактеристикаТовара "Размер"): all of them, not the last one."""
    return _joined(pairs)


def _joined(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Name -> value, a name given several values keeping each once, joined with '; '."""
    result: dict[str, str] = {}
    for name, value in pairs:
        earlier = result.get(name)
        if not earlier:
            result[name] = value
        elif value and value not in earlier.split("; "):
            result[name] = f"{earlier}; {value}"
    return result


def product(record: Product, names: Names, rules: Mapping) -> Mapped:
    properties = _properties(record.properties, names)
    payload = {
        "external_id": record.id,
        "parent_external_id": record.product_id if record.characteristic_id else None,
        "name": record.name, "sku": record.sku, "barcode": record.barcode, "code": record.code,
        # 1C 8 configurations send the full name as a requisite rather than the element.
        "full_name": record.full_name or record.requisites.get("Полное наименование"),
        "description": record.description,
        "unit": _unit(record.unit_code, record.unit_name, names),
        "groups": [{"id": g, "name": names.name("group", g)} for g in record.group_ids],
        "properties": properties, "characteristics": _characteristics(record.characteristics),
        "requisites": record.requisites, "taxes": record.taxes, "images": record.images,
        "manufacturer": record.manufacturer, "active": not record.deleted,
    }
    match = _first_match({"sku": record.sku, "barcode": record.barcode}, rules.match_products)
    # Every good the catalog lists belongs to its full-export bookkeeping, a variant listed as a good
    # of its own ("p#c", as 1C 8.x catalogs do) too: a full export without it deactivates it.
    catalog_id = record.catalog_id or ""
    return Mapped(intents=[Intent("product", UPSERT_PRODUCT, record.id, payload, match, rules.owned("product") or None,
                                  catalog_id, not record.deleted)])


def offer(record: Offer, names: Names, rules: Mapping) -> Mapped:
    mapped = Mapped()
    target = record.id
    if record.characteristic_id and (record.name or record.characteristics):
        # Only what the offer knows: the CRM merges it into the variant, so a
        # catalog that also lists the variant keeps its description, groups...
        # Its own fingerprint entity ("variant") keeps the two from
        # re-sending each other on every exchange.
        name = record.name or ", ".join(f"{k}: {v}" for k, v in record.characteristics)
        payload = {"external_id": record.id, "parent_external_id": record.product_id, "name": name,
                   "active": not record.deleted}
        # An offer without ХарактеристикиТовара says nothing about them: sending {} would wipe
        # the ones the catalog gave the variant (1C 8.x lists variants as goods "p#c" with their
        # characteristics, and the offers repeat only the name and the prices).
        if record.characteristics:
            payload["characteristics"] = _characteristics(record.characteristics)
        for key, value in (("sku", record.sku), ("barcode", record.barcode)):
            if value:
                payload[key] = value
        if record.unit_code or record.unit_name:
            payload["unit"] = _unit(record.unit_code, record.unit_name, names)
        if record.properties:  # a variant's own properties (size, colour) travel in its offer
            payload["properties"] = _properties(record.properties, names)
        mapped.intents.append(Intent("variant", UPSERT_PRODUCT, record.id, payload, None,
                                     rules.owned("product") or None, None, not record.deleted))
        # Older configurations list variants as goods of their own ("p#c") and
        # never the parent: either being known is enough.
        mapped.needs.append(f"product:{record.product_id}|{record.id}")
        mapped.creates_product = record.id
    else:
        mapped.needs.append(f"product:{target}")
        # 1C also marks a deleted item on its offer (Статус="Удален", ПометкаУдаления: erp-ua-2.07):
        # the product goes inactive, and comes back when the mark goes (only then: only_if_known).
        mapped.intents.append(Intent("offer_active", UPSERT_PRODUCT, target, {"external_id": target,
                                     "active": not record.deleted}, only_if_known=not record.deleted))
    if record.prices:
        prices: dict[str, str | None] = {}
        currencies: dict[str, str | None] = {}
        for price in record.prices:
            type_name = names.name("price_type", price.price_type_id)
            if type_name is None:
                mapped.needs.append(f"price_type:{price.price_type_id}")
                continue
            prices[type_name] = number(price.value)
            currencies[type_name] = price.currency
        mapped.intents.append(Intent("price", SET_PRICES, target,
                                     {"external_id": target, "prices": prices, "currencies": currencies}))
    if record.stock is not None or record.quantity is not None:
        stock: dict[str, str | None] | None = None
        if record.stock is not None:
            stock = {}
            for warehouse_id, quantity in record.stock.items():
                warehouse = names.name("warehouse", warehouse_id)
                if warehouse is None:
                    mapped.needs.append(f"warehouse:{warehouse_id}")
                    continue
                stock[warehouse] = number(quantity)
        mapped.intents.append(Intent("stock", SET_STOCK, target,
                                     {"external_id": target, "stock": stock, "quantity": number(record.quantity)}))
    return mapped


def is_company(record: Counterparty) -> bool:
    """Organisations and sole proprietors (they have an ИНН) are companies; private persons are contacts."""
    return not record.person or bool(record.inn or record.kpp)


def counterparty(record: Counterparty, rules: Mapping) -> Intent:
    common = {"external_id": record.id, "name": record.name, "inn": record.inn, "email": record.email,
              "phone": record.phone, "addresses": [{"kind": k, "text": t} for k, t in record.addresses],
              "active": not record.deleted}
    if not is_company(record):
        payload = {**common, "last_name": record.last_name, "first_name": record.first_name,
                   "middle_name": record.middle_name}
        return Intent("contact", UPSERT_CONTACT, record.id, payload, None, rules.owned("contact") or None)
    payload = {**common, "full_name": record.full_name, "kpp": record.kpp, "okpo": record.okpo,
               "contacts": [{"type": t, "value": v} for t, v in record.contacts],
               "bank_accounts": [{"number": a.number, "bank": a.bank_name, "bik": a.bik,
                                  "correspondent_account": a.correspondent_account} for a in record.bank_accounts]}
    match = None
    if record.inn:
        if "inn_kpp" in rules.match_counterparties:
            match = {"inn": record.inn, "kpp": record.kpp}
        elif "inn" in rules.match_counterparties:
            match = {"inn": record.inn}
    return Intent("company", UPSERT_COMPANY, record.id, payload, match, rules.owned("company") or None)


def _date(value: str | None) -> str | None:
    return None if value is None or value.strip() in _EMPTY_DATES else value.strip()


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"true", "1", "да", "истина"}


def deal_facts(record: Document) -> dict[str, Any]:
    """The statuses 1C reports, as plain facts; which stage they mean is the CRM side's business."""
    r = record.requisites
    payment_date = _date(r.get("Дата оплаты по 1С")) or _date(r.get("Дата оплаты"))
    shipment_date = _date(r.get("Дата отгрузки по 1С"))
    return {
        "posted": _truthy(r.get("Проведен")),
        "deleted": record.deleted,
        # УТ 11 sends Номер1С/Дата1С as elements, older configurations as requisites.
        "number_1c": r.get("Номер по 1С") or record.number_1c,
        "date_1c": _date(r.get("Дата по 1С")) or _date(record.date_1c),
        "paid": bool(payment_date and r.get("Номер оплаты по 1С")) or _truthy(r.get("Заказ оплачен")),
        "payment_number": r.get("Номер оплаты по 1С") or r.get("Номер платежного документа"),
        "payment_date": payment_date,
        "shipped": bool(shipment_date and r.get("Номер отгрузки по 1С")),
        "shipment_number": r.get("Номер отгрузки по 1С"), "shipment_date": shipment_date,
        "cancelled": _truthy(r.get("Отменен")),
        "status": r.get("Статус заказа"),
        "final": _truthy(r.get("Финальный статус")),
    }


DEAL_CRM_OWNED = ("number", "date", "operation", "currency", "rate", "amount", "comment", "company_external_id",
                  "contact_external_id", "lines", "requisites")
FACT_ORDER = ("posted", "paid", "shipped")  # how far an order has come; cancelled and deleted override


def stage_for(facts: dict[str, Any], statuses: dict[str, str]) -> str | None:
    """The CRM stage the facts call for: the furthest fact that has a stage, cancelled over all."""
    for fact in ("deleted", "cancelled"):
        if facts.get(fact) and fact in statuses:
            return statuses[fact]
    for fact in reversed(FACT_ORDER):
        if facts.get(fact) and fact in statuses:
            return statuses[fact]
    return None


def document(record: Document, rules: Mapping, statuses: dict[str, str] | None = None) -> list[Intent]:
    intents = [counterparty(c, rules) for c in record.counterparties]
    buyer = next((c for c in record.counterparties if (c.role or "").lower() == "покупатель"),
                 record.counterparties[0] if record.counterparties else None)
    payload = {
        "external_id": record.id, "number": record.number,
        "date": f"{record.date}T{record.time}" if record.date and record.time and "T" not in record.date else record.date,
        "operation": record.operation, "currency": record.currency, "rate": number(record.rate),
        "amount": number(record.amount), "comment": record.comment,
        "company_external_id": buyer.id if buyer and is_company(buyer) else None,
        "contact_external_id": buyer.id if buyer and not is_company(buyer) else None,
        "facts": deal_facts(record),
        "lines": [{"product_external_id": (f"{line.product_id}#{line.characteristic_id}" if line.characteristic_id
                                           else line.product_id),
                   "name": line.name, "sku": line.sku, "unit": line.unit, "quantity": number(line.quantity),
                   "price": number(line.price), "amount": number(line.amount),
                   "taxes": [{"name": n, "rate": number(rate), "amount": number(s)} for n, rate, s in line.taxes],
                   "discounts": [{"name": n, "amount": number(s)} for n, s in line.discounts]}
                  for line in record.lines],
        "requisites": record.requisites,
    }
    stage = stage_for(payload["facts"], statuses or {})
    if stage is not None:
        payload["stage"] = stage
    # An order that began in the CRM keeps its own content: 1C only reports facts and the
    # stage they mean. A 1C-made order becomes a deal with all of it.
    intents.append(Intent("deal", UPSERT_DEAL, record.id, payload, None, list(DEAL_CRM_OWNED)))
    return intents
