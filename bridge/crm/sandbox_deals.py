"""Deals in the sandbox CRM as a manager makes them, and as the orders flow reads them.

Every change to a deal (by the bridge or by a person) moves it to the end of a
version sequence (triggers in the schema), which is what ``changed_deals``
pages through: a deal comes again only when it changed again.
"""

from __future__ import annotations

import json
import sqlite3
from decimal import Decimal, InvalidOperation
from typing import Any

from bridge.crm.base import DealLine, DealSnapshot
from bridge.errors import UserError

# Schema version 2: what a CRM-made deal needs, and the change sequence.
MIGRATION_2 = [
    "ALTER TABLE deals ADD COLUMN title TEXT",
    "ALTER TABLE deals ADD COLUMN contact_external_id TEXT",
    "ALTER TABLE deals ADD COLUMN version INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE deals ADD COLUMN changed_at TEXT",
    "CREATE INDEX deals_version ON deals(version)",
    # recursive_triggers is off: the UPDATE inside does not fire the trigger again.
    """CREATE TRIGGER deals_changed_insert AFTER INSERT ON deals BEGIN
        UPDATE deals SET version = (SELECT COALESCE(MAX(version), 0) + 1 FROM deals),
                         changed_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE id = NEW.id;
    END""",
    """CREATE TRIGGER deals_changed_update AFTER UPDATE ON deals WHEN NEW.version = OLD.version BEGIN
        UPDATE deals SET version = (SELECT COALESCE(MAX(version), 0) + 1 FROM deals),
                         changed_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE id = NEW.id;
    END""",
]


def _number(value: Any, what: str) -> Decimal:
    try:
        number = Decimal(str(value).replace(",", ".").strip())
    except (InvalidOperation, AttributeError):
        raise UserError(f"{what} must be a number, not {value!r}") from None
    if not number.is_finite():
        raise UserError(f"{what} must be a number, not {value!r}")
    return number


def _text(number: Decimal) -> str:
    text = format(number, "f")
    return (text.rstrip("0").rstrip(".") if "." in text else text) or "0"


def _lines(conn: sqlite3.Connection, spec: Any) -> tuple[list[dict[str, Any]], Decimal]:
    if not isinstance(spec, list) or not spec:
        raise UserError("a deal needs \"lines\": [{\"product_external_id\", \"quantity\", \"price\"}, ...]")
    lines, total = [], Decimal(0)
    for number, line in enumerate(spec, 1):
        if not isinstance(line, dict) or not line.get("product_external_id"):
            raise UserError(f"line {number}: product_external_id is required")
        row = conn.execute("SELECT name, data FROM products WHERE external_id = ?",
                           (line["product_external_id"],)).fetchone()
        if row is None:  # a manager can only pick what the CRM's catalog has
            raise UserError(f"line {number}: the CRM has no product {line['product_external_id']}")
        quantity = _number(line.get("quantity", 1), f"line {number} quantity")
        price = _number(line.get("price", 0), f"line {number} price")
        discount = _number(line["discount"], f"line {number} discount") if line.get("discount") else None
        unit_info = json.loads(row[1]).get("unit") or {}
        unit, unit_code = unit_info.get("name"), unit_info.get("code")
        lines.append({"product_external_id": line["product_external_id"], "name": line.get("name") or row[0],
                      "quantity": _text(quantity), "price": _text(price),
                      "discount": _text(discount) if discount is not None else None,
                      "vat_rate": None if line.get("vat_rate") is None else str(line["vat_rate"]), "unit": unit,
                      "unit_code": unit_code})
        total += quantity * price - (discount or 0)
    return lines, total


