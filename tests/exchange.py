"""Small, realistic CommerceML exchanges built in tests (УТ 11 shape, namespace, BOM)."""

from __future__ import annotations

from pathlib import Path
from xml.sax.saxutils import escape

HEAD = ('\ufeff<?xml version="1.0" encoding="UTF-8"?>\n'
        '<КоммерческаяИнформация xmlns="urn:1C.ru:commerceml_2" ВерсияСхемы="2.09" '
        'ДатаФормирования="2026-11-20T10:00:00">\n')
TAIL = "</КоммерческаяИнформация>\n"
CATALOG = "cat-0001"
RETAIL, WHOLESALE = "pt-retail", "pt-wholesale"
MAIN, NORTH = "wh-main", "wh-north"


def product(pid: str, name: str, sku: str | None = None, *, deleted: bool = False, description: str = "") -> str:
    status = ' Статус="Удален"' if deleted else ""
    return (f"<Товар{status}><Ид>{pid}</Ид><Артикул>{escape(sku or pid.upper())}</Артикул>"
            f"<Наименование>{escape(name)}</Наименование>"
            '<БазоваяЕдиница Код="796" НаименованиеПолное="Штука" МеждународноеСокращение="PCE">шт</БазоваяЕдиница>'
            f"<Описание>{escape(description)}</Описание></Товар>\n")


def catalog(products: list[str], *, full: bool = True, catalog_id: str = CATALOG) -> str:
    return (HEAD + f'<Классификатор><Ид>{catalog_id}</Ид><Наименование>Классификатор</Наименование>'
            '<Группы><Группа><Ид>g1</Ид><Наименование>Инструмент</Наименование></Группа></Группы></Классификатор>\n'
            f'<Каталог СодержитТолькоИзменения="{"false" if full else "true"}"><Ид>{catalog_id}</Ид>'
            f"<ИдКлассификатора>{catalog_id}</ИдКлассификатора><Наименование>Каталог</Наименование><Товары>\n"
            + "".join(products) + "</Товары></Каталог>\n" + TAIL)


def offer(oid: str, retail: str | None = None, wholesale: str | None = None, stock: dict[str, int] | None = None,
          name: str | None = None, characteristics: dict[str, str] | None = None) -> str:
    parts = [f"<Предложение><Ид>{oid}</Ид>"]
    if name:
        parts.append(f"<Наименование>{escape(name)}</Наименование>")
    if characteristics:
        parts.append("<ХарактеристикиТовара>" + "".join(
            f"<ХарактеристикаТовара><Наименование>{k}</Наименование><Значение>{v}</Значение></ХарактеристикаТовара>"
            for k, v in characteristics.items()) + "</ХарактеристикиТовара>")
    prices = [(RETAIL, retail), (WHOLESALE, wholesale)]
    if any(v is not None for _, v in prices):
        parts.append("<Цены>" + "".join(
            f"<Цена><ИдТипаЦены>{t}</ИдТипаЦены><ЦенаЗаЕдиницу>{v}</ЦенаЗаЕдиницу><Валюта>RUB</Валюта></Цена>"
            for t, v in prices if v is not None) + "</Цены>")
    if stock is not None:
        parts.append("".join(f'<Склад ИдСклада="{w}" КоличествоНаСкладе="{q}"/>' for w, q in stock.items()))
    return "".join(parts) + "</Предложение>\n"


def offers(items: list[str], *, full: bool = False) -> str:
    return (HEAD + f'<ПакетПредложений СодержитТолькоИзменения="{"false" if full else "true"}">'
            f"<Ид>{CATALOG}#</Ид><Наименование>Пакет</Наименование><ИдКаталога>{CATALOG}</ИдКаталога>"
            f"<ТипыЦен><ТипЦены><Ид>{RETAIL}</Ид><Наименование>Розничная</Наименование><Валюта>RUB</Валюта></ТипЦены>"
            f"<ТипЦены><Ид>{WHOLESALE}</Ид><Наименование>Оптовая</Наименование><Валюта>RUB</Валюта></ТипЦены></ТипыЦен>"
            f"<Склады><Склад><Ид>{MAIN}</Ид><Наименование>Основной склад</Наименование></Склад>"
            f"<Склад><Ид>{NORTH}</Ид><Наименование>Склад Север</Наименование></Склад></Склады>\n"
            "<Предложения>\n" + "".join(items) + "</Предложения></ПакетПредложений>\n" + TAIL)


def company(cid: str, name: str, inn: str, kpp: str | None) -> str:
    return (f"<Контрагент><Ид>{cid}</Ид><Наименование>{escape(name)}</Наименование>"
            f"<ОфициальноеНаименование>{escape(name)}</ОфициальноеНаименование><Роль>Покупатель</Роль>"
            f"<ИНН>{inn}</ИНН>" + (f"<КПП>{kpp}</КПП>" if kpp else "") + "</Контрагент>\n")


def counterparties(items: list[str]) -> str:
    return HEAD + '<Контрагенты СодержитТолькоИзменения="true">\n' + "".join(items) + "</Контрагенты>\n" + TAIL


def write(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path
