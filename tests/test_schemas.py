"""Tests of our CommerceML schemas and their loader (bridge.commerceml.schema).

The reference material (official XSDs and 36 real exports) lives outside the repository in
../shared/reference/commerceml; the tests that need it skip when it is absent.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from lxml import etree

from bridge.commerceml.schema import (
    RECORD_ELEMENTS,
    SchemaError,
    diagnose_with_user_schema,
    load_record_schema,
    load_user_schema,
)
from bridge.resources import data_dir

REFERENCE = Path(__file__).parents[1].parent / "shared" / "reference" / "commerceml"
SAMPLES = REFERENCE / "samples"
OFFICIAL_210 = REFERENCE / "xsd" / "commerceML 2.10.xsd"

NAMESPACES = [
    None,
    "urn:1C.ru:commerceml_2",
    "urn:1C.ru:commerceml_205",
    "urn:1C.ru:commerceml_210",
    "urn:1C.ru:commerceml_3",
]
LEVELS = ["tolerant", "strict"]

SAMPLE_FILES = sorted(SAMPLES.rglob("*.xml")) if SAMPLES.is_dir() else []


def _sample_params() -> list[object]:
    if not SAMPLE_FILES:
        return [pytest.param(None, marks=pytest.mark.skip(reason=f"no samples in {SAMPLES}"))]
    return [pytest.param(path, id=str(path.relative_to(SAMPLES))) for path in SAMPLE_FILES]


def _sample(relative: str) -> Path:
    path = SAMPLES / relative
    if not path.is_file():
        pytest.skip(f"reference sample {path} not available")
    return path


def _local(element: etree._Element) -> str:
    return etree.QName(element).localname


def _namespace_of(path: Path) -> str | None:
    with path.open("rb") as stream:  # closed even though we stop at the first event
        for _, root in etree.iterparse(stream, events=("start",)):
            return etree.QName(root).namespace
    raise AssertionError(f"{path} has no root element")


def _is_record(element: etree._Element) -> bool:
    """The reader's selection: outermost Группа, Склад under Склады, Товар under Каталог."""
    name = _local(element)
    if name not in RECORD_ELEMENTS:
        return False
    ancestors = [_local(a) for a in element.iterancestors()]
    if name == "Группа":
        return "Группа" not in ancestors
    if name == "Склад":
        return ancestors[:1] == ["Склады"]
    if name == "Товар":
        return "Каталог" in ancestors
    return True


def _records(path: Path) -> Iterator[etree._Element]:
    """Yield every record element of a file as the streaming reader sees it."""
    for _, element in etree.iterparse(str(path), events=("end",)):
        if _is_record(element):
            yield element


def _errors(schema: etree.XMLSchema, element: etree._Element | etree._ElementTree) -> list[str]:
    if schema.validate(element):
        return []
    return [f"line {e.line}: {e.message}" for e in schema.error_log]


def _parse(text: str) -> etree._Element:
    return etree.fromstring(text.encode("utf-8"))


def _with_ns(fragment: str, namespace: str | None) -> str:
    """Put the outermost element of ``fragment`` into ``namespace`` (a default declaration)."""
    if namespace is None:
        return fragment
    head, rest = fragment.split(">", 1)
    if head.endswith("/"):
        return f'{head[:-1]} xmlns="{namespace}"/>{rest}'
    return f'{head} xmlns="{namespace}">{rest}'


# ------------------------------------------------------------------ loading and retargeting


def test_record_elements_are_the_reader_records() -> None:
    assert RECORD_ELEMENTS == {
        "Группа", "Свойство", "ТипЦены", "Склад", "ЕдиницаИзмерения",
        "Товар", "Предложение", "Контрагент", "Документ",
    }


@pytest.mark.parametrize("namespace", NAMESPACES)
@pytest.mark.parametrize("level", LEVELS)
def test_schema_compiles_and_is_retargeted(level: str, namespace: str | None) -> None:
    schema = load_record_schema(level, namespace)
    assert isinstance(schema, etree.XMLSchema)
    assert load_record_schema(level, namespace) is schema  # cached

    warehouse = "<Склад><Ид>wh-1</Ид><Наименование>Основной</Наименование></Склад>"
    assert _errors(schema, _parse(_with_ns(warehouse, namespace))) == []
    # The same record in another namespace has no declaration in this schema.
    other = "urn:example:other" if namespace else "urn:1C.ru:commerceml_2"
    assert not schema.validate(_parse(_with_ns(warehouse, other)))
    assert "No matching global" in schema.error_log[0].message


