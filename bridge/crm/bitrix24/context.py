"""What every operation handler shares, and the wrapper that turns a refusal into a Result."""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any

from bridge.crm.base import Operation, Result
from bridge.crm.bitrix24.lookups import Lookups
from bridge.crm.bitrix24.plan import Cmd, Handler, Yield
from bridge.crm.bitrix24.portal import Portal
from bridge.crm.bitrix24.settings import Settings
from bridge.crm.bitrix24.values import Refused
from bridge.crm.values import checked_payload as payload_of

Body = Generator[Yield, Any, Result]


@dataclass(slots=True)
class Ctx:
    settings: Settings
    portal: Portal
    lookups: Lookups
    clock: Callable[[], float]
    deal_problem: str | None = None  # why deals cannot be written on this portal, if they cannot
    warnings: list[str] = field(default_factory=list)


def refused_by_portal(cmd: Cmd, what: str) -> Refused:
    """The portal's own words; a record that vanished meanwhile may be found again on a retry."""
    error = cmd.error or "no answer"
    vanished = "not found" in error.lower() or "NOT_FOUND" in error
    return Refused(f"Bitrix24 refused {what}: {error}", retryable=vanished)


def ok(crm_id: Any, *, created: bool, **answer: Any) -> Result:
    return Result(ok=True, crm_id=str(crm_id), created=created, answer={"id": crm_id, "created": created, **answer})


def guarded(op: Operation, body: Callable[[Operation, dict[str, Any]], Body]) -> Handler:
    """Run ``body``; a Refused anywhere in it becomes this operation's failed Result."""
    try:
        result = yield from body(op, payload_of(op))
    except Refused as exc:
        return Result(ok=False, retryable=exc.retryable, error=f"{op.kind} {op.external_id!r}: {exc}")
    return result
