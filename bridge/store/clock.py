"""One place for timestamps, so every table writes the same format (UTC, ISO 8601)."""

from __future__ import annotations

from datetime import UTC, datetime


def now() -> str:
    return stamp(datetime.now(UTC))


def stamp(moment: datetime) -> str:
    """``moment`` (aware) as every table writes it, so stamps compare as text."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
