"""CRM -> 1C: agreed deals become 1C orders, exactly once, and follow the deal's changes.

Each cycle asks the CRM for the deals changed since a stored cursor. A deal at
a trigger stage (or one already sent as an order) is turned into an order;
if its content differs from what was last sent, a ``write_order`` operation
goes into the outbox, which renders, checks and writes the file atomically
under a deterministic name, so a retry overwrites instead of duplicating.
The deal learns the order's Ид (``link_deal``), so what 1C sends back about
the order finds it. A deal that cannot become an order yet (no counterparty,
a product 1C never sent) waits with the reason and is tried again each cycle.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import sqlite3
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from bridge.crm.base import LINK_DEAL, CrmAdapter, DealSnapshot
from bridge.store import journal, outbox, state
from bridge.store.clock import now
from bridge.store.db import transaction
from bridge.store.outbox import Intent, dumps

log = logging.getLogger(__name__)
WRITE_ORDER = "write_order"  # an outbox kind the document writer carries, not the CRM adapter
_CENT = Decimal("0.01")
_ORDER_NAMESPACE = uuid.UUID("6b1c6f9e-2f0e-4c55-9a51-1c0ce0a1b2d3")  # ours: makes order Ид deterministic


COUNTERPARTY_KEYS = ("id", "name", "full_name", "inn", "kpp", "person", "last_name", "first_name", "middle_name",
                     "address", "email", "phone")


class NotReady(Exception):
    """The deal cannot become an order yet; the message says why, in words for a manager."""


@dataclass(slots=True)
class OrderLine:
    id: str
    name: str
    quantity: Decimal
    price: Decimal
    amount: Decimal
    sku: str | None = None
    unit_code: str | None = None
    unit_name: str | None = None
    discount: Decimal | None = None
    vat_rate: str | None = None
    vat_amount: Decimal | None = None
    service: bool = False


@dataclass(slots=True)
class Order:
    id: str
    number: str
    date: str
    time: str
    currency: str
    rate: str
    amount: Decimal
    counterparty: dict[str, Any]
    lines: list[OrderLine]
    vat_amount: Decimal | None = None
    comment: str | None = None
    requisites: list[tuple[str, str]] = field(default_factory=list)
    deal_id: str = ""

    def __post_init__(self) -> None:
        # Templates are strict about undefined names; every counterparty field exists, maybe empty.
        self.counterparty = {**dict.fromkeys(COUNTERPARTY_KEYS), "person": False, **self.counterparty}


@dataclass(slots=True)
class OrderSettings:
    trigger_stages: list[str]
    organisation: str | None = None
    warehouse: str | None = None
    currency: str = "RUB"
    crm_kind: str = "sandbox"


def order_settings(config: Any) -> OrderSettings:
    """What building an order takes from the configuration: one place for the daemon and ``bridge render``,
    so a preview is built as the daemon builds it."""
    orders = config.orders
    if orders is None:
        return OrderSettings(trigger_stages=[], crm_kind=config.crm_kind)
    return OrderSettings(trigger_stages=orders.trigger_stages, organisation=orders.organisation,
                         warehouse=orders.warehouse, currency=orders.currency, crm_kind=config.crm_kind)


def order_id(crm_kind: str, deal_id: str) -> str:
    """The order's Ид in 1C: the same for every version of the same deal."""
    return str(uuid.uuid5(_ORDER_NAMESPACE, f"{crm_kind}:{deal_id}"))


def _decimal(value: Any, what: str) -> Decimal:
    try:
        return Decimal(str(value).replace(",", ".").strip())
    except (InvalidOperation, AttributeError):
        raise NotReady(f"{what} is not a number: {value!r}") from None


def _unit_codes(conn: sqlite3.Connection) -> dict[str, str]:
    """{unit name (casefolded): OKEI code} of the units 1C sent in its classifier."""
    codes: dict[str, str] = {}
    for name, data in conn.execute("SELECT name, data FROM dictionary WHERE entity = 'unit'"):
        code = (json.loads(data) if data else {}).get("code")
        if code and name:
            codes.setdefault(str(name).strip().casefold(), str(code))
    return codes


