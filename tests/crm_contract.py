"""The contract every CRM adapter keeps (bridge.crm.base.CrmAdapter), as tests.

An adapter's test module subclasses ``CrmContract`` (whose name keeps pytest
from collecting it alone) and implements the hooks; every test here then runs
against that adapter. Tests speak only through ``apply`` and ``snapshot`` so a
Bitrix24 adapter against a recorded or fake portal passes the same suite.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from bridge.crm.base import (DEACTIVATE_PRODUCT, SET_OFFER, SET_PRICES, SET_STOCK, UPSERT_COMPANY, UPSERT_CONTACT, UPSERT_DEAL,
                             UPSERT_PRODUCT, CrmAdapter, Operation, Result)

INN, KPP = "7701234567", "770101001"
IP_INN = "500100732259"  # a sole proprietor: 12 digits, no КПП


def product(external_id: str, name: str | None = None, **fields: Any) -> Operation:
    payload = {"external_id": external_id, "parent_external_id": None, "name": name or f"Product {external_id}",
               "sku": None, "barcode": None, "active": True, **fields}
    return Operation(UPSERT_PRODUCT, external_id, payload)


def prices(external_id: str, **values: Any) -> Operation:
    return Operation(SET_PRICES, external_id, {"external_id": external_id, "prices": values})


def stock(external_id: str, quantity: Any = None, **warehouses: Any) -> Operation:
    return Operation(SET_STOCK, external_id, {"external_id": external_id, "stock": warehouses or None,
                                              "quantity": quantity})


def offer(external_id: str, prices: dict[str, Any] | None = None, stock: dict[str, Any] | None = None,
          quantity: Any = None) -> Operation:
    payload: dict[str, Any] = {"external_id": external_id}
    if prices is not None:
        payload["prices"] = prices
    if stock is not None or quantity is not None:
        payload.update(stock=stock, quantity=quantity)
    return Operation(SET_OFFER, external_id, payload)


def deactivate(external_id: str) -> Operation:
    return Operation(DEACTIVATE_PRODUCT, external_id, {"external_id": external_id})


def company(external_id: str, name: str = "ООО Ромашка", inn: str | None = INN, kpp: str | None = KPP,
            match: dict[str, Any] | None = None) -> Operation:
    payload = {"external_id": external_id, "name": name, "inn": inn, "kpp": kpp, "full_name": f"{name} (полное)"}
    return Operation(UPSERT_COMPANY, external_id, payload, match=match)


def contact(external_id: str, name: str = "Иван Петров", email: str | None = "ivan@example.com") -> Operation:
    return Operation(UPSERT_CONTACT, external_id, {"external_id": external_id, "name": name, "email": email,
                                                   "phone": "+7 900 000-00-00"})


def deal(external_id: str, company_id: str | None, **fields: Any) -> Operation:
    payload = {"external_id": external_id, "number": "ЗК-1", "date": "2026-11-01", "amount": "1500.50",
               "currency": "RUB", "company_external_id": company_id, "stage": "new", "facts": {},
               "lines": [{"product_external_id": "p1", "quantity": 2, "price": "750.25"}], **fields}
    return Operation(UPSERT_DEAL, external_id, payload)


def record(snapshot: dict[str, Any], section: str, external_id: str) -> dict[str, Any]:
    found = [r for r in snapshot[section] if r["external_id"] == external_id]
    assert len(found) == 1, f"{section}: {len(found)} records with external id {external_id!r}: {snapshot[section]}"
    return found[0]


def assert_ok(results: list[Result]) -> None:
    failed = [(i, r.error) for i, r in enumerate(results) if not r.ok]
    assert not failed, failed


class CrmContract:
    """Tests every adapter must pass; subclasses implement the hooks below."""

    # ------------------------------------------------------------ hooks

    def make_adapter(self, tmp_path: Path) -> CrmAdapter:
        """A fresh adapter on an empty CRM."""
        raise NotImplementedError

    def snapshot(self, adapter: CrmAdapter) -> dict[str, Any]:
        """The CRM's state without call counts.

        ``{"products": [...], "companies": [...], "contacts": [...], "deals": [...]}``,
        each list sorted by external id; each record carries at least the keys of
        ``SandboxCrm.dump()`` for its section, plus the other payload fields the CRM
        keeps (e.g. a product's "description") under their payload names.
        """
        raise NotImplementedError

    def create_by_hand(self, adapter: CrmAdapter, section: str, fields: dict[str, Any]) -> str:
        """Make a record the way a person would in the CRM (no external id); return its CRM id."""
        pytest.skip("this adapter's tests cannot create records by hand")

    def let_time_pass(self, adapter: CrmAdapter) -> None:
        """Let the CRM's clock move on, so the next change is later than the last (whole-second clocks)."""

    @pytest.fixture
    def crm(self, tmp_path: Path) -> Iterator[CrmAdapter]:
        adapter = self.make_adapter(tmp_path)
        try:
            yield adapter
        finally:
            adapter.close()

    # ------------------------------------------------------------ results

    def test_empty_batch_returns_no_results(self, crm: CrmAdapter) -> None:
        assert crm.apply([]) == []

    def test_one_result_per_operation_in_order(self, crm: CrmAdapter) -> None:
        ops = [product("p1"), prices("ghost-a", Retail=1), company("c1"), stock("ghost-b", Main=1),
               contact("k1"), deal("d1", "c1"), prices("p1", Retail=10)]
        results = crm.apply(ops)
        assert len(results) == len(ops)
        assert [r.ok for r in results] == [True, False, True, False, True, True, True]
        assert "ghost-a" in (results[1].error or "") and "ghost-b" in (results[3].error or "")
        assert [r.created for r in results] == [True, False, True, False, True, True, False]
        assert all(r.crm_id for r in results if r.ok)

    def test_same_operations_twice_leave_the_same_crm(self, crm: CrmAdapter) -> None:
        ops = [product("p1", sku="A-1", description="Чайник"), product("p1#red", parent_external_id="p1"),
               prices("p1", Retail="1200.00", Wholesale=990), stock("p1", Main=5, Shop=2), deactivate("p1#red"),
               company("c1"), company("c2", inn=INN, kpp=KPP, match={"inn": INN, "kpp": KPP}),
               contact("k1"), deal("d1", "c2", facts={"paid": True})]
        first = crm.apply(ops)
        assert_ok(first)
        once = self.snapshot(crm)
        second = crm.apply(ops)
        assert_ok(second)
        assert self.snapshot(crm) == once
        assert not any(r.created for r in second)
        assert [r.crm_id for r in second] == [r.crm_id for r in first]

    # ------------------------------------------------------------ failures

    def test_unknown_product_fails_permanently_and_the_batch_goes_on(self, crm: CrmAdapter) -> None:
        results = crm.apply([product("p1"), prices("ghost-1", Retail=1), stock("ghost-2", Main=1),
                             deactivate("ghost-3"), product("p2")])
        for result, name in zip(results[1:4], ("ghost-1", "ghost-2", "ghost-3")):
            assert not result.ok and not result.retryable
            assert name in (result.error or "")
        assert results[0].ok and results[4].ok
        snap = self.snapshot(crm)
        assert [p["external_id"] for p in snap["products"]] == ["p1", "p2"]

    def test_invalid_operations_fail_permanently_and_name_the_record(self, crm: CrmAdapter) -> None:
        nameless = Operation(UPSERT_PRODUCT, "no-name", {"external_id": "no-name", "sku": "X"})
        ops = [product("p1"), Operation("explode", "boom-1", {"external_id": "boom-1"}), nameless,
               Operation(SET_PRICES, "p1", {"external_id": "p1", "prices": "cheap"}), product("p2")]
        results = crm.apply(ops)
        for result, name in zip(results[1:4], ("boom-1", "no-name", "p1")):
            assert not result.ok and not result.retryable and result.error
            assert name in result.error
        assert results[0].ok and results[4].ok
        assert [p["external_id"] for p in self.snapshot(crm)["products"]] == ["p1", "p2"]

    def test_a_failed_operation_changes_nothing(self, crm: CrmAdapter) -> None:
        assert_ok(crm.apply([product("p1"), stock("p1", Main=5)]))
        before = self.snapshot(crm)
        [result] = crm.apply([stock("p1", Main=7, Shop="lots")])
        assert not result.ok and "Shop" in (result.error or "")
        assert self.snapshot(crm) == before

    def test_batch_size_is_declared_and_respected(self, crm: CrmAdapter) -> None:
        assert isinstance(crm.batch_size, int) and crm.batch_size >= 1
        assert crm.rate_limit is None or crm.rate_limit > 0
        with pytest.raises(ValueError):
            crm.apply([product(f"p{i}") for i in range(crm.batch_size + 1)])
        assert self.snapshot(crm)["products"] == []
        results = crm.apply([product(f"p{i:04}") for i in range(crm.batch_size)])
        assert len(results) == crm.batch_size
        assert_ok(results)
        assert len(self.snapshot(crm)["products"]) == crm.batch_size

    # ------------------------------------------------------------ fields the CRM owns

    def test_create_only_fields_are_written_once(self, crm: CrmAdapter) -> None:
        first = product("p1", "Чайник", description="from 1C", unit="шт")
        first.create_only = ["description"]
        assert_ok(crm.apply([first]))
        assert record(self.snapshot(crm), "products", "p1")["description"] == "from 1C"
        later = product("p1", "Чайник электрический", description="changed in 1C", unit="упак")
        later.create_only = ["description"]
        assert_ok(crm.apply([later]))
        got = record(self.snapshot(crm), "products", "p1")
        assert got["description"] == "from 1C"
        assert (got["name"], got["unit"]) == ("Чайник электрический", "упак")

    # ------------------------------------------------------------ matching

    def test_company_matched_by_inn_kpp_is_updated_never_duplicated(self, crm: CrmAdapter) -> None:
        assert_ok(crm.apply([company("c-old", "Ромашка")]))
        results = crm.apply([company("c-new", "Ромашка-2", match={"inn": INN, "kpp": KPP})])
        assert_ok(results)
        assert not results[0].created
        for again in (company("c-new", "Ромашка-3"), company("c-old", "Ромашка-3"),
                      company("c-new", "Ромашка-3", match={"inn": INN, "kpp": KPP})):
            assert_ok(crm.apply([again]))
        snap = self.snapshot(crm)
        assert len(snap["companies"]) == 1
        only = snap["companies"][0]
        assert (only["name"], only["inn"], only["kpp"]) == ("Ромашка-3", INN, KPP)
        assert_ok(crm.apply([deal("d1", "c-new")]))  # either 1C id reaches the same company
        assert record(self.snapshot(crm), "deals", "d1")["company_external_id"] == only["external_id"]

    def test_sole_proprietor_matches_by_inn_alone(self, crm: CrmAdapter) -> None:
        assert_ok(crm.apply([company("ip-1", "ИП Иванов", inn=IP_INN, kpp=None)]))
        assert_ok(crm.apply([company("ip-2", "ИП Иванов И.И.", inn=IP_INN, kpp=None,
                                     match={"inn": IP_INN, "kpp": None})]))
        companies = self.snapshot(crm)["companies"]
        assert len(companies) == 1 and companies[0]["name"] == "ИП Иванов И.И."

    def test_branch_with_another_kpp_is_another_company(self, crm: CrmAdapter) -> None:
        assert_ok(crm.apply([company("c1")]))
        assert_ok(crm.apply([company("c2", "Ромашка, филиал", kpp="770201001",
                                     match={"inn": INN, "kpp": "770201001"})]))
        assert [c["kpp"] for c in self.snapshot(crm)["companies"]] == [KPP, "770201001"]

    def test_match_never_takes_a_product_of_another_external_id(self, crm: CrmAdapter) -> None:
        assert_ok(crm.apply([product("p1", "Чайник", sku="A-1")]))
        taken = product("p2", "Чайник (другой)", sku="A-1")
        taken.match = {"sku": "A-1"}
        [result] = crm.apply([taken])
        assert result.ok and result.created
        snap = self.snapshot(crm)
        assert record(snap, "products", "p1")["name"] == "Чайник"
        assert len(snap["products"]) == 2

    def test_match_adopts_a_product_made_by_hand(self, crm: CrmAdapter) -> None:
        crm_id = self.create_by_hand(crm, "products", {"name": "Чайник (вручную)", "sku": "A-1"})
        op = product("p1", "Чайник", sku="A-1")
        op.match = {"sku": "A-1"}
        for _ in range(2):
            [result] = crm.apply([op])
            assert result.ok and not result.created and result.crm_id == crm_id
        [only] = self.snapshot(crm)["products"]
        assert (only["external_id"], only["name"]) == ("p1", "Чайник")

    def test_match_adopts_a_company_made_by_hand(self, crm: CrmAdapter) -> None:
        crm_id = self.create_by_hand(crm, "companies", {"name": "Ромашка", "inn": INN, "kpp": KPP})
        [result] = crm.apply([company("c1", "ООО Ромашка", match={"inn": INN, "kpp": KPP})])
        assert result.ok and not result.created and result.crm_id == crm_id
        [only] = self.snapshot(crm)["companies"]
        assert (only["external_id"], only["name"]) == ("c1", "ООО Ромашка")

    # ------------------------------------------------------------ prices, stock, activity

    def test_prices_merge_by_type(self, crm: CrmAdapter) -> None:
        assert_ok(crm.apply([product("p1"), prices("p1", Retail="1200.50", Wholesale=990)]))
        assert_ok(crm.apply([prices("p1", Retail=1250)]))
        assert record(self.snapshot(crm), "products", "p1")["prices"] == {"Retail": 1250, "Wholesale": 990}

    def test_stock_merges_by_warehouse_and_totals(self, crm: CrmAdapter) -> None:
        assert_ok(crm.apply([product("p1"), stock("p1", Main=5, Shop="2.5")]))
        got = record(self.snapshot(crm), "products", "p1")
        assert (got["stock"], got["quantity"]) == ({"Main": 5, "Shop": 2.5}, 7.5)
        assert_ok(crm.apply([stock("p1", Shop=3)]))
        got = record(self.snapshot(crm), "products", "p1")
        assert (got["stock"], got["quantity"]) == ({"Main": 5, "Shop": 3}, 8)
        assert_ok(crm.apply([stock("p1", quantity=100)]))  # a total of its own replaces the sum
        got = record(self.snapshot(crm), "products", "p1")
        assert (got["stock"], got["quantity"]) == ({"Main": 5, "Shop": 3}, 100)

    def test_offer_sets_the_parts_it_has_and_merges_them(self, crm: CrmAdapter) -> None:
        results = crm.apply([product("p1"), offer("p1", {"Retail": "1200.50", "Wholesale": 990}, {"Main": 5, "Shop": 2}),
                             offer("ghost", {"Retail": 1})])
        assert results[0].ok and results[1].ok and not results[1].created
        assert not results[2].ok and not results[2].retryable and "ghost" in (results[2].error or "")
        got = record(self.snapshot(crm), "products", "p1")
        assert (got["prices"], got["stock"], got["quantity"]) == ({"Retail": 1200.5, "Wholesale": 990},
                                                                  {"Main": 5, "Shop": 2}, 7)
        assert_ok(crm.apply([offer("p1", prices={"Retail": 1250})]))  # prices only: the stock stays
        assert_ok(crm.apply([offer("p1", stock={"Shop": 3})]))  # stock only: the prices stay
        got = record(self.snapshot(crm), "products", "p1")
        assert (got["prices"], got["stock"], got["quantity"]) == ({"Retail": 1250, "Wholesale": 990},
                                                                  {"Main": 5, "Shop": 3}, 8)
        assert_ok(crm.apply([offer("p1", quantity=100)]))
        assert record(self.snapshot(crm), "products", "p1")["quantity"] == 100

    def test_an_offer_refused_in_its_stock_writes_no_prices(self, crm: CrmAdapter) -> None:
        assert_ok(crm.apply([product("p1"), offer("p1", {"Retail": 10}, {"Main": 5})]))
        before = self.snapshot(crm)
        [bad_stock, empty] = crm.apply([offer("p1", {"Retail": 20}, {"Main": 7, "Shop": "lots"}), offer("p1")])
        assert not bad_stock.ok and "Shop" in (bad_stock.error or "")
        assert not empty.ok and not empty.retryable
        assert self.snapshot(crm) == before

    def test_deactivation_keeps_the_product(self, crm: CrmAdapter) -> None:
        assert_ok(crm.apply([product("p1", sku="A-1"), prices("p1", Retail=10)]))
        assert_ok(crm.apply([deactivate("p1"), deactivate("p1")]))
        got = record(self.snapshot(crm), "products", "p1")
        assert (got["active"], got["sku"], got["prices"]) == (False, "A-1", {"Retail": 10})
        assert_ok(crm.apply([product("p1", sku="A-1", active=True)]))
        assert record(self.snapshot(crm), "products", "p1")["active"] is True

    def test_variant_keeps_its_parent(self, crm: CrmAdapter) -> None:
        assert_ok(crm.apply([product("p1"), product("p1#red", "Красный", parent_external_id="p1")]))
        assert record(self.snapshot(crm), "products", "p1#red")["parent_external_id"] == "p1"

    # ------------------------------------------------------------ contacts and deals

    def test_contact_upsert_updates_in_place(self, crm: CrmAdapter) -> None:
        assert_ok(crm.apply([contact("k1")]))
        assert_ok(crm.apply([contact("k1", "Иван Петрович", email="ivan@example.org")]))
        [only] = self.snapshot(crm)["contacts"]
        assert (only["name"], only["email"]) == ("Иван Петрович", "ivan@example.org")

    def test_deal_upsert_updates_facts_in_place(self, crm: CrmAdapter) -> None:
        assert_ok(crm.apply([company("c1"), deal("d1", "c1")]))
        assert_ok(crm.apply([deal("d1", "c1", stage="paid", facts={"paid": True, "paid_number": "17"})]))
        [only] = self.snapshot(crm)["deals"]
        assert (only["stage"], only["facts"], only["amount"]) == ("paid", {"paid": True, "paid_number": "17"}, 1500.5)
        assert only["company_external_id"] == "c1"

    # ------------------------------------------------------------ errors name their record

    def test_a_deal_for_an_unknown_company_fails_naming_the_deal_and_the_company(self, crm: CrmAdapter) -> None:
        results = crm.apply([deal("d-lost", "nobody-1c"), deal("d-fine", None), company("c1"), deal("d-ok", "c1")])
        assert [r.ok for r in results] == [False, True, True, True]
        assert not results[0].retryable
        assert "d-lost" in (results[0].error or "") and "nobody-1c" in (results[0].error or "")
        assert [d["external_id"] for d in self.snapshot(crm)["deals"]] == ["d-fine", "d-ok"]

    # ------------------------------------------------------------ changed deals (CRM -> 1C)

    def _all_changed(self, crm: CrmAdapter, cursor: str | None, limit: int) -> tuple[list[Any], str | None]:
        found: list[Any] = []
        for _ in range(100):
            deals, following = crm.changed_deals(cursor, limit=limit)
            assert len(deals) <= limit
            if not deals:
                assert following == cursor  # nothing changed: the cursor stays
                return found, cursor
            found += deals
            cursor = following
        raise AssertionError("changed_deals never ran dry")

    @pytest.mark.parametrize("limit", [35, 70, 500])
    def test_changed_deals_pages_through_every_deal_once_oldest_first(self, crm: CrmAdapter, limit: int) -> None:
        assert_ok(crm.apply([company("c1")]))
        ops = [deal(f"d{i:03}", "c1", number=f"ЗК-{i}") for i in range(120)]  # more than two pages of 50
        for start in range(0, len(ops), crm.batch_size):
            assert_ok(crm.apply(ops[start:start + crm.batch_size]))
        found, cursor = self._all_changed(crm, None, limit)
        assert sorted(d.external_id for d in found) == [op.external_id for op in ops]  # each once
        times = [datetime.fromisoformat(d.updated_at.replace("Z", "+00:00")) for d in found]
        assert times == sorted(times)
        by_id = {d.external_id: d for d in found}
        assert by_id["d007"].company_external_id == "c1" and by_id["d007"].amount in ("1500.5", "1500.50")
        assert by_id["d007"].crm_id and by_id["d007"].updated_at
        assert crm.changed_deals(cursor, limit=limit) == ([], cursor)

    def test_changed_deals_reports_a_deal_again_only_when_it_changed_again(self, crm: CrmAdapter) -> None:
        assert_ok(crm.apply([company("c1"), deal("d1", "c1"), deal("d2", "c1")]))
        first, cursor = self._all_changed(crm, None, 500)
        assert {d.external_id for d in first} == {"d1", "d2"}
        self.let_time_pass(crm)
        assert_ok(crm.apply([deal("d2", "c1", stage="paid", facts={"paid": True})]))
        again, cursor = self._all_changed(crm, cursor, 500)
        assert [(d.external_id, d.stage) for d in again] == [("d2", "paid")]  # its latest state, once
        assert crm.changed_deals(cursor) == ([], cursor)
