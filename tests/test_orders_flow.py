"""CRM -> 1C and back: an agreed deal becomes one 1C order; 1C's payments and shipments move the deal."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

import exchange as x
from bridge.commerceml.reader import FileReader
from bridge.commerceml.records import Document
from bridge.crm.base import UPSERT_PRODUCT, Operation
from bridge.crm.sandbox import SandboxCrm
from conftest import REPO, SAMPLES

KETTLE = "289a7cba-73c9-11ef-a3c6-00155d0a4e21"
JACKET_48 = "29440104-73d3-11ef-a3c6-00155d0a4e21#2dde9546-7655-11ef-a3c6-00155d0a4e21"
MANUFACTURE = "2d85ce3f-776e-11ef-a3c6-00155d0a4e21"


def bridge(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bridge", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=120, env=dict(os.environ))


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    (tmp_path / "in").mkdir()
    path = tmp_path / "bridge.toml"
    path.write_text("""
[state]
path = "var/bridge.db"
[archive]
path = "var/archive"
quarantine = "var/quarantine"
[crm]
kind = "sandbox"
path = "var/crm.db"
[[source]]
name = "ut11"
kind = "folder"
path = "in"
min_age = 0
[orders]
trigger_stages = ["agreed"]
organisation = "ООО «Торговый дом»"
[outgoing]
kind = "folder"
path = "to-1c"
profile = "ut11"
encoding = "utf-8-bom"
file_name = "orders-{id}.xml"
[statuses]
paid = "paid"
shipped = "shipped"
cancelled = "lost"
""", encoding="utf-8")
    result = bridge("ingest", "-c", str(path), str(SAMPLES / "exchange" / "ut11"))
    assert result.returncode == 0, result.stdout + result.stderr
    return path


def run_once(cfg: Path) -> None:
    result = bridge("run", "-c", str(cfg), "--once")
    assert result.returncode == 0, result.stderr


def add_deal(cfg: Path, spec: dict) -> str:
    deal_file = cfg.parent / "deal.json"
    deal_file.write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")
    result = bridge("sandbox", "-c", str(cfg), "deal", "add", str(deal_file))
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def deals(cfg: Path) -> dict[str, dict]:
    result = bridge("sandbox", "-c", str(cfg), "dump", "--json")
    return {d["id"]: d for d in json.loads(result.stdout)["deals"]}


def outgoing(cfg: Path) -> list[Path]:
    folder = cfg.parent / "to-1c"
    return sorted(folder.iterdir()) if folder.exists() else []


def status_document(order_id: str, generated: str, requisites: dict[str, str]) -> str:
    values = "".join(f"<ЗначениеРеквизита><Наименование>{k}</Наименование><Значение>{v}</Значение></ЗначениеРеквизита>"
                     for k, v in requisites.items())
    return (x.HEAD.replace("2026-11-20T10:00:00", generated) +
            f"<Документ><Ид>{order_id}</Ид><Номер>ТД00-000777</Номер><Дата>2026-11-27</Дата><ХозОперация>Заказ товара"
            f"</ХозОперация><Роль>Продавец</Роль><Валюта>RUB</Валюта><Курс>1</Курс><Сумма>9580</Сумма>"
            f"<ЗначенияРеквизитов>{values}</ЗначенияРеквизитов></Документ>" + x.TAIL)


def test_agreed_deal_becomes_one_order_and_follows_changes(cfg: Path) -> None:
    deal_id = add_deal(cfg, {"title": "Чайники для офиса", "stage": "new", "company_external_id": MANUFACTURE,
                             "lines": [{"product_external_id": KETTLE, "quantity": 2, "price": 2490, "vat_rate": 20},
                                       {"product_external_id": JACKET_48, "quantity": 1, "price": 4290}],
                             "delivery": 300})
    run_once(cfg)
    assert outgoing(cfg) == []  # not agreed yet

    assert bridge("sandbox", "-c", str(cfg), "deal", "stage", deal_id, "agreed").returncode == 0
    run_once(cfg)
    [order_file] = outgoing(cfg)
    data = order_file.read_bytes()
    assert data.startswith(b'\xef\xbb\xbf<?xml version="1.0" encoding="UTF-8"?>')
    [document] = [r for r in FileReader(order_file).records() if isinstance(r, Document)]
    assert order_file.name == f"orders-{document.id}.xml"
    assert document.amount == 2 * 2490 + 4290 + 300
    assert [(line.product_id, line.characteristic_id) for line in document.lines] == [
        (KETTLE, None), tuple(JACKET_48.split("#")), ("ORDER_DELIVERY", None)]
    assert document.counterparties[0].id == MANUFACTURE and document.counterparties[0].inn == "7812045738"
    assert document.requisites["Организация"] == "ООО «Торговый дом»"
    assert deals(cfg)[deal_id]["order_external_id"] == document.id

    run_once(cfg)  # nothing changed: the file is not written again
    assert outgoing(cfg) == [order_file] and order_file.read_bytes() == data

    crm = SandboxCrm(cfg.parent / "var" / "crm.db")
    try:
        crm.update_deal(deal_id, {"lines": [{"product_external_id": KETTLE, "quantity": 3, "price": 2490}]})
    finally:
        crm.close()
    run_once(cfg)
    [again] = outgoing(cfg)  # the same Ид, the same name: overwritten, never a second order
    [updated] = [r for r in FileReader(again).records() if isinstance(r, Document)]
    assert again == order_file and updated.id == document.id and updated.amount == 3 * 2490 + 300


def test_statuses_from_1c_move_the_deal_and_an_older_document_does_not(cfg: Path) -> None:
    deal_id = add_deal(cfg, {"title": "Куртки", "stage": "agreed", "company_external_id": MANUFACTURE,
                             "lines": [{"product_external_id": JACKET_48, "quantity": 2, "price": 4290}]})
    run_once(cfg)
    order_id = deals(cfg)[deal_id]["order_external_id"]
    assert order_id
    paid = {"Проведен": "true", "Номер по 1С": "ТД00-000777", "Дата по 1С": "2026-11-27T10:00:00",
            "Номер оплаты по 1С": "ТД00-000101", "Дата оплаты по 1С": "2026-11-27T12:00:00"}
    x.write(cfg.parent / "in", "documents_2.xml", status_document(order_id, "2026-11-27T12:05:00", paid))
    run_once(cfg)
    deal = deals(cfg)[deal_id]
    assert (deal["stage"], deal["paid"], deal["shipped"], deal["number_1c"]) == ("paid", True, False, "ТД00-000777")
    assert deal["amount"] == 8580  # the CRM's own content is not overwritten by 1C's echo

    older = {"Проведен": "true", "Отменен": "true"}
    x.write(cfg.parent / "in", "documents_1.xml", status_document(order_id, "2026-11-27T09:00:00", older))
    run_once(cfg)
    assert deals(cfg)[deal_id]["stage"] == "paid"
    assert "stale" in bridge("journal", "-c", str(cfg), "--entity", order_id).stdout

    shipped = {**paid, "Номер отгрузки по 1С": "ТД00-000202", "Дата отгрузки по 1С": "2026-11-28T09:00:00"}
    x.write(cfg.parent / "in", "documents_3.xml", status_document(order_id, "2026-11-28T09:05:00", shipped))
    run_once(cfg)
    assert deals(cfg)[deal_id]["stage"] == "shipped"
    assert len(outgoing(cfg)) == 1  # the deal moved, its order did not change: no new file



def test_generation_stamps_with_offsets_are_compared_in_one_clock(cfg: Path) -> None:
    # МойСклад writes ДатаФормирования with +03:00, others with Z: 10:00Z is an hour after 12:00+03:00,
    # so the shipment it reports is the newer state, not a stale one.
    deal_id = add_deal(cfg, {"title": "Куртки", "stage": "agreed", "company_external_id": MANUFACTURE,
                             "lines": [{"product_external_id": JACKET_48, "quantity": 1, "price": 4290}]})
    run_once(cfg)
    order_id = deals(cfg)[deal_id]["order_external_id"]
    paid = {"Проведен": "true", "Номер оплаты по 1С": "ТД00-000101", "Дата оплаты по 1С": "2026-11-27T12:00:00"}
    x.write(cfg.parent / "in", "documents_1.xml", status_document(order_id, "2026-11-27T12:00:00+03:00", paid))
    run_once(cfg)
    assert deals(cfg)[deal_id]["stage"] == "paid"
    shipped = {**paid, "Номер отгрузки по 1С": "ТД00-000202", "Дата отгрузки по 1С": "2026-11-27T10:00:00"}
    x.write(cfg.parent / "in", "documents_2.xml", status_document(order_id, "2026-11-27T10:00:00Z", shipped))
    run_once(cfg)
    assert deals(cfg)[deal_id]["stage"] == "shipped"
    older = {"Проведен": "true", "Отменен": "true"}  # 08:30Z is before 12:00+03:00 (09:00Z): stale
    x.write(cfg.parent / "in", "documents_3.xml", status_document(order_id, "2026-11-27T08:30:00Z", older))
    run_once(cfg)
    assert deals(cfg)[deal_id]["stage"] == "shipped"

def test_a_deal_made_from_a_1c_order_is_not_sent_back_to_1c_as_a_new_order(cfg: Path) -> None:
    [deal_id] = [i for i, d in deals(cfg).items() if d["order_external_id"] == "10457"]  # made by 1C's document
    assert bridge("sandbox", "-c", str(cfg), "deal", "stage", deal_id, "agreed").returncode == 0
    run_once(cfg)
    assert outgoing(cfg) == []  # 1C has this order: a second one would duplicate it
    assert deals(cfg)[deal_id]["order_external_id"] == "10457"  # still found by what 1C sends about it


def test_a_deal_that_cannot_become_an_order_waits_for_its_data(cfg: Path) -> None:
    crm = SandboxCrm(cfg.parent / "var" / "crm.db")
    try:  # a product someone made in the CRM by hand: 1C has never sent it
        [result] = crm.apply([Operation(UPSERT_PRODUCT, "hand-made-1", {"external_id": "hand-made-1",
                                                                        "name": "Пылесос", "active": True})])
        assert result.ok
    finally:
        crm.close()
    deal_id = add_deal(cfg, {"title": "Пылесос", "stage": "agreed", "company_external_id": MANUFACTURE,
                             "lines": [{"product_external_id": "hand-made-1", "quantity": 1, "price": 9000}]})
    run_once(cfg)
    assert outgoing(cfg) == []
    journal = bridge("journal", "-c", str(cfg), "--entity", deal_id).stdout
    assert "cannot become an order yet" in journal and "hand-made-1" in journal

    x.write(cfg.parent / "in", "import.xml", x.catalog([x.product("hand-made-1", "Пылесос")], full=False))
    run_once(cfg)  # 1C sent the product: the waiting deal becomes an order
    assert len(outgoing(cfg)) == 1


def test_render_prints_the_order_a_deal_would_produce(cfg: Path) -> None:
    deal_id = add_deal(cfg, {"title": "Проверка шаблона", "stage": "new", "company_external_id": MANUFACTURE,
                             "lines": [{"product_external_id": KETTLE, "quantity": 1, "price": 2490}]})
    result = subprocess.run([sys.executable, "-m", "bridge", "render", "-c", str(cfg), "--deal", deal_id,
                             "--profile", "bitrix-module", "--encoding", "windows-1251"], cwd=REPO,
                            capture_output=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(b'<?xml version="1.0" encoding="windows-1251"?>')
    assert "Контейнер".encode("cp1251") in result.stdout and "Чайник".encode("cp1251") in result.stdout
    assert outgoing(cfg) == []  # render writes nothing


def test_an_order_changed_while_its_target_was_away_is_never_overwritten_by_the_older_version(cfg: Path) -> None:
    blocker = cfg.parent / "to-1c"
    blocker.write_text("the share is not mounted", encoding="utf-8")  # a file where the folder should be
    deal_id = add_deal(cfg, {"title": "Чайники", "stage": "agreed", "company_external_id": MANUFACTURE,
                             "lines": [{"product_external_id": KETTLE, "quantity": 1, "price": 2490}]})
    run_once(cfg)  # version 1 cannot be written: it waits with a backoff
    crm = SandboxCrm(cfg.parent / "var" / "crm.db")
    try:
        crm.update_deal(deal_id, {"lines": [{"product_external_id": KETTLE, "quantity": 5, "price": 2490}]})
    finally:
        crm.close()
    blocker.unlink()  # the share is back
    run_once(cfg)
    [order_file] = outgoing(cfg)
    [written] = [r for r in FileReader(order_file).records() if isinstance(r, Document)]
    assert written.amount == 5 * 2490

    # However long version 1's backoff was, its time comes: it must not replace version 2.
    state = sqlite3.connect(cfg.parent / "var" / "bridge.db")
    with state:
        state.execute("UPDATE outbox SET next_attempt_at = 0 WHERE status = 'pending'")
        superseded = state.execute("SELECT COUNT(*) FROM outbox WHERE kind = 'write_order' AND status = 'done'"
                                   " AND last_error LIKE 'superseded%'").fetchone()[0]
    state.close()
    run_once(cfg)
    [again] = [r for r in FileReader(order_file).records() if isinstance(r, Document)]
    assert again.amount == 5 * 2490 and superseded == 1


def test_a_target_that_refuses_the_bridge_keeps_the_order_pending_and_the_daemon_alive(tmp_path: Path) -> None:
    from bridge.commerceml.render import Renderer
    from bridge.errors import UserError
    from bridge.store import db, outbox
    from bridge.sync.orders import Order, OrderWriter, order_to_json

    class RefusingTarget:  # what an SFTP target raises for a refused key or a changed host key
        def write(self, name: str, data: bytes) -> str:
            raise UserError(f"uploading {name}: permission denied")

        def close(self) -> None:
            pass

    conn = db.connect(tmp_path / "bridge.db")
    order = order_to_json(Order(id="O1", number="1", date="2026-11-27", time="10:00:00", currency="RUB", rate="1",
                                amount=Decimal(10), counterparty={"id": "c-1", "name": "ООО Ромашка"}, lines=[],
                                deal_id="7"))
    with db.transaction(conn):
        outbox.add(conn, None, [outbox.Intent("order", "write_order", "O1", {"file_name": "orders-O1.xml", "deal_id": "7",
                                                                             "order": order})], "pending")
    writer = OrderWriter(conn, Renderer(REPO / "templates"), RefusingTarget(), "ut11", "utf-8")
    assert writer.deliver() == 0  # no exception: the daemon's cycle goes on to the CRM
    assert outbox.depth(conn) == {"pending": 1}
    messages = [m for (m,) in conn.execute("SELECT message FROM journal WHERE external_id = 'O1'")]
    assert any("not written yet" in m and "permission denied" in m for m in messages), messages
    conn.close()


def test_with_one_file_name_for_every_order_an_order_waits_until_1c_has_taken_the_last(cfg: Path) -> None:
    """Some exchange modules read a fixed orders.xml: a second order must not replace one 1C has not read."""
    cfg.write_text(cfg.read_text(encoding="utf-8").replace('file_name = "orders-{id}.xml"', 'file_name = "orders.xml"'),
                   encoding="utf-8")
    first = add_deal(cfg, {"title": "Первый", "stage": "agreed", "company_external_id": MANUFACTURE,
                           "lines": [{"product_external_id": KETTLE, "quantity": 1, "price": 2490}]})
    second = add_deal(cfg, {"title": "Второй", "stage": "agreed", "company_external_id": MANUFACTURE,
                            "lines": [{"product_external_id": KETTLE, "quantity": 2, "price": 2490}]})
    imported = []
    for _ in range(4):
        run_once(cfg)
        files = outgoing(cfg)
        if not files:
            continue
        [order_file] = files
        assert order_file.name == "orders.xml"
        imported.extend(d.amount for d in FileReader(order_file).records() if isinstance(d, Document))
        order_file.unlink()  # 1C imports the file and removes it
    assert sorted(imported) == [2490, 2 * 2490]  # each order reached 1C once, none was overwritten unread
    orders = {d["id"]: d["order_external_id"] for d in deals(cfg).values()}
    assert orders[first] and orders[second] and orders[first] != orders[second]


def test_tax_rates_written_as_1c_presents_them_read_without_warnings(tmp_path: Path) -> None:
    """1C writes a line's rate as "18", but also "18%" and "Без НДС" / "Без налога" (no rate)."""
    lines = "".join(
        f"<Товар><Ид>{KETTLE}</Ид><Наименование>Чайник</Наименование><Количество>1</Количество><Сумма>100</Сумма>"
        f"<СтавкиНалогов><СтавкаНалога><Наименование>НДС</Наименование><Ставка>{rate}</Ставка></СтавкаНалога>"
        "</СтавкиНалогов></Товар>" for rate in ("18%", "Без НДС", "Без налога", "20"))
    document = (x.HEAD + "<Документ><Ид>O-1</Ид><Номер>1</Номер><Дата>2026-11-27</Дата><ХозОперация>Заказ товара"
                "</ХозОперация><Роль>Продавец</Роль><Валюта>RUB</Валюта><Курс>1</Курс><Сумма>400</Сумма>"
                f"<Товары>{lines}</Товары></Документ>" + x.TAIL)
    path = tmp_path / "orders.xml"
    path.write_text(document, encoding="utf-8")
    reader = FileReader(path)
    [read] = [r for r in reader.records() if isinstance(r, Document)]
    assert [line.taxes[0][1] for line in read.lines] == [Decimal(18), None, None, Decimal(20)]
    assert not [p for p in reader.problems if "not a number" in p.message], [p.format() for p in reader.problems]


