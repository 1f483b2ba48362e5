"""Generate a large, realistic УТ 11 style catalog package for benchmarks.

``generate(out_dir, n_products, seed)`` writes ``import0_1.xml`` (classifier and goods) and
``offers0_1.xml`` (price types, warehouses, offers and variants) in load order: CommerceML 2.09,
``urn:1C.ru:commerceml_2``, UTF-8 with BOM, indented with tabs as 1C does.

The files are written as text into a buffered file, never through a DOM, so that generating
400,000 products (over a gigabyte) needs no more memory than generating 2,000. Output is
deterministic for a given ``(n_products, seed)``. A stamp file lets a second call reuse the files.
About 6 KB of XML per product over both files: 100,000 products give roughly 600 MB.

CLI: ``python bench/generate_catalog.py OUT_DIR N [--seed S]``
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import sys
from pathlib import Path
from typing import TextIO

# Bump when the output changes, so that stale cached files are not reused.
GENERATOR_VERSION = 1
STAMP_NAME = ".generated.json"
FILE_NAMES = ("import0_1.xml", "offers0_1.xml")
STAMP_DATE = "2026-11-20T03:00:00"  # fixed: the output must not depend on the clock
ROOT = (
    '\ufeff<?xml version="1.0" encoding="UTF-8"?>\n'
    '<КоммерческаяИнформация xmlns="urn:1C.ru:commerceml_2" xmlns:xs="http://www.w3.org/2001/XMLSchema" '
    'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" ВерсияСхемы="2.09" '
    f'ДатаФормирования="{STAMP_DATE}">\n'
)
UNIT_PCS = '<БазоваяЕдиница Код="796" НаименованиеПолное="Штука" МеждународноеСокращение="PCE">шт</БазоваяЕдиница>'
VARIANT_EVERY = 5  # every 5th product has characteristics
VARIANTS_PER_PRODUCT = 3
# A short description, as most real catalogs have. The elements asked for are already about 6 KB a
# product over both files (Cyrillic tags are 2 bytes a character), so description length is not
# the knob that can bring a package down to 3 KB a product.
DESCRIPTION_SENTENCES = (1, 3)

CATEGORIES: dict[str, list[str]] = {
    "Бытовая техника": ["Техника для кухни", "Уход за домом", "Климатическая техника", "Красота и здоровье"],
    "Инструмент": ["Электроинструмент", "Ручной инструмент", "Измерительный инструмент", "Оснастка"],
    "Сад и огород": ["Садовый инвентарь", "Полив", "Садовая техника", "Теплицы и парники"],
    "Строительные материалы": ["Сухие смеси", "Лакокрасочные материалы", "Крепеж", "Изоляция"],
    "Сантехника": ["Смесители", "Трубы и фитинги", "Водонагреватели", "Аксессуары для ванной"],
    "Электротовары": ["Кабель и провод", "Освещение", "Розетки и выключатели", "Удлинители"],
    "Спецодежда": ["Рабочая одежда", "Обувь рабочая", "Средства защиты", "Перчатки"],
    "Товары для дома": ["Посуда", "Текстиль", "Хранение", "Бытовая химия"],
    "Автотовары": ["Автохимия", "Автоаксессуары", "Инструмент для авто", "Аккумуляторы"],
    "Отдых и туризм": ["Палатки", "Мебель для пикника", "Мангалы", "Туристическое снаряжение"],
}
SEGMENTS = ["эконом", "стандарт", "премиум", "для профессионалов"]
NOUNS = [
    "Дрель", "Шуруповерт", "Чайник", "Блендер", "Пылесос", "Лейка", "Секатор", "Шланг", "Смеситель",
    "Светильник", "Удлинитель", "Куртка", "Перчатки", "Сковорода", "Контейнер", "Компрессор", "Палатка",
    "Мангал", "Краска", "Грунтовка", "Саморез", "Дюбель", "Кабель", "Лампа", "Рулетка", "Уровень",
    "Отвертка", "Молоток", "Полироль", "Щетка", "Обогреватель", "Вентилятор", "Фен", "Утюг", "Кресло",
]
ADJECTIVES = [
    "аккумуляторный", "компактный", "усиленный", "универсальный", "складной", "влагостойкий",
    "профессиональный", "бытовой", "садовый", "электрический", "ручной", "термостойкий",
]
BRANDS = [
    "Теплотех", "ВолгаПром", "Сибтек", "Лесовик", "Стриж", "Полярник", "Уралметиз", "Дачник",
    "Мастерок", "Технолайн", "Север-М", "Кедр", "Ока", "Енисей", "Прикамье", "Невский",
]
SENTENCES = [
    "Корпус выполнен из ударопрочного пластика и выдерживает ежедневную нагрузку.",
    "Эргономичная рукоятка с прорезиненными вставками снижает усталость при длительной работе.",
    "Комплект поставки: изделие, инструкция по эксплуатации и гарантийный талон.",
    "Подходит для использования в квартире, на даче и в мастерской.",
    "Перед первым использованием внимательно ознакомьтесь с инструкцией.",
    "Гарантийный срок исчисляется с даты продажи & подтверждается кассовым чеком.",
    "Все металлические детали имеют антикоррозийное покрытие.",
    "Изделие сертифицировано и соответствует требованиям технических регламентов ЕАЭС.",
    "Упаковка из гофрокартона защищает товар при транспортировке.",
    "Модель отличается низким уровнем шума и вибрации.",
    "Рекомендуемая температура хранения — от +5 до +35 °C.",
    "Легко чистится влажной тканью без применения абразивных средств.",
    "Запасные части и расходные материалы доступны в сервисных центрах.",
    "Благодаря компактным размерам товар удобно хранить и перевозить.",
    "Материалы не содержат вредных примесей и безопасны для здоровья.",
    "Продуманная конструкция обеспечивает быструю сборку без специального инструмента.",
    "Цвет изделия может незначительно отличаться от изображения на сайте.",
    "Производитель оставляет за собой право изменять комплектацию без уведомления.",
    "Товар прошел выходной контроль качества на заводе-изготовителе.",
    "Срок службы при соблюдении правил эксплуатации — не менее 5 лет.",
    "Совместим с большинством аксессуаров линейки «Профи».",
    "Индикатор на корпусе показывает режим работы и уровень заряда.",
    "Защита от перегрева автоматически отключает устройство при превышении температуры.",
    "Нескользящие ножки обеспечивают устойчивость на любой поверхности.",
]
PROPERTIES: dict[str, list[str]] = {
    "Бренд": BRANDS,
    "Цвет": ["Белый", "Черный", "Серый", "Красный", "Синий", "Зеленый", "Оранжевый", "Желтый", "Бежевый"],
    "Материал": ["Сталь", "Нержавеющая сталь", "Алюминий", "Пластик ABS", "Полипропилен", "Стекло",
                 "Древесина", "Резина", "Хлопок", "Полиэстер"],
    "Страна производства": ["Россия", "Беларусь", "Казахстан", "Китай", "Турция", "Вьетнам", "Сербия"],
    "Гарантия": ["6 мес", "12 мес", "24 мес", "36 мес", "60 мес"],
    "Тип питания": ["Сеть 220 В", "Аккумулятор", "Батарейки", "Без питания"],
    "Класс энергоэффективности": ["A+++", "A++", "A+", "A", "B"],
    "Назначение": ["Для дома", "Для дачи", "Для мастерской", "Для офиса", "Для автомобиля"],
    "Сезон": ["Весна-лето", "Осень-зима", "Всесезонный"],
    "Степень защиты": ["IP20", "IP44", "IP54", "IP65", "IP67"],
    "Комплектация": ["Базовая", "Расширенная", "С кейсом", "С набором насадок"],
    "Тип упаковки": ["Коробка", "Блистер", "Пакет", "Без упаковки"],
    "Форма": ["Круглая", "Квадратная", "Прямоугольная", "Овальная"],
    "Покрытие": ["Без покрытия", "Порошковое", "Антипригарное", "Оцинкованное", "Хромированное"],
    "Тип крепления": ["Настенное", "Потолочное", "Напольное", "Настольное"],
    "Серия": ["Classic", "Optima", "Pro", "Expert", "Home"],
    "Пол": ["Мужской", "Женский", "Унисекс"],
    "Возрастная группа": ["Взрослые", "Дети от 3 лет", "Дети от 7 лет"],
    "Уровень шума": ["До 40 дБ", "40–60 дБ", "60–80 дБ", "Выше 80 дБ"],
    "Коллекция": ["2024", "2025", "2026"],
}
CHARACTERISTIC_AXES: list[tuple[str, list[str]]] = [
    ("Размер", ["S", "M", "L", "XL", "XXL"]),
    ("Цвет", ["Белый", "Черный", "Серый", "Синий", "Красный"]),
    ("Объем", ["0,5 л", "1 л", "2 л", "5 л"]),
    ("Длина", ["10 м", "15 м", "25 м", "50 м"]),
]
UNITS = [("796", "шт", "Штука", "PCE"), ("778", "упак", "Упаковка", ""), ("166", "кг", "Килограмм", "KGM"),
         ("006", "м", "Метр", "MTR"), ("112", "л", "Литр", "LTR")]


def xml_escape(text: str) -> str:
    # Only the three characters that matter in element text; attributes use the same values.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


class _Ids:
    """Deterministic GUIDs and version stamps drawn from one seeded RNG."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def guid(self) -> str:
        h = f"{self.rng.getrandbits(128):032x}"
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"

    def version(self) -> str:
        return base64.b64encode(self.rng.getrandbits(64).to_bytes(8, "big")).decode("ascii")