def build_order(deal: DealSnapshot, conn: sqlite3.Connection, settings: OrderSettings, issued_at: str) -> Order:
    """The order a deal stands for, or NotReady with the reason."""
    counterparty = deal.extra.get("counterparty")
    if not counterparty or not counterparty.get("name"):
        raise NotReady("the deal has no counterparty (company or contact)")
    buyer = dict(counterparty)
    # A counterparty 1C sent keeps its 1C Ид; one made in the CRM gets a stable one of ours,
    # and 1C matches it by ИНН/КПП.
    buyer["id"] = buyer.get("external_id") or f"crm-{settings.crm_kind}-{buyer.get('crm_id') or deal.crm_id}"
    lines: list[OrderLine] = []
    # 1C finds a line's unit by its OKEI code; a template without one would say 796 (штука) for kilograms.
    unit_codes = _unit_codes(conn)
    ids = [line.product_external_id for line in deal.lines if line.product_external_id]
    known = state.known_products(conn, ids, None) if ids else set()
    for line in deal.lines:
        if not line.product_external_id:
            raise NotReady(f"the line '{line.name}' is not a product from 1C")
        if line.product_external_id not in known:
            raise NotReady(f"product {line.product_external_id} ('{line.name}') has not come from 1C yet")
        quantity = _decimal(line.quantity, f"the quantity of '{line.name}'")
        price = _decimal(line.price, f"the price of '{line.name}'")
        discount = _decimal(line.discount, f"the discount of '{line.name}'") if line.discount else None
        # 1C cannot take a line it would have to give back: no quantity, a negative price, a discount
        # above the line's sum. A manager fixes the deal; until then it waits like any unready deal.
        if not quantity.is_finite() or quantity <= 0:
            raise NotReady(f"the quantity of '{line.name}' must be above zero, not {line.quantity}")
        if not price.is_finite() or price < 0:
            raise NotReady(f"the price of '{line.name}' must not be negative: {line.price}")
        amount = (quantity * price - (discount or 0)).quantize(_CENT, rounding=ROUND_HALF_UP)
        if discount is not None and (not discount.is_finite() or discount < 0 or amount < 0):
            raise NotReady(f"the discount of '{line.name}' ({line.discount}) is not between 0 and the line's sum")
        vat_amount = None
        if line.vat_rate not in (None, ""):
            rate = _decimal(line.vat_rate, f"the VAT rate of '{line.name}'")
            vat_amount = (amount * rate / (100 + rate)).quantize(_CENT, rounding=ROUND_HALF_UP)
        lines.append(OrderLine(id=line.product_external_id, name=line.name, quantity=quantity, price=price,
                               amount=amount, unit_name=line.unit, discount=discount,
                               unit_code=line.unit_code or unit_codes.get((line.unit or "").strip().casefold()),
                               vat_rate=None if line.vat_rate in (None, "") else str(line.vat_rate),
                               vat_amount=vat_amount))
    delivery = deal.extra.get("delivery_price")
    if delivery not in (None, "", 0, "0"):
        price = _decimal(delivery, "the delivery price").quantize(_CENT, rounding=ROUND_HALF_UP)
        if price < 0:
            raise NotReady(f"the delivery price must not be negative: {delivery}")
        lines.append(OrderLine(id="ORDER_DELIVERY", name=str(deal.extra.get("delivery_name") or "Доставка заказа"),
                               quantity=Decimal(1), price=price, amount=price, service=True))
    if not lines:
        raise NotReady("the deal has no lines")
    vat = [line.vat_amount for line in lines if line.vat_amount is not None]
    requisites = [("Номер сделки в CRM", deal.crm_id)]
    if settings.organisation:
        requisites.append(("Организация", settings.organisation))
    if settings.warehouse:
        requisites.append(("Склад", settings.warehouse))
    issued = datetime.fromisoformat(issued_at.replace("Z", "+00:00")).astimezone()
    return Order(id=order_id(settings.crm_kind, deal.crm_id), number=deal.crm_id, date=issued.date().isoformat(),
                 time=issued.strftime("%H:%M:%S"), currency=deal.currency or settings.currency, rate="1",
                 amount=sum((line.amount for line in lines), Decimal(0)), counterparty=buyer, lines=lines,
                 vat_amount=sum(vat, Decimal(0)) if vat else None, comment=deal.extra.get("comment") or None,
                 requisites=requisites, deal_id=deal.crm_id)