@pytest.mark.parametrize("level", LEVELS)
def test_every_record_and_the_root_are_global(level: str) -> None:
    schema_doc = etree.parse(str(data_dir("schemas") / f"commerceml-{level}.xsd"))
    root = schema_doc.getroot()
    assert root.get("targetNamespace") is None
    assert None not in root.nsmap  # no default namespace: the loader adds it
    globals_ = {e.get("name") for e in root.findall("{http://www.w3.org/2001/XMLSchema}element")}
    assert RECORD_ELEMENTS | {"КоммерческаяИнформация"} <= globals_


def test_unknown_level_is_refused() -> None:
    with pytest.raises(ValueError, match="lenient"):
        load_record_schema("lenient", None)


def test_user_schema_that_does_not_compile_raises_schema_error(tmp_path: Path) -> None:
    broken = tmp_path / "broken.xsd"
    broken.write_text(
        '<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema">'
        '<xs:element name="Товар" type="НетТакогоТипа"/></xs:schema>',
        encoding="utf-8",
    )
    with pytest.raises(SchemaError, match="broken.xsd"):
        load_user_schema(broken, "urn:1C.ru:commerceml_2")

    not_xml = tmp_path / "not-xml.xsd"
    not_xml.write_text("<xs:schema", encoding="utf-8")
    with pytest.raises(SchemaError, match="not-xml.xsd"):
        load_user_schema(not_xml, None)

    with pytest.raises(SchemaError, match="missing.xsd"):
        load_user_schema(tmp_path / "missing.xsd", None)


# ------------------------------------------------------------------ tolerant schema on real files


@pytest.mark.parametrize("path", _sample_params())
def test_tolerant_schema_accepts_every_record_of_real_exports(path: Path) -> None:
    schema = load_record_schema("tolerant", _namespace_of(path))
    checked = 0
    problems: list[str] = []
    for record in _records(path):
        checked += 1
        problems += [f"{_local(record)} {p}" for p in _errors(schema, record)]
    assert problems == []
    has_records = any(_is_record(e) for e in etree.parse(str(path)).iter(etree.Element))
    assert checked > 0 or not has_records


@pytest.mark.parametrize("path", _sample_params())
def test_tolerant_schema_accepts_real_exports_as_whole_documents(path: Path) -> None:
    schema = load_record_schema("tolerant", _namespace_of(path))
    assert _errors(schema, etree.parse(str(path))) == []


# ------------------------------------------------------------------ tolerant schema catches what matters

OFFER = """<Предложение>
  <Ид>{id}</Ид>
  <Наименование>Чайник</Наименование>
  <Цены><Цена>
    <ИдТипаЦены>price-1</ИдТипаЦены>
    <ЦенаЗаЕдиницу>{price}</ЦенаЗаЕдиницу>
    <Валюта>руб</Валюта>
    <Единица>шт</Единица>
    <Коэффициент>{coefficient}</Коэффициент>
  </Цена></Цены>
  <Количество>{quantity}</Количество>
  {extra}
</Предложение>"""


def _offer(**values: str) -> str:
    fields = {"id": "p-1", "price": "1250.50", "coefficient": "1", "quantity": "3", "extra": ""}
    fields.update(values)
    return OFFER.format(**fields)


@pytest.mark.parametrize("namespace", [None, "urn:1C.ru:commerceml_2"])
def test_tolerant_accepts_a_messy_but_usable_offer(namespace: str | None) -> None:
    schema = load_record_schema("tolerant", namespace)
    offer = _offer(
        price=" 1250.50\n ",
        extra='<Склад ИдСклада="wh-1" КоличествоНаСкладе="2"/>'
        "<Остатки><Остаток><Склад><Ид>wh-1</Ид><Количество>2</Количество></Склад></Остаток></Остатки>"
        "<Статус>Удален</Статус>",
    )
    assert _errors(schema, _parse(_with_ns(offer, namespace))) == []