@pytest.mark.parametrize("line", [{"quantity": 0, "price": 100}, {"quantity": -2, "price": 100},
                                  {"quantity": 1, "price": -100}, {"quantity": 1, "price": 100, "discount": 150}])
def test_a_line_1c_cannot_take_keeps_the_deal_waiting(cfg: Path, line: dict) -> None:
    deal_id = add_deal(cfg, {"title": "Ошибка менеджера", "stage": "agreed", "company_external_id": MANUFACTURE,
                             "lines": [{"product_external_id": KETTLE, **line}]})
    run_once(cfg)
    assert outgoing(cfg) == []  # no order with a zero, negative or below-zero line goes to 1C
    assert "cannot become an order yet" in bridge("journal", "-c", str(cfg), "--entity", deal_id).stdout


def test_a_line_keeps_the_okei_code_of_its_unit(cfg: Path) -> None:
    """1C finds the unit by its Код: gloves sold in pairs (715) must not arrive as pieces (796)."""
    from lxml import etree
    gloves = "29330d63-73d2-11ef-a3c6-00155d0a4e21"
    add_deal(cfg, {"title": "Перчатки", "stage": "agreed", "company_external_id": MANUFACTURE,
                   "lines": [{"product_external_id": gloves, "quantity": 10, "price": 45},
                             {"product_external_id": KETTLE, "quantity": 1, "price": 2490}]})
    run_once(cfg)
    [order_file] = outgoing(cfg)
    units = {line.findtext("{*}Ид"): line.find("{*}БазоваяЕдиница").get("Код")
             for line in etree.parse(str(order_file)).iter("{*}Товар")}
    assert units == {gloves: "715", KETTLE: "796"}
