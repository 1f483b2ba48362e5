"""The Bitrix24 adapter: bridge Operations onto a portal's REST API through an incoming webhook."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import httpx

from bridge.crm.base import (DEACTIVATE_PRODUCT, SET_OFFER, SET_PRICES, SET_STOCK, UPSERT_COMPANY, UPSERT_CONTACT, UPSERT_DEAL,
                             UPSERT_PRODUCT, CrmAdapter, DealSnapshot, Operation, Result)
from bridge.crm.bitrix24 import changes, parties, portal as portal_module, products
from bridge.crm.bitrix24.client import BatchAnswer, Client
from bridge.crm.bitrix24.context import Ctx, guarded
from bridge.crm.bitrix24.lookups import Cache, Lookups
from bridge.crm.bitrix24.plan import Cmd, Handler, Line, Runner, wire
from bridge.crm.bitrix24.portal import RELOAD_AFTER, Portal
from bridge.crm.bitrix24.settings import Settings
from bridge.crm.bitrix24.values import Refused

log = logging.getLogger(__name__)

_BODIES = {UPSERT_PRODUCT: products.upsert_product, SET_PRICES: products.set_prices, SET_STOCK: products.set_stock,
           SET_OFFER: products.set_offer,
           DEACTIVATE_PRODUCT: products.deactivate, UPSERT_COMPANY: parties.upsert_company,
           UPSERT_CONTACT: parties.upsert_contact, UPSERT_DEAL: parties.upsert_deal}
# What an operation touches: a later operation on the same record and aspect waits for it.
# set_offer touches both: the pipeline sends offers only as set_offer, so it never meets the other two.
_ASPECT = {UPSERT_PRODUCT: "product", DEACTIVATE_PRODUCT: "product", SET_PRICES: "prices", SET_STOCK: "stock",
           SET_OFFER: "offer",
           UPSERT_COMPANY: "company", UPSERT_CONTACT: "contact", UPSERT_DEAL: "deal"}


class _Documents:
    """Inventory documents as this portal wants them (the webhook's user is responsible for them)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def add(self, doc_type: str) -> Cmd:
        return Cmd("catalog.document.add", {"fields": {
            "docType": doc_type, "currency": self.settings.currency, "responsibleId": self.settings.webhook.user_id,
            "title": "Остатки из 1С" if doc_type == "S" else "Списание по остаткам из 1С"}})

    def element(self, doc: Cmd, doc_type: str, line: Line) -> Cmd:
        store = "storeTo" if doc_type == "S" else "storeFrom"
        return Cmd("catalog.document.element.add", {"fields": {
            "docId": doc.ref("document", "id"), "elementId": line.product, store: line.store,
            "amount": abs(line.delta), "purchasingPrice": 0}})

    def conduct(self, doc: Cmd) -> Cmd:
        return Cmd("catalog.document.conduct", {"id": doc.ref("document", "id")})

    def delete(self, doc: Cmd) -> Cmd:
        return Cmd("catalog.document.delete", {"id": doc.ref("document", "id")})


def _unknown(op: Operation, payload: dict[str, Any]) -> Any:
    raise Refused(f"unknown operation kind {op.kind!r}")
    yield  # pragma: no cover - makes this a generator like the others


class Bitrix24Crm(CrmAdapter):
    """A Bitrix24 portal. Configure with ``[crm] kind = "bitrix24"`` (see docs/bitrix24.md)."""

    name: ClassVar[str] = "bitrix24"
    batch_size: ClassVar[int] = 1000
    rate_limit: ClassVar[float | None] = 2.0

    def __init__(self, settings: Settings, *, transport: httpx.BaseTransport | None = None,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> None:
        self.settings = settings
        self.batch_size = settings.batch_size  # type: ignore[misc]
        self.rate_limit = settings.rate_limit  # type: ignore[misc]
        self._clock, self._sleep = clock, sleep
        self.client = Client(settings, transport=transport, clock=clock, sleep=sleep)
        self.cache = Cache(settings.knowledge_ttl, clock)
        self._portal: Portal | None = None
        self.last_requests = 0  # HTTP requests the last apply() made (for tests and benches)

    @classmethod
    def from_config(cls, config: Any) -> Bitrix24Crm:
        return cls(Settings.from_table(config.crm))

    def close(self) -> None:
        self.client.close()

    # ------------------------------------------------------------ writing

    def apply(self, ops: Sequence[Operation]) -> list[Result]:
        if len(ops) > self.batch_size:
            raise ValueError(f"{len(ops)} operations given; the Bitrix24 adapter takes at most {self.batch_size}")
        if not ops:
            return []
        portal = self._portal_for(ops)
        lookups = Lookups(portal, self.settings, self.cache)
        ctx = Ctx(self.settings, portal, lookups, self._clock, deal_problem=self._deal_problem(portal))
        handlers: list[Handler] = [guarded(op, self._body(ctx, op)) for op in ops]
        runner = Runner(self._send, lookups, _Documents(self.settings), handlers, _blockers(ops),
                        pause=self._sleep, backoff=self.settings.backoff, max_wait=self.settings.max_wait)
        try:
            return runner.run()
        except BaseException:
            # Some requests may have been carried out, and records this apply registered may hold ids of
            # commands never answered: what this adapter believed is not safe any more, whatever the error.
            self.cache.clear()
            raise
        finally:
            self.last_requests = runner.requests

    def _body(self, ctx: Ctx, op: Operation) -> Callable[[Operation, dict[str, Any]], Any]:
        body = _BODIES.get(op.kind)
        if body is None:
            return _unknown
        return lambda op_, payload: body(ctx, op_, payload)

    def _send(self, cmds: list[Cmd]) -> BatchAnswer:
        return self.client.batch([wire(cmd) for cmd in cmds])

    def _send_raw(self, commands: list[tuple[str, str, dict[str, Any]]]) -> BatchAnswer:
        return self.client.batch(commands)

    def portal(self) -> Portal:
        if self._portal is None:
            self._portal = portal_module.load(self._send_raw, self.settings, self._clock)
        return self._portal

    def _portal_for(self, ops: Sequence[Operation]) -> Portal:
        """The portal's metadata, read again when an operation names a price type or warehouse it lacked."""
        portal = self.portal()
        if self._clock() - portal.loaded_at < RELOAD_AFTER:
            return portal
        for op in ops:
            payload = op.payload if isinstance(op.payload, dict) else {}
            missing = False
            if op.kind in (SET_PRICES, SET_OFFER) and isinstance(payload.get("prices"), dict):
                missing = any(portal.price_type(self.settings, n)[0] is None for n in payload["prices"])
            if op.kind in (SET_STOCK, SET_OFFER) and isinstance(payload.get("stock"), dict):
                missing = missing or any(portal.store(self.settings, n)[0] is None for n in payload["stock"])
            if missing:
                log.info("bitrix24.reload reason=unknown price type or warehouse")
                self._portal = portal_module.load(self._send_raw, self.settings, self._clock)
                return self._portal
        return portal

    def _deal_problem(self, portal: Portal) -> str | None:
        field = self.settings.deal_data_field
        if field and field not in portal.deal_fields:
            return (f"the portal has no deal field {field} for the 1C facts: create a user field of type "
                    f"String with the code {field.removeprefix('UF_CRM_')} for deals, or set "
                    "crm.deal_data_field = \"\" to not keep them")
        return None

    # ------------------------------------------------------------ reading

    def changed_deals(self, cursor: str | None, limit: int = 500) -> tuple[list[DealSnapshot], str | None]:
        return changes.changed_deals(self._send_raw, self.settings, self.portal(), cursor, limit)


def _blockers(ops: Sequence[Operation]) -> list[set[int]]:
    """For each operation, the earlier one on the same record and aspect it must wait for."""
    last: dict[tuple[str, str], int] = {}
    blockers: list[set[int]] = []
    for index, op in enumerate(ops):
        key = (_ASPECT.get(op.kind, op.kind), str(op.external_id))
        blockers.append({last[key]} if key in last else set())
        last[key] = index
    return blockers