def _ean13(rng: random.Random) -> str:
    # Prefix 2 is the in-store range УТ uses for barcodes it generates itself.
    body = f"2{rng.randrange(10**11):011d}"
    s = sum(int(d) * (3 if i % 2 else 1) for i, d in enumerate(body))
    return body + str((10 - s % 10) % 10)


def _money(value: int) -> str:
    return f"{value:,}".replace(",", "\u00a0")  # 1C separates thousands with a no-break space


class _Catalog:
    """Reference data (groups, properties, price types, warehouses) shared by both files."""

    def __init__(self, ids: _Ids) -> None:
        self.catalog_id = ids.guid()
        # 10 roots x 4 children x 4 grandchildren = 210 groups; goods sit in the 160 leaves.
        self.tree: list[tuple[str, str, list[tuple[str, str, list[tuple[str, str]]]]]] = []
        self.leaves: list[tuple[str, str]] = []  # (group id, root category name)
        for root, subs in CATEGORIES.items():
            children = []
            for sub in subs:
                leaves = [(ids.guid(), f"{sub}: {seg}") for seg in SEGMENTS]
                self.leaves.extend((gid, root) for gid, _ in leaves)
                children.append((ids.guid(), sub, leaves))
            self.tree.append((ids.guid(), root, children))
        self.properties: list[tuple[str, str, list[tuple[str, str]]]] = [
            (ids.guid(), name, [(ids.guid(), v) for v in values]) for name, values in PROPERTIES.items()
        ]
        self.price_types = [(ids.guid(), "Розничная"), (ids.guid(), "Оптовая")]
        self.warehouses = [(ids.guid(), "Основной склад"), (ids.guid(), "Склад Север")]
        self.units = [(ids.guid(), *u) for u in UNITS]


