"""Orders rendered for 1C read back through our own reader with the same lines and totals."""

from __future__ import annotations

import dataclasses
from decimal import Decimal
from pathlib import Path

import pytest

from bridge.commerceml.reader import FileReader
from bridge.commerceml.records import Document
from bridge.commerceml.render import PROFILES, RenderError, Renderer, render_checked
from bridge.sync.orders import Order, OrderLine
from bridge.transport.outgoing import FolderTarget


def an_order(**changes: object) -> Order:
    lines = [
        OrderLine(id="289a7cba-73c9-11ef-a3c6-00155d0a4e21", name="Чайник «Теплотех» 1,7 л", quantity=Decimal(2),
                  price=Decimal("2490.00"), amount=Decimal("4880.00"), discount=Decimal("100.00"), vat_rate="20",
                  vat_amount=Decimal("813.33"), sku="ТТ-1701"),
        OrderLine(id="29440104-73d3-11ef-a3c6-00155d0a4e21#2dde9546-7655-11ef-a3c6-00155d0a4e21",
                  name="Куртка рабочая (48)", quantity=Decimal("1.5"), price=Decimal("4290"), amount=Decimal("6435.00"),
                  vat_rate="20", vat_amount=Decimal("1072.50")),
        OrderLine(id="ORDER_DELIVERY", name="Доставка заказа", quantity=Decimal(1), price=Decimal(350),
                  amount=Decimal(350), service=True),
    ]
    order = Order(id="3f1c0a52-5d8e-5b6e-9c1e-6a2f0d9b7e11", number="1042", date="2026-11-27", time="15:04:05",
                  currency="RUB", rate="1", amount=Decimal("11665.00"),
                  counterparty={"id": "2d85ce3f-776e-11ef-a3c6-00155d0a4e21", "name": "Северная мануфактура ООО",
                                "full_name": "ООО \"Северная мануфактура\" & Co", "inn": "7812045738",
                                "kpp": "781201001", "person": False, "address": "190000, Санкт-Петербург",
                                "email": "zakaz@sevman.example", "phone": "+7 812 000-00-00"},
                  lines=lines, vat_amount=Decimal("1885.83"), comment="Позвонить до 12:00 \x07<срочно>",
                  requisites=[("Номер сделки в CRM", "1042"), ("Организация", "ООО «Ромашка»")], deal_id="1042")
    return dataclasses.replace(order, **changes)


def read_back(tmp_path: Path, data: bytes) -> tuple[FileReader, Document]:
    path = tmp_path / "orders.xml"
    path.write_bytes(data)
    reader = FileReader(path)
    documents = [r for r in reader.records() if isinstance(r, Document)]
    assert reader.problems == [], [p.format() for p in reader.problems]
    assert len(documents) == 1
    return reader, documents[0]


@pytest.mark.parametrize("profile", sorted(PROFILES))
@pytest.mark.parametrize("encoding", ["utf-8-bom", "windows-1251"])
def test_rendered_order_reads_back_with_the_same_lines_and_totals(tmp_path: Path, profile: str, encoding: str) -> None:
    order = an_order()
    data = render_checked(Renderer(), profile, {"orders": [order], "generated_at": "2026-11-27T15:05:00"}, encoding)
    if encoding == "utf-8-bom":
        assert data.startswith(b'\xef\xbb\xbf<?xml version="1.0" encoding="UTF-8"?>\n')
    else:
        assert data.startswith(b'<?xml version="1.0" encoding="windows-1251"?>\n')
        assert "Чайник".encode("cp1251") in data
    reader, document = read_back(tmp_path, data)
    assert reader.header.encoding == ("UTF-8" if encoding == "utf-8-bom" else "windows-1251")
    assert document.id == order.id and document.number == "1042" and document.currency == "RUB"
    assert document.amount == Decimal("11665.00") == sum(line.amount for line in document.lines)
    assert [(f"{l.product_id}#{l.characteristic_id}" if l.characteristic_id else l.product_id) for l in document.lines] \
        == [line.id for line in order.lines]
    assert [l.quantity for l in document.lines] == [Decimal(2), Decimal("1.5"), Decimal(1)]
    assert document.lines[0].discounts == [("Скидка", Decimal("100.00"))]
    assert document.lines[0].taxes[0][0] == "НДС" and document.lines[0].taxes[0][2] == Decimal("813.33")
    assert document.lines[2].requisites["ВидНоменклатуры"] == "Услуга"
    buyer = document.counterparties[0]
    assert (buyer.inn, buyer.kpp, buyer.role) == ("7812045738", "781201001", "Покупатель")
    assert buyer.full_name == 'ООО "Северная мануфактура" & Co'
    assert document.comment == "Позвонить до 12:00 <срочно>"  # the BEL character is gone, the text kept
    assert document.requisites["Организация"] == "ООО «Ромашка»"
    if profile == "bitrix-module":
        assert b"\xd0\x9a\xd0\xbe\xd0\xbd\xd1\x82\xd0\xb5\xd0\xb9\xd0\xbd\xd0\xb5\xd1\x80" in data or \
            "Контейнер".encode("cp1251") in data


def test_characters_outside_windows_1251_become_character_references(tmp_path: Path) -> None:
    order = an_order(comment="Доставка ★ до двери")
    data = render_checked(Renderer(), "ut11", {"orders": [order], "generated_at": "2026-11-27T15:05:00"},
                          "windows-1251")
    assert b"&#9733;" in data
    assert read_back(tmp_path, data)[1].comment == "Доставка ★ до двери"


