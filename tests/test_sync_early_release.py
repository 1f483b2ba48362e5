"""A large file proven sound is delivered while it is still being read, by a second process, exactly once;
a broken one releases nothing, however far the reader got before finding the break."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from bridge.commerceml.soundness import parses_to_the_end
from conftest import REPO
from test_sync import write_config

sys.path.insert(0, str(REPO / "bench"))
from generate_catalog import generate  # noqa: E402

N_PRODUCTS = 2500  # a little over one staging chunk of goods; the offers release several more


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("package")
    generate(folder, N_PRODUCTS, seed=11)
    return folder


def _bridge(*args: str, crash_at: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "BRIDGE_CRASH_AT"}
    if crash_at:
        env["BRIDGE_CRASH_AT"] = crash_at
    return subprocess.run([sys.executable, "-m", "bridge", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)


def _json(*args: str) -> dict:
    result = _bridge(*args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_soundness_check_proves_a_whole_file_and_doubts_any_break(package: Path, tmp_path: Path) -> None:
    source = package / "import0_1.xml"
    data = source.read_bytes()
    assert parses_to_the_end(source)
    middle = data.index(b"</\xd0\x9d\xd0\xb0\xd0\xb8\xd0\xbc\xd0\xb5\xd0\xbd\xd0\xbe\xd0\xb2\xd0\xb0\xd0\xbd\xd0\xb8\xd0\xb5>",
                        len(data) // 2)  # a </Наименование> half-way through
    broken = {
        "truncated": data[: len(data) * 3 // 4],
        "markup": data[:middle] + b"</Bad>" + data[middle + 30:],
        "utf8_declared_1251": data.replace(b'encoding="UTF-8"', b'encoding="windows-1251"', 1).replace(
            b"\xef\xbb\xbf", b"", 1),
        "doctype": data.replace(b"?>", b'?>\n<!DOCTYPE x [<!ENTITY e "e">]>', 1),
        "empty": b"",
        "not_xml": b"PK\x03\x04 a zip, say",
    }
    for name, content in broken.items():
        path = tmp_path / f"{name}.xml"
        path.write_bytes(content)
        assert not parses_to_the_end(path), name
    assert not parses_to_the_end(tmp_path / "missing.xml")


def test_a_large_ingest_is_delivered_in_the_background_exactly_once(package: Path, tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    result = _bridge("-v", "ingest", "-c", str(cfg), str(package))
    assert result.returncode == 0, result.stderr
    assert "deliver.background started" in result.stderr
    delivered = int(result.stdout.split("delivered ")[1].split(" ")[0])
    first = _json("sandbox", "-c", str(cfg), "dump", "--json")
    # Every operation reached the CRM once: two deliverers never sent the same one.
    assert first["calls"] == delivered > 5000
    assert len(first["products"]) > N_PRODUCTS and all(p["prices"] for p in first["products"] if p["parent_external_id"])
    status = _json("status", "-c", str(cfg), "--json")
    assert status["files"] == {"applied": 2} and status["outbox"] == {"pending": 0, "failed": 0}
    journal = _json("journal", "-c", str(cfg), "--json", "--file", "2")
    assert sum(1 for e in journal if e["step"] == "deliver" and e["status"] == "ok") == delivered - N_PRODUCTS
    # A second copy of the export under another name: read, nothing sent.
    again = tmp_path / "again"
    again.mkdir()
    for path in package.glob("*.xml"):
        (again / f"copy-{path.name}").write_bytes(path.read_bytes().replace(b"2026-11-20T03:00:00", b"2026-11-21T03:00:00", 1))
    assert _bridge("ingest", "-c", str(cfg), str(again)).returncode == 0
    assert _json("sandbox", "-c", str(cfg), "dump", "--json")["calls"] == first["calls"]


def test_chunks_of_a_sound_file_are_deliverable_before_its_end(package: Path, tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    crashed = _bridge("ingest", "-c", str(cfg), str(package), crash_at="released")
    assert crashed.returncode == -signal.SIGKILL
    status = _json("status", "-c", str(cfg), "--json")
    # The catalog was still being read (not committed), and its first chunk was already in the outbox.
    assert status["files"] == {"archived": 1}
    assert status["outbox"]["pending"] == 2000


@pytest.mark.parametrize("damage", ["truncated", "markup"])
def test_a_large_broken_file_releases_nothing(damage: str, package: Path, tmp_path: Path) -> None:
    folder = tmp_path / "export"
    folder.mkdir()
    data = (package / "import0_1.xml").read_bytes()
    cut = len(data) * 9 // 10  # the reader meets the break after more than a chunk of goods
    if damage == "truncated":
        data = data[:cut]
    else:
        at = data.index(b"</\xd0\x98\xd0\xb4>", cut)  # a </Ид> far into the goods
        data = data[:at] + b"</Id>" + data[at + 9:]
    (folder / "import0_1.xml").write_bytes(data)
    (folder / "offers0_1.xml").write_bytes((package / "offers0_1.xml").read_bytes())
    cfg = write_config(tmp_path)
    result = _bridge("ingest", "-c", str(cfg), str(folder))
    assert result.returncode == 1 and "quarantined" in result.stdout
    assert "released" not in result.stdout  # not even the early chunks: the file was never proven sound
    dump = _json("sandbox", "-c", str(cfg), "dump", "--json")
    assert dump["calls"] == 0 and dump["products"] == []  # the offers wait for goods that never came
    assert _json("status", "-c", str(cfg), "--json")["waiting_offers"] > 0


def test_an_unchanged_reexport_skips_the_second_parse(package: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import bridge.sync.pipeline as pipeline
    from conftest import run_cli

    started: list[str] = []

    class Counted(pipeline.SoundnessCheck):
        def start(self) -> pipeline.SoundnessCheck:
            started.append(self.path.name)
            return super().start()

    monkeypatch.setattr(pipeline, "SoundnessCheck", Counted)
    cfg = write_config(tmp_path)
    assert run_cli("ingest", "-c", cfg, package)[0] == 0
    assert len(started) == 2  # each file had work, and was proven while it was read
    again = tmp_path / "again"
    again.mkdir()
    for path in package.glob("*.xml"):
        (again / path.name).write_bytes(path.read_bytes().replace(b"2026-11-20T03:00:00", b"2026-11-22T03:00:00", 1))
    started.clear()
    code, output = run_cli("ingest", "-c", cfg, again)
    assert code == 0 and "delivered 0 operation(s)" in output
    assert started == []  # every record was skipped: nothing to release early, so no second parse


def test_an_ingest_whose_helper_process_cannot_start_delivers_everything_itself(
        package: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    import multiprocessing.context

    from conftest import run_cli

    def refuse(self: object) -> None:
        raise OSError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(multiprocessing.context.SpawnProcess, "start", refuse)
    cfg = write_config(tmp_path)
    code, output = run_cli("ingest", "-c", cfg, package)
    assert code == 0, output
    delivered = int(output.split("delivered ")[1].split(" ")[0])
    assert delivered > 5000 and json.loads(run_cli("sandbox", "-c", cfg, "dump", "--json")[1])["calls"] == delivered
    assert "deliver.background not started" in caplog.text


def test_an_offer_refused_while_its_file_is_read_is_sent_again_with_the_next_export(package: Path, tmp_path: Path) -> None:
    import sqlite3

    from lxml import etree

    from bridge.cli.context import load_config, state_connection
    from bridge.commerceml.files import expand_inputs
    from bridge.crm.registry import open_adapter
    from bridge.crm.sandbox import SandboxCrm
    from bridge.sync.deliver import deliver
    from bridge.sync.pipeline import Pipeline, finish_files
    from conftest import run_cli

    offers = [el.text for _, el in etree.iterparse(str(package / "offers0_1.xml"), tag="{*}Ид")
              if etree.QName(el.getparent()).localname == "Предложение"]
    refused = offers[10]  # in the first chunk: released, and refused, long before the file is merged
    cfg = write_config(tmp_path)
    config = load_config(cfg)
    (tmp_path / "var").mkdir()
    with SandboxCrm(tmp_path / "var" / "crm.db"):
        pass  # the CRM exists before the bridge first talks to it
    crm = sqlite3.connect(tmp_path / "var" / "crm.db")
    # A rule someone added to the CRM by hand: it refuses this one offer's prices.
    crm.execute("CREATE TRIGGER refuse_one BEFORE INSERT ON prices WHEN NEW.product_id = "
                f"(SELECT id FROM products WHERE external_id = '{refused}') "
                "BEGIN SELECT RAISE(ABORT, 'refused by a rule'); END")
    crm.commit()
    refusals_while_read: list[int] = []
    with state_connection(config) as conn, state_connection(config) as delivering, open_adapter(config) as adapter:
        def deliver_now(count: int) -> None:  # as the delivery process does, but at once
            refusals_while_read.append(deliver(delivering, adapter).failed)

        pipeline = Pipeline(conn, config, on_release=deliver_now)
        with expand_inputs([package]) as items:
            outcomes = [pipeline.ingest_file(item) for item in items]
        assert [o.status for o in outcomes] == ["committed", "committed"]
        deliver(conn, adapter)
        assert [f.status for f in finish_files(conn)] == ["applied", "partial"]
    assert sum(refusals_while_read) == 1  # before the offers file was merged: there was nothing to forget yet
    crm.execute("DROP TRIGGER refuse_one")
    crm.commit()
    crm.close()
    again = tmp_path / "again"
    again.mkdir()
    for path in package.glob("*.xml"):
        (again / path.name).write_bytes(path.read_bytes().replace(b"2026-11-20T03:00:00", b"2026-11-23T03:00:00", 1))
    code, output = run_cli("ingest", "-c", cfg, again)
    # Only the refused offer goes again: its fingerprint was forgotten after the merge wrote it.
    assert code == 0 and "delivered 1 operation(s)" in output, output
    product = next(p for p in json.loads(run_cli("sandbox", "-c", cfg, "dump", "--json")[1])["products"]
                   if p["external_id"] == refused)
    assert product["prices"]