@pytest.mark.parametrize(
    ("values", "culprit"),
    [
        ({"price": "1 250,50"}, "ЦенаЗаЕдиницу"),
        ({"price": ""}, "ЦенаЗаЕдиницу"),
        ({"quantity": "много"}, "Количество"),
        ({"coefficient": "x1"}, "Коэффициент"),
        ({"id": "   "}, "Ид"),
        ({"extra": "<Колличество>3</Колличество>"}, "Колличество"),
        ({"extra": '<Склад ИдСклада="" КоличествоНаСкладе="2"/>'}, "ИдСклада"),
    ],
)
def test_tolerant_rejects_unusable_data(values: dict[str, str], culprit: str) -> None:
    schema = load_record_schema("tolerant", "urn:1C.ru:commerceml_2")
    offer = _parse(_with_ns(_offer(**values), "urn:1C.ru:commerceml_2"))
    errors = _errors(schema, offer)
    assert len(errors) == 1
    assert culprit in errors[0]


def test_tolerant_rejects_a_document_whose_sum_is_not_a_number() -> None:
    schema = load_record_schema("tolerant", None)
    document = _parse(
        "<Документ><Ид>7</Ид><Номер>7</Номер><Сумма>сто</Сумма>"
        "<Товары><Товар><Ид>p-1</Ид><Количество>1</Количество><Сумма>100</Сумма></Товар></Товары>"
        "</Документ>"
    )
    errors = _errors(schema, document)
    assert len(errors) == 1 and "Сумма" in errors[0] and "сто" in errors[0]


# ------------------------------------------------------------------ strict schema

