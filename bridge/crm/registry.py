"""The CRM kinds the configuration may name, each mapped to its adapter class.

An explicit map (not plugin discovery): ``crm.kind`` is checked against it up
front, and a typo lists what exists instead of failing at the first sync.
"""

from __future__ import annotations

from bridge.crm.base import CrmAdapter
from bridge.crm.bitrix24 import Bitrix24Crm
from bridge.crm.sandbox import SandboxCrm
from bridge.errors import UserError

ADAPTERS: dict[str, type[CrmAdapter]] = {
    SandboxCrm.name: SandboxCrm,
    Bitrix24Crm.name: Bitrix24Crm,
}


def adapter_class(kind: str) -> type[CrmAdapter]:
    """The adapter class for ``kind``; a UserError naming the known kinds otherwise."""
    try:
        return ADAPTERS[kind]
    except (KeyError, TypeError):
        raise UserError(f"unknown CRM kind {kind!r} (known: {', '.join(sorted(ADAPTERS))})") from None
