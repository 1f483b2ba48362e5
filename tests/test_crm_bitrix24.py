"""The Bitrix24 adapter against the emulated portal: the shared contract, then what only Bitrix24 asks for."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from bitrix24_emulator import Emulator
from bridge.crm.base import CrmAdapter, Operation
from bridge.crm.bitrix24 import Bitrix24Crm
from bridge.crm.bitrix24.settings import Settings
from bridge.crm.registry import ADAPTERS, adapter_class
from bridge.errors import PermanentError, TransientError, UserError
from conftest import SAMPLES, run_cli
from crm_contract import INN, KPP, CrmContract, assert_ok, company, contact, deal, prices, product, stock

FAST = {"rate_limit": 1000.0, "burst": 1000}  # tests that are not about the limits do not wait for them
STAGES = {"new": "NEW", "paid": "WON"}
ORIGINATOR = "bridge-1c"


def make(emulator: Emulator, **table: Any) -> Bitrix24Crm:
    settings = {"kind": "bitrix24", "sku_property": "ARTNUMBER", "barcode_property": "property102",
                "stages": STAGES, "backoff": 0.01, **FAST, **table}
    return Bitrix24Crm(Settings.from_table(settings, environ={"BITRIX24_WEBHOOK_URL": emulator.url}))


@pytest.fixture(autouse=True)
def _no_thread_outlives_its_test() -> Iterator[None]:
    """The emulated portal and the adapter's connections are gone when a test ends."""
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 5
    while (left := set(threading.enumerate()) - before) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not left, f"threads left running: {left}"


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    with Emulator(rate=1000, burst=1000) as portal:
        yield portal


@pytest.fixture
def crm(emulator: Emulator) -> Iterator[Bitrix24Crm]:
    adapter = make(emulator)
    try:
        yield adapter
    finally:
        adapter.close()


def _number(value: Any) -> int | float:
    number = Decimal(str(value))
    return int(number) if number == number.to_integral_value() else float(number)


def _prop(value: Any) -> str | None:
    if isinstance(value, dict):
        value = value.get("value")
    return value or None


