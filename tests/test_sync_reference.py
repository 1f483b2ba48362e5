"""The whole inbound sync on the real 1C exports in ../shared: ingest, what the CRM shows, idempotence, journal.

test_reader_reference.py checks that each file *reads*; this module takes every sample folder through
`bridge ingest` into a fresh state and sandbox CRM, as 1C's exchange would deliver it (a folder, so the
load order applies to split packages). Every expected value below was read from the XML by hand
(SOURCES.md describes each folder); none was copied from what the bridge produced.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import exchange as x
from bridge.crm.sandbox import SandboxCrm
from conftest import REFERENCE, run_cli
from test_sync import write_config

# ---------------------------------------------------------------- helpers


class Part(dict):  # type: ignore[type-arg]
    """An expected dict of which only these keys are checked (a deal's facts, a product's requisites)."""


@dataclass(frozen=True)
class Folder:
    """What one sample folder must leave in the sandbox CRM after `bridge ingest`.

    ``products``/``companies``/``contacts``/``deals`` map an external id (the 1C Ид) to the fields to
    check. A field is read from `bridge sandbox dump --json`; fields the dump leaves out (a variant's
    characteristics, a unit, groups...) are read from the sandbox's full record. ``lines`` of a deal
    is compared as (product, quantity, price, amount) per line.
    """

    totals: dict[str, int]  # records of each kind the CRM ends up with
    products: dict[str, dict[str, Any]] = field(default_factory=dict)
    companies: dict[str, dict[str, Any]] = field(default_factory=dict)
    contacts: dict[str, dict[str, Any]] = field(default_factory=dict)
    deals: dict[str, dict[str, Any]] = field(default_factory=dict)
    waiting: int = 0  # offers whose goods the folder does not contain: they wait, which is not an error
    replay_calls: int = 0  # CRM writes a replay of the whole archive legitimately makes
    broken: tuple[str, ...] = ()  # files that must be quarantined (exit 1); the rest must still apply


def ingest(cfg: Path, *paths: Path, expect: int = 0) -> str:
    code, output = run_cli("ingest", "-c", cfg, *paths)
    assert code == expect, output
    return output


def dump(cfg: Path) -> dict[str, Any]:
    code, output = run_cli("sandbox", "-c", cfg, "dump", "--json")
    assert code == 0, output
    return json.loads(output)


def full_state(cfg: Path) -> dict[str, list[dict[str, Any]]]:
    """Every field of every record (the dump shows the main ones only)."""
    crm = SandboxCrm(cfg.parent / "var" / "crm.db", read_only=True)
    try:
        return crm.state()
    finally:
        crm.close()


def cli_json(*args: str | Path) -> Any:
    code, output = run_cli(*args)
    assert code == 0, output
    return json.loads(output)


def _by_id(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["external_id"]: r for r in records}


def _shown(record: dict[str, Any], key: str) -> Any:
    if key == "lines":
        return [(line["product_external_id"], line["quantity"], line["price"], line["amount"])
                for line in record["lines"]]
    return record[key]


def check_records(kind: str, expected: dict[str, dict[str, Any]], shown: dict[str, Any],
                  full: dict[str, list[dict[str, Any]]]) -> None:
    in_dump, in_full = _by_id(shown[kind]), _by_id(full[kind])
    for external_id, fields in expected.items():
        assert external_id in in_dump, f"{kind} {external_id} is not in the CRM"
        for key, value in fields.items():
            record = in_dump[external_id] if key in in_dump[external_id] else in_full[external_id]
            actual = _shown(record, key)
            if isinstance(value, Part):
                actual = {k: actual.get(k) for k in value}
            assert actual == value, f"{kind} {external_id}: {key}"


def reference_folders() -> list[str]:
    return sorted(p.name for p in (REFERENCE / "samples").iterdir() if p.is_dir())


# ---------------------------------------------------------------- what each folder must give
# No reference file is genuinely broken: each reads without a structural error (test_reader_reference.py),
# the deviations from the XSD that SOURCES.md lists are warnings. So every folder must exit 0; ``broken``
# is there for a sample that is not so.

P_BIG = "ffce323d-c133-11e8-8111-0050569b2b72"
P_BOOTS, P_SHOES = "bd72d910-55bc-11d9-848a-00112f43529a", "bd72d913-55bc-11d9-848a-00112f43529a"
P_31 = "b9006815-7dde-11e8-80cb-70106fc831cf"
P_LITEON = "1a4ec9af-1192-11e4-8372-00259079b159"
P_TABLE = "05e26d70-01e4-11dc-a411-00055d80a2d1"
P_DRESS = "421a531a-995e-11e3-9e81-00241d337dcd"
KIKINDA = "4a65ecb6-8b1b-11df-be16-e0cb4ed5f70f"
PCS = {"code": "796", "name": "Штука"}

FOLDERS: dict[str, Folder] = {
    # 2.08 in the commerceml_210 namespace; variants come from the offers only (GUID#GUID).
    "bigperson-2.08-ns210": Folder(
        totals={"products": 4},
        products={
            P_BIG: {"name": "Test product 1", "sku": "NF-00005894", "parent_external_id": None, "prices": {},
                    "groups": [{"id": "ffce323c-c133-11e8-8111-0050569b2b72", "name": "subtest1"}],
                    "properties": {"test string property": "", "test int property": "",
                                   "test catalog property": "test1 catalog property"}},  # Справочник resolved
            f"{P_BIG}#8a4e5ea9-d129-11e8-8112-0050569b2b72": {
                "parent_external_id": P_BIG, "name": "Test offer 1", "quantity": 2, "stock": {},
                "prices": {"ЦПУ": 15500, "ЦП": 10500, "Цена поставщика": 10500},
                "characteristics": {"Цвет": "Бежевый"}},
            f"{P_BIG}#8a4e5eaa-d129-11e8-8112-0050569b2b72": {
                "name": "Test Offer 2", "quantity": 5, "characteristics": {"Цвет": "Желтый"}},
            "ffce323e-c133-11e8-8111-0050569b2b72": {"name": "Test product 2", "sku": "NF-00005895"},
        }),
    # 1C's own order examples (Bitrix → 1C and back), windows-1251; private buyers become contacts.
    "bitrix-doc-2.03-cp1251": Folder(
        totals={"products": 0, "contacts": 2, "deals": 2},
        contacts={"1#admin# admin": {"name": "admin"},
                  "1#admin#Петров Петр": {"name": "Петр Петров", "last_name": "Петров", "first_name": "Петр"}},
        deals={
            "36": {"number": "36", "date": "2007-10-30T15:19:27", "amount": 6734.47, "currency": "руб",
                   "company_external_id": None, "paid": False,
                   "facts": Part({"status": "[N] Принят", "final": False, "cancelled": False}),
                   "lines": [("ORDER_DELIVERY", "1", "340", "340"),
                             ("dee6e19a-55bc-11d9-848a-00112f43529a", "1", "6394.47", "6394.47")]},
            "20": {"date": "2007-10-16T15:40:40", "amount": 9683.42, "currency": "RUB", "paid": True,
                   "shipped": False,  # "Доставка разрешена" is not a shipment
                   "facts": Part({"payment_number": "ТК000000026", "payment_date": "2007-10-16 15:44:47",
                                  "final": True, "status": "[F] Доставлен"})},
        }),
    # What a Bitrix site answers to sale/query: buyers left every name empty (the person's form).
    "bitrix-sale-query-2.05-cp1251": Folder(
        totals={"companies": 0, "contacts": 2, "deals": 2},
        contacts={"38#catalog_exchange#": {"name": "38#catalog_exchange#"},  # no name at all: the Ид
                  "5#content-manager# Контент менджер": {"email": None}},
        deals={
            "132": {"date": "2021-02-11T18:45:21", "amount": 231.74, "currency": "руб", "company_external_id": None,
                    "facts": Part({"status": "[N] Принят, ожидается оплата", "paid": False}),
                    "lines": [("910e89e5-205e-4d95-872a-0a0255c42f02", "1", "231.74", "231.74")]},
            "133": {"date": "2021-02-12T09:11:04", "amount": 14380.58},
        }),
    # A 2017 export with per-warehouse stock in the attribute form.
    "carono-2.07": Folder(
        totals={"products": 7},
        products={
            P_BOOTS: {"name": "Женские ботфорты коричневые", "sku": "Б-130001", "barcode": "2000018987155",
                      "unit": {"code": "715", "name": "Пара (2 шт.)"}},
            f"{P_BOOTS}#90c55447-d3a8-11e4-9423-e0cb4ed5eed4": {
                "parent_external_id": P_BOOTS, "name": "Женские ботфорты коричневые (38)",
                "prices": {"Розничная": 1719}, "stock": {'Магазин "Обувь"': 20}, "quantity": 20},
            P_SHOES: {"sku": "Б- 130005"},  # as 1C wrote it
            f"{P_SHOES}#ad5de1b6-ca90-11dd-ad02-0015e9b8c48d": {
                "name": "Ботинки женские демисезонные (37)", "prices": {"Розничная": 1271},
                "stock": {'Магазин "Обувь"': 45}, "quantity": 45},
        }),
    # CommerceML 3.1 in five files: names of price types and units come from the first import file.
    "cml-3.1-split": Folder(
        totals={"products": 2},
        products={
            P_31: {"name": "Товар 1", "sku": "32255", "prices": {"Розничные": 14240}, "quantity": 0,
                   "taxes": {"НДС": "20"}, "unit": PCS},  # <БазоваяЕдиница>796 </...>, named in ЕдиницыИзмерения
            f"{P_31}#ca3fa92c-8662-11e8-80cb-70106fc831cf": {
                "parent_external_id": P_31, "name": "Товар (предложение 2)", "prices": {"Розничные": 11660},
                "quantity": 2},
        }),
    # A full catalog of 282 goods, requisites only (no offers).
    "django-cml-2.05": Folder(
        totals={"products": 282},
        products={
            "5631f4e4-7206-11d9-ac6c-0080482454f7": {
                "name": "BOSCH холодильник", "sku": "Х-1234", "active": True, "unit": PCS,
                "groups": [{"id": "5631f4aa-7206-11d9-ac6c-0080482454f7", "name": "Холодильники, морозильные камеры"}],
                "requisites": Part({"Полное наименование": 'Холодильник "BOSCH"', "Вес": "0"})},
            "c04853c5-720b-11d9-ac6c-0080482454f7": {
                "name": "BN22 Ламинат Орех 22 мм", "unit": {"code": "055", "name": "Квадратный метр"}},
        }),
    # Two full exports of the same goods: import0_1.xml (April 2020, 36 goods, one Статус="Удален")
    # and import0_1_with_nested_groups.xml (August 2020, 283 goods); offers0_1.xml belongs to April.
    # The later export wins. Replaying the archive puts April's content of the 36 shared goods back
    # and then August's again: 2 × 36 writes, and the CRM ends as it was (checked below).
    "dobromyslov-2.07": Folder(
        totals={"products": 283}, replay_calls=72,
        products={
            "bd8c4e15-18f9-11e7-80c2-0cc47ab29cd1": {
                "name": "Портативный коврик Portable 140x200x1 см, Деревянные лошадки", "sku": "PM-421-WP",
                "barcode": "8809288404089", "prices": {"BASE": 100}, "quantity": 377,
                "stock": {"Владивосток": 1, "Новосибирск": 0, "Москва": 376},
                "unit": PCS,  # Код="796 ": 1C pads the code
                "manufacturer": "CrazyBoom CO., LTD"},  # April said "Crazy Boom"
            "b631c9c1-49de-11e9-80c9-0cc47ab29cd1": {  # deleted in April, listed again in August
                "sku": "KM-245-BC", "active": True, "quantity": 1,
                "stock": {"Владивосток": 0, "Новосибирск": 1, "Москва": 0}},
            "617d93df-d568-11ea-80c9-0cc47ab29cd1": {  # August only: no offer
                "name": "Коврик Circular Mat 138x138x1.2 см, Точки", "sku": "CM-1382-MD",
                "barcode": "8809288410103", "prices": {}, "stock": {}},
        }),
    # Offers only (the 2.85 MB import.xml was not copied): 249 offers, 27 of them empty and skipped.
    "erp-ua-2.07": Folder(totals={"products": 0}, waiting=222),
    # Older 1C: the catalog lists the variants themselves as goods "p#c", with ХарактеристикиТовара;
    # the offers repeat names and prices only, which must not wipe those characteristics.
    "imega-2.04": Folder(
        totals={"products": 4},
        products={
            "348fceb0-219f-11e2-8401-001e8c60f11c#18b18a6d-66c6-11e2-8671-00259079b159": {
                "parent_external_id": "348fceb0-219f-11e2-8401-001e8c60f11c",
                "name": "Привод Blue-Ray DVD-RW Liteon iHBS112-115", "prices": {"Рублевая 4": 628200},
                "quantity": 1, "characteristics": {"ЦПП": "Импортер (628 156)"},
                "properties": Part({"Интерфейс подключения": "SATA"}),
                "groups": [{"id": "b53195b4-1da8-11e2-bdc7-001e8c60f11c", "name": "DVD-RW"}]},
            f"{P_LITEON}#8174ffbb-17c0-11e4-8372-00259079b159": {
                "parent_external_id": P_LITEON, "prices": {"Рублевая 4": 144800}, "quantity": 1266,
                "characteristics": {"ЦПП": "Импортер (135 351)"}},
        }),
    # Not from 1C (МойСклад style, base62 ids, numeric Ид "137"): tolerated all the same.
    "moysklad-2.04": Folder(
        totals={"products": 1},
        products={"137": {"name": "dev test my 137", "sku": None, "prices": {"Цена продажи": 45000},
                          "stock": {"Достоевская": 1}, "quantity": 1, "images": ["12345.png"],
                          "description": "тест описания для картинки"}}),
    # 1C's documentation example: variants as goods "p#c", USD prices, and orders.xml whose docs 2-3
    # are bare status updates (Номер по 1С, Проведен, Статус заказа) without sums or buyers.
    "off-doc-1c": Folder(
        totals={"products": 4, "contacts": 1, "deals": 3},
        products={
            f"{P_TABLE}#05e26d76-01e4-11dc-a411-00055d80a2d1": {
                "parent_external_id": P_TABLE, "name": "Стол обеденный", "quantity": 0,
                "prices": {"Закупочная": 4, "Оптовая": 5, "Плановая": 6, "Розничная": 7},
                "characteristics": {"Цвет": "Белый"}, "taxes": {"НДС": "18"}},
            f"{P_TABLE}#218a1598-044b-11dc-a414-00055d80a2d1": {"characteristics": {"Цвет": "Красный"}},
            "05e26d77-01e4-11dc-a411-00055d80a2d1#05e26d79-01e4-11dc-a411-00055d80a2d1": {
                "name": "Стулья", "prices": {}},  # no offer for it
        },
        contacts={"1#admin# admin": {"name": "admin"}},
        deals={
            "36": {"amount": 6734.47, "date": "2007-10-30T15:19:27"},
            "92": {"number": "92", "date": "2015-08-12T13:38:17", "amount": None, "number_1c": "MM92",
                   "facts": Part({"date_1c": "2015-08-12", "posted": True, "status": "Открыт", "deleted": False})},
            "93": {"number_1c": "MM93", "facts": Part({"posted": True})},
        }),
    # A changes-only package; the 2.05 prices use "12 356" presentations and 12356.00 values.
    "ready-script-2.05-changes": Folder(
        totals={"products": 2},
        products={
            P_DRESS: {"name": "Платье 2", "sku": "П2", "prices": {"Розничная": 12356}, "quantity": 0},
            f"{P_DRESS}#fd3fdddb-9964-11e3-9e81-00241d337dcd": {
                "parent_external_id": P_DRESS, "name": "Платье 2 (39, Красный)", "prices": {"Розничная": 12356},
                "quantity": 9, "characteristics": {"Размер": "39", "Цвет": "Красный"}},
        }),
    # УТ 11: counterparties (ИНН, bank accounts, contacts) and 1C→site order updates with Номер1С/Дата1С
    # elements and the payment/shipment requisites.
    "ut11-2.09-orders-contractors": Folder(
        totals={"companies": 5, "contacts": 0, "deals": 2},
        companies={
            "021e0e3f-e329-11db-95d9-505054503030": {
                "name": "ТД Уют", "inn": "181620360057", "kpp": None, "full_name": 'ТОО "ТД Уют"',
                "email": "Uyt@komp.kz", "phone": "+7 (3272) 25-39-39"},
            "c5b29133-e35a-11db-95d9-505054503030": {"name": "Банк ТуранАлем ОАО", "inn": "600520144856"},
            KIKINDA: {"name": "Kikinda (Сербия)", "inn": None},  # known from the documents only
        },
        deals={
            "142": {"company_external_id": KIKINDA, "date": "2015-06-29T15:39:10", "amount": 8186.84,
                    "currency": "RUB", "number_1c": "ТДЦУ-000001", "paid": True, "shipped": True,
                    "facts": Part({"posted": True, "date_1c": "2015-06-29", "payment_number": "ТДЦУ-000001",
                                   "shipment_number": "ТДЦУ-000003", "shipment_date": "2015-06-29T17:32:27"}),
                    "lines": [("cbcf493f-55bc-11d9-848a-00112f43529a", "1", "3338", "3338"),
                              ("bd72d913-55bc-11d9-848a-00112f43529a#b02e2814-720f-11df-b436-0015e92f2802",
                               "1", "3600", "3600")]},
            "235": {"amount": 4100, "number_1c": "ТДЦУ-000002", "paid": True, "shipped": False},
        }),
    # УТ 11 packaged changes-only export; its goods file (4 MB) is not in the snapshot, so all 978
    # offers of each of offers/prices/rests wait for their goods.
    "ut11-2.09-split-changes": Folder(totals={"products": 0}, waiting=3 * 978),
    # УТ 11 demo data cut down for a fixture: 3 goods, 14 offers.
    "ut11-demo-2.04-umi": Folder(
        totals={"products": 3}, waiting=11,
        products={
            "bd72d927-55bc-11d9-848a-00112f43529a": {
                "name": "Комбайн кухонный BINATONE FP 67", "sku": "КВ- 900", "quantity": 26, "stock": {},
                "prices": {"www.altaytextil.ru": 4293, "инет": 4293, "Новое соглашение": 4293,
                           "offers 31.08": 4293, "Exagreement": 4293}},
            "bd72d930-55bc-11d9-848a-00112f43529a": {"name": "Кофеварка JACOBS (Австрия)", "quantity": 29,
                                                     "prices": Part({"инет": 3037.5})},
        }),
}

# ---------------------------------------------------------------- tests


def test_every_reference_folder_has_expectations(reference: Path) -> None:
    assert reference_folders() == sorted(FOLDERS)


@pytest.mark.parametrize("name", sorted(FOLDERS))
def test_folder_syncs_once_and_exactly(reference: Path, tmp_path: Path, name: str) -> None:
    folder, expected = reference / "samples" / name, FOLDERS[name]
    cfg = write_config(tmp_path)

    # 1. One ingest of the folder (load order applies); a broken file is quarantined with a report.
    output = ingest(cfg, folder, expect=1 if expected.broken else 0)
    quarantine = tmp_path / "var" / "quarantine"
    held = sorted(p.name for p in quarantine.iterdir()) if quarantine.exists() else []
    reports = [p for p in held if p.endswith(".report.txt")]
    kept = [p for p in held if not p.endswith(".report.txt")]
    assert len(kept) == len(reports) == len(expected.broken), output
    assert all(any(p.endswith(b) for p in kept) for b in expected.broken), output

    # 2. The CRM shows what the files say.
    first = dump(cfg)
    for kind, count in expected.totals.items():
        assert len(first[kind]) == count, kind
    full = full_state(cfg)
    for kind in ("products", "companies", "contacts", "deals"):
        check_records(kind, getattr(expected, kind), first, full)
    assert cli_json("status", "-c", cfg, "--json")["waiting_offers"] == expected.waiting

    # 3. The same folder again (a file taken before is skipped, a quarantined one too), and a replay
    #    of every archived file, write nothing more.
    ingest(cfg, folder)
    assert dump(cfg)["calls"] == first["calls"]
    taken = [f for f in cli_json("archive", "-c", cfg, "list", "--json") if f["status"] != "quarantined"]
    code, output = run_cli("replay", "-c", cfg, *[str(f["id"]) for f in taken])
    assert code == 0, output
    replayed = dump(cfg)
    assert replayed["calls"] == first["calls"] + expected.replay_calls
    assert {**replayed, "calls": 0} == {**first, "calls": 0}  # the CRM ends exactly as it was

    # 4. Warnings are fine (1C deviates from its XSD all the time); errors only for a broken file.
    errors = [e for e in cli_json("journal", "-c", cfg, "--json") if e["status"] == "error"]
    assert [e for e in errors if e["step"] != "quarantine" or not expected.broken] == [], errors[:5]


# Goods that two folders lack (their import files were not copied), built by hand with the names the
# offers give: once they arrive, the waiting offers apply, with price types and warehouses named by
# the files that came before.
ERP_UA_CATALOG, UT11_CATALOG = "e9aa338a-3a64-47f2-a6cb-27ff3060e00e", "86bca4ea-eb3a-4beb-b0d6-2090dbef560e"
UT11_PRICE = "Типовое соглашение Интернет-МХТ"
LATE_GOODS = {  # folder: (catalog Ид, waiting offers per good, {good: (name, expected fields)})
    "erp-ua-2.07": (ERP_UA_CATALOG, 1, {
        "7899": ('Аудіокнига "Мисливські усмішки" Остап Вишня', {  # a numeric Ид
            "quantity": 23, "stock": Part({"Белінського магазин": 5, "Сім'ї Сосніних": 18, "Кондукторська": 0}),
            "prices": Part({"Ціни інтернет-магазину": 25, "Роздрібні ціни магазину": 24,
                            "Ціни для продажів НФ>ВК": 9.41})}),
        "ce0272e6-f544-11e3-85fa-00155d13641d": ('Книга "Календарик-незабарик" Тамара Коломієць', {
            "quantity": 0, "prices": Part({"Ціни інтернет-магазину": 24, "23%": 18.48})}),
    }),
    "ut11-2.09-split-changes": (UT11_CATALOG, 3, {  # one offer each in offers, prices and rests
        "26b0dc1e-4d66-11e4-99fe-003048c64779": (
            "Дезодорант для мужчин Чистая линия Фито защита без белых следов 150мл",
            {"prices": {UT11_PRICE: 181}, "stock": {"Оптовый": 1}, "quantity": 1}),
        "26b0dc1f-4d66-11e4-99fe-003048c64779": (
            "Дезодорант Чистая линия Фито легкая свежесть и дыхание кожи 150мл",
            {"prices": {UT11_PRICE: 138}, "stock": {"Оптовый": 0}, "quantity": 0}),
    }),
}


@pytest.mark.parametrize("name", sorted(LATE_GOODS))
def test_waiting_offers_apply_when_their_goods_arrive(reference: Path, tmp_path: Path, name: str) -> None:
    cfg = write_config(tmp_path)
    ingest(cfg, reference / "samples" / name)
    catalog_id, per_good, goods = LATE_GOODS[name]
    late = x.catalog([x.product(pid, title) for pid, (title, _) in goods.items()], full=False, catalog_id=catalog_id)
    x.write(tmp_path / "late", "import.xml", late)
    ingest(cfg, tmp_path / "late")
    shown = dump(cfg)
    check_records("products", {pid: {"name": title, **fields} for pid, (title, fields) in goods.items()},
                  shown, full_state(cfg))
    waiting = cli_json("status", "-c", cfg, "--json")["waiting_offers"]
    assert waiting == FOLDERS[name].waiting - per_good * len(goods)
    if name == "erp-ua-2.07":  # every price type and warehouse of the offer, none lost
        product = _by_id(shown["products"])["7899"]
        assert (len(product["prices"]), len(product["stock"])) == (12, 19)


# A private buyer (Фамилия/Имя, or Bitrix's person form) is a contact; the deal must name it.
PERSON_BUYERS = [("bitrix-doc-2.03-cp1251", "36", "1#admin# admin"),
                 ("bitrix-doc-2.03-cp1251", "20", "1#admin#Петров Петр"),
                 ("bitrix-sale-query-2.05-cp1251", "132", "38#catalog_exchange#"),
                 ("off-doc-1c", "36", "1#admin# admin")]


@pytest.mark.parametrize("name, deal, contact", PERSON_BUYERS)
def test_private_buyer_is_the_deals_contact(reference: Path, tmp_path: Path, name: str, deal: str,
                                            contact: str) -> None:
    cfg = write_config(tmp_path)
    ingest(cfg, reference / "samples" / name)
    full = full_state(cfg)
    assert contact in _by_id(full["contacts"])
    assert _by_id(full["deals"])[deal]["contact_external_id"] == contact


def test_replay_does_not_make_offers_wait_twice(reference: Path, tmp_path: Path) -> None:
    name = "ut11-demo-2.04-umi"  # 11 of its 14 offers wait for goods the folder does not contain
    cfg = write_config(tmp_path)
    ingest(cfg, reference / "samples" / name)
    taken = cli_json("archive", "-c", cfg, "list", "--json")
    code, output = run_cli("replay", "-c", cfg, *[str(f["id"]) for f in taken])
    assert code == 0, output
    assert cli_json("status", "-c", cfg, "--json")["waiting_offers"] == FOLDERS[name].waiting
