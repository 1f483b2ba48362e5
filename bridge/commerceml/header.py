"""Facts about one exchange file as a whole (its "header") and its counts."""

from __future__ import annotations

from dataclasses import dataclass, field

COUNT_KEYS = ("groups", "properties", "price_types", "warehouses", "products", "offers", "counterparties", "documents")


@dataclass(slots=True)
class Header:
    file: str
    kind: str = "empty"
    schema_version: str | None = None
    namespace: str | None = None
    encoding: str | None = None
    bom: bool = False
    generated_at: str | None = None
    # Section name -> its СодержитТолькоИзменения (attribute or, in old files, element).
    only_changes: dict[str, bool] = field(default_factory=dict)
    classifier_id: str | None = None
    catalog_id: str | None = None
    package_id: str | None = None
    package_catalog_id: str | None = None
    sections: set[str] = field(default_factory=set)
    size: int = 0

    @property
    def contains_only_changes(self) -> bool | None:
        """True/False when every section that says so agrees; True wins a disagreement.

        A file that declares "changes only" anywhere must never be treated as
        a full export, because a full export may deactivate what it lacks.
        """
        if not self.only_changes:
            return None
        return any(self.only_changes.values())

    @property
    def is_full_catalog(self) -> bool:
        """A catalog that says it is complete (СодержитТолькоИзменения=false)."""
        value = self.only_changes.get("Каталог")
        return value is False


def empty_counts() -> dict[str, int]:
    return dict.fromkeys(COUNT_KEYS, 0)