def snapshot_of(emulator: Emulator) -> dict[str, list[dict[str, Any]]]:
    """The portal as the contract reads a CRM: records by external id (hand-made ones have none)."""
    with emulator.lock:
        back_stages = {v: k for k, v in STAGES.items()}
        price_names = {t["id"]: t["name"] for t in emulator.price_types.values()}
        store_names = {s["id"]: s["title"] for s in emulator.stores.values()}
        symbols = {m["id"]: m["symbol"] for m in emulator.measures}

        def external(xml_id: str, row_id: int) -> str | None:
            return None if xml_id in ("", str(row_id)) else xml_id

        products = []
        for p in emulator.products.values():
            parent = p.get("parentId")
            parent_id = parent["value"] if isinstance(parent, dict) else None
            products.append({
                "id": str(p["id"]), "external_id": external(p["xmlId"], p["id"]),
                "parent_external_id": emulator.products[parent_id]["xmlId"] if parent_id else None,
                "name": p["name"], "sku": _prop(p.get("property101")), "barcode": _prop(p.get("property102")),
                "active": p["active"] == "Y", "quantity": _number(p["quantity"]),
                "description": p.get("detailText") or None, "unit": symbols.get(p.get("measure")),
                "prices": {price_names[r["catalogGroupId"]]: _number(r["price"])
                           for r in emulator.prices.values() if r["productId"] == p["id"]},
                "stock": {store_names[r["storeId"]]: _number(r["amount"])
                          for r in emulator.store_products.values() if r["productId"] == p["id"]}})
        companies = []
        for c in emulator.items[4].values():
            own = c["originId"] if c.get("originatorId") == ORIGINATOR else None
            requisites = [r for r in emulator.requisites.values() if r["ENTITY_ID"] == c["id"]]
            primary = next((r for r in requisites if r["XML_ID"] == own), requisites[0] if requisites else {})
            companies.append({"id": str(c["id"]), "external_id": own, "name": c["title"],
                              "inn": primary.get("RQ_INN") or None, "kpp": primary.get("RQ_KPP") or None,
                              "full_name": primary.get("RQ_COMPANY_FULL_NAME"),
                              "aliases": sorted(r["XML_ID"] for r in requisites if r["XML_ID"] not in ("", own))})
        owners = {c["id"]: c["originId"] for c in emulator.items[4].values()}
        contacts = []
        for k in emulator.items[3].values():
            fm = k.get("fm") or []
            contacts.append({"id": str(k["id"]), "external_id": k.get("originId"),
                             "name": " ".join(filter(None, (k.get("name"), k.get("secondName"), k.get("lastName")))),
                             "email": next((f["value"] for f in fm if f["typeId"] == "EMAIL"), None),
                             "phone": next((f["value"] for f in fm if f["typeId"] == "PHONE"), None)})
        deals = []
        for d in emulator.items[2].values():
            data = json.loads(d.get("UF_CRM_BRIDGE_1C") or "{}")
            deals.append({"id": str(d["id"]), "external_id": d.get("originId"), "number": data.get("number"),
                          "date": data.get("date"), "amount": _number(d["opportunity"]), "currency": d["currencyId"],
                          "company_external_id": owners.get(d.get("companyId")),
                          "stage": back_stages.get(d["stageId"], d["stageId"]), "facts": data.get("facts") or {},
                          "lines": [{"product_id": r["productId"], "quantity": r["quantity"], "price": r["price"]}
                                    for r in emulator.product_rows.get(("D", d["id"]), [])]})

    def order(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return sorted(records, key=lambda r: (r["external_id"] is not None, r["external_id"] or "", int(r["id"])))

    return {"products": order(products), "companies": order(companies), "contacts": order(contacts),
            "deals": order(deals)}


class TestBitrix24Contract(CrmContract):
    emulator: Emulator

    @pytest.fixture
    def crm(self, emulator: Emulator, tmp_path: Path) -> Iterator[CrmAdapter]:
        self.emulator = emulator
        adapter = self.make_adapter(tmp_path)
        try:
            yield adapter
        finally:
            adapter.close()

    def make_adapter(self, tmp_path: Path) -> CrmAdapter:
        return make(self.emulator, batch_size=200)

    def snapshot(self, adapter: CrmAdapter) -> dict[str, Any]:
        return snapshot_of(self.emulator)

    def create_by_hand(self, adapter: CrmAdapter, section: str, fields: dict[str, Any]) -> str:
        if section == "products":
            return str(self.emulator.hand_made_product(fields["name"], fields.get("sku")))
        if section == "companies":
            return str(self.emulator.hand_made_company(fields["name"], fields.get("inn"), fields.get("kpp")))
        raise NotImplementedError(section)

    def let_time_pass(self, adapter: CrmAdapter) -> None:
        base = self.emulator.now()
        self.emulator.now = lambda: base + timedelta(seconds=2)  # the portal's clock counts whole seconds


# ---------------------------------------------------------------- the rate limit and the retries

def test_503_is_waited_out_without_losing_or_repeating_an_operation(emulator: Emulator) -> None:
    emulator.limits.rate, emulator.limits.burst = 10.0, 3  # the portal is stricter than the adapter believes
    ops = [product(f"p{i:03}", sku=f"S-{i}") for i in range(200)] + [prices(f"p{i:03}", Retail=i + 1)
                                                                    for i in range(200)]
    with make(emulator, batch_size=400, rate_limit=1000.0, burst=1000) as adapter:
        results = adapter.apply(ops)
    assert_ok(results)
    assert emulator.counters.rejected_503 > 0
    assert len(emulator.products) == 200 and len(emulator.prices) == 200
    assert emulator.counters.write_methods == {"catalog.product.add": 200, "catalog.price.modify": 200}


def test_the_adapter_paces_itself_to_the_portals_bucket(emulator: Emulator) -> None:
    emulator.limits.rate, emulator.limits.burst = 20.0, 5
    with make(emulator, batch_size=500, rate_limit=20.0, burst=5) as adapter:
        assert_ok(adapter.apply([product(f"p{i:03}") for i in range(500)]))
    assert emulator.counters.rejected_503 == 0  # never over the limit, so never refused
    assert len(emulator.products) == 500


def test_429_operation_time_limit_is_waited_out_without_losing_or_repeating(emulator: Emulator) -> None:
    with make(emulator) as adapter:
        assert_ok(adapter.apply([product(f"p{i}") for i in range(60)]))
        emulator.block("catalog.price.modify", 0.3)  # the whole request is refused (HTTP 429)
        assert_ok(adapter.apply([prices(f"p{i}", Retail=10) for i in range(60)]))
        assert emulator.counters.rejected_429 > 0
        emulator.block("catalog.product.update", 0.3, mode="command")  # only that command, inside the batch
        assert_ok(adapter.apply([product(f"p{i}", f"Новое имя {i}") for i in range(60)]))
    assert len(emulator.modify_log) == 60  # each price write carried out exactly once
    assert emulator.counters.write_methods["catalog.product.update"] == 60
    assert all(p["name"].startswith("Новое имя") for p in emulator.products.values())
    assert len(emulator.products) == 60


def test_a_portal_that_keeps_refusing_is_transient_and_a_retry_duplicates_nothing(emulator: Emulator) -> None:
    with make(emulator, max_wait=0.2) as adapter:
        emulator.block("catalog.product.add", 5)
        with pytest.raises(TransientError, match="OPERATION_TIME_LIMIT"):
            adapter.apply([product("p1"), product("p2")])
        emulator.block("catalog.product.add", 0)
        assert_ok(adapter.apply([product("p1"), product("p2")]))
    assert sorted(p["xmlId"] for p in emulator.products.values()) == ["p1", "p2"]


def test_a_method_blocked_inside_batches_for_too_long_is_transient(emulator: Emulator) -> None:
    with make(emulator, max_wait=0.3) as adapter:
        assert_ok(adapter.apply([product("p1")]))
        emulator.block("catalog.price.modify", 5, mode="command")
        with pytest.raises(TransientError, match="OPERATION_TIME_LIMIT"):
            adapter.apply([prices("p1", Retail=1)])
        emulator.block("catalog.price.modify", 0)
        assert_ok(adapter.apply([prices("p1", Retail=1)]))
    assert len(emulator.modify_log) == 1


# ---------------------------------------------------------------- batching and bulk lookups

def test_commands_travel_fifty_to_a_request(emulator: Emulator) -> None:
    with make(emulator, batch_size=500) as adapter:
        assert_ok(adapter.apply([product(f"p{i:03}", groups=[{"id": f"g{i % 7}", "name": f"Группа {i % 7}"}])
                                 for i in range(500)]))
        # 10 product and 1 section lookups in the first request, then 7 new sections and 500 products.
        assert adapter.last_requests == 1 + 11
    sent = [n for _, n, status in emulator.counters.log if status == 200]
    assert max(sent) == 50
    assert len(emulator.sections) == 7
    assert {p["iblockSectionId"] for p in emulator.products.values()} == set(emulator.sections)


def test_ids_are_resolved_in_bulk(emulator: Emulator) -> None:
    with make(emulator, batch_size=500) as adapter:
        assert_ok(adapter.apply([product(f"p{i:03}") for i in range(200)]))
        assert_ok(adapter.apply([prices(f"p{i:03}", Retail=1) for i in range(200)]))
    before = dict(emulator.counters.methods)
    with make(emulator, batch_size=500) as fresh:  # knows nothing: must look everything up
        assert_ok(fresh.apply([prices(f"p{i:03}", Retail=2, Wholesale=3) for i in range(200)]))
        lookups = {m: n - before.get(m, 0) for m, n in emulator.counters.methods.items() if m.endswith(".list")}
        # 4 product lookups (50 keys each) in one request, then 17 price reads (12 products x 4 types
        # to a page) in another, then 200 writes in 4 more.
        assert lookups["catalog.product.list"] == 4 and lookups["catalog.price.list"] == 17
        assert fresh.last_requests == 6
    assert {_number(p["price"]) for p in emulator.prices.values()} == {2, 3}


# ---------------------------------------------------------------- prices and stock

def test_every_price_is_sent_every_time(emulator: Emulator) -> None:
    with make(emulator) as adapter:
        assert_ok(adapter.apply([product("p1"), prices("p1", Retail="100.50", Wholesale=90)]))
        assert_ok(adapter.apply([prices("p1", Retail=120)]))
    sent = {price_type(emulator, r["catalogGroupId"]): r["price"] for r in emulator.modify_log[-1]["prices"]}
    assert sent == {"Retail": "120", "Wholesale": "90"}
    with make(emulator) as fresh:  # no knowledge of its own: it reads the prices first
        assert_ok(fresh.apply([prices("p1", Wholesale=80)]))
    sent = {price_type(emulator, r["catalogGroupId"]): r["price"] for r in emulator.modify_log[-1]["prices"]}
    assert sent == {"Retail": "120", "Wholesale": "80"}
    assert snapshot_of(emulator)["products"][0]["prices"] == {"Retail": 120, "Wholesale": 80}


def price_type(emulator: Emulator, type_id: Any) -> str:
    return emulator.price_types[int(type_id)]["name"]


def test_stock_is_posted_as_the_difference_through_inventory_documents(emulator: Emulator) -> None:
    with make(emulator) as adapter:
        assert_ok(adapter.apply([product("p1"), product("p2"), stock("p1", Main=5, Shop=2), stock("p2", Main=1)]))
        assert_ok(adapter.apply([stock("p1", Main=3, Shop=2), stock("p2", Main=4)]))
        assert_ok(adapter.apply([stock("p1", Main=3)]))  # nothing to post: no document at all
    with make(emulator) as fresh:  # reads what the portal has before it posts the difference
        assert_ok(fresh.apply([stock("p1", Main=10)]))
    docs = [(d["docType"], d["status"], sorted((e["elementId"], e["amount"]) for e in d["elements"]))
            for d in emulator.documents.values()]
    assert docs == [("S", "Y", [(1, 2), (1, 5), (2, 1)]), ("D", "Y", [(1, 2)]), ("S", "Y", [(2, 3)]),
                    ("S", "Y", [(1, 7)])]
    p1 = snapshot_of(emulator)["products"][0]
    assert (p1["stock"], p1["quantity"]) == ({"Main": 10, "Shop": 2}, 12)


def test_a_refused_stock_document_is_retried_alone_to_find_the_operation_at_fault(emulator: Emulator) -> None:
    with make(emulator) as adapter:
        assert_ok(adapter.apply([product("p1"), product("p2"), stock("p1", Main=5), stock("p2", Main=5)]))
        with emulator.lock:  # someone sold p1 in the portal: a deduction of 4 cannot be posted against 1
            emulator.store_products[(1, emulator_store(emulator, "Main"))]["amount"] = 1
        results = adapter.apply([stock("p1", Main=1), stock("p2", Main=2)])
    assert results[1].ok
    assert results[0].ok  # read again after the shared document failed: the difference is 0 now
    p2 = next(p for p in snapshot_of(emulator)["products"] if p["external_id"] == "p2")
    assert p2["stock"] == {"Main": 2}
    assert all(d["status"] == "Y" for d in emulator.documents.values())  # the failed draft was deleted


def emulator_store(emulator: Emulator, title: str) -> int:
    return next(s["id"] for s in emulator.stores.values() if s["title"] == title)


def test_a_missing_price_type_or_warehouse_fails_only_the_records_that_need_it(emulator: Emulator) -> None:
    with make(emulator, price_types={"Розн": "Retail"}, warehouses={"Центральный": "Main"}) as adapter:
        results = adapter.apply([product("p1"), product("p2"),
                                 prices("p1", Retail=1, Мелкооптовая=2), prices("p2", Розн=5),
                                 stock("p1", Дальний=3), stock("p2", Центральный=4)])
    assert [r.ok for r in results] == [True, True, False, True, False, True]
    assert "p1" in (results[2].error or "") and "Мелкооптовая" in (results[2].error or "")
    assert "[crm.price_types]" in (results[2].error or "")
    assert "p1" in (results[4].error or "") and "Дальний" in (results[4].error or "")
    p1, p2 = snapshot_of(emulator)["products"]
    assert (p1["prices"], p1["stock"]) == ({}, {})  # nothing of a refused operation was written
    assert (p2["prices"], p2["stock"]) == ({"Retail": 5}, {"Main": 4})


def test_a_record_the_portal_refuses_fails_alone_and_is_named(emulator: Emulator) -> None:
    with make(emulator) as adapter:
        results = adapter.apply([product("p1"), product("p-long", "Ч" * 300), product("p3"),
                                 prices("p-long", Retail=1)])
    assert [r.ok for r in results] == [True, False, True, False]
    assert "p-long" in (results[1].error or "") and "255" in (results[1].error or "")
    assert not results[1].retryable and "p-long" in (results[3].error or "")
    assert sorted(p["xmlId"] for p in emulator.products.values()) == ["p1", "p3"]


def test_deals_fail_clearly_when_the_portal_lacks_the_data_field(emulator: Emulator) -> None:
    emulator.deal_fields.clear()
    with make(emulator) as adapter:
        results = adapter.apply([company("c1"), deal("d1", "c1")])
    assert results[0].ok and not results[1].ok
    assert "UF_CRM_BRIDGE_1C" in (results[1].error or "") and "d1" in (results[1].error or "")


def test_contact_email_changes_in_place(emulator: Emulator) -> None:
    with make(emulator) as adapter:
        assert_ok(adapter.apply([contact("k1")]))
    with make(emulator) as fresh:
        assert_ok(fresh.apply([contact("k1", email="new@example.com")]))
    [only] = emulator.items[3].values()
    assert [f["value"] for f in only["fm"] if f["typeId"] == "EMAIL"] == ["new@example.com"]


# ---------------------------------------------------------------- the secret

SECRET = "Zq9-very-secret-webhook-key"


def test_the_webhook_secret_never_reaches_logs_or_exceptions(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with Emulator(rate=1000, burst=1000, secret=SECRET) as portal:
        good = portal.url
        wrong = good.replace(SECRET, SECRET + "x")
        with make_from_url(wrong) as adapter:
            with pytest.raises(PermanentError) as refused:
                adapter.apply([product("p1")])
        with make_from_url(good) as adapter:
            results = adapter.apply([product("p1"), prices("nope", Retail=1)])
            assert not results[1].ok and SECRET not in (results[1].error or "")
    with make_from_url(good) as adapter:  # the portal is gone
        with pytest.raises(TransientError) as unreachable:
            adapter.apply([product("p2")])
        assert SECRET not in repr(adapter.settings.webhook) and SECRET not in str(adapter.settings.webhook)
    for exc in (refused.value, unreachable.value):
        assert SECRET not in str(exc) and SECRET not in repr(exc)
        assert exc.__cause__ is None and exc.__context__ is None or SECRET not in str(exc.__context__)
    assert "HTTP Request" in caplog.text  # httpx did log its requests, redacted
    assert SECRET not in caplog.text


def test_closing_one_adapter_keeps_the_secret_of_another_on_the_same_webhook_hidden(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with Emulator(rate=1000, burst=1000, secret=SECRET) as portal:
        with make_from_url(portal.url) as adapter:
            make_from_url(portal.url).close()
            assert_ok(adapter.apply([product("p1")]))
    assert "HTTP Request" in caplog.text
    assert SECRET not in caplog.text


def make_from_url(url: str, **table: Any) -> Bitrix24Crm:
    return Bitrix24Crm(Settings.from_table({"kind": "bitrix24", **FAST, "timeout": 2, **table},
                                           environ={"BITRIX24_WEBHOOK_URL": url}))


def test_a_webhook_url_in_a_bad_shape_is_refused_without_showing_it() -> None:
    for url in (f"https://portal.example/rest/{SECRET}", f"http://portal.example/rest/1/{SECRET}/", "not a url"):
        with pytest.raises(UserError) as refused:
            Settings.from_table({"kind": "bitrix24"}, environ={"BITRIX24_WEBHOOK_URL": url})
        assert SECRET not in str(refused.value)


def test_settings_report_every_problem_at_once() -> None:
    with pytest.raises(UserError) as refused:
        Settings.from_table({"kind": "bitrix24", "batch_size": 0, "rate_limit": "fast", "colour": "red",
                             "price_types": {"Розничная": 5}}, environ={})
    text = str(refused.value)
    for part in ("batch_size", "rate_limit", "colour", "price_types", "BITRIX24_WEBHOOK_URL"):
        assert part in text


def test_the_webhook_url_may_come_from_a_systemd_credential(tmp_path: Path) -> None:
    (tmp_path / "bitrix24").write_text(f"https://portal.example/rest/7/{SECRET}/\n", encoding="utf-8")
    settings = Settings.from_table({"kind": "bitrix24", "webhook_url_credential": "bitrix24", "rate_limit": 5,
                                    "burst": 250}, environ={"CREDENTIALS_DIRECTORY": str(tmp_path)})
    assert settings.webhook.user_id == 7 and settings.webhook.secret == SECRET
    assert (settings.rate_limit, settings.burst) == (5.0, 250)
    with pytest.raises(UserError, match="CREDENTIALS_DIRECTORY"):
        Settings.from_table({"kind": "bitrix24", "webhook_url_credential": "bitrix24"}, environ={})


def test_registry_knows_bitrix24() -> None:
    assert ADAPTERS["bitrix24"] is Bitrix24Crm and adapter_class("bitrix24") is Bitrix24Crm


# ---------------------------------------------------------------- through the pipeline

def write_config(folder: Path) -> Path:
    path = folder / "bridge.toml"
    path.write_text('[state]\npath = "var/bridge.db"\n[archive]\npath = "var/archive"\nquarantine = "var/quarantine"\n'
                    '[crm]\nkind = "bitrix24"\nwebhook_url_env = "TEST_B24_URL"\nrate_limit = 1000\nburst = 1000\n'
                    'sku_property = "ARTNUMBER"\n', encoding="utf-8")
    return path


def test_an_unchanged_export_through_the_pipeline_makes_no_write_calls(
        emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_B24_URL", emulator.url)
    cfg = write_config(tmp_path)
    code, output = run_cli("ingest", "-c", cfg, SAMPLES / "exchange")
    assert code == 0, output
    writes = emulator.counters.writes
    assert writes > 0
    snap = snapshot_of(emulator)
    kettle = next(p for p in snap["products"] if p["external_id"] == "289a7cba-73c9-11ef-a3c6-00155d0a4e21")
    assert kettle["prices"] == {"Розничная": 2490, "Оптовая": 2150}
    assert kettle["stock"] == {"Основной склад": 12, "Склад Север": 4} and kettle["quantity"] == 16
    assert {c["inn"] for c in snap["companies"]} >= {"7812045738", "502918437105"}
    assert len(snap["deals"]) == 2
    code, output = run_cli("ingest", "-c", cfg, SAMPLES / "exchange")
    assert code == 0, output
    assert emulator.counters.writes == writes  # nothing changed, nothing written


def test_a_dry_run_never_reaches_the_portal(emulator: Emulator, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_B24_URL", emulator.url)
    code, output = run_cli("ingest", "-c", write_config(tmp_path), "--dry-run", SAMPLES / "exchange" / "ut11")
    assert code == 0, output
    assert emulator.counters.requests == 0


def test_operations_on_one_record_keep_their_order(emulator: Emulator) -> None:
    ops: list[Operation] = [product("p1", "Первое", active=False), product("p1", "Второе", active=True),
                            prices("p1", Retail=1), prices("p1", Retail=2), product("p1", "Третье", active=False)]
    with make(emulator) as adapter:
        assert_ok(adapter.apply(ops))
    [p1] = snapshot_of(emulator)["products"]
    assert (p1["name"], p1["active"], p1["prices"]) == ("Третье", False, {"Retail": 2})


def test_an_apply_cut_short_by_a_refusal_leaves_no_half_made_record_behind(emulator: Emulator) -> None:
    """A PermanentError mid-apply (the webhook refused for a moment): the next apply must not use what was
    registered for commands never answered (an id that is a reference into a request that never ran)."""
    inner = httpx.HTTPTransport()
    refuse_at: list[int] = []
    count = [0]

    class Refusing(httpx.BaseTransport):
        def handle_request(self, request: httpx.Request) -> httpx.Response:
            count[0] += 1
            if count[0] in refuse_at:
                return httpx.Response(401, json={"error": "NO_AUTH_FOUND", "error_description": "Wrong"})
            return inner.handle_request(request)

        def close(self) -> None:
            inner.close()

    settings = Settings.from_table({"kind": "bitrix24", "backoff": 0.01, **FAST},
                                   environ={"BITRIX24_WEBHOOK_URL": emulator.url})
    with Bitrix24Crm(settings, transport=Refusing()) as adapter:
        assert_ok(adapter.apply([product("p0")]))
        refuse_at.append(count[0] + 2)  # the lookup goes through, the request with the add is refused
        with pytest.raises(PermanentError):
            adapter.apply([product("p1")])
        results = adapter.apply([product("p0", "p0 renamed"), product("p1", "p1 renamed")])
    assert_ok(results)
    assert results[1].created and results[1].crm_id and results[1].crm_id.isdigit()
    names = {p["xmlId"]: p["name"] for p in emulator.products.values()}
    assert names == {"p0": "p0 renamed", "p1": "p1 renamed"}


def test_two_operations_matching_one_hand_made_record_in_one_apply_do_not_both_take_it(emulator: Emulator) -> None:
    """As if applied one after the other: the first takes the record made by hand, the second joins the
    company (a requisite of its own) or makes its own product; nobody's external id is taken away."""
    company_id = emulator.hand_made_company("Ромашка", INN, KPP)
    product_id = emulator.hand_made_product("Чайник (вручную)", sku="A-1")
    first, second = product("p1", "Чайник 1", sku="A-1"), product("p2", "Чайник 2", sku="A-1")
    first.match = second.match = {"sku": "A-1"}
    with make(emulator) as adapter:
        results = adapter.apply([company("c1", match={"inn": INN, "kpp": KPP}),
                                 company("c2", match={"inn": INN, "kpp": KPP}),
                                 first, second, prices("p1", Retail=111)])
    assert_ok(results)
    assert [r.crm_id for r in results[:3]] == [str(company_id), str(company_id), str(product_id)]
    assert results[3].created and results[3].crm_id != str(product_id)
    assert sorted(r["XML_ID"] for r in emulator.requisites.values()) == ["c1", "c2"]
    by_xml = {p["xmlId"]: p for p in emulator.products.values()}
    assert by_xml["p1"]["id"] == product_id and by_xml["p1"]["name"] == "Чайник 1"
    assert [r["productId"] for r in emulator.prices.values()] == [product_id]
    with make(emulator) as fresh:  # each 1C id keeps finding its own record
        again = fresh.apply([company("c1"), company("c2"), product("p1", "Чайник 1"), product("p2", "Чайник 2")])
    assert_ok(again)
    assert not any(r.created for r in again)
    assert len(emulator.items[4]) == 1 and len(emulator.products) == 2


def test_a_company_cut_off_before_its_requisite_is_completed_not_duplicated(emulator: Emulator) -> None:
    """crm.item.add and crm.requisite.add may travel in two requests; when the second one times out, the
    retry must find the company by its originId and give it its requisite, not make a second one."""
    inner = httpx.HTTPTransport()
    sent: list[list[str]] = []
    cut = [False]

    class CutOff(httpx.BaseTransport):
        def handle_request(self, request: httpx.Request) -> httpx.Response:
            methods = [c.split("?")[0] for c in json.loads(request.read()).get("cmd", {}).values()]
            sent.append(methods)
            if methods == ["crm.requisite.add"] and not cut[0]:
                cut[0] = True
                raise httpx.ReadTimeout("timed out", request=request)
            return inner.handle_request(request)

        def close(self) -> None:
            inner.close()

    ops = [product(f"p{i:02}") for i in range(49)] + [company("c1")]  # the company's item.add is command 50
    settings = Settings.from_table({"kind": "bitrix24", "backoff": 0.01, **FAST},
                                   environ={"BITRIX24_WEBHOOK_URL": emulator.url})
    with Bitrix24Crm(settings, transport=CutOff()) as adapter:
        with pytest.raises(TransientError):
            adapter.apply(ops)
        assert cut[0]
        results = adapter.apply(ops)  # the outbox sends the batch again
    assert_ok(results)
    [only] = snapshot_of(emulator)["companies"]
    assert (only["external_id"], only["inn"], only["kpp"]) == ("c1", INN, KPP)
    assert results[-1].crm_id == only["id"]
    assert [r["XML_ID"] for r in emulator.requisites.values()] == ["c1"]


def test_a_retried_operation_is_not_overtaken_by_a_later_one_on_the_same_record(emulator: Emulator) -> None:
    """Someone deleted the product: the first update fails 'not found' (retryable). The second must not be
    applied before it, or the retry writes the older name over the newer one."""
    with make(emulator) as adapter:
        assert_ok(adapter.apply([product("p1", "Old")]))
        with emulator.lock:
            emulator.products.clear()
        first = adapter.apply([product("p1", "A"), product("p1", "B")])
        assert [(r.ok, r.retryable) for r in first] == [(False, True), (False, True)]
        assert_ok(adapter.apply([product("p1", "A"), product("p1", "B")]))  # the outbox retries both, in order
    assert [(p["xmlId"], p["name"]) for p in emulator.products.values()] == [("p1", "B")]


def test_a_scope_taken_from_the_webhook_fails_the_apply_instead_of_each_operation(emulator: Emulator) -> None:
    """insufficient_scope arrives per command inside a batch: failing each operation for good would drop
    them until 1C sends them all again; the apply must fail as a whole so the outbox keeps them."""
    inner = httpx.HTTPTransport()

    class NoCatalogScope(httpx.BaseTransport):
        def handle_request(self, request: httpx.Request) -> httpx.Response:
            response = inner.handle_request(request)
            body = json.loads(request.read())
            if "cmd" not in body:
                return response
            response.read()
            answer = response.json()
            result = answer["result"]
            errors = result["result_error"] if isinstance(result["result_error"], dict) else {}
            for key, command in body["cmd"].items():
                if command.startswith("catalog.") and ".list" not in command.split("?")[0]:  # the writes
                    errors[key] = {"error": "insufficient_scope", "error_description": "The request requires higher privileges"}
                    if isinstance(result["result"], dict):
                        result["result"].pop(key, None)
            result["result_error"] = errors
            return httpx.Response(200, json=answer)

        def close(self) -> None:
            inner.close()

    settings = Settings.from_table({"kind": "bitrix24", "backoff": 0.01, **FAST},
                                   environ={"BITRIX24_WEBHOOK_URL": emulator.url})
    with Bitrix24Crm(settings, transport=NoCatalogScope()) as adapter:
        with pytest.raises(PermanentError) as refused:
            adapter.apply([product("p1"), prices("p1", Retail=10)])
    assert "insufficient_scope" in str(refused.value) and "scope" in str(refused.value)
    with make(emulator) as adapter:  # the scope given back: the same operations go through
        assert_ok(adapter.apply([product("p1"), prices("p1", Retail=10)]))
