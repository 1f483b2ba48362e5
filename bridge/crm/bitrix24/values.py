"""Checking payload values before anything is sent: a refused value must change nothing in the CRM."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any


class Refused(Exception):
    """This one operation cannot be carried out; the rest of the batch goes on."""

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


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
