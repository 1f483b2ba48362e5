"""What a portal has that the mapping needs: catalog info blocks, price types, warehouses, units.

Read in one batch request when the adapter first needs it, and again when an
operation names a price type or warehouse the portal did not have (someone
may just have created it), at most once a minute.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bridge.crm.bitrix24.client import BatchAnswer
from bridge.crm.bitrix24.settings import Settings
from bridge.errors import PermanentError, UserError

RELOAD_AFTER = 60.0


@dataclass(slots=True)
class Portal:
    iblock: int
    offers_iblock: int | None
    price_types: dict[str, int]  # portal name -> id
    stores: dict[str, int]  # portal title -> id
    measures: dict[str, int]  # code and symbols (lower case) -> id
    measure_symbols: dict[int, str]
    properties: dict[str, str]  # "sku"/"barcode" -> the product field ("property123")
    deal_fields: set[str] = field(default_factory=set)
    loaded_at: float = 0.0

    def property_field(self, kind: str) -> str | None:
        return self.properties.get(kind)

    def price_type(self, settings: Settings, name: str) -> tuple[int | None, str]:
        """The portal price type for a 1C price type name (mapped by [crm.price_types]), and its portal name."""
        portal_name = settings.price_types.get(name, name)
        return self.price_types.get(portal_name), portal_name

    def store(self, settings: Settings, name: str) -> tuple[int | None, str]:
        portal_name = settings.warehouses.get(name, name)
        return self.stores.get(portal_name), portal_name

    def measure(self, unit: Any) -> int | None:
        """The measure for a unit given as "шт", 796 or {"code": "796", "name": "шт"}; None if unknown."""
        candidates = []
        if isinstance(unit, dict):
            candidates = [unit.get("code"), unit.get("name")]
        elif unit is not None:
            candidates = [unit]
        for candidate in candidates:
            if candidate is None:
                continue
            found = self.measures.get(str(candidate).strip().lower().rstrip("."))
            if found is not None:
                return found
        return None


def load(send: Callable[[list[tuple[str, str, dict[str, Any]]]], BatchAnswer], settings: Settings,
         clock: Callable[[], float] = time.monotonic) -> Portal:
    """Everything in one request; lists longer than a page are paged in further requests."""
    wanted: dict[str, tuple[str, dict[str, Any]]] = {
        "catalogs": ("catalog.catalog.list", {"select": ["id", "iblockId", "iblockTypeId", "productIblockId",
                                                         "name"]}),
        "price_types": ("catalog.priceType.list", {"select": ["id", "name"]}),
        "stores": ("catalog.store.list", {"select": ["id", "title", "active"]}),
        "measures": ("catalog.measure.list", {"select": ["id", "code", "symbol", "symbolIntl", "measureTitle"]}),
        "deal_fields": ("crm.item.fields", {"entityTypeId": 2, "useOriginalUfNames": "Y"}),
    }
    if any(p and not p.startswith("property") for p in (settings.sku_property, settings.barcode_property)):
        wanted["properties"] = ("catalog.productProperty.list", {"select": ["id", "iblockId", "code"]})
    rows: dict[str, list[Any]] = {name: [] for name in wanted}
    pages = {name: 0 for name in wanted}
    results: dict[str, Any] = {}
    while pages:
        answer = send([(name, method, {**params, "start": pages[name]}) for name, (method, params) in wanted.items()
                       if name in pages])
        for name in list(pages):
            if name in answer.errors:
                code, text = answer.errors[name]
                raise PermanentError(f"Bitrix24 refused {wanted[name][0]} ({code}: {text}); the webhook needs "
                                     "the crm and catalog scopes")
            result = answer.results.get(name)
            results[name] = result
            if isinstance(result, dict):
                rows[name].extend(next((v for v in result.values() if isinstance(v, list)), []))
            following = answer.nexts.get(name)
            if following:
                pages[name] = following
            else:
                del pages[name]
    iblock, offers = _iblocks(rows["catalogs"], settings)
    measures: dict[str, int] = {}
    symbols: dict[int, str] = {}
    for m in rows["measures"]:
        measure_id = int(m["id"])
        for key in ("code", "symbol", "symbolIntl", "measureTitle"):
            if m.get(key) not in (None, ""):
                measures.setdefault(str(m[key]).strip().lower().rstrip("."), measure_id)
        symbols[measure_id] = str(m.get("symbol") or m.get("measureTitle") or "")
    properties: dict[str, str] = {}
    codes = {str(p.get("code") or ""): f"property{p['id']}" for p in rows.get("properties", [])
             if int(p.get("iblockId") or iblock) == iblock}
    for kind, configured in (("sku", settings.sku_property), ("barcode", settings.barcode_property)):
        if not configured:
            continue
        if configured.startswith("property"):
            properties[kind] = configured
        elif configured in codes:
            properties[kind] = codes[configured]
        else:
            raise UserError(f"crm.{kind}_property: the product catalog has no property with code {configured!r}")
    fields = results.get("deal_fields")
    deal_fields = set(fields.get("fields", {})) if isinstance(fields, dict) else set()
    return Portal(iblock=iblock, offers_iblock=offers,
                  price_types={str(p["name"]): int(p["id"]) for p in rows["price_types"]},
                  stores={str(s["title"]): int(s["id"]) for s in rows["stores"] if s.get("active", "Y") != "N"},
                  measures=measures, measure_symbols=symbols, properties=properties, deal_fields=deal_fields,
                  loaded_at=clock())


def _iblocks(catalogs: list[dict[str, Any]], settings: Settings) -> tuple[int, int | None]:
    """The CRM product catalog and its variations' info block (the one whose productIblockId points at it)."""
    if settings.iblock_id is not None:
        iblock = settings.iblock_id
    else:
        products = [c for c in catalogs if not c.get("productIblockId")]
        crm = [c for c in products if c.get("iblockTypeId") == "CRM_PRODUCT_CATALOG"] or products
        if not crm:
            raise PermanentError("the Bitrix24 portal has no product catalog (catalog.catalog.list is empty)")
        iblock = int(crm[0]["iblockId"])
    if settings.offers_iblock_id is not None:
        return iblock, settings.offers_iblock_id
    offers = [c for c in catalogs if c.get("productIblockId") and int(c["productIblockId"]) == iblock]
    return iblock, int(offers[0]["iblockId"]) if offers else None
