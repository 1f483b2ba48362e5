"""The inbound sync's guarantees, through the CLI, on real SQLite files and the sandbox CRM."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import stat
from pathlib import Path

import pytest

import exchange as x
from bridge.crm.sandbox import SandboxCrm
from conftest import SAMPLES, run_cli


def write_config(folder: Path, **mapping: object) -> Path:
    lines = ['[state]\npath = "var/bridge.db"', '[archive]\npath = "var/archive"\nquarantine = "var/quarantine"',
             '[crm]\nkind = "sandbox"\npath = "var/crm.db"', "[mapping]"]
    lines += [f"{k} = {json.dumps(v)}" for k, v in mapping.items()]
    path = folder / "bridge.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    return write_config(tmp_path)


def dump(cfg: Path) -> dict:
    code, output = run_cli("sandbox", "-c", cfg, "dump", "--json")
    assert code == 0, output
    return json.loads(output)


def products(cfg: Path) -> dict[str, dict]:
    return {p["external_id"]: p for p in dump(cfg)["products"]}


def ingest(cfg: Path, *paths: Path, expect: int = 0, extra: tuple[str, ...] = ()) -> str:
    code, output = run_cli("ingest", "-c", cfg, *extra, *paths)
    assert code == expect, output
    return output


def test_bundled_samples_apply_and_second_ingest_makes_no_calls(cfg: Path) -> None:
    ingest(cfg, SAMPLES / "exchange")
    first = dump(cfg)
    assert first["calls"] > 0
    by_id = {p["external_id"]: p for p in first["products"]}
    kettle = by_id["289a7cba-73c9-11ef-a3c6-00155d0a4e21"]
    assert kettle["prices"] == {"Розничная": 2490, "Оптовая": 2150}
    assert kettle["stock"] == {"Основной склад": 12, "Склад Север": 4} and kettle["quantity"] == 16
    variants = [p for p in first["products"] if p["parent_external_id"] == "29440104-73d3-11ef-a3c6-00155d0a4e21"]
    assert len(variants) == 3 and all(v["prices"] for v in variants)
    assert by_id["28ef3edf-73ce-11ef-a3c6-00155d0a4e21"]["active"] is False  # Статус="Удален": kept, inactive
    assert {c["inn"] for c in first["companies"]} >= {"7812045738", "502918437105"}
    assert len(first["deals"]) == 2

    ingest(cfg, SAMPLES / "exchange")
    assert dump(cfg)["calls"] == first["calls"]

    # Even the same files under new names (a new claim each) change nothing in the CRM.
    code, listing = run_cli("archive", "-c", cfg, "list", "--json")
    files = json.loads(listing)
    assert code == 0 and {f["status"] for f in files} == {"applied"}
    code, output = run_cli("replay", "-c", cfg, *[str(f["id"]) for f in files])
    assert code == 0, output
    assert dump(cfg)["calls"] == first["calls"]


def test_state_database_is_private_and_journal_tells_the_story(cfg: Path, tmp_path: Path) -> None:
    ingest(cfg, SAMPLES / "exchange" / "ut11")
    assert stat.S_IMODE(os.stat(tmp_path / "var" / "bridge.db").st_mode) == 0o600
    code, output = run_cli("journal", "-c", cfg, "--json", "--entity", "29440104-73d3-11ef-a3c6-00155d0a4e21")
    entries = json.loads(output)
    steps = {(e["step"], e["status"]) for e in entries}
    assert ("deliver", "ok") in steps
    delivered = [e for e in entries if e["step"] == "deliver"]
    assert all(e["detail"]["answer"] for e in delivered)  # the CRM's answer is kept
    # a product's journal includes its variants
    assert any("#" in e["external_id"] for e in entries)
    code, output = run_cli("status", "-c", cfg, "--json")
    status = json.loads(output)
    assert status["files"] == {"applied": 6} and status["outbox"]["pending"] == 0
    assert status["last_success"] is not None


def test_dry_run_prints_plan_and_changes_nothing(cfg: Path, tmp_path: Path) -> None:
    output = ingest(cfg, SAMPLES / "exchange" / "ut11", extra=("--dry-run",))
    assert "Plan (dry run" in output and "product" in output
    assert not (tmp_path / "var").exists()
    ingest(cfg, SAMPLES / "exchange" / "ut11")
    db = tmp_path / "var" / "bridge.db"
    before = (db.read_bytes(), dump(cfg))
    folder = tmp_path / "changed"
    x.write(folder, "import.xml", x.catalog([x.product("new-1", "Новый товар")], full=False))
    output = ingest(cfg, folder, extra=("--dry-run",))
    assert "product" in output and " 1 " in output
    assert (db.read_bytes(), dump(cfg)) == before


def test_hostile_file_is_quarantined_and_the_rest_applies(cfg: Path, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    x.write(folder, "import0_1.xml", x.catalog([x.product("p1", "Дрель"), x.product("p2", "Пила")]))
    broken = x.catalog([x.product("p3", "Молоток"), x.product("p4", "Клещи")], catalog_id="cat-2")
    x.write(folder, "import0_2.xml", broken[: broken.index("</Товары>")])  # truncated at the very end
    x.write(folder, "offers0_1.xml", x.offers([x.offer("p1", retail="100.50", stock={x.MAIN: 3})]))
    output = ingest(cfg, folder, expect=1)
    assert "quarantined" in output
    crm = products(cfg)
    assert set(crm) == {"p1", "p2"}  # nothing of p3/p4, although their records were read before the error
    assert crm["p1"]["prices"] == {"Розничная": 100.5} and crm["p1"]["stock"] == {"Основной склад": 3}
    reports = list((tmp_path / "var" / "quarantine").glob("*.report.txt"))
    assert len(reports) == 1
    text = reports[0].read_text(encoding="utf-8")
    assert "import0_2.xml" in text and "ends too early" in text and "bridge replay" in text
    assert len(list((tmp_path / "var" / "quarantine").glob("*import0_2.xml"))) == 1


def test_changes_only_touches_only_what_it_lists_and_full_export_deactivates(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, max_deactivate_share=0.5)
    folder = tmp_path / "1"
    x.write(folder, "import.xml", x.catalog([x.product(f"p{i}", f"Товар {i}") for i in range(1, 6)]))
    ingest(cfg, folder)
    assert {pid for pid, p in products(cfg).items() if not p["active"]} == set()

    changes = tmp_path / "2"
    x.write(changes, "import.xml", x.catalog([x.product("p1", "Товар 1 (новое имя)")], full=False))
    calls = dump(cfg)["calls"]
    ingest(cfg, changes)
    crm = products(cfg)
    assert crm["p1"]["name"] == "Товар 1 (новое имя)" and all(p["active"] for p in crm.values())
    assert dump(cfg)["calls"] == calls + 1

    full = tmp_path / "3"  # a full export without p5, and p4 deleted
    x.write(full, "import.xml", x.catalog([x.product(f"p{i}", f"Товар {i}") for i in range(1, 4)]
                                          + [x.product("p4", "Товар 4", deleted=True)]))
    ingest(cfg, full)
    crm = products(cfg)
    assert set(crm) == {f"p{i}" for i in range(1, 6)}  # never removed
    assert {k for k, p in crm.items() if not p["active"]} == {"p4", "p5"}


def test_full_export_over_the_interlock_is_refused_unless_forced(cfg: Path, tmp_path: Path) -> None:
    first = tmp_path / "1"
    x.write(first, "import.xml", x.catalog([x.product(f"p{i}", f"Товар {i}") for i in range(10)]))
    ingest(cfg, first)
    partial = tmp_path / "2"  # a "full" export that lists only 3 of 10: 70% would go
    x.write(partial, "import.xml", x.catalog([x.product(f"p{i}", f"Товар {i}") for i in range(3)]))
    output = ingest(cfg, partial, expect=1)
    assert "--force" in output
    assert {pid for pid, p in products(cfg).items() if not p["active"]} == set()
    code, output = run_cli("journal", "-c", cfg, "--json")
    assert any(e["status"] == "refused" for e in json.loads(output))
    ingest(cfg, partial, extra=("--force",))
    assert sum(not p["active"] for p in products(cfg).values()) == 7


def test_full_export_of_one_catalog_leaves_other_catalogs_alone(cfg: Path, tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    x.write(a, "import.xml", x.catalog([x.product("a1", "A1")], catalog_id="cat-A"))
    x.write(b, "import1.xml", x.catalog([x.product("b1", "B1"), x.product("b2", "B2")], catalog_id="cat-B"))
    ingest(cfg, a, b)
    x.write(a, "import.xml", x.catalog([x.product("a1", "A1 renamed")], catalog_id="cat-A"))
    ingest(cfg, a)
    assert {pid for pid, p in products(cfg).items() if not p["active"]} == set()


def test_counterparty_with_new_id_but_known_inn_kpp_updates_the_company(cfg: Path, tmp_path: Path) -> None:
    x.write(tmp_path / "1", "contragents.xml", x.counterparties([
        x.company("c-old", "Ромашка ООО", "7701234567", "770101001"),
        x.company("c-other", "Василек ООО", "7707654321", "770701001")]))
    ingest(cfg, tmp_path / "1")
    x.write(tmp_path / "2", "contragents.xml", x.counterparties([
        x.company("c-new", "Ромашка ООО (переименована)", "7701234567", "770101001")]))
    ingest(cfg, tmp_path / "2")
    companies = dump(cfg)["companies"]
    assert len(companies) == 2
    romashka = next(c for c in companies if c["inn"] == "7701234567")
    assert romashka["name"] == "Ромашка ООО (переименована)"


def test_offer_waits_for_its_product_then_applies(cfg: Path, tmp_path: Path) -> None:
    early = tmp_path / "early"
    x.write(early, "offers.xml", x.offers([x.offer("late-1", retail="99", stock={x.MAIN: 5})]))
    output = ingest(cfg, early)
    assert "wait" in output
    assert products(cfg) == {}
    late = tmp_path / "late"
    x.write(late, "import.xml", x.catalog([x.product("late-1", "Опоздавший товар")], full=False))
    ingest(cfg, late)
    crm = products(cfg)
    assert crm["late-1"]["prices"] == {"Розничная": 99} and crm["late-1"]["stock"] == {"Основной склад": 5}
    code, output = run_cli("journal", "-c", cfg, "--entity", "late-1")
    assert "waits for product late-1" in output and "released" in output


def test_record_refused_by_crm_is_journaled_and_retried_later(cfg: Path, tmp_path: Path) -> None:
    folder = tmp_path / "1"
    x.write(folder, "import.xml", x.catalog([x.product("p1", "Дрель"), x.product("p2", "")], full=False))
    x.write(folder, "offers.xml", x.offers([x.offer("p1", retail="10"), x.offer("p2", retail="20")]))
    output = ingest(cfg, folder, expect=1)  # the CRM refuses p2 (no name): the file is applied in part
    assert "refused" in output
    crm = products(cfg)
    assert set(crm) == {"p1"} and crm["p1"]["prices"] == {"Розничная": 10}
    code, output = run_cli("journal", "-c", cfg, "--json", "--entity", "p2")
    errors = [e for e in json.loads(output) if e["status"] == "error"]
    assert errors and "name must not be empty" in errors[0]["message"]
    code, output = run_cli("status", "-c", cfg, "--json")
    assert json.loads(output)["files"].get("partial") == 2

    fixed = tmp_path / "2"  # the next export names it; the refused operations are sent again
    x.write(fixed, "import.xml", x.catalog([x.product("p2", "Пила")], full=False))
    x.write(fixed, "offers.xml", x.offers([x.offer("p2", retail="20")]))
    ingest(cfg, fixed)
    assert products(cfg)["p2"]["prices"] == {"Розничная": 20}


def test_config_problems_are_all_reported_at_once(tmp_path: Path) -> None:
    cfg = tmp_path / "bridge.toml"
    cfg.write_text('[crm]\nkind = "salesforce"\ntoken = "abc"\n[mapping]\nmatch_products = ["sku"]\n'
                   'max_deactivate_share = 3\ncrm_owned_fields = ["product.colour"]\n[stat]\n', encoding="utf-8")
    code, output = run_cli("status", "-c", cfg)
    assert code == 2
    for needle in ("crm.kind", "crm.token", "mapping.max_deactivate_share", "product.colour", "stat: unknown section",
                   "match_"):
        assert needle in output, needle


def test_renamed_price_type_resends_unchanged_offers(cfg: Path, tmp_path: Path) -> None:
    # Offers are skipped by the digest of their XML; a renamed price type must still reach the CRM.
    x.write(tmp_path / "1", "import.xml", x.catalog([x.product("p1", "Дрель")], full=False))
    x.write(tmp_path / "1", "offers.xml", x.offers([x.offer("p1", retail="10")]))
    ingest(cfg, tmp_path / "1")
    renamed = x.offers([x.offer("p1", retail="10")]).replace(">Розничная<", ">Розница 2027<")
    x.write(tmp_path / "2", "offers.xml", renamed)
    ingest(cfg, tmp_path / "2")
    assert products(cfg)["p1"]["prices"] == {"Розничная": 10, "Розница 2027": 10}


def test_product_back_in_a_full_export_is_active_again(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, max_deactivate_share=0.5)
    goods = [x.product(f"p{i}", f"Товар {i}") for i in range(4)]
    x.write(tmp_path / "1", "import.xml", x.catalog(goods))
    ingest(cfg, tmp_path / "1")
    x.write(tmp_path / "2", "import.xml", x.catalog(goods[:3]))
    ingest(cfg, tmp_path / "2")
    assert products(cfg)["p3"]["active"] is False
    # p3's XML is exactly as before; the export itself is a new one (1C stamps ДатаФормирования)
    x.write(tmp_path / "3", "import.xml", x.catalog(goods).replace("2026-11-20T10:00:00", "2026-11-22T10:00:00"))
    ingest(cfg, tmp_path / "3")
    assert {pid for pid, p in products(cfg).items() if not p["active"]} == set()


def test_unchanged_reexport_under_new_names_makes_no_calls(cfg: Path, tmp_path: Path) -> None:
    for n in (1, 2):  # the same content, exported again at another time into another folder
        folder = tmp_path / str(n)
        catalog = x.catalog([x.product(f"p{i}", f"Товар {i}") for i in range(5)])
        x.write(folder, f"import{n}.xml", catalog.replace("2026-11-20T10:00:00", f"2026-11-2{n}T10:00:00"))
        x.write(folder, f"offers{n}.xml", x.offers([x.offer(f"p{i}", retail=str(10 + i), stock={x.MAIN: i})
                                                    for i in range(5)]))
        ingest(cfg, folder)
        if n == 1:
            calls = dump(cfg)["calls"]
    assert dump(cfg)["calls"] == calls


def test_unchanged_goods_are_not_even_built_after_the_offers_file(cfg: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    # The price types and warehouses an offers file brings must not make every product of the
    # next (unchanged) catalog look new: products depend on groups, properties and units only.
    from bridge.commerceml import build

    goods = [x.product(f"p{i}", f"Товар {i}") for i in range(6)]
    stamp = lambda text, day: text.replace("2026-11-20T10:00:00", f"2026-11-2{day}T10:00:00")  # noqa: E731
    for day in (1, 2):
        x.write(tmp_path / str(day), "import.xml", stamp(x.catalog(goods), day))
        x.write(tmp_path / str(day), "offers.xml", stamp(x.offers([x.offer(f"p{i}", retail="5") for i in range(6)]), day))
    ingest(cfg, tmp_path / "1")
    calls = dump(cfg)["calls"]
    built: list[str] = []
    real_product, real_offer = build.product, build.offer
    monkeypatch.setattr(build, "product", lambda e, *a: built.append("product") or real_product(e, *a))
    monkeypatch.setattr(build, "offer", lambda e, *a: built.append("offer") or real_offer(e, *a))
    ingest(cfg, tmp_path / "2")
    assert built == [] and dump(cfg)["calls"] == calls


@pytest.mark.parametrize("bulk_after", [0, 3, 10_000])
def test_unchanged_check_is_exact_one_by_one_and_in_bulk(cfg: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          bulk_after: int) -> None:
    # Past a number of lookups a file loads every digest at once; both ways must find the same changes.
    from bridge.sync import rawskip

    monkeypatch.setattr(rawskip, "BULK_AFTER", bulk_after)
    goods = [x.product(f"p{i}", f"Товар {i}") for i in range(30)]
    x.write(tmp_path / "1", "import.xml", x.catalog(goods, full=False))
    x.write(tmp_path / "1", "offers.xml", x.offers([x.offer(f"p{i}", retail=str(i + 1)) for i in range(30)]))
    ingest(cfg, tmp_path / "1")
    calls = dump(cfg)["calls"]
    goods[17] = x.product("p17", "Товар 17 (новое имя)")
    x.write(tmp_path / "2", "import.xml", x.catalog(goods, full=False).replace("10:00:00", "11:00:00"))
    x.write(tmp_path / "2", "offers.xml", x.offers([x.offer(f"p{i}", retail=str(i + 1 + (i == 4))) for i in range(30)])
            .replace("10:00:00", "11:00:00"))
    ingest(cfg, tmp_path / "2")
    after = dump(cfg)
    assert after["calls"] == calls + 2  # the renamed product and the one new price
    by_id = {p["external_id"]: p for p in after["products"]}
    assert by_id["p17"]["name"] == "Товар 17 (новое имя)" and by_id["p4"]["prices"] == {"Розничная": 6}
    assert by_id["p5"]["prices"] == {"Розничная": 6}


# -- regressions found on the real exports in ../shared (tests/test_sync_reference.py) --------------

def crm_record(cfg: Path, kind: str, external_id: str) -> dict:
    """Every field of one sandbox record (the dump shows the main ones only)."""
    from bridge.crm.sandbox import SandboxCrm

    crm = SandboxCrm(cfg.parent / "var" / "crm.db", read_only=True)
    try:
        return {r["external_id"]: r for r in crm.state()[kind]}[external_id]
    finally:
        crm.close()


def test_offer_without_characteristics_keeps_the_variants_own(cfg: Path, tmp_path: Path) -> None:
    # Older 1C lists variants as goods "p#c" with ХарактеристикиТовара; its offers repeat the name only.
    variant = x.product("p1#c1", "Стол").replace("</Товар>", "<ХарактеристикиТовара><ХарактеристикаТовара>"
                                                "<Наименование>Цвет</Наименование><Значение>Белый</Значение>"
                                                "</ХарактеристикаТовара></ХарактеристикиТовара></Товар>")
    x.write(tmp_path / "1", "import.xml", x.catalog([variant], full=False))
    x.write(tmp_path / "1", "offers.xml", x.offers([x.offer("p1#c1", retail="10", name="Стол обеденный")]))
    ingest(cfg, tmp_path / "1")
    table = crm_record(cfg, "products", "p1#c1")
    assert (table["name"], table["characteristics"], table["prices"]) == ("Стол обеденный", {"Цвет": "Белый"},
                                                                           {"Розничная": 10})


def test_base_unit_code_is_trimmed_and_named_from_the_classifier(cfg: Path, tmp_path: Path) -> None:
    # CommerceML 3.1 names the unit by its Ид only ("796 ", padded), the name is in ЕдиницыИзмерения;
    # 2.07 pads the Код attribute the same way.
    units = ("<ЕдиницыИзмерения><ЕдиницаИзмерения><Ид>796 </Ид><НаименованиеКраткое>шт</НаименованиеКраткое>"
             "<Код>796 </Код><НаименованиеПолное>Штука      </НаименованиеПолное></ЕдиницаИзмерения>"
             "</ЕдиницыИзмерения>")
    standard = '<БазоваяЕдиница Код="796" НаименованиеПолное="Штука" МеждународноеСокращение="PCE">шт</БазоваяЕдиница>'
    bare = x.product("p1", "Дрель").replace(standard, "<БазоваяЕдиница>796 </БазоваяЕдиница>")
    padded = x.product("p2", "Ламинат").replace(standard, '<БазоваяЕдиница Код="055 " НаименованиеПолное="Квадратный '
                                                          'метр">м2</БазоваяЕдиница>')
    catalog = x.catalog([bare, padded], full=False)
    x.write(tmp_path / "1", "import.xml", catalog.replace("</Группы></Классификатор>", f"</Группы>{units}</Классификатор>"))
    ingest(cfg, tmp_path / "1")
    assert crm_record(cfg, "products", "p1")["unit"] == {"code": "796", "name": "Штука"}
    assert crm_record(cfg, "products", "p2")["unit"] == {"code": "055", "name": "Квадратный метр"}


def test_1c_number_and_date_as_elements_reach_the_deal(cfg: Path, tmp_path: Path) -> None:
    # УТ 11 writes Номер1С/Дата1С as elements; older configurations as "Номер по 1С"/"Дата по 1С" requisites.
    document = (x.HEAD + "<Документ><Ид>o-17</Ид><Номер>17</Номер><Номер1С>ТД00-000017</Номер1С><Дата>2026-11-27"
                "</Дата><Дата1С>2026-11-27</Дата1С><ХозОперация>Заказ товара</ХозОперация><Роль>Продавец</Роль>"
                "<Валюта>RUB</Валюта><Курс>1</Курс><Сумма>100</Сумма><ЗначенияРеквизитов><ЗначениеРеквизита>"
                "<Наименование>Проведен</Наименование><Значение>true</Значение></ЗначениеРеквизита>"
                "</ЗначенияРеквизитов></Документ>" + x.TAIL)
    x.write(tmp_path / "1", "documents.xml", document)
    ingest(cfg, tmp_path / "1")
    [deal] = dump(cfg)["deals"]
    assert (deal["number_1c"], deal["facts"]["date_1c"], deal["facts"]["posted"]) == ("ТД00-000017", "2026-11-27", True)


def test_buyer_in_the_persons_form_is_a_contact(cfg: Path, tmp_path: Path) -> None:
    # 1C-Bitrix writes a buyer who left every name empty in the person's form of the XSD (ПолноеНаименование,
    # АдресРегистрации); УТ 11 gives organisations an АдресРегистрации too, next to ОфициальноеНаименование.
    person = ("<Контрагент><Ид>38#catalog_exchange#</Ид><Наименование></Наименование><ПолноеНаименование>"
              "</ПолноеНаименование><АдресРегистрации><Представление></Представление></АдресРегистрации>"
              "<Роль>Покупатель</Роль></Контрагент>\n")
    organisation = x.company("c-1", "ТД Уют", "181620360057", None).replace(
        "</Контрагент>", "<АдресРегистрации><Представление>Алматы</Представление></АдресРегистрации></Контрагент>")
    x.write(tmp_path / "1", "contragents.xml", x.counterparties([person, organisation]))
    ingest(cfg, tmp_path / "1")
    crm = dump(cfg)
    assert [c["external_id"] for c in crm["contacts"]] == ["38#catalog_exchange#"]
    assert [c["external_id"] for c in crm["companies"]] == ["c-1"]


def test_full_name_comes_from_the_requisite_when_1c_8_sends_it_that_way(cfg: Path, tmp_path: Path) -> None:
    good = x.product("p1", "Дрель").replace(
        "</Товар>", "<ЗначенияРеквизитов><ЗначениеРеквизита><Наименование>Полное наименование</Наименование>"
        "<Значение>Дрель ударная ДУ-800, 800 Вт</Значение></ЗначениеРеквизита></ЗначенияРеквизитов></Товар>")
    x.write(tmp_path / "1", "import.xml", x.catalog([good], full=False))
    ingest(cfg, tmp_path / "1")
    crm = SandboxCrm(tmp_path / "var" / "crm.db", read_only=True)
    try:
        stored = {p["external_id"]: p for p in crm.state()["products"]}
    finally:
        crm.close()
    assert stored["p1"]["full_name"] == "Дрель ударная ДУ-800, 800 Вт"


def test_a_package_is_archived_ahead_and_a_stopped_run_leaves_no_copy_behind(tmp_path: Path) -> None:
    from bridge.cli.context import load_config, state_connection
    from bridge.commerceml.files import expand_inputs
    from bridge.store import ledger
    from bridge.sync.pipeline import Pipeline

    config = load_config(write_config(tmp_path))
    incoming = tmp_path / "var" / "archive" / ".incoming"
    with state_connection(config) as conn, expand_inputs([SAMPLES / "exchange" / "ut11"]) as items:
        run = Pipeline(conn, config).ingest_all(items)
        first = next(run)  # the second file is being copied while the first is read
        run.close()  # stopped before the second file: its copy made ahead must not stay behind
        assert first.status == "committed"
        assert [row.status for row in ledger.all_files(conn)] == ["committed"]
    assert list(incoming.iterdir()) == []
    code, output = run_cli("ingest", "-c", tmp_path / "bridge.toml", SAMPLES / "exchange" / "ut11")
    assert code == 0 and output.count(": committed") == 5 and "already taken" in output
    with state_connection(config) as conn:
        rows = ledger.all_files(conn)
    assert len(rows) == 6 and all(Path(row.archive_path).is_file() for row in rows)
    assert list(incoming.iterdir()) == []


def test_a_torn_archived_copy_is_replaced_not_trusted(tmp_path: Path) -> None:
    # A copy stored without its fsync (it runs beside the reading) and cut short by a power loss
    # before the file was committed: taking the file again must not keep the torn bytes.
    from bridge.sync import archive

    source = tmp_path / "import.xml"
    source.write_bytes(b"<a>" + "Чайник".encode() * 10_000 + b"</a>")
    store = tmp_path / "archive"
    stored = archive.store(archive.take(source, store, durable=False), store, source.name)
    os.chmod(stored, 0o640)
    stored.write_bytes(source.read_bytes()[:1000])
    again = archive.store(archive.take(source, store), store, source.name)
    assert again == stored and again.read_bytes() == source.read_bytes()
    assert stat.S_IMODE(again.stat().st_mode) == 0o440 and list((store / ".incoming").iterdir()) == []


def test_a_state_database_from_before_the_product_only_catalog_index_still_deactivates(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, max_deactivate_share=0.5)
    first = tmp_path / "1"
    x.write(first, "import.xml", x.catalog([x.product(f"p{i}", f"Товар {i}") for i in range(1, 6)]))
    ingest(cfg, first)
    # Put the database back in the shape schema version 6 left: the catalog index over every entity.
    with sqlite3.connect(tmp_path / "var" / "bridge.db") as conn:
        conn.executescript("DROP INDEX records_catalog;"
                           " CREATE INDEX records_catalog ON records(entity, catalog_id, active);"
                           " ALTER TABLE orders DROP COLUMN written_at;"  # what migration 8 adds
                           " PRAGMA user_version = 6;")
    full = tmp_path / "2"  # a full export without p5
    x.write(full, "import.xml", x.catalog([x.product(f"p{i}", f"Товар {i}") for i in range(1, 5)]))
    ingest(cfg, full)
    assert {k for k, p in products(cfg).items() if not p["active"]} == {"p5"}
    with sqlite3.connect(tmp_path / "var" / "bridge.db") as conn:
        (sql,) = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'records_catalog'").fetchone()
        assert "WHERE entity = 'product'" in sql and conn.execute("PRAGMA user_version").fetchone()[0] >= 7


def _crm_products(cfg: Path) -> dict[str, dict]:
    crm = SandboxCrm(cfg.parent / "var" / "crm.db", read_only=True)
    try:
        return {p["external_id"]: p for p in crm.state()["products"]}
    finally:
        crm.close()


_COLOURS = ("<Свойства><Свойство><Ид>prop-color</Ид><Наименование>Цвет</Наименование><ТипЗначений>Справочник"
            "</ТипЗначений><ВариантыЗначений><Справочник><ИдЗначения>val-red</ИдЗначения><Значение>Красный</Значение>"
            "</Справочник><Справочник><ИдЗначения>val-black</ИдЗначения><Значение>Черный</Значение></Справочник>"
            "</ВариантыЗначений></Свойство></Свойства>")


def _coloured(pid: str, *values: str) -> str:
    refs = "".join(f"<Значение>{v}</Значение>" for v in values)
    return x.product(pid, f"Товар {pid}").replace(
        "</Товар>", f"<ЗначенияСвойств><ЗначенияСвойства><Ид>prop-color</Ид>{refs}</ЗначенияСвойства>"
                    "</ЗначенияСвойств></Товар>")


def test_property_values_resolve_through_a_list_sent_in_an_earlier_file_and_keep_every_value(
        cfg: Path, tmp_path: Path) -> None:
    package = tmp_path / "package"
    # The classifier (with the property's list) in one file, the goods in the next, as packaged exports do.
    x.write(package, "import0_1.xml", x.HEAD + f"<Классификатор><Ид>{x.CATALOG}</Ид><Наименование>К</Наименование>"
            + _COLOURS + "</Классификатор>" + x.TAIL)
    x.write(package, "import1_1.xml", x.catalog([_coloured("p1", "val-red"), _coloured("p2", "val-red", "val-black")],
                                                full=False).replace(x.catalog([], full=False).split("<Каталог")[0],
                                                                    x.HEAD))
    ingest(cfg, package)
    stored = _crm_products(cfg)
    assert stored["p1"]["properties"] == {"Цвет": "Красный"}
    assert stored["p2"]["properties"] == {"Цвет": "Красный; Черный"}


def test_a_variant_offer_carries_its_own_properties(cfg: Path, tmp_path: Path) -> None:
    x.write(tmp_path / "1", "import.xml", x.catalog([x.product("p1", "Куртка")]).replace(
        "<Группы>", _COLOURS + "<Группы>"))
    variant = x.offer("p1#c1", retail="10500", name="Куртка (красная)").replace(
        "<Цены>", "<ЗначенияСвойств><ЗначенияСвойства><Ид>prop-color</Ид><Значение>val-red</Значение>"
                  "</ЗначенияСвойства></ЗначенияСвойств><Цены>")
    x.write(tmp_path / "1", "offers.xml", x.offers([variant]))
    ingest(cfg, tmp_path / "1")
    assert _crm_products(cfg)["p1#c1"]["properties"] == {"Цвет": "Красный"}


def test_a_full_export_deactivates_a_variant_listed_as_a_good_that_it_no_longer_lists(cfg: Path, tmp_path: Path) -> None:
    goods = [x.product(f"a{i}", f"Товар {i}") for i in range(1, 11)]
    variants = [x.product(v, f"Вариант {v}") for v in ("v1#c1", "v1#c2", "v2#c1")]  # 1C 8.x: variants as goods
    x.write(tmp_path / "1", "import.xml", x.catalog(goods + variants))
    ingest(cfg, tmp_path / "1")
    x.write(tmp_path / "2", "import.xml", x.catalog(goods + variants[:1]))
    ingest(cfg, tmp_path / "2")
    active = {pid: p["active"] for pid, p in products(cfg).items()}
    assert active["v1#c1"] and all(active[f"a{i}"] for i in range(1, 11))
    assert not active["v1#c2"] and not active["v2#c1"]
    # Listed again (in a new export: an identical file would be skipped as taken): active again.
    x.write(tmp_path / "3", "import.xml", x.catalog(goods + variants).replace("2026-11-20T10:00:00", "2026-11-21T10:00:00"))
    ingest(cfg, tmp_path / "3")
    assert {pid for pid, p in products(cfg).items() if not p["active"]} == set()


def test_a_deletion_mark_on_an_offer_deactivates_its_product_until_1c_clears_it(cfg: Path, tmp_path: Path) -> None:
    x.write(tmp_path / "1", "import.xml", x.catalog([x.product(p, f"Товар {p}") for p in ("p1", "p2", "p3")]))
    deleted_by_status = x.offer("p1", retail="100").replace("<Цены>", "<Статус>Удален</Статус><Цены>")
    deleted_by_mark = x.offer("p2", retail="200").replace("<Цены>", "<ПометкаУдаления>true</ПометкаУдаления><Цены>")
    x.write(tmp_path / "1", "offers.xml", x.offers([deleted_by_status, deleted_by_mark, x.offer("p3", retail="300")]))
    ingest(cfg, tmp_path / "1")
    assert {pid: p["active"] for pid, p in products(cfg).items()} == {"p1": False, "p2": False, "p3": True}
    assert products(cfg)["p3"]["prices"] == {"Розничная": 300}

    def offer_rows() -> list[str]:
        with sqlite3.connect(cfg.parent / "var" / "bridge.db") as conn:
            rows = [r[0] for r in conn.execute("SELECT external_id FROM outbox WHERE entity = 'offer_active' ORDER BY id")]
        conn.close()
        return rows

    assert offer_rows() == ["p1", "p2"]  # nothing for the offers without a mark
    # The next export: 1C cleared p1's mark.
    x.write(tmp_path / "2", "offers.xml", x.offers([x.offer("p1", retail="100"), deleted_by_mark,
                                                     x.offer("p3", retail="300")]).replace("2026-11-20", "2026-11-21"))
    ingest(cfg, tmp_path / "2")
    assert {pid: p["active"] for pid, p in products(cfg).items()} == {"p1": True, "p2": False, "p3": True}
    assert offer_rows() == ["p1", "p2", "p1"]


def test_requisites_nested_in_the_legal_entity_block_reach_the_company(cfg: Path, tmp_path: Path) -> None:
    # CommerceML 2.05+ may put an organisation's requisites in ЮридическоеЛицо, its legal address
    # and bank accounts included (elements with children of their own).
    nested = ("<Контрагент><Ид>c-9</Ид><Наименование>Уют</Наименование><ЮридическоеЛицо>"
              "<ОфициальноеНаименование>ООО \"Уют\"</ОфициальноеНаименование>"
              "<ЮридическийАдрес><Представление>Казань, ул. Баумана, 1</Представление></ЮридическийАдрес>"
              "<ИНН>1655000000</ИНН><КПП>165501001</КПП><ОКПО>12345678</ОКПО>"
              "<РасчетныеСчета><РасчетныйСчет><НомерСчета>40702810000000000001</НомерСчета>"
              "<Банк><Наименование>Банк</Наименование><БИК>049205603</БИК></Банк></РасчетныйСчет></РасчетныеСчета>"
              "</ЮридическоеЛицо><Роль>Покупатель</Роль></Контрагент>\n")
    x.write(tmp_path / "1", "contragents.xml", x.counterparties([nested]))
    ingest(cfg, tmp_path / "1")
    company = crm_record(cfg, "companies", "c-9")
    assert (company["full_name"], company["inn"], company["kpp"], company["okpo"]) == (
        'ООО "Уют"', "1655000000", "165501001", "12345678")
    assert company["addresses"] == [{"kind": "ЮридическийАдрес", "text": "Казань, ул. Баумана, 1"}]
    assert [(a["number"], a["bik"]) for a in company["bank_accounts"]] == [("40702810000000000001", "049205603")]


def test_property_listed_again_without_its_values_keeps_them(cfg: Path, tmp_path: Path) -> None:
    # A changes-only classifier may list a property (renamed here) without ВариантыЗначений; goods
    # still name its values by Ид, so the values known from the earlier export must stay.
    def classifier(values: str) -> str:
        return ("<Классификатор><Ид>cat-0001</Ид><Наименование>Классификатор</Наименование><Свойства><Свойство>"
                "<Ид>prop-colour</Ид><Наименование>Цвет товара</Наименование><ТипЗначений>Справочник</ТипЗначений>"
                f"{values}</Свойство></Свойства></Классификатор>\n")

    def good(pid: str) -> str:
        return x.product(pid, "Кресло").replace("</Товар>", "<ЗначенияСвойств><ЗначенияСвойства><Ид>prop-colour</Ид>"
                                                "<Значение>val-red</Значение></ЗначенияСвойства></ЗначенияСвойств></Товар>")

    def export(values: str, goods: list[str]) -> str:
        head, rest = x.catalog(goods, full=False).split("<Классификатор>")
        return head + classifier(values) + rest.split("</Классификатор>\n", 1)[1]

    variants = ("<ВариантыЗначений><Справочник><ИдЗначения>val-red</ИдЗначения><Значение>Красный</Значение>"
                "</Справочник></ВариантыЗначений>")
    x.write(tmp_path / "1", "import.xml", export(variants, [good("p1")]))
    ingest(cfg, tmp_path / "1")
    x.write(tmp_path / "2", "import.xml", export("", [good("p2")]))
    ingest(cfg, tmp_path / "2")
    assert crm_record(cfg, "products", "p1")["properties"] == {"Цвет товара": "Красный"}
    assert crm_record(cfg, "products", "p2")["properties"] == {"Цвет товара": "Красный"}


@pytest.mark.parametrize("damage", ["corrupt", "future"])
def test_unusable_state_database_is_one_clear_line_for_every_command(cfg: Path, tmp_path: Path, damage: str) -> None:
    db = tmp_path / "var" / "bridge.db"
    db.parent.mkdir(parents=True)
    if damage == "corrupt":
        db.write_bytes(os.urandom(64 * 1024))
    else:
        with sqlite3.connect(db) as conn:
            conn.execute("PRAGMA user_version = 99")
        conn.close()
    expected = "not a database" if damage == "corrupt" else "newer than this bridge"
    for args in (["status"], ["journal"], ["archive", "list"], ["replay", "1"], ["replay", "--dry-run", "1"],
                 ["ingest", "--dry-run", str(SAMPLES / "exchange" / "ut11")]):
        code, output = run_cli(*args[:1], "-c", cfg, *args[1:])  # run_cli lets a traceback fail the test
        assert code == 2 and expected in output, (args, output)


def test_dry_run_on_a_state_with_history_leaves_the_state_folder_as_it_was(cfg: Path, tmp_path: Path) -> None:
    ingest(cfg, SAMPLES / "exchange" / "ut11")
    var = tmp_path / "var"

    def listing() -> dict[str, bytes]:
        return {str(p.relative_to(var)): (p.read_bytes() if p.is_file() else b"") for p in sorted(var.rglob("*"))}

    before = listing()
    assert not any(name.endswith(("-wal", "-shm")) for name in before)
    ingest(cfg, SAMPLES / "exchange" / "legacy-cp1251", extra=("--dry-run",))
    code, output = run_cli("replay", "-c", cfg, "--dry-run", "1")
    assert code == 0, output
    assert listing() == before  # not even a -wal or -shm beside the state database


def test_replay_of_a_quarantined_zip_checks_it_as_a_zip_again(cfg: Path, tmp_path: Path) -> None:
    import zipfile

    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as z:
        z.writestr("../evil.xml", "<x/>")
    first = ingest(cfg, evil, expect=1)
    assert "climbs out of its folder" in first
    code, output = run_cli("archive", "-c", cfg, "list", "--json")
    [row] = json.loads(output)
    code, output = run_cli("replay", "-c", cfg, str(row["id"]))
    assert code == 1 and "quarantined" in output
    assert "climbs out of its folder" in output and "not an XML file" not in output, output


def test_unknown_sandbox_crm_keys_are_reported_with_the_rest(tmp_path: Path) -> None:
    cfg = tmp_path / "bridge.toml"
    cfg.write_text('[crm]\nkind = "sandbox"\npth = "var/other-crm.db"\n[mapping]\nmax_deactivate_share = -1\n',
                   encoding="utf-8")
    code, output = run_cli("status", "-c", cfg)
    assert code == 2 and "crm.pth: unknown key" in output and "mapping.max_deactivate_share" in output, output


def test_dry_run_plan_counts_deactivated_variants_as_variants(cfg: Path, tmp_path: Path) -> None:
    ingest(cfg, SAMPLES / "exchange" / "ut11")
    [source] = (SAMPLES / "exchange" / "ut11").glob("import___*.xml")
    goods = iter(range(100))
    text = re.sub(r"(?s)<Товар>.*?</Товар>", lambda m: m.group(0) if next(goods) < 2 else "",
                  source.read_text(encoding="utf-8"))
    x.write(tmp_path / "small", "import.xml", text)  # a full export that lists the first two goods only
    output = ingest(cfg, tmp_path / "small", extra=("--dry-run", "--force"))
    rows = {line.split()[0]: line.split()[1:] for line in output.splitlines() if line.startswith("  ") and
            len(line.split()) == 6}
    # 8 of the 10 active products go, and with them the 6 variants of the two goods that have some
    assert rows["product"][-1] == "8" and rows["variant"][-1] == "6", output


def test_a_file_taken_before_prints_no_plan_when_skipped(cfg: Path) -> None:
    ingest(cfg, SAMPLES / "exchange" / "ut11")
    calls = dump(cfg)["calls"]
    for extra in ((), ("--dry-run",)):
        again = ingest(cfg, SAMPLES / "exchange" / "ut11", extra=extra)
        assert "skipped" in again and not re.search(r"create \d", again), again  # this run created nothing
    assert dump(cfg)["calls"] == calls


def test_a_characteristic_listed_several_times_at_product_level_keeps_every_value(cfg: Path) -> None:
    # УТ 11 lists a good's sizes as repeated ХарактеристикаТовара (Размер 48, 50, 52): all of them, not the last.
    ingest(cfg, SAMPLES / "exchange" / "ut11" / "import___0c6f2b9e-4d1a-4f7b-9a53-8e2d61c7f4a0.xml")
    stored = _crm_products(cfg)
    assert stored["29440104-73d3-11ef-a3c6-00155d0a4e21"]["characteristics"] == {"Размер": "48; 50; 52"}
    assert stored["2954f4a5-73d4-11ef-a3c6-00155d0a4e21"]["characteristics"] == {"Размер": "41; 42; 43"}


def test_a_good_deleted_by_a_status_element_is_deactivated(cfg: Path, tmp_path: Path) -> None:
    x.write(tmp_path / "1", "import.xml", x.catalog([x.product("p1", "Дрель"), x.product("p2", "Пила")], full=False))
    ingest(cfg, tmp_path / "1")
    gone = x.product("p2", "Пила").replace("</Товар>", "<Статус>Удален</Статус></Товар>")
    x.write(tmp_path / "2", "import.xml", x.catalog([gone], full=False))
    ingest(cfg, tmp_path / "2")
    assert {k: p["active"] for k, p in products(cfg).items()} == {"p1": True, "p2": False}


def test_journal_since_takes_the_times_support_types(cfg: Path) -> None:
    ingest(cfg, SAMPLES / "exchange" / "ut11")
    for since in ("2000-01-01", "2000-01-01 10:00", "2000-01-01T10:00:00Z", "2000-01-01T13:00:00+03:00", "2h"):
        code, output = run_cli("journal", "-c", cfg, "--json", "--since", since)
        assert code == 0 and json.loads(output), (since, output)
    code, output = run_cli("journal", "-c", cfg, "--json", "--since", "2999-01-01")
    assert code == 0 and json.loads(output) == []  # nothing happened after it
    code, output = run_cli("journal", "-c", cfg, "--since", "yesterday-ish")
    assert code == 2 and "--since" in output and "'yesterday-ish' is not a time" in output


def test_a_number_beyond_any_amount_is_a_warning_and_the_rest_of_the_offer_applies(cfg: Path, tmp_path: Path) -> None:
    x.write(tmp_path / "1", "import.xml", x.catalog([x.product("p1", "Дрель")], full=False))
    x.write(tmp_path / "1", "offers.xml", x.offers([x.offer("p1", retail="1e400", wholesale="900",
                                                            stock={x.MAIN: 3})]))
    output = ingest(cfg, tmp_path / "1")
    assert "beyond any amount" in run_cli("journal", "-c", cfg)[1]
    [p1] = dump(cfg)["products"]
    assert (p1["prices"], p1["stock"]) == ({"Оптовая": 900}, {"Основной склад": 3}), output