def _counterparty(conn: sqlite3.Connection, spec: dict[str, Any]) -> tuple[str | None, str | None, int | None]:
    """(company_external_id, contact_external_id, company_id) for a deal; an inline counterparty is created."""
    if spec.get("company_external_id"):
        row = conn.execute("SELECT coalesce((SELECT id FROM companies WHERE external_id = ?),"
                           " (SELECT company_id FROM company_aliases WHERE external_id = ?))",
                           (spec["company_external_id"], spec["company_external_id"])).fetchone()
        if row[0] is None:
            raise UserError(f"the CRM has no company {spec['company_external_id']}")
        return spec["company_external_id"], None, int(row[0])
    if spec.get("contact_external_id"):
        if conn.execute("SELECT 1 FROM contacts WHERE external_id = ?", (spec["contact_external_id"],)).fetchone() is None:
            raise UserError(f"the CRM has no contact {spec['contact_external_id']}")
        return None, spec["contact_external_id"], None
    inline = spec.get("counterparty")
    if isinstance(inline, dict) and inline.get("name"):
        if inline.get("person") and not inline.get("inn"):
            cursor = conn.execute("INSERT INTO contacts (name, email, phone, data) VALUES (?, ?, ?, ?)",
                                  (inline["name"], inline.get("email"), inline.get("phone"),
                                   json.dumps({k: v for k, v in inline.items() if k not in ("name", "email", "phone")},
                                              ensure_ascii=False)))
            return None, f"crm-contact-{cursor.lastrowid}", None
        cursor = conn.execute("INSERT INTO companies (name, inn, kpp, full_name, data) VALUES (?, ?, ?, ?, ?)",
                              (inline["name"], inline.get("inn"), inline.get("kpp"), inline.get("full_name"),
                               json.dumps({k: v for k, v in inline.items() if k not in ("name", "inn", "kpp", "full_name")},
                                          ensure_ascii=False)))
        return None, None, int(cursor.lastrowid or 0)
    return None, None, None


def add_deal(conn: sqlite3.Connection, spec: dict[str, Any]) -> str:
    if not isinstance(spec, dict) or not spec.get("title"):
        raise UserError("a deal needs at least \"title\", \"stage\" and \"lines\"")
    lines, total = _lines(conn, spec.get("lines"))
    company, contact, company_id = _counterparty(conn, spec)
    delivery = _number(spec["delivery"], "delivery") if spec.get("delivery") else None
    data = {"lines": lines, "delivery": _text(delivery) if delivery is not None else None,
            "comment": spec.get("comment"), "facts": {}}
    if contact and contact.startswith("crm-contact-"):
        data["contact_id"] = int(contact.rsplit("-", 1)[1])
        contact = None
    cursor = conn.execute(
        "INSERT INTO deals (number, title, stage, amount, currency, company_external_id, company_id,"
        " contact_external_id, data) VALUES ('', ?, ?, ?, ?, ?, ?, ?, ?)",
        (spec["title"], spec.get("stage") or "new", _text(total + (delivery or 0)), spec.get("currency") or "RUB",
         company, company_id, contact, json.dumps(data, ensure_ascii=False)))
    deal_id = int(cursor.lastrowid or 0)
    conn.execute("UPDATE deals SET number = ? WHERE id = ?", (str(deal_id), deal_id))
    return str(deal_id)


def update_deal(conn: sqlite3.Connection, deal_id: str, spec: dict[str, Any]) -> None:
    """Change a deal's lines (and delivery, comment) as a manager would."""
    row = conn.execute("SELECT data FROM deals WHERE id = ?", (deal_id,)).fetchone()
    if row is None:
        raise UserError(f"the CRM has no deal {deal_id}")
    data = json.loads(row[0])
    lines, total = _lines(conn, spec.get("lines", data.get("lines")))
    data["lines"] = lines
    for key in ("delivery", "comment"):
        if key in spec:
            data[key] = spec[key]
    delivery = _number(data["delivery"], "delivery") if data.get("delivery") else Decimal(0)
    conn.execute("UPDATE deals SET data = ?, amount = ? WHERE id = ?",
                 (json.dumps(data, ensure_ascii=False), _text(total + delivery), deal_id))


def move_deal(conn: sqlite3.Connection, deal_id: str, stage: str) -> None:
    if not stage:
        raise UserError("the stage must not be empty")
    if conn.execute("UPDATE deals SET stage = ? WHERE id = ?", (stage, deal_id)).rowcount == 0:
        raise UserError(f"the CRM has no deal {deal_id}")