# One spec-conforming example of every record, in 2.10 element order.
CONFORMING_RECORDS = {
    "Группа": """<Группа><Ид>g-1</Ид><Наименование>Посуда</Наименование>
        <Группы><Группа><Ид>g-2</Ид><Наименование>Чайники</Наименование></Группа></Группы>
        </Группа>""",
    "Свойство": """<Свойство><Ид>prop-1</Ид><Наименование>Цвет</Наименование>
        <ТипЗначений>Справочник</ТипЗначений>
        <ВариантыЗначений><Справочник><ИдЗначения>v-1</ИдЗначения><Значение>Красный</Значение>
        </Справочник></ВариантыЗначений><ДляТоваров>true</ДляТоваров></Свойство>""",
    "ТипЦены": """<ТипЦены><Ид>price-1</Ид><Наименование>Розничная</Наименование>
        <Валюта>RUB</Валюта><Налог><Наименование>НДС</Наименование>
        <УчтеноВСумме>true</УчтеноВСумме></Налог></ТипЦены>""",
    "Склад": """<Склад><Ид>wh-1</Ид><Наименование>Основной</Наименование>
        <Адрес><Представление>Москва</Представление><АдресноеПоле><Тип>Город</Тип>
        <Значение>Москва</Значение></АдресноеПоле></Адрес></Склад>""",
    "ЕдиницаИзмерения": """<ЕдиницаИзмерения><Ид>u-1</Ид><Код>796</Код>
        <НаименованиеПолное>Штука</НаименованиеПолное>
        <МеждународноеСокращение>PCE</МеждународноеСокращение></ЕдиницаИзмерения>""",
    "Товар": """<Товар Статус="Изменен"><Ид>p-1</Ид><Штрихкод>4601234567893</Штрихкод>
        <Артикул>A-1</Артикул><Наименование>Чайник</Наименование>
        <БазоваяЕдиница Код="796" НаименованиеПолное="Штука" МеждународноеСокращение="PCE">шт</БазоваяЕдиница>
        <Группы><Ид>g-2</Ид></Группы><Описание>Стальной</Описание><Картинка>import_files/p1.jpg</Картинка>
        <ЗначенияСвойств><ЗначенияСвойства><Ид>prop-1</Ид><Значение>v-1</Значение></ЗначенияСвойства></ЗначенияСвойств>
        <СтавкиНалогов><СтавкаНалога><Наименование>НДС</Наименование><Ставка>20</Ставка></СтавкаНалога></СтавкиНалогов>
        <ЗначенияРеквизитов><ЗначениеРеквизита><Наименование>Вес</Наименование><Значение>1.2</Значение>
        </ЗначениеРеквизита></ЗначенияРеквизитов></Товар>""",
    "Предложение": """<Предложение><Ид>p-1#c-1</Ид><Наименование>Чайник (красный)</Наименование>
        <БазоваяЕдиница Код="796"><Пересчет><Единица>796</Единица><Коэффициент>1</Коэффициент></Пересчет></БазоваяЕдиница>
        <ХарактеристикиТовара><ХарактеристикаТовара><Наименование>Цвет</Наименование>
        <Значение>Красный</Значение></ХарактеристикаТовара></ХарактеристикиТовара>
        <Цены><Цена><Представление>1 250 руб. за шт</Представление><ИдТипаЦены>price-1</ИдТипаЦены>
        <ЦенаЗаЕдиницу>1250.50</ЦенаЗаЕдиницу><Валюта>RUB</Валюта><Единица>796</Единица>
        <Коэффициент>1</Коэффициент></Цена></Цены><Количество>5</Количество>
        <Склад ИдСклада="wh-1" КоличествоНаСкладе="5"/></Предложение>""",
    "Контрагент": """<Контрагент><Ид>c-1</Ид><Наименование>Ромашка</Наименование>
        <ОфициальноеНаименование>ООО "Ромашка"</ОфициальноеНаименование>
        <ИНН>7701234567</ИНН><КПП>770101001</КПП>
        <РасчетныеСчета><РасчетныйСчет><НомерСчета>40702810900000000001</НомерСчета>
        <Банк><Наименование>Банк</Наименование><БИК>044525225</БИК></Банк></РасчетныйСчет></РасчетныеСчета>
        <Контакты><Контакт><Тип>Почта</Тип><Значение>buh@example.ru</Значение></Контакт></Контакты>
        <Представители><Представитель><Наименование>Иванов</Наименование>
        <ПолноеНаименование>Иванов Иван</ПолноеНаименование><Отношение>Контактное лицо</Отношение>
        </Представитель></Представители><Роль>Покупатель</Роль></Контрагент>""",
    "Документ": """<Документ><Ид>order-7</Ид><Номер>7</Номер><Дата>2024-05-01</Дата>
        <ХозОперация>Заказ товара</ХозОперация><Роль>Продавец</Роль><Валюта>RUB</Валюта>
        <Курс>1</Курс><Сумма>2501.00</Сумма>
        <Контрагенты><Контрагент><Ид>c-2</Ид><Наименование>Петров</Наименование>
        <ПолноеНаименование>Петров Пётр</ПолноеНаименование><Фамилия>Петров</Фамилия>
        <Роль>Покупатель</Роль></Контрагент></Контрагенты>
        <Время>10:15:00</Время><Комментарий>Позвонить</Комментарий>
        <Товары><Товар><Ид>p-1</Ид><Наименование>Чайник</Наименование>
        <БазоваяЕдиница Код="796">шт</БазоваяЕдиница><ЦенаЗаЕдиницу>1250.50</ЦенаЗаЕдиницу>
        <Количество>2</Количество><Сумма>2501.00</Сумма></Товар></Товары>
        <ЗначенияРеквизитов><ЗначениеРеквизита><Наименование>Статус заказа</Наименование>
        <Значение>Принят</Значение></ЗначениеРеквизита></ЗначенияРеквизитов></Документ>""",
}


def test_every_record_has_a_conforming_example() -> None:
    assert set(CONFORMING_RECORDS) == RECORD_ELEMENTS


@pytest.mark.parametrize("namespace", [None, "urn:1C.ru:commerceml_2"])
@pytest.mark.parametrize("name", sorted(CONFORMING_RECORDS))
@pytest.mark.parametrize("level", LEVELS)
def test_conforming_records_pass_both_schemas(level: str, name: str, namespace: str | None) -> None:
    schema = load_record_schema(level, namespace)
    assert _errors(schema, _parse(_with_ns(CONFORMING_RECORDS[name], namespace))) == []


def _strict_errors_of_records(path: Path, name: str) -> list[str]:
    schema = load_record_schema("strict", _namespace_of(path))
    return [e for r in _records(path) if _local(r) == name for e in _errors(schema, r)]


