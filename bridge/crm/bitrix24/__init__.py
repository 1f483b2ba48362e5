"""Bitrix24 (``[crm] kind = "bitrix24"``): settings, HTTP client, bulk lookups, operation handlers.

``adapter`` is the entry point; ``plan`` packs the operations' commands into
``batch`` requests; ``lookups`` finds records in bulk; ``products`` and
``parties`` map the bridge's operations onto the portal's methods.
"""

from bridge.crm.bitrix24.adapter import Bitrix24Crm

__all__ = ["Bitrix24Crm"]
