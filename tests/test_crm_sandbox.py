"""The sandbox CRM: the shared adapter contract, then what only the sandbox promises."""

from __future__ import annotations

import sqlite3
import stat
from collections.abc import Iterator
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from bridge.crm import sandbox
from bridge.crm.base import UPSERT_PRODUCT, CrmAdapter, Operation
from bridge.crm.registry import ADAPTERS, adapter_class
from bridge.crm.sandbox import SCHEMA_VERSION, SandboxCrm
from bridge.errors import TransientError, UserError
from crm_contract import INN, KPP, CrmContract, assert_ok, company, contact, deal, deactivate, prices, product, stock


def _sandbox(adapter: CrmAdapter) -> SandboxCrm:
    assert isinstance(adapter, SandboxCrm)
    return adapter


class TestSandboxContract(CrmContract):
    def make_adapter(self, tmp_path: Path) -> CrmAdapter:
        return SandboxCrm(tmp_path / "crm.db")

    def snapshot(self, adapter: CrmAdapter) -> dict[str, Any]:
        return _sandbox(adapter).state()

    def create_by_hand(self, adapter: CrmAdapter, section: str, fields: dict[str, Any]) -> str:
        # A person working in the CRM: a second connection writing a row with no external id.
        with sqlite3.connect(_sandbox(adapter).path) as conn:
            cursor = conn.execute(f"INSERT INTO {section} ({', '.join(fields)}) VALUES "
                                  f"({', '.join('?' * len(fields))})", tuple(fields.values()))
            crm_id = str(cursor.lastrowid)
        conn.close()  # the context manager only commits
        return crm_id


@pytest.fixture
def crm(tmp_path: Path) -> Iterator[SandboxCrm]:
    with SandboxCrm(tmp_path / "crm.db") as adapter:
        yield adapter


def test_dump_has_exactly_the_documented_shape(crm: SandboxCrm) -> None:
    assert_ok(crm.apply([
        product("p2", "Чайник", sku="A-2", barcode="4600000000017", description="stored, not dumped"),
        product("p1", "Кружка"), product("p2#red", "Чайник красный", parent_external_id="p2"),
        prices("p2", Retail="1200.50", Wholesale="990.00"), stock("p2", Main=5, Shop="2"),
        company("c1"), contact("k1"), deal("d1", "c1", facts={"paid": True}), deactivate("p1"),
    ]))
    assert crm.dump() == {
        "calls": 9,
        "products": [
            {"external_id": "p1", "parent_external_id": None, "name": "Кружка", "sku": None, "barcode": None,
             "active": False, "prices": {}, "stock": {}, "quantity": 0},
            {"external_id": "p2", "parent_external_id": None, "name": "Чайник", "sku": "A-2",
             "barcode": "4600000000017", "active": True, "prices": {"Retail": 1200.5, "Wholesale": 990},
             "stock": {"Main": 5, "Shop": 2}, "quantity": 7},
            {"external_id": "p2#red", "parent_external_id": "p2", "name": "Чайник красный", "sku": None,
             "barcode": None, "active": True, "prices": {}, "stock": {}, "quantity": 0},
        ],
        "companies": [{"external_id": "c1", "name": "ООО Ромашка", "inn": INN, "kpp": KPP}],
        "contacts": [{"external_id": "k1", "name": "Иван Петров", "email": "ivan@example.com",
                      "phone": "+7 900 000-00-00"}],
        "deals": [{"id": "1", "external_id": "d1", "title": "ЗК-1", "number": "ЗК-1", "date": "2026-11-01",
                   "amount": 1500.5, "currency": "RUB", "company_external_id": "c1", "stage": "new",
                   "facts": {"paid": True}, "order_external_id": "d1", "number_1c": None, "paid": True,
                   "shipped": False}],
    }
    quantity = crm.dump()["products"][1]["quantity"]
    assert type(quantity) is int  # integral numbers dump as int, not 7.0


