"""The CRM kinds the configuration may name, each mapped to its adapter class.

An explicit map (not plugin discovery): ``crm.kind`` is checked against it up
front, and a typo lists what exists instead of failing at the first sync.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bridge.crm.base import CrmAdapter
from bridge.crm.bitrix24 import Bitrix24Crm
from bridge.crm.sandbox import SandboxCrm
from bridge.errors import UserError

if TYPE_CHECKING:
    from bridge.config import Config

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


def open_adapter(config: Config, *, read_only: bool = False) -> CrmAdapter:
    """The adapter ``config`` names, ready to use (close it, or use it as a context manager)."""
    cls = adapter_class(config.crm_kind)
    if config.crm_kind == "sandbox":
        assert config.crm_path is not None
        return cls(config.crm_path, read_only=read_only)  # type: ignore[call-arg]
    return cls.from_config(config)  # type: ignore[attr-defined]
