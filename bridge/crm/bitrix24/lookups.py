"""What the adapter knows about portal records, and the bulk list commands that find out.

Records are looked up by the keys the bridge has (the 1C Ид as ``xmlId``,
``XML_ID`` or ``originId``; ИНН; a SKU), many keys to one list command, and
kept for ``knowledge_ttl`` seconds so that the prices, stock and variants of
a product created a minute ago need no lookup at all. Absence is never
remembered beyond one ``apply``: a record someone creates meanwhile must be
found, not duplicated.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from bridge.crm.bitrix24.client import LIMIT_ERRORS, BatchAnswer
from bridge.crm.bitrix24.plan import Cmd, Find, Ref, concrete
from bridge.crm.bitrix24.portal import Portal
from bridge.crm.bitrix24.settings import Settings
from bridge.errors import PermanentError

PAGE = 50  # what a list command returns at most


@dataclass(frozen=True, slots=True)
class PriceRow:
    id: int | None
    price: Decimal
    currency: str


@dataclass(eq=False)
class ProductState:
    xml_id: str
    id: int | Ref
    offer: bool
    parent_id: int | None = None
    quantity: Decimal = Decimal(0)
    active: bool | None = None
    prices: dict[int, PriceRow] | None = None  # by price type id; None: not read yet
    stock: dict[int, Decimal] | None = None  # by store id
    fetched: float = 0.0

    def crm_id(self) -> str:
        return str(concrete(self.id))


@dataclass(eq=False)
class CompanyState:
    company_id: int | Ref
    requisite_id: int | Ref | None
    fetched: float = 0.0


@dataclass(eq=False)
class ItemState:
    """A contact or deal: its id, and what an update must know of it."""

    id: int | Ref
    fm: list[dict[str, Any]] = field(default_factory=list)  # a contact's e-mails and phones
    data: dict[str, Any] = field(default_factory=dict)  # a deal's 1C facts (its data field)
    fetched: float = 0.0


CACHED = ("product", "section", "company", "contact", "deal")  # kept across apply() calls
LISTED = ("sku", "barcode", "inn")  # candidates for matching: read afresh in every apply()


class Cache:
    """Records found or created, each trusted for ``ttl`` seconds after it was read."""

    def __init__(self, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl, self.clock = ttl, clock
        self._tables: dict[str, dict[Any, tuple[Any, float]]] = {kind: {} for kind in CACHED}

    def get(self, kind: str, key: Any) -> tuple[bool, Any]:
        found = self._tables[kind].get(key)
        if found is None or self.clock() - found[1] > self.ttl:
            return False, None
        return True, found[0]

    def put(self, kind: str, key: Any, value: Any) -> None:
        self._tables[kind][key] = (value, self.clock())

    def drop(self, kind: str, key: Any, value: Any = None) -> None:
        """Forget ``key`` (only if it still holds ``value``, when given)."""
        found = self._tables[kind].get(key)
        if found is not None and (value is None or found[0] is value):
            del self._tables[kind][key]

    def clear(self) -> None:
        for table in self._tables.values():
            table.clear()


@dataclass(eq=False)
class _Listing:
    """What one list command asked for, so its rows can be handed to the right keys."""

    kind: str
    keys: list[Any]
    params: dict[str, Any]
    method: str


class Lookups:
    """The lookups of one ``apply``: what is known, what is wanted, and the commands that find it."""

    def __init__(self, portal: Portal, settings: Settings, cache: Cache) -> None:
        self.portal, self.settings, self.cache = portal, settings, cache
        self._found: dict[tuple[str, Any], Any] = {}  # this apply's answers, absence included
        self._wanted: dict[str, dict[Any, None]] = {}
        self._outstanding: dict[tuple[str, Any], int] = {}
        self._rows: dict[tuple[str, Any], list[dict[str, Any]]] = {}
        self._continuations: list[Cmd] = []
        self._added: dict[tuple[str, Any], list[dict[str, Any]]] = {}  # rows of records this apply creates

    # ------------------------------------------------------------ what handlers see

    def known(self, find: Find) -> bool:
        if find.kind == "prices":
            return find.key.prices is not None
        if find.kind == "stock":
            return find.key.stock is not None
        if (find.kind, find.key) in self._found:
            return True
        return find.kind in CACHED and self.cache.get(find.kind, find.key)[0]

    def value(self, find: Find) -> Any:
        if find.kind == "prices":
            return find.key.prices
        if find.kind == "stock":
            return find.key.stock
        if find.kind in CACHED:
            hit, value = self.cache.get(find.kind, find.key)
            if hit:
                return value
        if find.kind in LISTED:
            return list(self._found.get((find.kind, find.key)) or []) + self._added.get((find.kind, find.key), [])
        return self._found.get((find.kind, find.key))

    def register(self, kind: str, key: Any, value: Any) -> None:
        """A record this apply is creating (or adopting): later operations find it."""
        if kind in CACHED:
            self.cache.put(kind, key, value)
            self._found.pop((kind, key), None)
        else:
            self._found[(kind, key)] = value

    def add_row(self, kind: str, key: Any, row: dict[str, Any]) -> None:
        """A candidate row (an ИНН's requisite) for a record this apply is creating."""
        self._added.setdefault((kind, key), []).append(row)

    def want(self, finds: Iterable[Find]) -> None:
        for find in finds:
            if self.known(find) or (find.kind, find.key) in self._outstanding:
                continue
            self._wanted.setdefault(find.kind, {})[find.key] = None

    # ------------------------------------------------------------ list commands

    def commands(self, room: int) -> list[Cmd]:
        cmds = self._continuations[:room]
        del self._continuations[:len(cmds)]
        for kind in list(self._wanted):
            keys = [k for k in self._wanted[kind] if (kind, k) not in self._outstanding]
            while keys and len(cmds) < room:
                size = self._chunk(kind)
                chunk, keys = keys[:size], keys[size:]
                listings = self._listings(kind, chunk)
                if len(cmds) + len(listings) > room:
                    keys = chunk + keys
                    break
                for listing in listings:
                    cmd = Cmd(listing.method, listing.params, lookup=listing)
                    cmds.append(cmd)
                    for key in listing.keys:
                        self._outstanding[(kind, key)] = self._outstanding.get((kind, key), 0) + 1
            if keys:
                self._wanted[kind] = dict.fromkeys(keys)
                break
            del self._wanted[kind]
        return cmds

    def _chunk(self, kind: str) -> int:
        if kind == "prices":  # rows are (product, price type): one page must hold every row of the chunk
            return max(1, PAGE // max(1, len(self.portal.price_types)))
        if kind == "stock":
            return max(1, PAGE // max(1, len(self.portal.stores)))
        if kind == "inn":
            return PAGE // 2  # a few branches (КПП) per ИНН
        return PAGE

    def _listings(self, kind: str, keys: list[Any]) -> list[_Listing]:
        portal, settings = self.portal, self.settings
        if kind == "product":
            listings = [_Listing(kind, keys, _product_query(portal.iblock, keys), "catalog.product.list")]
            variants = [k for k in keys if "#" in str(k)]
            if variants and portal.offers_iblock:
                listings.append(_Listing(kind, variants, _product_query(portal.offers_iblock, variants, offers=True),
                                         "catalog.product.list"))
            return listings
        if kind in ("sku", "barcode"):
            prop = portal.property_field(kind)
            assert prop is not None
            params = {"select": ["id", "iblockId", "xmlId", "name", prop], "order": {"id": "ASC"},
                      "filter": {"iblockId": portal.iblock, prop: keys}}
            return [_Listing(kind, keys, params, "catalog.product.list")]
        if kind == "section":
            params = {"select": ["id", "xmlId", "name"], "filter": {"iblockId": portal.iblock, "xmlId": keys}}
            return [_Listing(kind, keys, params, "catalog.section.list")]
        if kind in ("company", "inn"):
            field_name = "XML_ID" if kind == "company" else "RQ_INN"
            params = {"select": ["ID", "ENTITY_ID", "XML_ID", "RQ_INN", "RQ_KPP"], "order": {"ID": "ASC"},
                      "filter": {"ENTITY_TYPE_ID": 4, field_name: keys}}
            listings = [_Listing(kind, keys, params, "crm.requisite.list")]
            if kind == "company":  # a company whose requisite was never made (cut off between the two writes)
                items = {"entityTypeId": 4, "select": ["id", "originId"], "order": {"id": "ASC"},
                         "filter": {"=originatorId": settings.originator, "@originId": keys}}
                listings.append(_Listing(kind, keys, items, "crm.item.list"))
            return listings
        if kind in ("contact", "deal"):
            select = ["id", "originId", "fm"] if kind == "contact" else ["id", "originId"]
            params: dict[str, Any] = {"entityTypeId": 3 if kind == "contact" else 2, "select": select,
                                      "filter": {"=originatorId": settings.originator, "@originId": keys}}
            if kind == "deal" and settings.deal_data_field:
                params["useOriginalUfNames"] = "Y"
                select.append(settings.deal_data_field)
            return [_Listing(kind, keys, params, "crm.item.list")]
        if kind == "prices":
            ids = [concrete(state.id) for state in keys]
            params = {"select": ["id", "productId", "catalogGroupId", "price", "currency"],
                      "filter": {"productId": ids}}
            return [_Listing(kind, keys, params, "catalog.price.list")]
        if kind == "stock":
            ids = [concrete(state.id) for state in keys]
            params = {"select": ["id", "productId", "storeId", "amount"], "filter": {"productId": ids}}
            return [_Listing(kind, keys, params, "catalog.storeproduct.list")]
        raise ValueError(f"unknown lookup {kind!r}")

    # ------------------------------------------------------------ answers

    def absorb(self, cmd: Cmd, answer: BatchAnswer) -> None:
        listing: _Listing = cmd.lookup
        if not cmd.ok:
            if cmd.code in LIMIT_ERRORS or cmd.code == "NOT_RUN":  # not run: ask again
                for key in listing.keys:
                    self._release(listing.kind, key)
                    self._wanted.setdefault(listing.kind, {})[key] = None
                return
            raise PermanentError(f"Bitrix24 refused a lookup ({cmd.error}); check the [crm] settings "
                                 "and the webhook's scopes (crm, catalog)")
        rows = _rows(cmd.result)
        for key in listing.keys:
            self._rows.setdefault((listing.kind, key), []).extend(rows)
        following = answer.nexts.get(cmd.key)
        if following:  # more pages: the keys stay outstanding until the last one is in
            params = {**listing.params, "start": following}
            self._continuations.append(Cmd(listing.method, params, lookup=_Listing(
                listing.kind, listing.keys, params, listing.method)))
            for key in listing.keys:
                self._outstanding[(listing.kind, key)] += 1
        for key in listing.keys:
            if self._release(listing.kind, key):
                self._settle(listing.kind, key, self._rows.pop((listing.kind, key), []))

    def _release(self, kind: str, key: Any) -> bool:
        """One command fewer outstanding for ``key``; True when none is left."""
        left = self._outstanding.get((kind, key), 1) - 1
        if left <= 0:
            self._outstanding.pop((kind, key), None)
            return True
        self._outstanding[(kind, key)] = left
        return False

    def _settle(self, kind: str, key: Any, rows: list[dict[str, Any]]) -> None:
        now = self.cache.clock()
        if kind == "product":
            mine = [row for row in rows if str(row.get("xmlId") or "") == key]
            state = None
            if mine:
                row = sorted(mine, key=lambda r: int(r.get("id") or 0))[0]
                state = product_state(row, offer=int(row.get("iblockId") or 0) != self.portal.iblock, fetched=now)
            self._store(kind, key, state)
        elif kind in ("sku", "barcode"):
            prop = self.portal.property_field(kind)
            self._found[(kind, key)] = [row for row in rows if property_value(row.get(prop or "")) == key]
        elif kind == "section":
            mine = [row for row in rows if str(row.get("xmlId") or "") == key]
            self._store(kind, key, int(mine[0]["id"]) if mine else None)
        elif kind == "company":
            mine = [row for row in rows if "ENTITY_ID" in row and str(row.get("XML_ID") or "") == key]
            orphans = [row for row in rows if "ENTITY_ID" not in row and str(row.get("originId") or "") == key]
            state = CompanyState(int(mine[0]["ENTITY_ID"]), int(mine[0]["ID"]), now) if mine else \
                CompanyState(int(orphans[0]["id"]), None, now) if orphans else None
            self._store(kind, key, state)
        elif kind == "inn":
            self._found[(kind, key)] = [row for row in rows if str(row.get("RQ_INN") or "") == key]
        elif kind in ("contact", "deal"):
            mine = [row for row in rows if str(row.get("originId") or "") == key]
            state = None
            if mine:
                row = mine[0]
                state = ItemState(int(row["id"]), fm=list(row.get("fm") or []), fetched=now,
                                  data=_json_object(row.get(self.settings.deal_data_field or "")))
            self._store(kind, key, state)
        elif kind == "prices":
            product_id = concrete(key.id)
            key.prices = {int(r["catalogGroupId"]): PriceRow(int(r["id"]), Decimal(str(r["price"])),
                                                             str(r.get("currency") or self.settings.currency))
                          for r in rows if int(r.get("productId") or 0) == product_id}
        elif kind == "stock":
            product_id = concrete(key.id)
            key.stock = {int(r["storeId"]): Decimal(str(r.get("amount") or 0))
                         for r in rows if int(r.get("productId") or 0) == product_id}

    def _store(self, kind: str, key: Any, value: Any) -> None:
        if value is None:
            self._found[(kind, key)] = None  # absent: for this apply only
        else:
            self.cache.put(kind, key, value)


def _product_query(iblock: int, keys: list[Any], *, offers: bool = False) -> dict[str, Any]:
    select = ["id", "iblockId", "xmlId", "name", "active", "quantity"] + (["parentId"] if offers else [])
    return {"select": select, "order": {"id": "ASC"}, "filter": {"iblockId": iblock, "xmlId": keys}}


def _rows(result: Any) -> list[dict[str, Any]]:
    """The records of a list answer: ``{"products": [...]}``, ``{"items": [...]}`` or a bare list."""
    if isinstance(result, list):
        return [r for r in result if isinstance(r, dict)]
    if isinstance(result, dict):
        for value in result.values():
            if isinstance(value, list):
                return [r for r in value if isinstance(r, dict)]
    return []


def product_state(row: dict[str, Any], *, offer: bool, fetched: float) -> ProductState:
    parent = row.get("parentId")
    if isinstance(parent, dict):
        parent = parent.get("value") or parent.get("id")
    return ProductState(xml_id=str(row.get("xmlId") or ""), id=int(row["id"]), offer=offer,
                        parent_id=int(parent) if parent not in (None, "") else None,
                        quantity=Decimal(str(row.get("quantity") or 0)),
                        active=None if row.get("active") is None else row.get("active") in ("Y", True),
                        fetched=fetched)


def property_value(value: Any) -> str | None:
    """A product property as the catalog returns it: a value, ``{"value": ...}`` or a list of those."""
    if isinstance(value, list):
        value = value[0] if value else None
    if isinstance(value, dict):
        value = value.get("value")
    return None if value in (None, "") else str(value)


def _json_object(value: Any) -> dict[str, Any]:
    import json

    if isinstance(value, str) and value.strip():
        try:
            data = json.loads(value)
        except ValueError:
            return {}
        return data if isinstance(data, dict) else {}
    return {}