def link_deal(conn: sqlite3.Connection, payload: dict[str, Any]) -> tuple[int, bool]:
    """The deal made in the CRM is now the 1C order ``external_id``; (row id, changed)."""
    deal_id, external_id = payload.get("crm_id"), payload.get("external_id")
    row = conn.execute("SELECT id, external_id FROM deals WHERE id = ?", (deal_id,)).fetchone()
    if row is None:
        raise LookupError(f"the CRM has no deal {deal_id}")
    other = conn.execute("SELECT id FROM deals WHERE external_id = ? AND id != ?", (external_id, deal_id)).fetchone()
    if other is not None:
        raise LookupError(f"deal {other[0]} already is order {external_id}")
    if row[1] == external_id:
        return int(row[0]), False
    conn.execute("UPDATE deals SET external_id = ? WHERE id = ?", (external_id, deal_id))
    return int(row[0]), True


def _counterparty_of(conn: sqlite3.Connection, company_id: int | None, contact_external_id: str | None,
                     data: dict[str, Any]) -> dict[str, Any] | None:
    if company_id is not None:
        row = conn.execute("SELECT id, external_id, name, inn, kpp, full_name, data FROM companies WHERE id = ?",
                           (company_id,)).fetchone()
        if row is not None:
            extra = json.loads(row[6])
            address = next((a.get("text") for a in extra.get("addresses") or [] if isinstance(a, dict)), None)
            return {"crm_id": str(row[0]), "external_id": row[1], "name": row[2], "inn": row[3], "kpp": row[4],
                    "full_name": row[5], "person": False, "address": address or extra.get("address"),
                    "email": extra.get("email"), "phone": extra.get("phone")}
    where, key = ("external_id = ?", contact_external_id) if contact_external_id else ("id = ?", data.get("contact_id"))
    if key is not None:
        row = conn.execute(f"SELECT id, external_id, name, email, phone, data FROM contacts WHERE {where}",
                           (key,)).fetchone()
        if row is not None:
            extra = json.loads(row[5])
            return {"crm_id": str(row[0]), "external_id": row[1], "name": row[2], "email": row[3], "phone": row[4],
                    "person": True, "inn": extra.get("inn"), "kpp": None, "full_name": row[2],
                    "last_name": extra.get("last_name"), "first_name": extra.get("first_name"),
                    "middle_name": extra.get("middle_name"), "address": extra.get("address")}
    return None


_SNAPSHOT_SQL = ("SELECT d.id, d.title, d.number, d.stage, d.changed_at, d.external_id, d.company_id,"
                 " (SELECT external_id FROM companies WHERE id = d.company_id), d.contact_external_id, d.currency,"
                 " d.amount, d.data, d.version FROM deals d")


def _snapshot(conn: sqlite3.Connection, row: tuple[Any, ...]) -> DealSnapshot:
    data = json.loads(row[11])
    lines = [DealLine(product_external_id=line.get("product_external_id"), name=str(line.get("name") or ""),
                      quantity=str(line.get("quantity", 1)), price=str(line.get("price", 0)),
                      discount=line.get("discount"), vat_rate=line.get("vat_rate"),
                      unit=line.get("unit") if isinstance(line.get("unit"), str) else None,
                      unit_code=line.get("unit_code") if isinstance(line.get("unit_code"), str) else None)
             for line in data.get("lines") or [] if isinstance(line, dict)]
    return DealSnapshot(
        crm_id=str(row[0]), title=row[1] or row[2], stage=row[3] or "", updated_at=row[4] or "", external_id=row[5],
        company_external_id=row[7], contact_external_id=row[8], currency=row[9], amount=row[10], lines=lines,
        extra={"counterparty": _counterparty_of(conn, row[6], row[8], data), "delivery_price": data.get("delivery"),
               "comment": data.get("comment"), "facts": data.get("facts") or {}})


def get_deal(conn: sqlite3.Connection, deal_id: str) -> DealSnapshot | None:
    row = conn.execute(_SNAPSHOT_SQL + " WHERE d.id = ?", (deal_id,)).fetchone()
    return None if row is None else _snapshot(conn, row)


def changed_deals(conn: sqlite3.Connection, cursor: str | None, limit: int) -> tuple[list[DealSnapshot], str | None]:
    try:
        after = int(cursor) if cursor else 0
    except ValueError:
        raise UserError(f"not a sandbox deal cursor: {cursor!r}") from None
    rows = conn.execute(_SNAPSHOT_SQL + " WHERE d.version > ? ORDER BY d.version LIMIT ?",
                        (after, max(0, limit))).fetchall()
    return [_snapshot(conn, row) for row in rows], (str(rows[-1][12]) if rows else cursor)