def _write_classifier(f: TextIO, cat: _Catalog, ids: _Ids) -> None:
    w = f.write
    w(f'\t<Классификатор СодержитТолькоИзменения="false">\n\t\t<Ид>{cat.catalog_id}</Ид>\n'
      f"\t\t<Наименование>Основной каталог товаров</Наименование>\n\t\t<Группы>\n")

    def group_open(gid: str, name: str, tabs: str) -> None:
        w(f"{tabs}<Группа>\n{tabs}\t<Ид>{gid}</Ид>\n{tabs}\t<НомерВерсии>{ids.version()}</НомерВерсии>\n"
          f"{tabs}\t<ПометкаУдаления>false</ПометкаУдаления>\n"
          f"{tabs}\t<Наименование>{xml_escape(name)}</Наименование>\n")

    for rid, rname, children in cat.tree:
        group_open(rid, rname, "\t\t\t")
        w("\t\t\t\t<Группы>\n")
        for cid, cname, leaves in children:
            group_open(cid, cname, "\t\t\t\t\t")
            w("\t\t\t\t\t\t<Группы>\n")
            for lid, lname in leaves:
                group_open(lid, lname, "\t\t\t\t\t\t\t")
                w("\t\t\t\t\t\t\t</Группа>\n")
            w("\t\t\t\t\t\t</Группы>\n\t\t\t\t\t</Группа>\n")
        w("\t\t\t\t</Группы>\n\t\t\t</Группа>\n")
    w("\t\t</Группы>\n\t\t<Свойства>\n")
    for pid, name, values in cat.properties:
        w(f"\t\t\t<Свойство>\n\t\t\t\t<Ид>{pid}</Ид>\n\t\t\t\t<НомерВерсии>{ids.version()}</НомерВерсии>\n"
          f"\t\t\t\t<ПометкаУдаления>false</ПометкаУдаления>\n\t\t\t\t<Наименование>{xml_escape(name)}</Наименование>\n"
          f"\t\t\t\t<Внешний>false</Внешний>\n\t\t\t\t<ТипЗначений>Справочник</ТипЗначений>\n"
          f"\t\t\t\t<ВариантыЗначений>\n")
        for vid, text in values:
            w(f"\t\t\t\t\t<Справочник>\n\t\t\t\t\t\t<ИдЗначения>{vid}</ИдЗначения>\n"
              f"\t\t\t\t\t\t<Значение>{xml_escape(text)}</Значение>\n\t\t\t\t\t</Справочник>\n")
        w("\t\t\t\t</ВариантыЗначений>\n\t\t\t</Свойство>\n")
    w("\t\t</Свойства>\n\t\t<ЕдиницыИзмерения>\n")
    for uid, code, short, full, intl in cat.units:
        intl_xml = f"<МеждународноеСокращение>{intl}</МеждународноеСокращение>" if intl else "<МеждународноеСокращение/>"
        w(f"\t\t\t<ЕдиницаИзмерения>\n\t\t\t\t<Ид>{uid}</Ид>\n\t\t\t\t<НомерВерсии>{ids.version()}</НомерВерсии>\n"
          f"\t\t\t\t<ПометкаУдаления>false</ПометкаУдаления>\n\t\t\t\t<НаименованиеКраткое>{short}</НаименованиеКраткое>\n"
          f"\t\t\t\t<Код>{code}</Код>\n\t\t\t\t<НаименованиеПолное>{full}</НаименованиеПолное>\n"
          f"\t\t\t\t{intl_xml}\n\t\t\t</ЕдиницаИзмерения>\n")
    w("\t\t</ЕдиницыИзмерения>\n\t</Классификатор>\n")