def test_strict_rejects_unit_name_instead_of_okei_code() -> None:
    errors = _strict_errors_of_records(_sample("off-doc-1c/offers.xml"), "Предложение")
    unit_errors = [e for e in errors if "Element 'Единица'" in e]
    assert len(unit_errors) == 8  # every price of the file
    assert all("'шт'" in e for e in unit_errors)
    # The only other deviation in these offers: Валюта "руб" instead of an ISO code.
    assert all("Element 'Валюта'" in e and "'руб'" in e for e in errors if e not in unit_errors)


def test_strict_rejects_prices_before_base_unit() -> None:
    errors = _strict_errors_of_records(_sample("ut11-demo-2.04-umi/offers.xml"), "Предложение")
    assert len(errors) == 14  # every offer of the file
    assert all("'Цены': This element is not expected" in e and "БазоваяЕдиница" in e for e in errors)


def test_strict_rejects_a_nine_digit_inn_where_it_is() -> None:
    path = _sample("imega-2.04/import.xml")
    inn_lines = [e.sourceline for e in etree.parse(str(path)).iter("ИНН")]
    schema = load_record_schema("strict", None)
    assert not schema.validate(etree.parse(str(path)))
    inn_errors = [e for e in schema.error_log if "'ИНН'" in e.message]
    assert [e.line for e in inn_errors] == inn_lines
    assert all(re.search(r"The value '[0-9]{9}' is not accepted", e.message) for e in inn_errors)


def test_strict_rejects_what_tolerant_accepts_in_a_counterparty() -> None:
    person = _parse(
        "<Контрагент><Ид>c-9</Ид><Наименование>Фирма</Наименование>"
        "<ОфициальноеНаименование>ООО Фирма</ОфициальноеНаименование>"
        "<ИНН>123456789</ИНН><КПП>12345678</КПП></Контрагент>"
    )
    assert _errors(load_record_schema("tolerant", None), person) == []
    errors = _errors(load_record_schema("strict", None), person)
    assert len(errors) == 2
    assert "'ИНН'" in errors[0] and "'КПП'" in errors[1]


@pytest.mark.parametrize(
    "relative", ["carono-2.07/import.xml", "carono-2.07/offers.xml", "off-doc-1c/import.xml"]
)
def test_strict_accepts_the_real_files_that_pass_the_official_xsd(relative: str) -> None:
    path = _sample(relative)
    schema = load_record_schema("strict", _namespace_of(path))
    assert _errors(schema, etree.parse(str(path))) == []


# ------------------------------------------------------------------ user-supplied schema

CONFORMING_DOCUMENT = """<?xml version="1.0" encoding="UTF-8"?>
<КоммерческаяИнформация ВерсияСхемы="2.10" ДатаФормирования="2024-05-01T10:00:00">
  <Каталог СодержитТолькоИзменения="false">
    <Ид>cat-1</Ид>
    <Наименование>Основной каталог</Наименование>
    <Владелец>
      <Ид>org-1</Ид>
      <Наименование>Ромашка</Наименование>
      <ОфициальноеНаименование>ООО "Ромашка"</ОфициальноеНаименование>
      <ИНН>{inn}</ИНН>
      <КПП>770101001</КПП>
    </Владелец>
    <Товары>
      <Товар>
        <Ид>p-1</Ид>
        <Артикул>A-1</Артикул>
        <Наименование>Чайник</Наименование>
        <БазоваяЕдиница Код="796" НаименованиеПолное="Штука" МеждународноеСокращение="PCE">шт</БазоваяЕдиница>
        <Группы><Ид>g-1</Ид></Группы>
      </Товар>
      <Товар>
        <Ид>p-2</Ид>
        <Наименование>Кружка</Наименование>
        <БазоваяЕдиница Код="796"/>
        {extra}
      </Товар>
    </Товары>
  </Каталог>
</КоммерческаяИнформация>
"""


def _official_210() -> Path:
    if not OFFICIAL_210.is_file():
        pytest.skip(f"official XSD {OFFICIAL_210} not available")
    return OFFICIAL_210


