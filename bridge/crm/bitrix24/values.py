"""Checking payload values before anything is sent: a refused value must change nothing in the CRM."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

# The checks every adapter shares; the portal's modules import them from here with the rest.
from bridge.crm.values import Refused, flag, ident, name, text

__all__ = ["Refused", "currency", "decimal", "flag", "ident", "name", "plain", "text"]


def decimal(key: str, value: Any) -> Decimal:
    """A JSON number or decimal string, exactly (no binary rounding of money)."""
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal | str) or (
            isinstance(value, str) and len(value) > 64):
        raise Refused(f"{key} must be a number, not {value!r}")
    try:
        number = Decimal(repr(value) if isinstance(value, float) else str(value).strip().replace(",", "."))
    except InvalidOperation:
        raise Refused(f"{key} must be a number, not {value!r}") from None
    if not number.is_finite():
        raise Refused(f"{key} must be a finite number, not {value!r}")
    return number + 0  # -0 becomes 0


def plain(number: Decimal) -> str:
    """Canonical decimal text: '12.5', '-3', '0'."""
    found = format(number.normalize(), "f") if number else "0"
    return found


_RUBLES = {"руб", "руб.", "rur", "643", "rub", "₽"}


def currency(value: Any, default: str) -> str:
    """An ISO 4217 code for what 1C calls the currency ("руб", "643", "RUB")."""
    if not isinstance(value, str) or not value.strip():
        return default
    found = value.strip()
    if found.lower() in _RUBLES:
        return "RUB"
    return found.upper() if len(found) == 3 and found.isalpha() else default
