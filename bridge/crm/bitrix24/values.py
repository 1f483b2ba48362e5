"""Checking payload values before anything is sent: a refused value must change nothing in the CRM."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

# The checks every adapter shares; the portal's modules import them from here with the rest.
from bridge.crm.values import Refused, exact_decimal, flag, ident, name, offer_parts, text

__all__ = ["Refused", "currency", "decimal", "flag", "ident", "name", "offer_parts", "plain", "text"]


def decimal(key: str, value: Any) -> Decimal:
    """A JSON number or decimal string, exactly (no binary rounding of money)."""
    return exact_decimal(key, value) + 0  # -0 becomes 0


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
