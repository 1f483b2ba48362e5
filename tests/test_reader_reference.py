"""Every real export in ../shared reads without a structural error, with counts checked by hand."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import REFERENCE, inspect_json, run_cli


def _sample_files() -> list[Path]:
    return sorted((REFERENCE / "samples").glob("*/*.xml"))


@pytest.mark.parametrize("path", _sample_files(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_reference_file_reads_without_structural_error(reference: Path, path: Path) -> None:
    code, [report] = inspect_json(path)
    assert report["errors"] == [], report["errors"]
    assert code == 0
    assert report["kind"] in {"catalog", "offers", "prices", "rests", "counterparties", "documents", "empty"}


# Counts verified by hand with grep on the files (see the notes).
@pytest.mark.parametrize("relative, expected", [
    ("django-cml-2.05/import.xml", {"groups": 36, "properties": 3, "products": 282}),
    ("dobromyslov-2.07/import0_1_with_nested_groups.xml", {"groups": 13, "products": 283}),
    ("erp-ua-2.07/offers.xml", {"offers": 249, "price_types": 12, "warehouses": 19}),
    ("ut11-2.09-split-changes/import___b815e2db-7a65-4265-9241-5f0c4f0565a7.xml",
     {"groups": 97, "properties": 1908, "products": 0, "price_types": 1, "warehouses": 1}),
    ("ut11-2.09-split-changes/prices___d66a6b51-ce9c-4e7a-8c7c-25079721107f.xml", {"offers": 978}),
    ("ut11-2.09-orders-contractors/contractors-example.xml", {"counterparties": 4}),
    ("off-doc-1c/orders.xml", {"documents": 3}),
])
def test_counts_match_hand_counts(reference: Path, relative: str, expected: dict[str, int]) -> None:
    _, [report] = inspect_json(reference / "samples" / relative)
    for key, value in expected.items():
        assert report["counts"][key] == value, key


def test_empty_offers_are_skipped_and_reported_not_fatal(reference: Path) -> None:
    # erp-ua has 27 empty <Предложение/> elements: each is reported with its line, the file stays usable.
    code, [report] = inspect_json(reference / "samples" / "erp-ua-2.07" / "offers.xml")
    assert code == 0
    assert report["skipped"] == 27
    skipped = [w for w in report["warnings"] if w["severity"] == "skipped"]
    assert len(skipped) == 27
    assert all(w["line"] > 0 and w["path"].endswith("]") for w in skipped)
    assert "Предложение[" in skipped[0]["path"]


def test_header_facts(reference: Path) -> None:
    samples = reference / "samples"
    _, [ns210] = inspect_json(samples / "bigperson-2.08-ns210" / "import.xml")
    assert (ns210["schema_version"], ns210["namespace"], ns210["bom"]) == ("2.08", "urn:1C.ru:commerceml_210", True)
    _, [cp] = inspect_json(samples / "bitrix-doc-2.03-cp1251" / "from.xml")
    assert (cp["encoding"], cp["bom"], cp["namespace"], cp["kind"]) == ("windows-1251", False, None, "documents")
    _, [changes] = inspect_json(samples / "ready-script-2.05-changes" / "import.xml")
    assert changes["contains_only_changes"] is True
    _, [full] = inspect_json(samples / "django-cml-2.05" / "import.xml")
    assert full["contains_only_changes"] is False
    assert full["generated_at"] == "2015-12-24T23:30:03"
    _, [v3] = inspect_json(samples / "cml-3.1-split" / "rests___9ebdccc5-f70a-43db-8c03-0103301aad32.xml")
    assert (v3["kind"], v3["schema_version"], v3["namespace"]) == ("rests", "3.1", "urn:1C.ru:commerceml_3")


def test_folder_is_read_in_load_order(reference: Path) -> None:
    _, reports = inspect_json(reference / "samples" / "cml-3.1-split")
    kinds = [r["kind"] for r in reports]
    assert kinds == ["catalog", "catalog", "offers", "prices", "rests"]
    # the classifier-only import comes before the one with goods
    assert reports[0]["counts"]["products"] == 0 and reports[1]["counts"]["products"] == 1


def test_whole_reference_validates_with_exit_zero(reference: Path) -> None:
    code, output = run_cli("validate", reference / "samples")
    assert code == 0, output


@pytest.mark.parametrize("path", _sample_files(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_inspect_summary_agrees_with_full_read(reference: Path, path: Path) -> None:
    """inspect does not build typed goods and offers; it must still count and classify exactly the same."""
    from bridge.commerceml.files import InputFile
    from bridge.commerceml.summary import summarize
    quick = summarize(InputFile(path, str(path)), build=False)
    full = summarize(InputFile(path, str(path)), build=True)
    assert (quick.counts, quick.skipped, quick.header.kind) == (full.counts, full.skipped, full.header.kind)
    assert [p for p in quick.problems if p.severity != "warning"] == [p for p in full.problems if p.severity != "warning"]


def test_strict_checks_the_whole_document_and_names_lines(reference: Path) -> None:
    samples = reference / "samples"
    code, output = run_cli("validate", "--strict", samples / "imega-2.04" / "import.xml")
    assert code == 1
    assert f"{samples / 'imega-2.04' / 'import.xml'}:10: /КоммерческаяИнформация/Классификатор/Владелец/ИНН: error:" in output
    assert "{10}" in output  # the rule is shown as written, not mangled as if it were a namespace
    code, output = run_cli("validate", "--strict", samples / "off-doc-1c" / "import.xml")  # valid per SOURCES.md
    assert code == 0, output


def test_user_schema_errors_get_their_lines_from_the_diagnostic_pass(reference: Path) -> None:
    xsd = reference / "xsd" / "commerceML 2.10.xsd"
    offers = reference / "samples" / "off-doc-1c" / "offers.xml"
    code, output = run_cli("validate", "--schema", xsd, offers)
    assert code == 1
    lines = [line for line in output.splitlines() if ": error: " in line]
    assert len(lines) == 8  # SOURCES.md: 8 errors, Единица "шт" instead of an OKEI code
    assert all(int(line.split(":")[1]) > 0 and "/Цена[" in line and line.split(": ")[1].endswith("/Единица")
               for line in lines)
