"""Turn one completed XML element into a typed record.

Functions here see a single record's subtree (already fully parsed) and know
CommerceML's element names, matched by local name so that every namespace
1C has used (none, commerceml_2, _205, _210, commerceml_3) reads the same.
They report unusable values through the ``warn`` callback instead of raising.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from decimal import Decimal, InvalidOperation

from lxml import etree

from bridge.commerceml.records import (
    BankAccount, Counterparty, Document, DocumentLine, Group, Offer, Price, PriceType,
    Product, Property, PropertyValue, Unit, Warehouse, split_id,
)

Warn = Callable[[etree._Element, str], None]
_TRUE = {"true", "1", "да", "истина", "yes"}
_MAX_EXPONENT = 17  # 18 integer digits: 1C's widest number fields hold 15, a CRM's decimal(18, x) 18


# Full tag -> local name. CommerceML has a few hundred element names; the cap
# keeps a hostile file with random names from growing it without bound.
_LOCAL: dict[object, str] = {}
_LOCAL_CAP = 20_000


def local(tag: object) -> str:
    name = _LOCAL.get(tag)
    if name is None:
        name = tag[tag.rfind("}") + 1:] if isinstance(tag, str) else ""  # "" for comments, PIs
        if len(_LOCAL) < _LOCAL_CAP:
            _LOCAL[tag] = name
    return name


def kids(element: etree._Element) -> list[tuple[str, etree._Element]]:
    """Children with their local names (a list: cheaper than a generator for the handful a node has)."""
    get = _LOCAL.get
    result = []
    for c in element:
        tag = c.tag  # lxml builds this string anew on each access: read it once
        name = get(tag) or local(tag)
        if name:
            result.append((name, c))
    return result


def fields(element: etree._Element) -> dict[str, etree._Element]:
    """Direct children by local name, first occurrence: one pass instead of a search per field."""
    result: dict[str, etree._Element] = {}
    get = _LOCAL.get
    for c in element:
        tag = c.tag
        name = get(tag) or local(tag)
        if name not in result:
            result[name] = c
    return result


def text(element: etree._Element | None) -> str | None:
    if element is None:
        return None
    value = element.text  # decoded anew on each access: read it once
    if value is None:
        return None
    return value.strip() or None


def child(element: etree._Element, name: str) -> etree._Element | None:
    get = _LOCAL.get
    for c in element:
        tag = c.tag
        if (get(tag) or local(tag)) == name:
            return c
    return None


def child_text(element: etree._Element, name: str) -> str | None:
    return text(child(element, name))


def flag(value: str | None) -> bool:
    return value is not None and value.strip().lower() in _TRUE


def number(element: etree._Element | None, warn: Warn, value: str | None = None) -> Decimal | None:
    """Parse a 1C number: '1 234,50' and '1234.50' both mean 1234.5."""
    raw = value if value is not None else text(element)
    if raw is None:
        return None
    cleaned = raw.replace("\xa0", "").replace(" ", "").replace(",", ".")
    try:
        result = Decimal(cleaned)
    except InvalidOperation:
        result = None
    if result is None or not result.is_finite():
        if element is not None:
            warn(element, f"'{raw}' is not a number; the value is ignored")
        return None
    if result.adjusted() > _MAX_EXPONENT:  # '1e400': finite, but no CRM field takes it
        if element is not None:
            warn(element, f"'{raw}' is beyond any amount 1C keeps (more than {_MAX_EXPONENT + 1} digits); "
                          "the value is ignored")
        return None
    return result


def _name_value_pairs(container: etree._Element | None, item: str) -> Iterator[tuple[str, str]]:
    if container is None:
        return
    for tag, c in kids(container):
        if tag != item:
            continue
        parts = fields(c)
        name = text(parts.get("Наименование"))
        if name is not None:
            yield name, text(parts.get("Значение")) or ""


def requisites(container: etree._Element | None) -> dict[str, str]:
    """ЗначенияРеквизитов: a requisite may repeat Значение; keep them joined."""
    result: dict[str, str] = {}
    if container is None:
        return result
    for tag, c in kids(container):
        if tag != "ЗначениеРеквизита":
            continue
        name = None
        values: list[str] = []
        for t, v in kids(c):
            if t == "Значение":
                values.append(text(v) or "")
            elif t == "Наименование" and name is None:
                name = text(v)
        if name is None:
            continue
        result[name] = "; ".join(v for v in values if v) if len(values) > 1 else (values[0] if values else "")
    return result


def groups(element: etree._Element, parent_id: str | None, skip: Callable[[etree._Element, str], None]) -> Iterator[Group]:
    """Walk a Группы element depth-first, parents before children."""
    for tag, g in kids(element):
        if tag != "Группа":
            continue
        gid = child_text(g, "Ид")
        if gid is None:
            skip(g, "a group without Ид cannot be identified and is skipped")
            continue
        yield Group(id=gid, name=child_text(g, "Наименование") or "", parent_id=parent_id,
                    deleted=flag(child_text(g, "ПометкаУдаления")), line=g.sourceline or 0)
        sub = child(g, "Группы")
        if sub is not None:
            yield from groups(sub, gid, skip)


def property_(element: etree._Element) -> Property | None:
    pid = child_text(element, "Ид")
    if pid is None:
        return None
    values: dict[str, str] = {}
    variants = child(element, "ВариантыЗначений")
    if variants is not None:
        for tag, ref in kids(variants):
            if tag == "Справочник":
                vid = child_text(ref, "ИдЗначения")
                if vid is not None:
                    values[vid] = child_text(ref, "Значение") or ""
    for_products = child_text(element, "ДляТоваров")
    for_offers = child_text(element, "ДляПредложений")
    return Property(
        id=pid, name=child_text(element, "Наименование") or "", value_type=child_text(element, "ТипЗначений"),
        values=values, for_products=flag(for_products) if for_products else None,
        for_offers=flag(for_offers) if for_offers else None,
        deleted=flag(child_text(element, "ПометкаУдаления")), line=element.sourceline or 0)


def price_type(element: etree._Element) -> PriceType | None:
    tid = child_text(element, "Ид")
    if tid is None:
        return None
    tax = child(element, "Налог")
    included = child_text(tax, "УчтеноВСумме") if tax is not None else None
    return PriceType(id=tid, name=child_text(element, "Наименование") or tid, currency=child_text(element, "Валюта"),
                     tax_name=child_text(tax, "Наименование") if tax is not None else None,
                     tax_included=flag(included) if included is not None else None, line=element.sourceline or 0)


def warehouse(element: etree._Element) -> Warehouse | None:
    wid = child_text(element, "Ид")
    if wid is None:
        return None
    address = child(element, "Адрес")
    return Warehouse(id=wid, name=child_text(element, "Наименование") or wid,
                     address=child_text(address, "Представление") if address is not None else None,
                     deleted=flag(child_text(element, "ПометкаУдаления")), line=element.sourceline or 0)


def unit(element: etree._Element) -> Unit | None:
    uid = child_text(element, "Ид") or child_text(element, "Код")
    if uid is None:
        return None
    return Unit(id=uid, code=child_text(element, "Код"), name=child_text(element, "НаименованиеПолное"),
                short_name=child_text(element, "НаименованиеКраткое"),
                international=child_text(element, "МеждународноеСокращение"), line=element.sourceline or 0)


def _attribute(element: etree._Element, name: str) -> str | None:
    value = element.get(name)
    if value is None:
        return None
    return value.strip() or None


def _base_unit(element: etree._Element | None) -> tuple[str | None, str | None]:
    """БазоваяЕдиница: code in the Код attribute (2.05+) or as text (older), name in attributes."""
    if element is None:
        return None, None
    # 1C pads codes to their field width (Код="796 " in УТ and УНФ exports, "796 " as text in 3.1);
    # an attribute is not stripped by the parser the way text() strips an element's text.
    code = _attribute(element, "Код")
    name = _attribute(element, "НаименованиеПолное") or _attribute(element, "НаименованиеКраткое")
    body = text(element)
    if code is None:
        code = body if body and body.isdigit() else None
    if name is None and body and not body.isdigit():
        name = body
    return code, name


def _property_values(container: etree._Element | None, dictionaries: dict[str, dict[str, str]]) -> list[PropertyValue]:
    result: list[PropertyValue] = []
    if container is None:
        return result
    for tag, c in kids(container):
        if tag != "ЗначенияСвойства":
            continue
        children = kids(c)
        pid = next((text(v) for t, v in children if t == "Ид"), None)
        if pid is None:
            continue
        for vtag, v in children:
            if vtag not in ("Значение", "ИдЗначения"):
                continue
            raw = text(v) or ""
            known = dictionaries.get(pid)
            if known is not None and raw in known:
                result.append(PropertyValue(pid, known[raw], raw))
            else:
                result.append(PropertyValue(pid, raw, raw if vtag == "ИдЗначения" else None))
    return result


def _taxes(container: etree._Element | None) -> dict[str, str]:
    return dict(_name_rate(container, "СтавкаНалога", "Ставка"))


def _name_rate(container: etree._Element | None, item: str, value: str) -> Iterator[tuple[str, str]]:
    if container is None:
        return
    for tag, c in kids(container):
        if tag == item:
            parts = fields(c)
            name = text(parts.get("Наименование"))
            if name is not None:
                yield name, text(parts.get(value)) or ""


def product(element: etree._Element, dictionaries: dict[str, dict[str, str]], catalog_id: str | None) -> Product | None:
    found: dict[str, etree._Element] = {}
    group_ids: list[str] = []
    images: list[str] = []
    barcode = None
    get = _LOCAL.get
    for c in element:
        tag = c.tag
        tag = get(tag) or local(tag)
        if tag == "Группы":
            group_ids.extend(t for t in (text(g) for gt, g in kids(c) if gt == "Ид") if t)
        elif tag == "Картинка":
            if (path := text(c)) is not None:
                images.append(path)
        elif tag == "Штрихкод":
            barcode = barcode or text(c)
        elif tag not in found:
            found[tag] = c
    full_id = text(found.get("Ид"))
    if full_id is None:
        return None
    product_id, characteristic_id = split_id(full_id)
    unit_code, unit_name = _base_unit(found.get("БазоваяЕдиница"))
    # The XSD gives goods a Статус attribute; some exchange modules write it as an element, as offers have it.
    status = element.get("Статус") or text(found.get("Статус"))
    deleted = flag(text(found.get("ПометкаУдаления"))) or (status is not None and status.strip().lower() == "удален")
    manufacturer = found.get("Изготовитель")
    return Product(
        id=full_id, product_id=product_id, characteristic_id=characteristic_id,
        name=text(found.get("Наименование")) or "", sku=text(found.get("Артикул")), barcode=barcode,
        code=text(found.get("Код")), full_name=text(found.get("ПолноеНаименование")),
        description=text(found.get("Описание")), unit_code=unit_code, unit_name=unit_name,
        group_ids=group_ids, images=images,
        properties=_property_values(found.get("ЗначенияСвойств"), dictionaries),
        characteristics=list(_name_value_pairs(found.get("ХарактеристикиТовара"), "ХарактеристикаТовара")),
        taxes=_taxes(found.get("СтавкиНалогов")), requisites=requisites(found.get("ЗначенияРеквизитов")),
        manufacturer=child_text(manufacturer, "Наименование") if manufacturer is not None else None,
        deleted=deleted, catalog_id=catalog_id, line=element.sourceline or 0)


def _prices(container: etree._Element, warn: Warn) -> list[Price]:
    result: list[Price] = []
    for tag, c in kids(container):
        if tag != "Цена":
            continue
        parts = fields(c)
        type_id = text(parts.get("ИдТипаЦены"))
        value_element = parts.get("ЦенаЗаЕдиницу")
        value = number(value_element, warn)
        if type_id is None or value is None:
            if type_id is None:
                warn(c, "a price without ИдТипаЦены cannot be assigned to a price type; it is ignored")
            elif value_element is None:
                warn(c, "a price without ЦенаЗаЕдиницу is ignored")
            continue
        result.append(Price(price_type_id=type_id, value=value, currency=text(parts.get("Валюта")),
                            unit=text(parts.get("Единица")), coefficient=number(parts.get("Коэффициент"), warn),
                            presentation=text(parts.get("Представление"))))
    return result


def _stock_rests(container: etree._Element, stock: dict[str, Decimal], warn: Warn) -> Decimal | None:
    """Остатки/Остаток/Склад/{Ид,Количество} (per warehouse) or Остатки/Остаток/Количество (total)."""
    total: Decimal | None = None
    for tag, rest in kids(container):
        if tag != "Остаток":
            continue
        for rtag, r in kids(rest):
            if rtag == "Склад":
                parts = fields(r)
                wid = text(parts.get("Ид"))
                qty = number(parts.get("Количество"), warn)
                if wid is not None and qty is not None:
                    stock[wid] = stock.get(wid, Decimal(0)) + qty
            elif rtag == "Количество":
                qty = number(r, warn)
                if qty is not None:
                    total = (total or Decimal(0)) + qty
    return total


def offer(element: etree._Element, warn: Warn, dictionaries: dict[str, dict[str, str]],
          package_id: str | None, catalog_id: str | None) -> Offer | None:
    children = kids(element)
    full_id = next((text(c) for tag, c in children if tag == "Ид"), None)
    if full_id is None:
        return None
    product_id, characteristic_id = split_id(full_id)
    result = Offer(id=full_id, product_id=product_id, characteristic_id=characteristic_id,
                   package_id=package_id, catalog_id=catalog_id, line=element.sourceline or 0)
    stock: dict[str, Decimal] | None = None
    rests_total: Decimal | None = None
    for tag, c in children:
        if tag == "Наименование":
            result.name = text(c)
        elif tag == "Артикул":
            result.sku = text(c)
        elif tag == "Штрихкод":
            result.barcode = result.barcode or text(c)
        elif tag == "БазоваяЕдиница":
            result.unit_code, result.unit_name = _base_unit(c)
        elif tag == "ХарактеристикиТовара":
            result.characteristics = list(_name_value_pairs(c, "ХарактеристикаТовара"))
        elif tag == "ЗначенияСвойств":
            result.properties = _property_values(c, dictionaries)
        elif tag == "Цены":
            result.prices = _prices(c, warn)
        elif tag == "Количество":
            result.quantity = number(c, warn)
        elif tag == "Склад":
            # The attribute form: <Склад ИдСклада="..." КоличествоНаСкладе="5"/>
            wid = c.get("ИдСклада")
            qty = number(c, warn, c.get("КоличествоНаСкладе")) if c.get("КоличествоНаСкладе") is not None else None
            if wid is None or qty is None:
                warn(c, "a Склад without ИдСклада and КоличествоНаСкладе attributes is ignored")
                continue
            stock = stock if stock is not None else {}
            stock[wid] = stock.get(wid, Decimal(0)) + qty
        elif tag == "Остатки":
            stock = stock if stock is not None else {}
            total = _stock_rests(c, stock, warn)
            if total is not None:
                rests_total = (rests_total or Decimal(0)) + total
        elif tag == "ПометкаУдаления":
            result.deleted = result.deleted or flag(text(c))
        elif tag == "Статус":
            result.deleted = result.deleted or (text(c) or "").lower() == "удален"
    if stock == {} and rests_total is None:
        stock = None
    result.stock = stock
    if result.quantity is None:
        if rests_total is not None:
            result.quantity = rests_total
        elif stock:
            result.quantity = sum(stock.values(), Decimal(0))
    status = element.get("Статус")
    if status is not None and status.strip().lower() == "удален":
        result.deleted = True
    return result


def _address(element: etree._Element) -> str:
    presentation = child_text(element, "Представление")
    if presentation:
        return presentation
    parts = [child_text(f, "Значение") for t, f in kids(element) if t == "АдресноеПоле"]
    return ", ".join(p for p in parts if p)


# Requisites only an organisation has (the XSD's РеквизитыЮрЛица, or the 2.05+ nested form).
_ORGANISATION = frozenset({"ОфициальноеНаименование", "ЮридическийАдрес", "ЮридическоеЛицо"})


def counterparty(element: etree._Element) -> Counterparty | None:
    cid = child_text(element, "Ид")
    if cid is None:
        return None
    result = Counterparty(id=cid, name="", line=element.sourceline or 0)
    names: dict[str, str | None] = {}
    seen: set[str] = set()
    _counterparty_parts(element, result, names, seen)
    result.last_name, result.first_name, result.middle_name = names.get("Фамилия"), names.get("Имя"), names.get("Отчество")
    person_name = " ".join(p for p in (result.last_name, result.first_name, result.middle_name) if p)
    result.full_name = names.get("ОфициальноеНаименование") or names.get("ПолноеНаименование")
    result.name = names.get("Наименование") or result.full_name or person_name or cid
    result.inn, result.kpp = names.get("ИНН"), names.get("КПП")
    result.okpo = names.get("КодПоОКПО") or names.get("ОКПО")
    result.role = names.get("Роль")
    result.deleted = flag(names.get("ПометкаУдаления"))
    if result.last_name or result.first_name:
        result.person = True
    elif "АдресРегистрации" in seen and not seen & _ORGANISATION:
        # The XSD gives a private person АдресРегистрации (РеквизитыФизЛица) and an organisation
        # ОфициальноеНаименование and ЮридическийАдрес (РеквизитыЮрЛица). 1C-Bitrix writes a buyer
        # who left every name empty in the person's form (empty ПолноеНаименование and
        # АдресРегистрации): a person, not an organisation. УТ 11 sends organisations with
        # АдресРегистрации too, but always with ОфициальноеНаименование, which wins.
        result.person = True
    return result


def _counterparty_parts(element: etree._Element, result: Counterparty, names: dict[str, str | None],
                        seen: set[str]) -> None:
    """Read a Контрагент's requisites into ``result`` and ``names`` (the first value of a name wins).

    CommerceML 2.04 writes them straight under Контрагент; 2.05+ may nest them in ЮридическоеЛицо
    or ФизическоеЛицо, addresses and bank accounts included, so a nested block is read the same way.
    """
    for tag, c in kids(element):
        seen.add(tag)
        if tag in ("Наименование", "ОфициальноеНаименование", "ПолноеНаименование", "Фамилия", "Имя", "Отчество",
                   "ИНН", "КПП", "КодПоОКПО", "ОКПО", "Роль", "ПометкаУдаления"):
            names.setdefault(tag, text(c))
        elif tag in ("Адрес", "АдресРегистрации", "ЮридическийАдрес", "ФактическийАдрес"):
            if address := _address(c):
                result.addresses.append((tag, address))
        elif tag == "Контакты":
            result.contacts.extend((child_text(k, "Тип") or "", child_text(k, "Значение") or "")
                                   for kt, k in kids(c) if kt == "Контакт")
        elif tag == "РасчетныеСчета":
            for at, account in kids(c):
                if at != "РасчетныйСчет":
                    continue
                bank = child(account, "Банк")
                result.bank_accounts.append(BankAccount(
                    number=child_text(account, "НомерСчета"),
                    bank_name=child_text(bank, "Наименование") if bank is not None else None,
                    bik=child_text(bank, "БИК") if bank is not None else None,
                    correspondent_account=child_text(bank, "СчетКорреспондентский") if bank is not None else None))
        elif tag == "Представители":
            for rt, rep in kids(c):
                if rt == "Представитель":
                    nested = child(rep, "Контрагент")
                    inner = nested if nested is not None else rep
                    result.representatives.append((child_text(rep, "Отношение") or "", child_text(inner, "Наименование") or ""))
        elif tag in ("ЮридическоеЛицо", "ФизическоеЛицо"):
            _counterparty_parts(c, result, names, seen)
            if tag == "ФизическоеЛицо":
                result.person = True


def _doc_taxes(container: etree._Element | None, warn: Warn) -> list[tuple[str, Decimal | None, Decimal | None]]:
    result: list[tuple[str, Decimal | None, Decimal | None]] = []
    if container is None:
        return result
    for tag, c in kids(container):
        if tag in ("Налог", "СтавкаНалога"):
            parts = fields(c)
            rate = parts.get("Ставка")
            written = text(rate)
            # "Без налога", "Без НДС": no rate. "18%": 1C's presentation of a rate, not a broken number.
            if written is None or written.lower().startswith("без"):
                rate_value = None
            else:
                rate_value = number(rate, warn, written.removesuffix("%").strip())
            result.append((text(parts.get("Наименование")) or "", rate_value, number(parts.get("Сумма"), warn)))
    return result


def _discounts(container: etree._Element | None, warn: Warn) -> list[tuple[str | None, Decimal | None]]:
    if container is None:
        return []
    return [(text(parts.get("Наименование")), number(parts.get("Сумма"), warn))
            for t, c in kids(container) if t == "Скидка" for parts in (fields(c),)]


def _line(element: etree._Element, warn: Warn) -> DocumentLine:
    found = fields(element)
    full_id = text(found.get("Ид"))
    product_id, characteristic_id = split_id(full_id) if full_id else (None, None)
    unit_element = found.get("Единица")
    unit_name = child_text(unit_element, "НаименованиеКраткое") if unit_element is not None and len(unit_element) else text(unit_element)
    if unit_name is None:
        unit_name = _base_unit(found.get("БазоваяЕдиница"))[1]
    price = found.get("ЦенаЗаЕдиницу")
    return DocumentLine(
        product_id=product_id, characteristic_id=characteristic_id, name=text(found.get("Наименование")),
        sku=text(found.get("Артикул")), unit=unit_name, quantity=number(found.get("Количество"), warn),
        price=number(price if price is not None else found.get("Цена"), warn),
        amount=number(found.get("Сумма"), warn),
        taxes=_doc_taxes(found.get("Налоги"), warn) or _doc_taxes(found.get("СтавкиНалогов"), warn),
        discounts=_discounts(found.get("Скидки"), warn), requisites=requisites(found.get("ЗначенияРеквизитов")))


def document(element: etree._Element, warn: Warn) -> Document | None:
    found = fields(element)
    did = text(found.get("Ид"))
    if did is None:
        return None
    result = Document(id=did, number=text(found.get("Номер")), date=text(found.get("Дата")),
                      time=text(found.get("Время")), number_1c=text(found.get("Номер1С")),
                      date_1c=text(found.get("Дата1С")), operation=text(found.get("ХозОперация")),
                      role=text(found.get("Роль")), currency=text(found.get("Валюта")),
                      rate=number(found.get("Курс"), warn), amount=number(found.get("Сумма"), warn),
                      comment=text(found.get("Комментарий")), line=element.sourceline or 0)
    if (c := found.get("Контрагенты")) is not None:
        result.counterparties = [cp for t, k in kids(c) if t == "Контрагент" and (cp := counterparty(k)) is not None]
    if (c := found.get("Товары")) is not None:
        result.lines = [_line(line, warn) for t, line in kids(c) if t == "Товар"]
    result.taxes = _doc_taxes(found.get("Налоги"), warn)
    result.discounts = _discounts(found.get("Скидки"), warn)
    result.requisites = requisites(found.get("ЗначенияРеквизитов"))
    result.deleted = flag(text(found.get("ПометкаУдаления"))) or flag(result.requisites.get("ПометкаУдаления"))
    return result