def _requisite(name: str, value: str) -> str:
    return (f"\t\t\t\t\t<ЗначениеРеквизита>\n\t\t\t\t\t\t<Наименование>{name}</Наименование>\n"
            f"\t\t\t\t\t\t<Значение>{value}</Значение>\n\t\t\t\t\t</ЗначениеРеквизита>\n")


def _characteristics(tabs: str, axis: str, values: list[str]) -> str:
    body = "".join(
        f"{tabs}\t<ХарактеристикаТовара>\n{tabs}\t\t<Наименование>{axis}</Наименование>\n"
        f"{tabs}\t\t<Значение>{xml_escape(v)}</Значение>\n{tabs}\t</ХарактеристикаТовара>\n"
        for v in values
    )
    return f"{tabs}<ХарактеристикиТовара>\n{body}{tabs}</ХарактеристикиТовара>\n"


def generate(out_dir: Path, n_products: int, seed: int = 1) -> list[Path]:
    """Write the package into ``out_dir`` (or reuse it) and return the files in load order."""
    out_dir = Path(out_dir)
    paths = [out_dir / name for name in FILE_NAMES]
    stamp_path = out_dir / STAMP_NAME
    wanted = {"generator": GENERATOR_VERSION, "n_products": n_products, "seed": seed}
    if _stamp_matches(stamp_path, wanted, paths):
        return paths

    out_dir.mkdir(parents=True, exist_ok=True)
    stamp_path.unlink(missing_ok=True)  # a half-written set must never look reusable
    rng = random.Random(seed)
    ids = _Ids(rng)
    cat = _Catalog(ids)
    tmp = [p.with_name(p.name + ".tmp") for p in paths]
    # Both files are written in one pass so each product's random draws are made once and the
    # offers agree with the goods; 1 MiB buffers keep the write calls cheap.
    with open(tmp[0], "w", encoding="utf-8", newline="\n", buffering=1 << 20) as fi, \
            open(tmp[1], "w", encoding="utf-8", newline="\n", buffering=1 << 20) as fo:
        _write_all(fi, fo, cat, ids, rng, n_products)
    for t, p in zip(tmp, paths):
        os.replace(t, p)
    files = {p.name: p.stat().st_size for p in paths}
    stamp_path.write_text(json.dumps({**wanted, "files": files}, ensure_ascii=False, indent=1), encoding="utf-8")
    return paths


