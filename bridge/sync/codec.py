"""Offers as JSON, for the ones that wait in the state database for their product."""

from __future__ import annotations

import dataclasses
from decimal import Decimal
from typing import Any

from bridge.commerceml.records import Offer, Price, PropertyValue


def offer_to_json(offer: Offer) -> dict[str, Any]:
    return dataclasses.asdict(offer)


def _decimal(value: Any) -> Decimal | None:
    return None if value is None else Decimal(str(value))


def offer_from_json(data: dict[str, Any]) -> Offer:
    data = dict(data)
    if data.get("prices") is not None:
        data["prices"] = [Price(**{**p, "value": _decimal(p["value"]), "coefficient": _decimal(p.get("coefficient"))})
                          for p in data["prices"]]
    if data.get("stock") is not None:
        data["stock"] = {k: Decimal(str(v)) for k, v in data["stock"].items()}
    data["quantity"] = _decimal(data.get("quantity"))
    data["properties"] = [PropertyValue(**p) for p in data.get("properties") or []]
    data["characteristics"] = [tuple(c) for c in data.get("characteristics") or []]
    return Offer(**data)