def _document(namespace: str | None = None, inn: str = "7701234567", extra: str = "") -> str:
    text = CONFORMING_DOCUMENT.format(inn=inn, extra=extra)
    if namespace:
        text = text.replace("<КоммерческаяИнформация ", f'<КоммерческаяИнформация xmlns="{namespace}" ')
    return text


@pytest.mark.parametrize("namespace", NAMESPACES)
def test_official_schema_retargeted_validates_a_conforming_document(namespace: str | None) -> None:
    schema = load_user_schema(_official_210(), namespace)
    document = etree.fromstring(_document(namespace).encode("utf-8"))
    assert _errors(schema, document) == []

    bad = etree.fromstring(_document(namespace, inn="123").encode("utf-8"))
    errors = _errors(schema, bad)
    assert len(errors) == 1 and "ИНН" in errors[0]


@pytest.mark.parametrize("level", LEVELS)
def test_our_schemas_accept_the_conforming_document(level: str) -> None:
    schema = load_record_schema(level, None)
    assert _errors(schema, etree.fromstring(_document().encode("utf-8"))) == []


def test_user_schema_cache_follows_the_file(tmp_path: Path) -> None:
    copy = tmp_path / "cml.xsd"
    copy.write_bytes(_official_210().read_bytes())
    first = load_user_schema(copy, None)
    assert load_user_schema(str(copy), None) is first
    stat = copy.stat()
    os.utime(copy, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert load_user_schema(copy, None) is not first


# ------------------------------------------------------------------ diagnostic pass


def _line_of(text: str, marker: str, occurrence: int = 1) -> int:
    lines = [n for n, line in enumerate(text.splitlines(), start=1) if marker in line]
    return lines[occurrence - 1]


@pytest.mark.parametrize("namespace", [None, "urn:1C.ru:commerceml_2"])
def test_diagnose_names_line_and_path_of_each_error(tmp_path: Path, namespace: str | None) -> None:
    text = _document(namespace, inn="12345", extra="<Колличество>3</Колличество>")
    path = tmp_path / "import.xml"
    path.write_text(text, encoding="utf-8")

    found = diagnose_with_user_schema(_official_210(), path, namespace)

    assert [(line, where) for line, where, _ in found] == [
        (_line_of(text, "<ИНН>"), "/КоммерческаяИнформация/Каталог/Владелец/ИНН"),
        (_line_of(text, "<Колличество>"), "/КоммерческаяИнформация/Каталог/Товары/Товар[2]/Колличество"),
    ]
    assert "Колличество" in found[1][2]
    for _, where, reason in found:
        assert "urn:" not in where + reason and "{" not in where + reason and "cml:" not in reason


def test_diagnose_stops_at_the_limit_and_reports_broken_xml(tmp_path: Path) -> None:
    text = _document(inn="1", extra="<Колличество>3</Колличество>")
    path = tmp_path / "import.xml"
    path.write_text(text, encoding="utf-8")
    assert len(diagnose_with_user_schema(_official_210(), path, None, limit=1)) == 1

    truncated = text[: text.index("<Колличество>")] + "<Колличество>3</Товар>\n"
    path.write_text(truncated, encoding="utf-8")
    found = diagnose_with_user_schema(_official_210(), path, None)
    line, where, reason = found[-1]
    assert where == "" and "not well-formed" in reason
    assert line == _line_of(truncated, "<Колличество>")


def test_diagnose_with_our_own_strict_schema(tmp_path: Path) -> None:
    namespace = "urn:1C.ru:commerceml_2"
    text = _document(namespace).replace('<БазоваяЕдиница Код="796"/>', '<БазоваяЕдиница Код="шт"/>')
    path = tmp_path / "import.xml"
    path.write_text(text, encoding="utf-8")

    found = diagnose_with_user_schema(data_dir("schemas") / "commerceml-strict.xsd", path, namespace)

    assert len(found) == 1
    line, where, reason = found[0]
    assert line == _line_of(text, 'Код="шт"')
    assert where == "/КоммерческаяИнформация/Каталог/Товары/Товар[2]/БазоваяЕдиница"
    assert "'шт'" in reason and "[0-9]{3,4}" in reason  # the pattern survives URI stripping