def order_to_json(order: Order) -> dict[str, Any]:
    return json.loads(dumps(dataclasses.asdict(order)))


def order_from_json(data: dict[str, Any]) -> Order:
    lines = [OrderLine(**{**line, **{k: Decimal(line[k]) if line.get(k) is not None else None
                                       for k in ("quantity", "price", "amount", "discount", "vat_amount")}})
             for line in data["lines"]]
    return Order(**{**data, "lines": lines, "amount": Decimal(data["amount"]),
                    "vat_amount": Decimal(data["vat_amount"]) if data.get("vat_amount") is not None else None,
                    "requisites": [tuple(r) for r in data.get("requisites", [])]})


def snapshot_to_json(deal: DealSnapshot) -> dict[str, Any]:
    return json.loads(dumps(dataclasses.asdict(deal)))


def snapshot_from_json(data: dict[str, Any]) -> DealSnapshot:
    from bridge.crm.base import DealLine
    return DealSnapshot(**{**data, "lines": [DealLine(**line) for line in data.get("lines", [])]})


class OrdersFlow:
    def __init__(self, conn: sqlite3.Connection, adapter: CrmAdapter, settings: OrderSettings,
                 file_name: str = "orders-{id}.xml") -> None:
        self.conn = conn
        self.adapter = adapter
        self.settings = settings
        self.file_name = file_name

    def poll(self) -> int:
        """Read the deals changed since the stored cursor; return how many orders were enqueued."""
        cursor = self._cursor()
        enqueued = 0
        while True:
            deals, next_cursor = self.adapter.changed_deals(cursor)
            for deal in deals:
                enqueued += self.consider(deal)
            if next_cursor == cursor or not deals:
                break
            cursor = next_cursor
            self._set_cursor(cursor)
        return enqueued + self.retry_waiting()

    def retry_waiting(self) -> int:
        """Deals that were not ready (or whose order failed to render) are tried again."""
        rows = self.conn.execute("SELECT snapshot FROM orders WHERE status IN ('waiting', 'failed')"
                                 " AND snapshot IS NOT NULL").fetchall()
        return sum(self.consider(snapshot_from_json(json.loads(r[0]))) for r in rows)

    def consider(self, deal: DealSnapshot) -> int:
        row = self.conn.execute("SELECT order_id, fingerprint, status, reason, updated_at FROM orders WHERE deal_id = ?",
                                (deal.crm_id,)).fetchone()
        if row is None and deal.stage not in self.settings.trigger_stages:
            return 0
        if row is None and deal.external_id and deal.external_id != order_id(self.settings.crm_kind, deal.crm_id):
            # A deal made from a 1C document is 1C's own order already: sending it back would give 1C a
            # second order, and link_deal would take the deal away from the document's Ид.
            return 0
        issued_at = row[4] if row else now()  # the order's date: when the deal first reached the stage
        try:
            order = build_order(deal, self.conn, self.settings, issued_at)
        except NotReady as exc:
            self._waiting(deal, str(exc), row)
            return 0
        model = order_to_json(order)
        fingerprint = _order_fingerprint(model)
        if row is not None and row[1] == fingerprint and row[2] in ("queued", "written"):
            return 0
        name = self.file_name.format(id=order.id, number=order.number, deal=deal.crm_id)
        first = row is None or row[2] == "waiting"
        with transaction(self.conn):
            # A version still waiting for the target (which was away) must not be written after this one.
            outbox.supersede(self.conn, WRITE_ORDER, order.id, "superseded: the deal changed before it was written")
            intents = [Intent("order", WRITE_ORDER, order.id, {"file_name": name, "deal_id": deal.crm_id, "order": model})]
            if first or row is not None and row[2] != "written":
                intents.append(Intent("deal", LINK_DEAL, order.id, {"crm_id": deal.crm_id, "external_id": order.id}))
            outbox.add(self.conn, None, intents, "pending")
            self.conn.execute(
                "INSERT INTO orders (deal_id, order_id, fingerprint, status, reason, file_name, snapshot, updated_at)"
                " VALUES (?,?,?,?,?,?,?,?) ON CONFLICT(deal_id) DO UPDATE SET fingerprint = excluded.fingerprint,"
                " status = excluded.status, reason = NULL, file_name = excluded.file_name, snapshot = excluded.snapshot",
                (deal.crm_id, order.id, fingerprint, "queued", None, name, dumps(snapshot_to_json(deal)), issued_at))
            journal.write(self.conn, journal.Entry(
                "order", "ok", f"deal {deal.crm_id} ({deal.stage}) {'becomes' if first else 'updates'} order "
                f"{order.id}: {len(order.lines)} line(s), {order.amount} {order.currency}", None, "order", order.id,
                detail={"deal_id": deal.crm_id, "file_name": name}))
        return 1

    def _waiting(self, deal: DealSnapshot, reason: str, row: tuple[Any, ...] | None) -> None:
        with transaction(self.conn):
            self.conn.execute(
                "INSERT INTO orders (deal_id, order_id, fingerprint, status, reason, snapshot, updated_at)"
                " VALUES (?,?,?,?,?,?,?) ON CONFLICT(deal_id) DO UPDATE SET status = 'waiting', reason = excluded.reason,"
                " snapshot = excluded.snapshot",
                (deal.crm_id, order_id(self.settings.crm_kind, deal.crm_id), None, "waiting", reason,
                 dumps(snapshot_to_json(deal)), now()))
            if row is not None and row[2] == "waiting" and row[3] == reason:
                return  # said already: the journal is not a ticker
            journal.write(self.conn, journal.Entry("order", "waiting", f"deal {deal.crm_id} cannot become an order "
                                                   f"yet: {reason}", None, "deal", deal.crm_id))

    def _cursor(self) -> str | None:
        row = self.conn.execute("SELECT value FROM cursors WHERE name = 'deals'").fetchone()
        return row[0] if row else None

    def _set_cursor(self, value: str | None) -> None:
        with transaction(self.conn):
            self.conn.execute("INSERT INTO cursors (name, value) VALUES ('deals', ?) ON CONFLICT(name) DO UPDATE SET"
                              " value = excluded.value", (value,))


