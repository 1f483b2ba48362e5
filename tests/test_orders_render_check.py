"""The check before an order file is written: a quick in-memory pass for sound documents, the
reader's verdict and wording for everything else. Whatever path it takes, a document 1C would
not accept is refused with a line, a path and a reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.commerceml.reader import FileReader
from bridge.commerceml.render import (
    PROFILES, RenderError, Renderer, _plainly_sound, check, clean, encode, render_checked,
)
from test_orders_render import an_order

CONTEXT = {"generated_at": "2026-11-27T15:05:00"}


def renderer_with(tmp_path: Path, template: str) -> Renderer:
    folder = tmp_path / "templates"
    folder.mkdir()
    (folder / "orders-ut11.xml.j2").write_text(template, encoding="utf-8")
    return Renderer(folder)


def one_document(body: str, root: str = '<КоммерческаяИнформация ВерсияСхемы="2.08">') -> str:
    """A template: ``root`` (line 2 of the file, after the declaration), ``body`` for each order from line 3."""
    name = root[1:].split()[0].rstrip(">")
    return f"{root}\n{{% for o in orders %}}\n{body}\n{{% endfor %}}\n</{name}>\n"


REFUSED = {
    "a document without its Ид": (
        one_document("<Документ>\n<Номер>{{ o.number }}</Номер>\n</Документ>"),
        3, "/КоммерческаяИнформация/Документ[1]", "has no Ид"),
    "two documents for one order": (
        one_document("<Документ><Ид>{{ o.id }}</Ид></Документ>\n<Документ><Ид>{{ o.id }}-2</Ид></Документ>"),
        0, "/КоммерческаяИнформация", "expected 1 document(s), the template produced 2"),
    "a sum that is not a number": (
        one_document("<Документ><Ид>{{ o.id }}</Ид>\n<Сумма>{{ o.amount | money }} руб.</Сумма></Документ>"),
        4, "/КоммерческаяИнформация/Документ[1]/Сумма", "not allowed here (Число)"),
    "an element 1C does not know": (
        one_document("<Документ><Ид>{{ o.id }}</Ид>\n<Покупатель>{{ o.number }}</Покупатель></Документ>"),
        4, "/КоммерческаяИнформация/Документ[1]/Покупатель", "not expected here"),
    "no ВерсияСхемы": (
        one_document("<Документ><Ид>{{ o.id }}</Ид></Документ>", "<КоммерческаяИнформация>"),
        2, "/КоммерческаяИнформация", "ВерсияСхемы is missing"),
    "a foreign namespace": (
        one_document("<Документ><Ид>{{ o.id }}</Ид></Документ>",
                     '<КоммерческаяИнформация xmlns="urn:example" ВерсияСхемы="2.08">'),
        2, "/КоммерческаяИнформация", "unexpected namespace"),
    "another root": (
        one_document("<Документ><Ид>{{ o.id }}</Ид></Документ>", '<Заказы ВерсияСхемы="2.08">'),
        2, "/Заказы", "the root element is <Заказы>"),
    "a second document hidden in a Контейнер": (
        one_document("<Контейнер><Документ><Ид>{{ o.id }}</Ид></Документ><Документ><Ид>x</Ид></Документ></Контейнер>"),
        0, "/КоммерческаяИнформация", "the template produced 2"),
    "markup that is not well-formed": (
        one_document("<Документ><Ид>{{ o.id }}</Ид>\n<Комментарий>{{ 'a < b' | safe }}</Комментарий></Документ>"),
        4, "/КоммерческаяИнформация/Документ/Комментарий", "StartTag: invalid element name"),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_a_document_1c_would_not_accept_is_refused_with_line_path_and_reason(tmp_path: Path, case: str) -> None:
    template, line, path, reason = REFUSED[case]
    written: list[bytes] = []
    with pytest.raises(RenderError) as error:
        render_checked(renderer_with(tmp_path, template), "ut11", {**CONTEXT, "orders": [an_order()]}, "utf-8-bom",
                       writer=written.append)
    message = str(error.value)
    assert "would not accept" in message and f"line {line}: {path}: " in message and reason in message, message
    assert written == []


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_the_quick_pass_never_accepts_what_the_reader_refuses(tmp_path: Path, case: str) -> None:
    data = encode(renderer_with(tmp_path, REFUSED[case][0]).render("ut11", {**CONTEXT, "orders": [an_order()]}),
                  "utf-8-bom")
    assert check(Path("ut11.xml"), expect_documents=1, data=data)
    assert not _plainly_sound(data, 1)


@pytest.mark.parametrize("profile", sorted(PROFILES))
@pytest.mark.parametrize("encoding", ["utf-8-bom", "utf-8", "windows-1251"])
def test_the_built_in_templates_pass_the_quick_check(profile: str, encoding: str) -> None:
    # Otherwise every order would be read back through the reader: correct, but three times slower.
    data = encode(Renderer().render(profile, {**CONTEXT, "orders": [an_order()]}), encoding)
    assert _plainly_sound(data, 1)
    assert not _plainly_sound(data, 2)  # the count is part of the verdict


def test_what_the_quick_pass_does_not_know_is_left_to_the_reader(tmp_path: Path) -> None:
    # A catalog section beside the order: records the reader checks on its own; here it finds them sound.
    template = one_document('<Каталог><Товары><Товар><Ид>p-1</Ид><Наименование>Чайник</Наименование></Товар>'
                            '</Товары></Каталог>\n<Документ><Ид>{{ o.id }}</Ид></Документ>')
    renderer = renderer_with(tmp_path, template)
    data = encode(renderer.render("ut11", {**CONTEXT, "orders": [an_order()]}), "utf-8-bom")
    assert not _plainly_sound(data, 1)
    assert render_checked(renderer, "ut11", {**CONTEXT, "orders": [an_order()]}, "utf-8-bom") == data


def test_utf8_bytes_behind_a_windows_1251_declaration_are_refused() -> None:
    text = Renderer().render("ut11", {**CONTEXT, "orders": [an_order()]})
    data = b'<?xml version="1.0" encoding="windows-1251"?>\n' + text.encode("utf-8")
    problems = check(Path("ut11.xml"), expect_documents=1, data=data)
    assert problems and "bytes are UTF-8" in problems[0].message
    assert not _plainly_sound(data, 1)


def test_a_document_type_declaration_is_refused() -> None:
    text = Renderer().render("ut11", {**CONTEXT, "orders": [an_order()]})
    data = ('<?xml version="1.0" encoding="UTF-8"?>\n<!DOCTYPE КоммерческаяИнформация [<!ENTITY x "y">]>\n'
            + text).encode("utf-8")
    problems = check(Path("ut11.xml"), expect_documents=1, data=data)
    assert problems and "DOCTYPE" in problems[0].message
    assert not _plainly_sound(data, 1)


def test_the_quick_pass_agrees_with_the_reader_on_what_it_accepts(tmp_path: Path) -> None:
    for profile in sorted(PROFILES):
        data = encode(Renderer().render(profile, {**CONTEXT, "orders": [an_order(), an_order(id="second")]}),
                      "windows-1251")
        assert _plainly_sound(data, 2)
        path = tmp_path / f"{profile}.xml"
        path.write_bytes(data)
        reader = FileReader(path)
        assert len(list(reader.records())) == 2 and reader.problems == []


def test_every_character_xml_forbids_is_stripped_from_values() -> None:
    # clean() skips its regex for printable strings: no forbidden character may count as printable.
    forbidden = [chr(c) for c in [*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20), *range(0xD800, 0xE000),
                                  0xFFFE, 0xFFFF]]
    assert [ch for ch in forbidden if clean(f"a{ch}b") != "ab"] == []
    assert clean("a\tb\nc\rd ё") == "a\tb\nc\rd ё"
