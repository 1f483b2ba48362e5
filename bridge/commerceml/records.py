"""Typed records that the CommerceML reader yields.

Everything after the reader (mapping, the outbox, CRM adapters) works on these
records and never on XML. Numbers are ``Decimal`` so money is never rounded by
float arithmetic; absent values are ``None`` rather than empty strings, so a
missing price is never mistaken for a price of zero.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal


def split_id(full_id: str) -> tuple[str, str | None]:
    """Split a 1C offer/variant id ``product#characteristic`` into its parts.

    A package id such as ``catalog#`` has an empty characteristic, which we
    treat as no characteristic at all.
    """
    product, sep, characteristic = full_id.partition("#")
    return product, (characteristic or None) if sep else None


@dataclass(slots=True)
class Group:
    id: str
    name: str
    parent_id: str | None
    deleted: bool = False
    line: int = 0
    kind: str = "group"


@dataclass(slots=True)
class Property:
    id: str
    name: str
    value_type: str | None
    values: dict[str, str] = field(default_factory=dict)  # Справочник: ИдЗначения -> text
    for_products: bool | None = None
    for_offers: bool | None = None
    deleted: bool = False
    line: int = 0
    kind: str = "property"


@dataclass(slots=True)
class PriceType:
    id: str
    name: str
    currency: str | None
    tax_name: str | None = None
    tax_included: bool | None = None
    line: int = 0
    kind: str = "price_type"


@dataclass(slots=True)
class Warehouse:
    id: str
    name: str
    address: str | None = None
    deleted: bool = False
    line: int = 0
    kind: str = "warehouse"


@dataclass(slots=True)
class Unit:
    id: str
    code: str | None
    name: str | None
    short_name: str | None = None
    international: str | None = None
    line: int = 0
    kind: str = "unit"


@dataclass(slots=True)
class PropertyValue:
    property_id: str
    value: str  # resolved to the Справочник text when the dictionary is known
    value_id: str | None = None  # the raw ИдЗначения when the value was a reference


@dataclass(slots=True)
class Product:
    id: str
    product_id: str
    characteristic_id: str | None
    name: str
    sku: str | None = None
    barcode: str | None = None
    code: str | None = None
    full_name: str | None = None
    description: str | None = None
    unit_code: str | None = None
    unit_name: str | None = None
    group_ids: list[str] = field(default_factory=list)
    images: list[str] = field(default_factory=list)
    properties: list[PropertyValue] = field(default_factory=list)
    characteristics: list[tuple[str, str]] = field(default_factory=list)
    taxes: dict[str, str] = field(default_factory=dict)  # tax name -> rate as written
    requisites: dict[str, str] = field(default_factory=dict)
    manufacturer: str | None = None
    deleted: bool = False
    catalog_id: str | None = None
    line: int = 0
    kind: str = "product"


@dataclass(slots=True)
class Price:
    price_type_id: str
    value: Decimal
    currency: str | None = None
    unit: str | None = None
    coefficient: Decimal | None = None
    presentation: str | None = None


@dataclass(slots=True)
class Offer:
    id: str
    product_id: str
    characteristic_id: str | None
    name: str | None = None
    sku: str | None = None
    barcode: str | None = None
    unit_code: str | None = None
    unit_name: str | None = None
    characteristics: list[tuple[str, str]] = field(default_factory=list)
    properties: list[PropertyValue] = field(default_factory=list)
    prices: list[Price] | None = None  # None: the file says nothing about prices
    quantity: Decimal | None = None  # None: the file says nothing about the total
    stock: dict[str, Decimal] | None = None  # warehouse Ид -> quantity; None: not given
    deleted: bool = False
    package_id: str | None = None
    catalog_id: str | None = None
    line: int = 0
    kind: str = "offer"


@dataclass(slots=True)
class BankAccount:
    number: str | None
    bank_name: str | None = None
    bik: str | None = None
    correspondent_account: str | None = None


@dataclass(slots=True)
class Counterparty:
    id: str
    name: str
    full_name: str | None = None
    person: bool = False  # a private person (Фамилия/Имя) rather than an organisation
    inn: str | None = None
    kpp: str | None = None
    okpo: str | None = None
    role: str | None = None
    last_name: str | None = None
    first_name: str | None = None
    middle_name: str | None = None
    addresses: list[tuple[str, str]] = field(default_factory=list)  # (kind, text)
    contacts: list[tuple[str, str]] = field(default_factory=list)  # (type, value)
    bank_accounts: list[BankAccount] = field(default_factory=list)
    representatives: list[tuple[str, str]] = field(default_factory=list)  # (relation, name)
    deleted: bool = False
    line: int = 0
    kind: str = "counterparty"

    @property
    def email(self) -> str | None:
        return _first_contact(self.contacts, ("почт", "mail"))

    @property
    def phone(self) -> str | None:
        return _first_contact(self.contacts, ("телефон", "phone"))


def _first_contact(contacts: list[tuple[str, str]], needles: tuple[str, ...]) -> str | None:
    for kind, value in contacts:
        lowered = kind.lower()
        if any(n in lowered for n in needles) and value:
            return value
    return None


@dataclass(slots=True)
class DocumentLine:
    product_id: str | None
    characteristic_id: str | None
    name: str | None = None
    sku: str | None = None
    unit: str | None = None
    quantity: Decimal | None = None
    price: Decimal | None = None
    amount: Decimal | None = None
    taxes: list[tuple[str, Decimal | None, Decimal | None]] = field(default_factory=list)  # (name, rate, sum)
    discounts: list[tuple[str | None, Decimal | None]] = field(default_factory=list)  # (name, sum)
    requisites: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class Document:
    id: str
    number: str | None
    date: str | None
    time: str | None = None
    # УТ 11 (2.08+) writes 1C's own number and date as elements (Номер1С, Дата1С) where older
    # configurations use the requisites "Номер по 1С" / "Дата по 1С".
    number_1c: str | None = None
    date_1c: str | None = None
    operation: str | None = None  # ХозОперация
    role: str | None = None
    currency: str | None = None
    rate: Decimal | None = None
    amount: Decimal | None = None
    comment: str | None = None
    counterparties: list[Counterparty] = field(default_factory=list)
    lines: list[DocumentLine] = field(default_factory=list)
    taxes: list[tuple[str, Decimal | None, Decimal | None]] = field(default_factory=list)
    discounts: list[tuple[str | None, Decimal | None]] = field(default_factory=list)
    requisites: dict[str, str] = field(default_factory=dict)
    deleted: bool = False
    line: int = 0
    kind: str = "document"


Record = Group | Property | PriceType | Warehouse | Unit | Product | Offer | Counterparty | Document