def test_calls_count_every_write_including_no_ops_and_failures(crm: SandboxCrm) -> None:
    ops = [product("p1"), prices("p1", Retail=10), stock("p1", Main=1), company("c1")]
    crm.apply(ops)
    crm.apply(ops)  # changes nothing, still four calls: the bridge must not send these
    crm.apply([prices("ghost", Retail=1)])
    assert crm.dump()["calls"] == 9
    outcomes = [(c["kind"], c["external_id"], c["outcome"]) for c in crm.calls()]
    assert outcomes[:4] == [("upsert_product", "p1", "created"), ("set_prices", "p1", "updated"),
                            ("set_stock", "p1", "updated"), ("upsert_company", "c1", "created")]
    assert {o[2] for o in outcomes[4:8]} == {"unchanged"}
    [last] = crm.calls(limit=1)
    assert (last["ok"], last["outcome"], last["payload"]["prices"]) == (False, "failed", {"Retail": 1})
    assert "ghost" in last["error"]
    assert last["at"].endswith("Z")


def test_results_say_whether_anything_changed(crm: SandboxCrm) -> None:
    [first] = crm.apply([product("p1")])
    [again] = crm.apply([product("p1")])
    [renamed] = crm.apply([product("p1", "Другое имя")])
    assert first.answer == {"id": 1, "created": True, "changed": True}
    assert again.answer == {"id": 1, "created": False, "changed": False}
    assert renamed.answer == {"id": 1, "created": False, "changed": True}


def test_file_is_owner_only_wal_and_versioned(tmp_path: Path) -> None:
    path = tmp_path / "var" / "crm.db"
    with SandboxCrm(path) as crm:
        assert_ok(crm.apply([product("p1")]))
        for name in (path, path.with_name("crm.db-wal")):  # SQLite gives -wal the file's mode
            assert stat.S_IMODE(name.stat().st_mode) == 0o600, name
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    conn.close()


def test_foreign_keys_are_enforced(crm: SandboxCrm) -> None:
    assert crm._conn is not None
    assert crm._conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1


def test_read_only_does_not_create_the_file(tmp_path: Path) -> None:
    path = tmp_path / "missing" / "crm.db"
    with SandboxCrm(path, read_only=True) as crm:
        assert crm.dump() == {"calls": 0, "products": [], "companies": [], "contacts": [], "deals": []}
        assert crm.calls() == [] and crm.get_product("p1") is None and crm.find_company(INN, KPP) is None
        with pytest.raises(UserError, match="read-only"):
            crm.apply([product("p1")])
    assert not path.parent.exists()


def test_read_only_reads_an_existing_sandbox_and_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "crm.db"
    with SandboxCrm(path) as crm:
        assert_ok(crm.apply([product("p1"), company("c1")]))
        expected = crm.dump()
    with SandboxCrm(path, read_only=True) as crm:
        assert crm.dump() == expected
        assert crm.find_company(INN, KPP) == "c1"
        with pytest.raises(UserError):
            crm.apply([])


def test_reopened_sandbox_keeps_its_data(tmp_path: Path) -> None:
    path = tmp_path / "crm.db"
    with SandboxCrm(path) as crm:
        first = crm.apply([product("p1"), prices("p1", Retail=10), company("c1"),
                           company("c2", match={"inn": INN, "kpp": KPP})])
        expected = crm.dump()
    with SandboxCrm(path) as crm:
        assert crm.dump() == expected
        [again] = crm.apply([product("p1")])
        assert again.crm_id == first[0].crm_id and not again.created
        [via_alias] = crm.apply([company("c2", "Ромашка после перезапуска")])
        assert via_alias.crm_id == first[2].crm_id
        assert len(crm.dump()["companies"]) == 1