def test_person_counterparty(tmp_path: Path) -> None:
    order = an_order(counterparty={"id": "c-1", "name": "Орлова Марина", "person": True, "last_name": "Орлова",
                                   "first_name": "Марина", "inn": None, "kpp": None})
    data = render_checked(Renderer(), "unf", {"orders": [order], "generated_at": "2026-11-27T15:05:00"}, "utf-8-bom")
    buyer = read_back(tmp_path, data)[1].counterparties[0]
    assert buyer.person and buyer.last_name == "Орлова"


def test_template_error_names_template_and_line_and_writes_nothing(tmp_path: Path) -> None:
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "orders-ut11.xml.j2").write_text(
        '<КоммерческаяИнформация ВерсияСхемы="2.08">\n{% for o in orders %}\n<Документ><Ид>{{ o.idd }}</Ид></Документ>\n'
        "{% endfor %}\n</КоммерческаяИнформация>\n", encoding="utf-8")
    out = tmp_path / "to-1c"
    target = FolderTarget(out)
    with pytest.raises(RenderError) as error:
        render_checked(Renderer(templates), "ut11", {"orders": [an_order()], "generated_at": "x"}, "utf-8-bom",
                       writer=lambda data: target.write("orders-1.xml", data))
    assert "orders-ut11.xml.j2:3" in str(error.value) and "idd" in str(error.value)
    assert not out.exists()


def test_a_template_producing_an_unusable_document_writes_nothing(tmp_path: Path) -> None:
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "orders-ut11.xml.j2").write_text(  # a price that is not a number: 1C would refuse it
        '<КоммерческаяИнформация ВерсияСхемы="2.08">{% for o in orders %}<Документ><Ид>{{ o.id }}</Ид>'
        "<Товары><Товар><Ид>p</Ид><ЦенаЗаЕдиницу>две тысячи</ЦенаЗаЕдиницу></Товар></Товары></Документ>{% endfor %}"
        "</КоммерческаяИнформация>", encoding="utf-8")
    with pytest.raises(RenderError, match="would not accept"):
        render_checked(Renderer(templates), "ut11", {"orders": [an_order()], "generated_at": "x"}, "utf-8-bom")


def test_atomic_folder_write_leaves_no_temporary_file(tmp_path: Path) -> None:
    target = FolderTarget(tmp_path / "out")
    target.write("orders-1.xml", b"<a/>")
    target.write("orders-1.xml", b"<b/>")  # a retry overwrites, never duplicates
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["orders-1.xml"]
    assert (tmp_path / "out" / "orders-1.xml").read_bytes() == b"<b/>"


def test_a_template_cannot_reach_python(tmp_path: Path) -> None:
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "orders-ut11.xml.j2").write_text(
        '<КоммерческаяИнформация ВерсияСхемы="2.08">'
        "<!-- {{ cycler.__init__.__globals__.os.popen('echo pwned').read() }} -->"
        "</КоммерческаяИнформация>", encoding="utf-8")
    with pytest.raises(RenderError) as error:
        Renderer(templates).render("ut11", {"orders": [an_order()], "generated_at": "x"})
    assert "orders-ut11.xml.j2:1" in str(error.value)


@pytest.mark.parametrize("profile", ["ut11", "unf"])
@pytest.mark.parametrize("person", [False, True])
def test_rendered_order_follows_the_commerceml_sequence(profile: str, person: bool) -> None:
    """Element order, contact types and address kinds as the 2.08-2.10 XSD (and our strict schema) have them:
    an exchange that reads orders through the schema (XDTO) refuses any other order."""
    from lxml import etree

    from bridge.commerceml.schema import load_record_schema
    buyer = {"id": "c-1", "name": "Орлова Марина", "person": True, "last_name": "Орлова", "first_name": "Марина",
             "inn": "781204573812", "address": "190000, Санкт-Петербург", "email": "m@example.org",
             "phone": "+7 812 000-00-00"} if person else an_order().counterparty
    order = an_order(counterparty=buyer)
    data = render_checked(Renderer(), profile, {"orders": [order], "generated_at": "2026-11-27T15:05:00"}, "utf-8-bom")
    root = etree.fromstring(data[3:])
    schema = load_record_schema("strict", etree.QName(root).namespace)
    [document] = root.iter("{*}Документ")
    assert schema.validate(document), [f"{e.line}: {e.message}" for e in schema.error_log]


def test_unit_price_is_not_rounded_away_from_the_line_sum(tmp_path: Path) -> None:
    """1000 x 0.125 = 125.00: a price written as 0.13 would say 130.00 to 1C."""
    line = OrderLine(id="289a7cba-73c9-11ef-a3c6-00155d0a4e21", name="Шайба", quantity=Decimal(1000),
                     price=Decimal("0.125"), amount=Decimal("125.00"))
    order = an_order(lines=[line], amount=Decimal("125.00"), vat_amount=None)
    data = render_checked(Renderer(), "ut11", {"orders": [order], "generated_at": "2026-11-27T15:05:00"}, "utf-8-bom")
    [read] = read_back(tmp_path, data)[1].lines
    assert read.price is not None and read.quantity is not None
    assert read.price * read.quantity == read.amount == Decimal("125.00")
    assert "<ЦенаЗаЕдиницу>2490.00</ЦенаЗаЕдиницу>" in render_checked(
        Renderer(), "ut11", {"orders": [an_order()], "generated_at": "x"}, "utf-8").decode()