def _stamp_matches(stamp_path: Path, wanted: dict[str, int], paths: list[Path]) -> bool:
    try:
        stamp = json.loads(stamp_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if any(stamp.get(k) != v for k, v in wanted.items()):
        return False
    files = stamp.get("files", {})
    return all(p.is_file() and files.get(p.name) == p.stat().st_size for p in paths)


def _write_all(fi: TextIO, fo: TextIO, cat: _Catalog, ids: _Ids, rng: random.Random, n: int) -> None:
    fi.write(ROOT)
    _write_classifier(fi, cat, ids)
    cid = cat.catalog_id
    fi.write(f'\t<Каталог СодержитТолькоИзменения="false">\n\t\t<Ид>{cid}</Ид>\n'
             f"\t\t<ИдКлассификатора>{cid}</ИдКлассификатора>\n"
             f"\t\t<Наименование>Основной каталог товаров</Наименование>\n\t\t<Товары>\n")
    fo.write(ROOT)
    fo.write(f'\t<ПакетПредложений СодержитТолькоИзменения="false">\n\t\t<Ид>{cid}#</Ид>\n'
             f"\t\t<Наименование>Пакет предложений (Основной каталог товаров)</Наименование>\n"
             f"\t\t<ИдКаталога>{cid}</ИдКаталога>\n\t\t<ИдКлассификатора>{cid}</ИдКлассификатора>\n\t\t<ТипыЦен>\n")
    for pid, name in cat.price_types:
        fo.write(f"\t\t\t<ТипЦены>\n\t\t\t\t<Ид>{pid}</Ид>\n\t\t\t\t<Наименование>{name}</Наименование>\n"
                 f"\t\t\t\t<Валюта>RUB</Валюта>\n\t\t\t\t<Налог>\n\t\t\t\t\t<Наименование>НДС</Наименование>\n"
                 f"\t\t\t\t\t<УчтеноВСумме>true</УчтеноВСумме>\n\t\t\t\t</Налог>\n\t\t\t</ТипЦены>\n")
    fo.write("\t\t</ТипыЦен>\n\t\t<Склады>\n")
    for wid, name in cat.warehouses:
        fo.write(f"\t\t\t<Склад>\n\t\t\t\t<Ид>{wid}</Ид>\n\t\t\t\t<Наименование>{name}</Наименование>\n\t\t\t</Склад>\n")
    fo.write("\t\t</Склады>\n\t\t<Предложения>\n")

    (retail_id, _), (wholesale_id, _) = cat.price_types
    (wh_main, _), (wh_north, _) = cat.warehouses
    choice, randint, sample = rng.choice, rng.randint, rng.sample
    for i in range(n):
        pid = ids.guid()
        group_id, root = choice(cat.leaves)
        noun, brand = choice(NOUNS), choice(BRANDS)
        sku = f"{brand[:2].upper()}-{randint(1000, 99999)}"
        name = xml_escape(f"{noun} {choice(ADJECTIVES)} {brand} {sku}")
        barcode = _ean13(rng)
        descr = xml_escape(" ".join(sample(SENTENCES, randint(*DESCRIPTION_SENTENCES))))
        image = f"import_files/{pid[:2]}/{pid.replace('-', '')}_{ids.guid().replace('-', '')}.jpg"
        props = "".join(
            f"\t\t\t\t\t<ЗначенияСвойства>\n\t\t\t\t\t\t<Ид>{prop_id}</Ид>\n"
            f"\t\t\t\t\t\t<Значение>{choice(values)[0]}</Значение>\n\t\t\t\t\t</ЗначенияСвойства>\n"
            for prop_id, _, values in sample(cat.properties, randint(3, 5))
        )
        weight = f"{randint(1, 2500) / 100:.2f}"
        has_variants = i % VARIANT_EVERY == VARIANT_EVERY - 1
        variants: list[tuple[str, str]] = []
        chars = ""
        if has_variants:
            axis, axis_values = choice(CHARACTERISTIC_AXES)
            picked = sample(axis_values, VARIANTS_PER_PRODUCT)
            variants = [(f"{pid}#{ids.guid()}", v) for v in picked]
            chars = _characteristics("\t\t\t\t", axis, picked)
        fi.write(
            f"\t\t\t<Товар>\n\t\t\t\t<Ид>{pid}</Ид>\n\t\t\t\t<НомерВерсии>{ids.version()}</НомерВерсии>\n"
            f"\t\t\t\t<ПометкаУдаления>false</ПометкаУдаления>\n\t\t\t\t<Штрихкод>{barcode}</Штрихкод>\n"
            f"\t\t\t\t<Артикул>{sku}</Артикул>\n\t\t\t\t<Наименование>{name}</Наименование>\n"
            f"\t\t\t\t{UNIT_PCS}\n\t\t\t\t<Группы>\n\t\t\t\t\t<Ид>{group_id}</Ид>\n\t\t\t\t</Группы>\n"
            f"\t\t\t\t<Описание>{descr}</Описание>\n\t\t\t\t<Картинка>{image}</Картинка>\n"
            f"\t\t\t\t<ЗначенияСвойств>\n{props}\t\t\t\t</ЗначенияСвойств>\n"
            f"\t\t\t\t<СтавкиНалогов>\n\t\t\t\t\t<СтавкаНалога>\n\t\t\t\t\t\t<Наименование>НДС</Наименование>\n"
            f"\t\t\t\t\t\t<Ставка>20</Ставка>\n\t\t\t\t\t</СтавкаНалога>\n\t\t\t\t</СтавкиНалогов>\n"
            f"{chars}\t\t\t\t<ЗначенияРеквизитов>\n"
            f"{_requisite('ВидНоменклатуры', root)}{_requisite('ТипНоменклатуры', 'Товар')}"
            f"{_requisite('Полное наименование', name)}{_requisite('Вес', weight)}"
            f"\t\t\t\t</ЗначенияРеквизитов>\n\t\t\t</Товар>\n"
        )
        retail = randint(49, 150_000)
        offers = [(pid, name, barcode, "")] + [
            (vid, f"{name} ({xml_escape(v)})", _ean13(rng), _characteristics("\t\t\t\t", axis, [v]))
            for vid, v in variants
        ]
        wholesale = retail * 85 // 100
        for oid, oname, obarcode, ochars in offers:
            main, north = randint(0, 200), randint(0, 40)
            fo.write(
                f"\t\t\t<Предложение>\n\t\t\t\t<Ид>{oid}</Ид>\n\t\t\t\t<НомерВерсии>{ids.version()}</НомерВерсии>\n"
                f"\t\t\t\t<ПометкаУдаления>false</ПометкаУдаления>\n\t\t\t\t<Штрихкод>{obarcode}</Штрихкод>\n"
                f"\t\t\t\t<Артикул>{sku}</Артикул>\n\t\t\t\t<Наименование>{oname}</Наименование>\n"
                f"\t\t\t\t{UNIT_PCS}\n{ochars}\t\t\t\t<Цены>\n"
                f"\t\t\t\t\t<Цена>\n\t\t\t\t\t\t<Представление>{_money(retail)} RUB за шт</Представление>\n"
                f"\t\t\t\t\t\t<ИдТипаЦены>{retail_id}</ИдТипаЦены>\n\t\t\t\t\t\t<ЦенаЗаЕдиницу>{retail}</ЦенаЗаЕдиницу>\n"
                f"\t\t\t\t\t\t<Валюта>RUB</Валюта>\n\t\t\t\t\t\t<Коэффициент>1</Коэффициент>\n\t\t\t\t\t</Цена>\n"
                f"\t\t\t\t\t<Цена>\n\t\t\t\t\t\t<Представление>{_money(wholesale)} RUB за шт</Представление>\n"
                f"\t\t\t\t\t\t<ИдТипаЦены>{wholesale_id}</ИдТипаЦены>\n\t\t\t\t\t\t<ЦенаЗаЕдиницу>{wholesale}</ЦенаЗаЕдиницу>\n"
                f"\t\t\t\t\t\t<Валюта>RUB</Валюта>\n\t\t\t\t\t\t<Коэффициент>1</Коэффициент>\n\t\t\t\t\t</Цена>\n"
                f"\t\t\t\t</Цены>\n\t\t\t\t<Количество>{main + north}</Количество>\n"
                f'\t\t\t\t<Склад ИдСклада="{wh_main}" КоличествоНаСкладе="{main}"/>\n'
                f'\t\t\t\t<Склад ИдСклада="{wh_north}" КоличествоНаСкладе="{north}"/>\n'
                f"\t\t\t</Предложение>\n"
            )
    fi.write("\t\t</Товары>\n\t</Каталог>\n</КоммерческаяИнформация>\n")
    fo.write("\t\t</Предложения>\n\t</ПакетПредложений>\n</КоммерческаяИнформация>\n")


def expected_counts(n_products: int) -> dict[str, int]:
    """What a reader must find in a generated package: goods in import, offers (incl. variants)."""
    with_variants = n_products // VARIANT_EVERY
    return {"products": n_products, "offers": n_products + with_variants * VARIANTS_PER_PRODUCT}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("n", type=int, help="number of products")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    for p in generate(args.out_dir, args.n, args.seed):
        print(f"{p}\t{p.stat().st_size / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