def _order_fingerprint(model: dict[str, Any]) -> str:
    """Which version of an order ``model`` (order_to_json) is: what the orders table keeps."""
    return hashlib.sha256(dumps(model).encode()).hexdigest()


def generated_at() -> str:
    return datetime.now(UTC).astimezone().strftime("%Y-%m-%dT%H:%M:%S")


class OrderWriter:
    """Carries ``write_order`` operations: render -> check -> temp file -> fsync -> rename."""

    def __init__(self, conn: sqlite3.Connection, renderer: Any, target: Any, profile: str, encoding: str) -> None:
        self.conn = conn
        self.renderer = renderer
        self.target = target
        self.profile = profile
        self.encoding = encoding

    def _superseded(self, payload: dict[str, Any]) -> bool:
        """An order file is written whole: a version older than the deal's current one must not be written
        (OrdersFlow.consider settles the older pending versions; this also covers rows queued before it did)."""
        row = self.conn.execute("SELECT fingerprint FROM orders WHERE deal_id = ?", (payload["deal_id"],)).fetchone()
        if row is None or row[0] is None:
            return False
        return row[0] != _order_fingerprint(payload["order"])

    def _taken_by_another(self, name: str, order_id: str) -> bool:
        """Whether ``name`` is a shared file name whose last order, another one, is still in the target."""
        last = self.conn.execute("SELECT order_id FROM orders WHERE file_name = ? AND written_at IS NOT NULL"
                                 " ORDER BY written_at DESC, rowid DESC LIMIT 1", (name,)).fetchone()
        shared = self.conn.execute("SELECT COUNT(DISTINCT order_id) FROM orders WHERE file_name = ?", (name,)).fetchone()[0]
        if shared < 2 or (last is not None and last[0] == order_id):
            return False
        return self.target.exists(name)

    def deliver(self) -> int:
        from bridge.commerceml.render import RenderError, render_checked
        from bridge.errors import TransientError, UserError
        from bridge.sync.deliver import backoff

        written = 0
        while True:
            batch = outbox.due(self.conn, 50, kinds=(WRITE_ORDER,))
            if not batch:
                return written
            for pending in batch:
                op = pending.operation
                if self._superseded(op.payload):
                    with transaction(self.conn):
                        outbox.settle_unsent(self.conn, [op.id], "superseded: the deal changed before it was written")
                    continue
                order = order_from_json(op.payload["order"])
                name = op.payload["file_name"]
                if self._taken_by_another(name, op.external_id):
                    # One name for every order (file_name without {id}): writing now would replace an
                    # order 1C has not imported yet. It waits until 1C has taken that file.
                    with transaction(self.conn):
                        outbox.postpone(self.conn, [(op.id, f"{name} still holds another order that 1C has not "
                                                     "taken yet", time.time() + backoff(min(pending.attempts, 3)))])
                    return written
                try:
                    data = render_checked(self.renderer, self.profile, {"orders": [order], "generated_at": generated_at()},
                                          self.encoding)
                    where = self.target.write(name, data)
                except RenderError as exc:
                    with transaction(self.conn):
                        outbox.mark_failed(self.conn, [(op.id, str(exc))])
                        self.conn.execute("UPDATE orders SET status = 'failed', reason = ?, fingerprint = NULL"
                                          " WHERE deal_id = ?", (str(exc), op.payload["deal_id"]))
                        journal.write(self.conn, journal.Entry("order", "error", f"order {op.external_id} not written: "
                                                               f"{exc}", None, "order", op.external_id))
                    log.error("order.render_failed order=%s error=%r", op.external_id, str(exc))
                    continue
                except (TransientError, UserError) as exc:
                    # Away (transient) or refusing us (SFTP key or rights: fixed by a person): the order
                    # stays pending and is written once the target takes it.
                    with transaction(self.conn):
                        outbox.postpone(self.conn, [(op.id, str(exc), time.time() + backoff(pending.attempts))])
                        if isinstance(exc, UserError) and pending.attempts == 0:
                            journal.write(self.conn, journal.Entry("order", "retry", f"order {op.external_id} not "
                                                                   f"written yet: {exc}", None, "order", op.external_id))
                    log.warning("order.write_retry order=%s error=%r", op.external_id, str(exc))
                    return written
                with transaction(self.conn):
                    outbox.mark_done(self.conn, [op.id])
                    self.conn.execute("UPDATE orders SET status = 'written', written_at = ? WHERE deal_id = ?"
                                      " AND fingerprint IS NOT NULL", (now(), op.payload["deal_id"]))
                    journal.write(self.conn, journal.Entry("order", "ok", f"order {op.external_id} written to {where} "
                                                           f"({len(data)} bytes, {self.profile}, {self.encoding})",
                                                           None, "order", op.external_id))
                written += 1
