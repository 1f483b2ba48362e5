"""The contract every CRM adapter keeps.

An adapter carries CRM operations to one CRM. It never sees XML or 1C records:
the pipeline has already turned them into ``Operation`` objects.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

# What the pipeline may ask for. The payload of each is a plain JSON object.
UPSERT_PRODUCT = "upsert_product"  # external_id, parent_external_id, name, sku, barcode, active, ...
SET_PRICES = "set_prices"  # external_id, prices {price type name: number}; merges, never drops others
SET_STOCK = "set_stock"  # external_id, stock {warehouse name: number} (merged), quantity (total) or null
# One offer's prices and stock together (payload keys of either or both of the two above): 1C sends
# them in one Предложение, and one write instead of two halves what every layer pays per operation.
SET_OFFER = "set_offer"
DEACTIVATE_PRODUCT = "deactivate_product"  # external_id; the product stays, inactive
UPSERT_COMPANY = "upsert_company"  # external_id, name, inn, kpp, ...
UPSERT_CONTACT = "upsert_contact"  # external_id, name, email, phone, ...
UPSERT_DEAL = "upsert_deal"  # external_id (the 1C document Ид), number, amount, facts (paid, shipped...), lines
LINK_DEAL = "link_deal"  # crm_id, external_id: the deal made in the CRM is now the 1C order with this Ид
KINDS = (UPSERT_PRODUCT, SET_PRICES, SET_STOCK, SET_OFFER, DEACTIVATE_PRODUCT, UPSERT_COMPANY, UPSERT_CONTACT, UPSERT_DEAL,
         LINK_DEAL)


@dataclass(slots=True)
class Operation:
    """One write the CRM must end up reflecting.

    ``match``: when no CRM record carries ``external_id`` yet, adopt the record
    these fields identify (e.g. ``{"inn": ..., "kpp": ...}`` or ``{"sku": ...}``)
    instead of creating a duplicate.
    ``create_only``: payload fields the CRM owns after creation; they are sent
    when the record is created and never overwritten afterwards.
    """

    kind: str
    external_id: str
    payload: dict[str, Any]
    match: dict[str, Any] | None = None
    create_only: list[str] = field(default_factory=list)
    id: int = 0  # the outbox row, so results can be matched back
    # The payload as the outbox keeps it (canonical JSON), when the operation came from there:
    # an adapter that logs or sends JSON may use it instead of encoding the payload again.
    payload_text: str | None = field(default=None, repr=False, compare=False)


@dataclass(slots=True)
class Result:
    ok: bool
    crm_id: str | None = None
    created: bool = False
    error: str | None = None
    retryable: bool = False  # only meaningful when not ok
    answer: dict[str, Any] = field(default_factory=dict)  # what the CRM said, for the journal


@dataclass(slots=True)
class DealLine:
    product_external_id: str | None  # the 1C Ид (``product#characteristic`` for a variant), None if not from 1C
    name: str
    quantity: str  # decimals as strings, like every number the bridge carries
    price: str
    discount: str | None = None  # the line's discount sum
    vat_rate: str | None = None  # "20", "10", "0", or None for "без НДС"
    unit: str | None = None
    unit_code: str | None = None  # the unit's OKEI code (796 = штука), which is what 1C looks units up by


@dataclass(slots=True)
class DealSnapshot:
    """A deal as the CRM shows it now (for the CRM -> 1C orders flow)."""

    crm_id: str
    title: str
    stage: str
    updated_at: str  # the CRM's own change time, ISO 8601
    external_id: str | None = None  # the 1C order Ид it is linked to, once it has one
    company_external_id: str | None = None
    contact_external_id: str | None = None
    currency: str | None = None
    amount: str | None = None
    lines: list[DealLine] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)  # adapter-specific fields a template may use


class CrmAdapter(ABC):
    """A CRM as the bridge sees it.

    Contract (the contract tests in tests/crm_contract.py check every adapter):

    * ``apply(ops)`` performs at most ``batch_size`` operations and returns one
      ``Result`` per operation, in order. Every write is an idempotent upsert
      keyed by the 1C external id: applying the same operation twice leaves
      the CRM as applying it once (only the count of calls differs), so the
      outbox may deliver at least once.
    * A failure of one operation (unknown product, CRM validation error) is a
      ``Result(ok=False, retryable=False)`` with the CRM's words in ``error``;
      the other operations of the batch still apply. A failure that may pass
      (throttled, timeout) is ``retryable=True``.
    * A failure of the whole call (CRM unreachable, 5xx, 429 after the
      adapter's own backoff) raises ``bridge.errors.TransientError``; nothing
      of the batch may be assumed applied, and the caller retries it later.
      Bad credentials or configuration raise ``PermanentError``.
    * ``rate_limit`` (requests per second, or None) is honoured by the adapter
      itself; callers just call ``apply`` in a loop.
    * Operations on a product (prices, stock, deactivation) whose external id
      the CRM does not know fail permanently with an error saying so.
    """

    name: ClassVar[str] = ""
    batch_size: ClassVar[int] = 50
    rate_limit: ClassVar[float | None] = None

    @abstractmethod
    def apply(self, ops: Sequence[Operation]) -> list[Result]:
        """Carry out ``ops`` (len <= batch_size); one Result per op, in order."""

    def changed_deals(self, cursor: str | None, limit: int = 500) -> tuple[list[DealSnapshot], str | None]:
        """Deals changed since ``cursor`` (None: from the beginning), oldest change first, at most
        ``limit``; and the cursor to pass next time (unchanged when nothing changed).

        A deal changed twice may be reported once with its latest state; a deal may be reported
        again after the cursor moved past it only if it changed again. Pages through the CRM's
        lists as needed; raises TransientError like ``apply``.
        """
        raise NotImplementedError(f"{self.name} does not report changed deals yet")

    def close(self) -> None:
        """Release connections; the adapter is not used afterwards."""

    def __enter__(self) -> CrmAdapter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
