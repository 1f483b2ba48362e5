"""Hostile files give a structural error with a clear message, exit 1, no traceback and no side effect."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import pytest

from conftest import inspect_json, run_cli

GOOD = ('<?xml version="1.0" encoding="UTF-8"?>\n'
        '<КоммерческаяИнформация ВерсияСхемы="2.05" ДатаФормирования="2026-11-01T10:00:00">\n'
        '<Каталог><Ид>cat</Ид><Наименование>Каталог</Наименование><Товары>\n'
        '<Товар><Ид>p1</Ид><Наименование>Чайник электрический</Наименование></Товар>\n'
        '</Товары></Каталог>\n</КоммерческаяИнформация>\n')


def _write(tmp_path: Path, name: str, data: bytes | str) -> Path:
    path = tmp_path / name
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return path


def _single_error(path: Path) -> dict:
    code, [report] = inspect_json(path)
    assert code == 1
    assert report["errors"], report
    return report["errors"][0]


def test_external_entity_is_refused_and_never_read(tmp_path: Path) -> None:
    secret = _write(tmp_path, "secret.txt", "TOP-SECRET-VALUE")
    path = _write(tmp_path, "xxe.xml", f'<?xml version="1.0"?>\n<!DOCTYPE x [<!ENTITY s SYSTEM "file://{secret}">]>\n'
                                       '<КоммерческаяИнформация><Каталог><Ид>&s;</Ид></Каталог></КоммерческаяИнформация>')
    code, output = run_cli("validate", path)
    assert code == 1
    assert "DOCTYPE" in output and "TOP-SECRET-VALUE" not in output
    assert output.startswith(f"{path}:2: ")


def test_entity_bomb_is_refused(tmp_path: Path) -> None:
    entities = "".join(f'<!ENTITY e{i} "{("&e%d;" % (i - 1)) * 10 if i else "boom"}">' for i in range(10))
    path = _write(tmp_path, "bomb.xml", f'<?xml version="1.0"?>\n<!DOCTYPE x [{entities}]>\n'
                                        '<КоммерческаяИнформация>&e9;</КоммерческаяИнформация>')
    assert "DOCTYPE" in _single_error(path)["message"]


@pytest.mark.parametrize("prolog", ["<!-- exported <by> 1C -->\n", "<?pi <x>?>\n", "<!--" + "x" * 70_000 + "-->\n"],
                         ids=["comment-with-a-tag", "processing-instruction", "prolog-beyond-the-head"])
def test_doctype_after_a_comment_or_pi_is_refused(tmp_path: Path, prolog: str) -> None:
    """The prolog check must step over comments and PIs (whose text may hold '<'), and the parser's
    own view catches a DOCTYPE after a prolog longer than the bytes sniffed. Else the entity reaches
    a record and the schema validator crashes (XMLSchemaValidateError)."""
    secret = _write(tmp_path, "secret.txt", "TOP-SECRET-VALUE")
    path = _write(tmp_path, "import.xml", GOOD.replace(
        "\n", f'\n{prolog}<!DOCTYPE x [<!ENTITY s SYSTEM "file://{secret}">]>\n', 1).replace("Чайник", "&s;"))
    for command in ("validate", "inspect"):
        code, output = run_cli(command, path)
        assert code == 1, output
        assert "DOCTYPE" in output and "Traceback" not in output and "TOP-SECRET-VALUE" not in output


def test_doctype_in_utf16_is_refused(tmp_path: Path) -> None:
    text = GOOD.replace('encoding="UTF-8"', 'encoding="UTF-16"').replace(
        "\n", '\n<!DOCTYPE x [<!ENTITY s "injected">]>\n', 1).replace("Чайник", "&s;")
    path = _write(tmp_path, "import.xml", b"\xff\xfe" + text.encode("utf-16-le"))
    error = _single_error(path)
    assert "DOCTYPE" in error["message"] and error["line"] == 2


def test_undeclared_entity_is_a_structural_error(tmp_path: Path) -> None:
    path = _write(tmp_path, "entity.xml", GOOD.replace("Чайник", "&nbsp;Чайник"))
    error = _single_error(path)
    assert error["line"] == 4 and "entity" in error["message"]


def test_truncated_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "import.xml", GOOD[: GOOD.index("</Товары>") + 3])
    error = _single_error(path)
    assert "ends too early" in error["message"]
    assert error["line"] >= 4 and error["path"] == "/КоммерческаяИнформация/Каталог/Товары"


@pytest.mark.parametrize("cut", [1, 2], ids=["inside-a-letter", "after-a-letter"])
def test_file_cut_inside_a_multibyte_character_ends_too_early(tmp_path: Path, cut: int) -> None:
    """1C still writing (or a copy cut short) stops anywhere, often inside a two-byte Cyrillic letter:
    that is a truncation (the daemon leaves such a file in its source), not a binary character."""
    data = GOOD.encode("utf-8")
    path = _write(tmp_path, "import.xml", data[: data.index("Чайник".encode()) + cut])
    error = _single_error(path)
    assert error["message"].startswith("the file ends too early"), error
    assert error["line"] == 4


@pytest.mark.parametrize("encoding", ["UTF-8", "windows-1251"])
def test_broken_markup_in_a_small_file_is_not_called_a_truncation(tmp_path: Path, encoding: str) -> None:
    # The parser swallows a small file whole before it fails, so bytes consumed say nothing;
    # the line of the error does. (windows-1251 files go through the encoding guard's reader.)
    text = GOOD.replace("UTF-8", encoding).replace("</Наименование></Товар>", "</Наименованиe></Товар>")
    path = _write(tmp_path, "import.xml", text.encode("cp1251" if encoding != "UTF-8" else "utf-8"))
    error = _single_error(path)
    assert "ends too early" not in error["message"] and "broken" in error["message"]
    assert error["line"] == 4 and error["path"] == "/КоммерческаяИнформация/Каталог/Товары/Товар/Наименование"


@pytest.mark.parametrize("data", [bytes(range(256)) * 4, b"PK\x03\x04garbage", "просто текст".encode(),
                                  b"\x1f\x8b\x08\x00\x00\x00\x00\x00"])
def test_not_xml(tmp_path: Path, data: bytes) -> None:
    error = _single_error(_write(tmp_path, "noise.xml", data))
    assert "this is not an XML file" in error["message"]


def test_empty_file(tmp_path: Path) -> None:
    assert "the file is empty" in _single_error(_write(tmp_path, "import.xml", b""))["message"]


ONE_LINE = GOOD.replace("\n", "")


@pytest.mark.parametrize("text", [GOOD, ONE_LINE], ids=["lines", "one line"])
@pytest.mark.parametrize("bad, cause", [
    ("\x00", "a character XML does not allow"),
    ("\x01", "a character XML does not allow"),
    ("Ч" * 6_000_000, "safety limits"),
], ids=["NUL", "control character", "12 MB text"])
def test_a_named_cause_is_reported_whatever_line_it_is_on(tmp_path: Path, text: str, bad: str, cause: str) -> None:
    # A file written on one line has every error on its last line: that alone must not make it "truncated".
    error = _single_error(_write(tmp_path, "import.xml", text.replace("Чайник", "Чайник" + bad)))
    assert cause in error["message"] and "ends too early" not in error["message"]
    assert error["path"].endswith("/Товар/Наименование")


def test_nesting_beyond_the_parser_limit(tmp_path: Path) -> None:
    groups = "<Группа><Ид>g</Ид><Наименование>g</Наименование><Группы>" * 300
    text = ('<?xml version="1.0"?><КоммерческаяИнформация ВерсияСхемы="2.05"><Классификатор><Ид>k</Ид>'
            f'<Наименование>k</Наименование><Группы>{groups}')
    error = _single_error(_write(tmp_path, "import.xml", text))
    assert "safety limits" in error["message"] and "ends too early" not in error["message"]
    assert error["path"].startswith("/КоммерческаяИнформация/Классификатор/Группы/Группа/")


def test_truncated_one_line_file(tmp_path: Path) -> None:
    error = _single_error(_write(tmp_path, "import.xml", ONE_LINE[: ONE_LINE.index("Чайник") + 3]))
    assert "ends too early" in error["message"]
    assert error["line"] == 1 and error["path"] == "/КоммерческаяИнформация/Каталог/Товары/Товар/Наименование"


def test_wrong_root(tmp_path: Path) -> None:
    error = _single_error(_write(tmp_path, "page.xml", "<?xml version='1.0'?>\n<html><body/></html>"))
    assert "root element is <html>" in error["message"] and error["path"] == "/html"


def test_windows_1251_bytes_declared_utf8(tmp_path: Path) -> None:
    error = _single_error(_write(tmp_path, "import.xml", GOOD.encode("cp1251")))
    assert "UTF-8" in error["message"] and error["line"] == 2


def test_utf8_bytes_declared_windows_1251(tmp_path: Path) -> None:
    data = GOOD.replace('encoding="UTF-8"', 'encoding="windows-1251"').encode("utf-8")
    error = _single_error(_write(tmp_path, "import.xml", data))
    assert "declares encoding 'windows-1251' but its bytes are UTF-8" in error["message"]


def test_bom_contradicting_declaration(tmp_path: Path) -> None:
    data = b"\xef\xbb\xbf" + GOOD.replace('encoding="UTF-8"', 'encoding="windows-1251"').encode("cp1251")
    assert "byte order mark" in _single_error(_write(tmp_path, "import.xml", data))["message"]


def test_real_windows_1251_and_utf8_bom_both_read(tmp_path: Path) -> None:
    cp = _write(tmp_path, "a.xml", GOOD.replace('encoding="UTF-8"', 'encoding="windows-1251"').encode("cp1251"))
    bom = _write(tmp_path, "b.xml", b"\xef\xbb\xbf" + GOOD.encode("utf-8"))
    code, reports = inspect_json(cp, bom)
    assert code == 0
    assert [(r["encoding"], r["bom"], r["counts"]["products"]) for r in reports] == [
        ("windows-1251", False, 1), ("UTF-8", True, 1)]


def test_zip_slip_is_refused_without_writing_anything(tmp_path: Path) -> None:
    archive = tmp_path / "exchange.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("import.xml", GOOD)
        zf.writestr("../escaped.xml", GOOD)
    before = set(Path(tempfile.gettempdir()).glob("bridge-zip-*"))
    error = _single_error(archive)
    assert "climbs out" in error["message"]
    assert not (tmp_path.parent / "escaped.xml").exists()
    assert set(Path(tempfile.gettempdir()).glob("bridge-zip-*")) == before


@pytest.mark.parametrize("name", ["/etc/bridge-evil.xml", "C:/evil.xml"])
def test_zip_absolute_paths_are_refused(tmp_path: Path, name: str) -> None:
    archive = tmp_path / "exchange.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr(name, GOOD)
    assert "absolute" in _single_error(archive)["message"]
    assert not Path("/etc/bridge-evil.xml").exists()


@pytest.mark.parametrize("name", ["a" * 300 + ".xml", "/".join(["d"] * 2000) + "/import.xml"],
                         ids=["long-name", "deep-folders"])
def test_zip_with_a_path_too_long_is_refused_and_the_batch_goes_on(tmp_path: Path, name: str) -> None:
    """ENAMETOOLONG, or a RecursionError from pathlib's mkdir, must not abort the batch (or be taken for a
    fault of our disk, which leaves the zip in its source to be tried forever)."""
    archive = tmp_path / "bad.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr(name, GOOD)
    good = _write(tmp_path, "import.xml", GOOD)
    code, output = run_cli("validate", archive, good)
    assert code == 1, output
    assert "Traceback" not in output and "too long" in output and "1 of 2 file(s) usable" in output


def test_zip_entry_name_flagged_utf8_but_not_utf8_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "bad.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("importX.xml", GOOD)
    data = bytearray(archive.read_bytes().replace(b"importX.xml", b"import\xff.xml"))
    for signature, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):  # set the UTF-8 flag (bit 11)
        at = data.find(signature) + offset
        data[at + 1] |= 0x08
    archive.write_bytes(bytes(data))
    code, output = run_cli("validate", archive)
    assert code == 1, output
    assert "Traceback" not in output and "not UTF-8" in output


def test_zip_symlink_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "exchange.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        link = zipfile.ZipInfo("import.xml")
        link.external_attr = (0o120777 << 16)
        zf.writestr(link, "/etc/passwd")
    assert "link" in _single_error(archive)["message"]


def test_zip_bomb_is_capped(tmp_path: Path) -> None:
    from bridge.commerceml.problems import StructuralError
    from bridge.commerceml.safezip import extract
    archive = tmp_path / "bomb.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("import.xml", b"<" * (5 * 1024 * 1024))
    target = tmp_path / "out"
    target.mkdir()
    with pytest.raises(StructuralError, match="more than"):
        extract(archive, target, max_total=1024 * 1024)
    assert list(target.iterdir()) == []


def test_good_zip_is_read_in_load_order(tmp_path: Path) -> None:
    archive = tmp_path / "exchange.zip"
    offers = GOOD.replace("<Каталог>", "<ПакетПредложений>").replace("</Каталог>", "</ПакетПредложений>") \
        .replace("<Товары>", "<Предложения>").replace("</Товары>", "</Предложения>") \
        .replace("<Товар>", "<Предложение>").replace("</Товар>", "</Предложение>")
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("offers.xml", offers)
        zf.writestr("import.xml", GOOD)
    code, reports = inspect_json(archive)
    assert code == 0
    assert [r["file"] for r in reports] == [f"{archive}!import.xml", f"{archive}!offers.xml"]
    assert [r["kind"] for r in reports] == ["catalog", "offers"]


def test_bad_input_never_prints_a_traceback(tmp_path: Path) -> None:
    paths = [_write(tmp_path, "a.xml", bytes(range(256))), _write(tmp_path, "b.xml", GOOD[:100])]
    result = subprocess.run([sys.executable, "-m", "bridge", "validate", *map(str, paths)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "Traceback" not in result.stdout + result.stderr
    assert len(result.stdout.strip().splitlines()) == 2


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    code, _ = run_cli("validate", tmp_path / "missing.xml")
    assert code == 2
    code, _ = run_cli("validate")
    assert code == 2


# CommerceML 3.1 flags ИзмененияПакетаПредложений as changes; 2.10 defines it without the
# СодержитТолькоИзменения flag: what it carries are changes whether or not 1C says so.
@pytest.mark.parametrize("name, namespace, version, flag, offer, kind", [
    ("rests.xml", "commerceml_3", "3.1", ' СодержитТолькоИзменения="true"',
     "<Остатки><Остаток><Количество>3</Количество></Остаток></Остатки>", "rests"),
    ("offers.xml", "commerceml_210", "2.10", "",
     "<Цены><Цена><ИдТипаЦены>t</ИдТипаЦены><ЦенаЗаЕдиницу>5</ЦенаЗаЕдиницу></Цена></Цены>", "prices"),
], ids=["3.1-flagged", "2.10-by-its-name"])
def test_offer_changes_package_reads_as_offers_and_changes_only(tmp_path: Path, name: str, namespace: str,
                                                                version: str, flag: str, offer: str,
                                                                kind: str) -> None:
    path = _write(tmp_path, name, '<?xml version="1.0" encoding="UTF-8"?>\n'
                  f'<КоммерческаяИнформация xmlns="urn:1C.ru:{namespace}" ВерсияСхемы="{version}">\n'
                  f"<ИзмененияПакетаПредложений{flag}><Ид>c#</Ид><ИдКаталога>c</ИдКаталога>"
                  f"<Предложения><Предложение><Ид>p1</Ид>{offer}</Предложение></Предложения>"
                  "</ИзмененияПакетаПредложений></КоммерческаяИнформация>\n")
    code, [report] = inspect_json(path)
    assert code == 0
    assert (report["kind"], report["counts"]["offers"], report["contains_only_changes"]) == (kind, 1, True)


def test_zip_inside_a_zip_is_refused_not_left_out(tmp_path: Path) -> None:
    inner = tmp_path / "inner.zip"
    with zipfile.ZipFile(inner, "w") as zf:
        zf.writestr("import.xml", GOOD)
    outer = tmp_path / "exchange.zip"
    with zipfile.ZipFile(outer, "w") as zf:
        zf.write(inner, "inner.zip")
        zf.writestr("import.xml", GOOD)
    code, output = run_cli("validate", outer)
    assert code == 1, output
    assert "exchange.zip!inner.zip" in output and "zip inside a zip" in output and "1 of 2 file(s) usable" in output


def test_a_folder_means_its_zips_too(tmp_path: Path) -> None:
    folder = tmp_path / "exchange"
    folder.mkdir()
    with zipfile.ZipFile(folder / "exchange.zip", "w") as zf:
        zf.writestr("import.xml", GOOD)
    code, reports = inspect_json(folder)
    assert code == 0
    assert [r["file"] for r in reports] == [f"{folder / 'exchange.zip'}!import.xml"]