@pytest.mark.parametrize("content", [b"not a database at all, just text" * 100, None])
def test_a_file_that_is_not_a_sandbox_is_refused(tmp_path: Path, content: bytes | None) -> None:
    path = tmp_path / "other.db"
    if content is None:  # another program's SQLite file (the state database, say)
        with sqlite3.connect(path) as conn:
            conn.execute("CREATE TABLE files (id INTEGER PRIMARY KEY)")
        conn.close()
    else:
        path.write_bytes(content)
    before = path.read_bytes()
    for read_only in (False, True):
        with pytest.raises(UserError, match="sandbox CRM"):
            SandboxCrm(path, read_only=read_only)
    assert path.read_bytes() == before


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "crm.db"
    SandboxCrm(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(UserError, match="newer"):
        SandboxCrm(path)


def test_a_locked_database_is_transient_and_applies_nothing(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(SandboxCrm, "busy_timeout", 0.05)
    path = tmp_path / "crm.db"
    with SandboxCrm(path) as crm:
        other = sqlite3.connect(path, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            with pytest.raises(TransientError):
                crm.apply([product("p1")])
            other.execute("ROLLBACK")
        finally:
            other.close()
        assert crm.dump()["calls"] == 0
        assert_ok(crm.apply([product("p1")]))


def test_a_batch_is_one_transaction(crm: SandboxCrm, monkeypatch: pytest.MonkeyPatch) -> None:
    real_log = SandboxCrm._log
    seen: list[str] = []

    def failing_log(self: SandboxCrm, calls: list[Any], op: Operation, *args: Any) -> None:
        seen.append(op.external_id)
        if op.external_id == "p3":
            raise RuntimeError("crash in the middle of a batch")
        real_log(self, calls, op, *args)

    monkeypatch.setattr(SandboxCrm, "_log", failing_log)
    with pytest.raises(RuntimeError):
        crm.apply([product("p1"), product("p2"), product("p3")])
    assert seen == ["p1", "p2", "p3"]
    assert crm.dump() == {"calls": 0, "products": [], "companies": [], "contacts": [], "deals": []}


def test_numbers_are_exact_and_refused_when_not_numbers(crm: SandboxCrm) -> None:
    assert_ok(crm.apply([product("p1"), prices("p1", A="0.10", B=0.1, C="1,5", D="-0.00", E=3, F="1E+2")]))
    assert crm.dump()["products"][0]["prices"] == {"A": 0.1, "B": 0.1, "C": 1.5, "D": 0, "E": 3, "F": 100}
    for bad in ("NaN", "Infinity", "", "12 рублей", True, None, [1]):
        [result] = crm.apply([prices("p1", A=bad)])
        assert not result.ok and "price 'A'" in (result.error or ""), bad
    assert crm.get_product("p1")["prices"]["A"] == 0.1  # type: ignore[index]


def test_extra_fields_must_be_plain_json(crm: SandboxCrm) -> None:
    """Extra fields are kept as sorted JSON; what JSON has no number for is refused, not stored as null."""
    for bad in (float("nan"), float("inf"), [1.5, -float("inf")], (2.0, float("nan")), {"deep": {"er": float("nan")}}, object()):
        [result] = crm.apply([product("p1", weight=bad)])
        assert not result.ok and "not plain JSON" in (result.error or ""), bad
    assert_ok(crm.apply([product("p1", weight=Decimal("1.50"), made=date(2026, 11, 2), sizes={3: "S"},
                                 big=2 ** 70, note="Чайник")]))
    got = crm.get_product("p1")
    assert got is not None
    assert (got["weight"], got["made"], got["sizes"], got["big"], got["note"]) == (
        1.5, "2026-11-02", {"3": "S"}, 2 ** 70, "Чайник")


def test_get_product_returns_every_field(crm: SandboxCrm) -> None:
    assert_ok(crm.apply([product("p1", "Чайник", description="Стальной", groups=["g1"]), stock("p1", Main=2)]))
    got = crm.get_product("p1")
    assert got is not None
    assert (got["id"], got["description"], got["groups"], got["stock"], got["quantity"]) == (
        "1", "Стальной", ["g1"], {"Main": 2}, 2)
    assert crm.get_product("p2") is None


def test_find_company_by_inn_and_kpp(crm: SandboxCrm) -> None:
    assert_ok(crm.apply([company("c1"), company("c2", match={"inn": INN, "kpp": KPP}),
                         company("ip", "ИП Сидоров", inn="500100732259", kpp=None)]))
    assert crm.find_company(INN, KPP) == "c1"  # the company's own id, not the alias
    assert crm.find_company(INN, None) == "c1"
    assert crm.find_company("500100732259", None) == "ip"
    assert crm.find_company(INN, "999999999") is None
    assert crm.find_company("0000000000", None) is None


def test_branches_without_kpp_are_ambiguous_and_refused(crm: SandboxCrm) -> None:
    assert_ok(crm.apply([company("c1"), company("c2", kpp="770201001")]))
    [result] = crm.apply([company("c3", match={"inn": INN})])
    assert not result.ok and "c3" in (result.error or "") and "2 companies" in (result.error or "")
    assert crm.find_company(INN, None) is None
    assert len(crm.dump()["companies"]) == 2


def test_ambiguous_hand_made_products_are_refused(crm: SandboxCrm) -> None:
    contract = TestSandboxContract()
    for name in ("Чайник 1", "Чайник 2"):
        contract.create_by_hand(crm, "products", {"name": name, "sku": "A-1"})
    op = product("p1", sku="A-1")
    op.match = {"sku": "A-1"}
    [result] = crm.apply([op])
    assert not result.ok and "ambiguous" in (result.error or "")
    bad_key = product("p2")
    bad_key.match = {"colour": "red"}
    [result] = crm.apply([bad_key])
    assert not result.ok and "colour" in (result.error or "")


def test_deal_needs_a_known_company(crm: SandboxCrm) -> None:
    [result] = crm.apply([deal("d1", "nobody")])
    assert not result.ok and "nobody" in (result.error or "")
    assert_ok(crm.apply([deal("d2", None)]))
    assert crm.dump()["deals"][0]["company_external_id"] is None


def test_payload_problems_are_refused_per_operation(crm: SandboxCrm) -> None:
    results = crm.apply([
        Operation(UPSERT_PRODUCT, "p1", {"external_id": "p9", "name": "x"}),
        Operation(UPSERT_PRODUCT, "p2", ["not", "an", "object"]),  # type: ignore[arg-type]
        Operation(UPSERT_PRODUCT, "p3", {"name": "x", "active": "yes"}),
        Operation(UPSERT_PRODUCT, "p4", {"name": "x", "made": object()}),
        Operation(UPSERT_PRODUCT, "", {"name": "x"}),
        deal("d1", None, facts=["paid"]),
        stock("p1"),
        contact("k1"),
    ])
    assert [r.ok for r in results] == [False] * 7 + [True]
    assert "differs" in (results[0].error or "") and "active" in (results[2].error or "")
    assert "JSON" in (results[3].error or "") and "facts" in (results[5].error or "")
    assert crm.dump()["calls"] == 8
    assert crm.dump()["products"] == []


def test_absent_fields_are_left_alone(crm: SandboxCrm) -> None:
    assert_ok(crm.apply([product("p1", "Чайник", sku="A-1", description="Стальной"), deactivate("p1")]))
    assert_ok(crm.apply([Operation(UPSERT_PRODUCT, "p1", {"external_id": "p1", "barcode": "46000"})]))
    got = crm.get_product("p1")
    assert got is not None
    assert (got["name"], got["sku"], got["barcode"], got["description"], got["active"]) == (
        "Чайник", "A-1", "46000", "Стальной", False)


def test_closed_sandbox_is_not_used_again(tmp_path: Path) -> None:
    crm = SandboxCrm(tmp_path / "crm.db")
    crm.close()
    crm.close()
    with pytest.raises(RuntimeError):
        crm.apply([product("p1")])


def test_registry_knows_the_sandbox() -> None:
    assert ADAPTERS["sandbox"] is SandboxCrm and adapter_class("sandbox") is SandboxCrm
    with pytest.raises(UserError, match="sandbox"):
        adapter_class("bitrix-typo")


def test_adoption_counts_as_a_change(crm: SandboxCrm) -> None:
    TestSandboxContract().create_by_hand(crm, "products", {"name": "Чайник", "sku": "A-1"})
    op = product("p1", "Чайник", sku="A-1")
    op.match = {"sku": "A-1"}
    [adopted] = crm.apply([op])
    [again] = crm.apply([op])
    assert adopted.answer == {"id": 1, "created": False, "changed": True}
    assert again.answer == {"id": 1, "created": False, "changed": False}


def test_changed_means_a_stored_value_differs(crm: SandboxCrm) -> None:
    def changed(*ops: Operation) -> list[bool]:
        results = crm.apply(list(ops))
        assert_ok(results)
        return [r.answer["changed"] for r in results]

    assert changed(product("p1", "Чайник", description="Стальной", unit="шт"), prices("p1", Retail=10, Opt=9),
                   stock("p1", Main=5, Shop=2)) == [True, True, True]
    assert changed(prices("p1", Retail="10.00"), prices("p1", Retail=11), prices("p1", Web=12)) == [False, True, True]
    assert changed(stock("p1", Main=5), stock("p1", Main=6), stock("p1", quantity=8), stock("p1", quantity=100),
                   stock("p1", quantity=100), stock("p1", Shop=2)) == [False, True, False, True, False, True]
    # ...the last one changes no warehouse, but the total goes back to their sum
    assert changed(deactivate("p1"), deactivate("p1")) == [True, False]
    # Absent keys are left alone, so a payload that says less changes nothing.
    assert changed(Operation(UPSERT_PRODUCT, "p1", {"external_id": "p1", "unit": "шт"})) == [False]
    owned = product("p1", "Чайник", description="Чугунный", unit="шт", active=False)
    owned.create_only = ["description"]
    assert changed(owned) == [False]
    assert changed(product("p1", "Чайник", unit="упак", active=False)) == [True]
    got = crm.get_product("p1")
    assert got is not None
    assert (got["description"], got["unit"], got["prices"], got["stock"], got["quantity"]) == (
        "Стальной", "упак", {"Opt": 9, "Retail": 11, "Web": 12}, {"Main": 6, "Shop": 2}, 8)
    assert [c["outcome"] for c in crm.calls()][-3:] == ["unchanged", "unchanged", "updated"]


def test_a_constraint_failure_refuses_only_its_operation(crm: SandboxCrm) -> None:
    assert_ok(crm.apply([product("p1"), product("p2")]))
    # A rule someone added to the CRM by hand: SQLite refuses the write with a constraint error.
    with sqlite3.connect(crm.path) as conn:
        conn.execute("CREATE TRIGGER no_bad BEFORE INSERT ON prices WHEN NEW.price_type = 'Bad' "
                     "BEGIN SELECT RAISE(ABORT, 'price type Bad is refused'); END")
    conn.close()
    results = crm.apply([prices("p1", Good=1, Bad=2), prices("p2", Good=3), stock("p1", Main=1)])
    assert [r.ok for r in results] == [False, True, True]
    assert "p1" in (results[0].error or "") and "Bad is refused" in (results[0].error or "")
    assert crm.get_product("p1")["prices"] == {}  # type: ignore[index]  # no half-write: Good is not there either
    assert crm.get_product("p2")["prices"] == {"Good": 3}  # type: ignore[index]
    assert [c["outcome"] for c in crm.calls()][2:] == ["failed", "updated", "updated"]


def test_a_refusal_after_a_write_leaves_nothing_behind(crm: SandboxCrm, monkeypatch: pytest.MonkeyPatch) -> None:
    # Operations refuse before they write; should one ever refuse later, the batch is redone
    # with a savepoint per operation, so that one still leaves nothing behind.
    assert_ok(crm.apply([product("p1"), product("p2")]))
    real = SandboxCrm._deactivate

    def late(conn: sqlite3.Connection, external_id: str) -> Any:
        done = real(conn, external_id)
        if external_id == "p1":
            raise sandbox.Refused("refused after writing")
        return done

    monkeypatch.setattr(SandboxCrm, "_deactivate", staticmethod(late))
    results = crm.apply([deactivate("p1"), deactivate("p2")])
    assert [r.ok for r in results] == [False, True]
    assert "refused after writing" in (results[0].error or "")
    assert [p["active"] for p in crm.state()["products"]] == [True, False]
    assert [c["outcome"] for c in crm.calls()][2:] == ["failed", "updated"]
