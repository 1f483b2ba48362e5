"""Checking what an operation carries before any CRM is written to.

Every adapter refuses the same things the same way (a payload that is not an
object, an external id that disagrees, text that is not text), so a refusal
reads alike whichever CRM the bridge talks to. A refused value must change
nothing: adapters call these before their first write.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from bridge.crm.base import Operation


class Refused(Exception):
    """This one operation cannot be carried out; the rest of the batch goes on."""

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


def checked_payload(op: Operation) -> dict[str, Any]:
    """The operation's payload, once it is an object about the operation's own external id."""
    payload = op.payload
    if not isinstance(payload, dict):
        raise Refused(f"payload must be an object, not {type(payload).__name__}")
    if not isinstance(op.external_id, str) or not op.external_id:
        raise Refused("the external id is empty")
    if payload.get("external_id", op.external_id) != op.external_id:
        raise Refused(f"payload external_id {payload['external_id']!r} differs from the operation's")
    return payload


def offer_parts(payload: dict[str, Any]) -> tuple[bool, bool]:
    """Whether a set_offer payload carries prices, and stock (per warehouse or a total); refused if neither."""
    has_prices = "prices" in payload
    has_stock = payload.get("stock") is not None or payload.get("quantity") is not None
    if not has_prices and not has_stock:
        raise Refused("set_offer needs prices, or stock or quantity")
    return has_prices, has_stock


def text(key: str, value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):  # numeric codes, barcodes
        return str(value)
    raise Refused(f"{key} must be text, not {type(value).__name__}")


def ident(key: str, value: Any) -> str | None:
    """Identifiers (ИНН, КПП, SKU, e-mail) compare exactly: trimmed, and blank means none."""
    found = text(key, value)
    return None if found is None else (found.strip() or None)


def name(key: str, value: Any) -> str:
    found = text(key, value)
    if found is None or not found.strip():
        raise Refused(f"{key} must not be empty")
    return found


def flag(key: str, value: Any) -> bool:
    if isinstance(value, bool) or value in (0, 1):
        return bool(value)
    raise Refused(f"{key} must be true or false, not {value!r}")


def exact_decimal(key: str, value: Any) -> Decimal:
    """A JSON number or decimal string, exactly as written: no binary rounding of money, and no
    rounding to the decimal context's precision either (that is the caller's choice)."""
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal | str) or (
            isinstance(value, str) and len(value) > 64):
        raise Refused(f"{key} must be a number, not {value!r}")
    try:
        # repr(float) is the shortest text giving that float: 0.1 stays 0.1.
        number = Decimal(repr(value) if isinstance(value, float) else str(value).strip().replace(",", "."))
    except InvalidOperation:
        raise Refused(f"{key} must be a number, not {value!r}") from None
    if not number.is_finite():
        raise Refused(f"{key} must be a finite number, not {value!r}")
    return number
