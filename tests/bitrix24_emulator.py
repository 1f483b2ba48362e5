"""A Bitrix24 portal on 127.0.0.1, written from the documented REST API, for the adapter's tests and bench.

It keeps state (companies, contacts and deals as CRM items with requisites
and product rows; catalog products, variations, sections, price types,
prices, warehouses, stock and inventory documents) and enforces what a real
portal enforces, in the documented formats:

* the incoming-webhook path ``/rest/<user>/<secret>/<method>``: a wrong
  secret is HTTP 401 ``NO_AUTH_FOUND``;
* the leaky bucket: every request adds 1, the bucket drains ``rate`` a
  second, a request that finds ``burst`` in it is HTTP 503
  ``QUERY_LIMIT_EXCEEDED`` (2 and 50 by default, as on the cloud plans);
* the per-method time limit, on demand (``block``): HTTP 429
  ``OPERATION_TIME_LIMIT``, or that error for the one command in a batch;
* ``batch`` with ``halt=0``: at most 50 commands, ``$result[key][...]``
  references, and ``result``/``result_error``/``result_total``/``result_next``
  (empty ones as ``[]``, as PHP encodes them);
* lists page by 50 (``start``; ``total`` and ``next`` in the answer).

It counts every request, every refused request and every write command, so
tests can assert "no write calls" and the bench can check its pace.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

PAGE = 50
MSK = timezone(timedelta(hours=3))
PRODUCTS_IBLOCK, OFFERS_IBLOCK = 25, 27
WRITE = re.compile(r"\.(add|update|modify|set|conduct|delete|cancel)$")
_RESULT_REF = re.compile(r"^\$result\[([^\]]+)\]((?:\[[^\]]*\])*)$")
DEAL_STAGES = ("NEW", "PREPARATION", "PREPAYMENT_INVOICE", "EXECUTING", "FINAL_INVOICE", "WON", "LOSE")


class ApiError(Exception):
    def __init__(self, code: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.code, self.description, self.status = code, description, status


def _number(value: Any, name: str) -> Decimal:
    try:
        number = Decimal(str(value).strip())
    except (InvalidOperation, AttributeError):
        raise ApiError("ERROR_VALIDATION", f"Field {name} must be a number") from None
    if not number.is_finite():
        raise ApiError("ERROR_VALIDATION", f"Field {name} must be a number")
    return number


def _json_number(value: Decimal) -> int | float:
    return int(value) if value == value.to_integral_value() else float(value)


def _int(value: Any, name: str) -> int:
    text = str(value).strip()
    if not text.lstrip("-").isdigit():
        raise ApiError("ERROR_VALIDATION", f"Field {name} must be an integer, not {text!r}")
    return int(text)


def parse_php_query(query: str) -> dict[str, Any]:
    """``a[b][0]=1&a[b][1]=2`` as {"a": {"b": ["1", "2"]}}, as PHP reads a query string."""
    root: dict[str, Any] = {}
    for raw_key, value in parse_qsl(query, keep_blank_values=True):
        parts = re.findall(r"^[^\[]+|\[([^\]]*)\]", raw_key)
        head = raw_key.split("[", 1)[0]
        keys = [head] + [p for p in parts[1:]]
        node = root
        for index, key in enumerate(keys):
            last = index == len(keys) - 1
            if key == "":
                key = str(len(node))
            if last:
                node[key] = value
            else:
                node = node.setdefault(key, {})
                if not isinstance(node, dict):
                    break
    return _lists(root)


def _lists(value: Any) -> Any:
    if isinstance(value, dict):
        converted = {k: _lists(v) for k, v in value.items()}
        if converted and all(k.isdigit() for k in converted):
            return [converted[k] for k in sorted(converted, key=int)]
        return converted
    return value


def _as_list(value: Any) -> list[Any]:
    if value in (None, ""):
        return []
    return value if isinstance(value, list) else [value]


def _compare_key(value: Any) -> Any:
    if isinstance(value, (int, float, Decimal)) and not isinstance(value, bool):
        return (0, Decimal(str(value)))
    text = "" if value is None else str(value)
    try:
        return (0, Decimal(text))
    except InvalidOperation:
        pass
    try:
        return (1, datetime.fromisoformat(text).timestamp())
    except ValueError:
        return (2, text)


def _plain(value: Any) -> str:
    if isinstance(value, dict):  # a product property {"value": ...}
        value = value.get("value")
    if isinstance(value, bool):
        return "Y" if value else "N"
    if isinstance(value, (int, float, Decimal)):
        return format(Decimal(str(value)).normalize(), "f")
    return "" if value is None else str(value)


def matches(row: dict[str, Any], filters: dict[str, Any]) -> bool:
    for raw, wanted in filters.items():
        match = re.match(r"^(!=|>=|<=|!@|=|@|!|>|<)?(.+)$", raw)
        assert match is not None
        op, name = match.group(1) or "=", match.group(2)
        have = row.get(name)
        if op in ("=", "@", "!", "!=", "!@"):
            values = {_plain(v) for v in _as_list(wanted)} if isinstance(wanted, list) or op in ("@", "!@") \
                else {_plain(wanted)}
            hit = _plain(have) in values
            if hit == op.startswith("!"):
                return False
            continue
        left, right = _compare_key(have), _compare_key(wanted)
        if left[0] != right[0]:
            return False
        if not {">": left > right, ">=": left >= right, "<": left < right, "<=": left <= right}[op]:
            return False
    return True


def listing(rows: list[dict[str, Any]], params: dict[str, Any], *, keyed: bool = True,
            case: Callable[[str], str] = str) -> tuple[list[dict[str, Any]], int, int | None]:
    """Filter, order, page (50) and select, as every list method does."""
    filters = params.get("filter") or {}
    if not isinstance(filters, dict):
        filters = {}
    found = [r for r in rows if matches(r, filters)]
    order = params.get("order") or {}
    if isinstance(order, dict):
        for name, direction in reversed(list(order.items())):
            found.sort(key=lambda r: _compare_key(r.get(name)), reverse=str(direction).upper() == "DESC")
    start = _int(params.get("start") or 0, "start")
    if start < 0:
        start = 0
    page = found[start:start + PAGE]
    select = [s for s in _as_list(params.get("select")) if s != "*"]
    if select:
        page = [{k: r[k] for k in ([case("id")] if keyed else []) + select if k in r} for r in page]
    else:
        page = [dict(r) for r in page]
    following = start + PAGE if start + PAGE < len(found) else None
    return page, len(found), following


@dataclass
class Limits:
    rate: float = 2.0
    burst: int = 50


@dataclass
class Counters:
    requests: int = 0
    rejected_503: int = 0
    rejected_429: int = 0
    rejected_401: int = 0
    commands: int = 0
    writes: int = 0
    log: list[tuple[float, int, int]] = field(default_factory=list)  # (time, commands, status) of each request
    write_methods: dict[str, int] = field(default_factory=dict)
    methods: dict[str, int] = field(default_factory=dict)  # commands run, by method


class Emulator:
    """State plus the API; ``serve()`` puts it on 127.0.0.1 (see ``running``)."""

    def __init__(self, *, rate: float = 2.0, burst: int = 50, user: int = 1, secret: str = "s3cr3tW3bh00k",
                 clock: Callable[[], float] = time.monotonic,
                 now: Callable[[], datetime] | None = None) -> None:
        self.limits = Limits(rate, burst)
        self.user, self.secret = user, secret
        self.clock = clock
        self.now = now or (lambda: datetime.now(MSK))
        self.counters = Counters()
        self.lock = threading.RLock()
        self._level, self._at = 0.0, clock()
        self._blocked: dict[str, tuple[float, str]] = {}
        self._ids: dict[str, int] = {}
        self.catalogs = [
            {"id": 1, "iblockId": PRODUCTS_IBLOCK, "iblockTypeId": "CRM_PRODUCT_CATALOG", "name": "Каталог товаров",
             "productIblockId": None, "skuPropertyId": None},
            {"id": 2, "iblockId": OFFERS_IBLOCK, "iblockTypeId": "CRM_PRODUCT_CATALOG", "name": "Вариации",
             "productIblockId": PRODUCTS_IBLOCK, "skuPropertyId": 120},
        ]
        self.price_types: dict[int, dict[str, Any]] = {}
        self.stores: dict[int, dict[str, Any]] = {}
        for name in ("Розничная", "Оптовая", "Retail", "Wholesale"):
            self.add_price_type(name)
        for title in ("Основной склад", "Склад Север", "Main", "Shop"):
            self.add_store(title)
        self.measures = [
            {"id": 1, "code": 796, "measureTitle": "Штука", "symbol": "шт", "symbolIntl": "pcs", "isDefault": "Y"},
            {"id": 2, "code": 778, "measureTitle": "Упаковка", "symbol": "упак", "symbolIntl": "pack",
             "isDefault": "N"},
            {"id": 3, "code": 166, "measureTitle": "Килограмм", "symbol": "кг", "symbolIntl": "kg", "isDefault": "N"},
            {"id": 4, "code": 6, "measureTitle": "Метр", "symbol": "м", "symbolIntl": "m", "isDefault": "N"},
        ]
        self.properties = [
            {"id": 101, "iblockId": PRODUCTS_IBLOCK, "name": "Артикул", "code": "ARTNUMBER", "propertyType": "S"},
            {"id": 102, "iblockId": PRODUCTS_IBLOCK, "name": "Штрихкод", "code": "BARCODE", "propertyType": "S"},
        ]
        self.presets = {1: "Организация", 2: "ИП", 3: "Физ. лицо"}
        self.deal_fields: dict[str, dict[str, Any]] = {"UF_CRM_BRIDGE_1C": {"type": "string", "isMultiple": False}}
        self.products: dict[int, dict[str, Any]] = {}
        self.sections: dict[int, dict[str, Any]] = {}
        self.prices: dict[int, dict[str, Any]] = {}
        self.store_products: dict[tuple[int, int], dict[str, Any]] = {}
        self.documents: dict[int, dict[str, Any]] = {}
        self.items: dict[int, dict[int, dict[str, Any]]] = {2: {}, 3: {}, 4: {}}
        self.requisites: dict[int, dict[str, Any]] = {}
        self.product_rows: dict[tuple[str, int], list[dict[str, Any]]] = {}
        self.modify_log: list[dict[str, Any]] = []  # every catalog.price.modify, as received
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------ set-up helpers for tests

    def _next(self, table: str) -> int:
        self._ids[table] = self._ids.get(table, 0) + 1
        return self._ids[table]

    def add_price_type(self, name: str) -> int:
        type_id = self._next("price_type")
        self.price_types[type_id] = {"id": type_id, "name": name, "base": "Y" if type_id == 1 else "N",
                                     "xmlId": f"pt{type_id}", "sort": 100 * type_id}
        return type_id

    def add_store(self, title: str) -> int:
        store_id = self._next("store")
        self.stores[store_id] = {"id": store_id, "title": title, "active": "Y", "code": None, "xmlId": None}
        return store_id

    def block(self, method: str, seconds: float, *, mode: str = "http") -> None:
        """The portal's per-method time limit: ``method`` answers OPERATION_TIME_LIMIT for ``seconds``."""
        with self.lock:
            self._blocked[method] = (self.clock() + seconds, mode)

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/rest/{self.user}/{self.secret}/"

    def serve(self) -> Emulator:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = False
        self._server.block_on_close = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="bitrix24-emulator",
                                        kwargs={"poll_interval": 0.05})
        self._thread.start()
        return self

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            assert self._thread is not None
            self._thread.join(5)
            self._server = self._thread = None

    def __enter__(self) -> Emulator:
        return self.serve()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ the HTTP layer

    def handle(self, path: str, body: bytes, content_type: str) -> tuple[int, dict[str, Any]]:
        with self.lock:
            match = re.match(r"^/rest/(\d+)/([^/]+)/([\w.]+?)(?:\.json)?$", unquote(urlsplit(path).path))
            self.counters.requests += 1
            if match is None or int(match.group(1)) != self.user or match.group(2) != self.secret:
                self.counters.rejected_401 += 1
                self._log(0, 401)
                return 401, {"error": "NO_AUTH_FOUND", "error_description": "Wrong authorization data"}
            now = self.clock()
            self._level = max(0.0, self._level - (now - self._at) * self.limits.rate)
            self._at = now
            if self._level + 1 > self.limits.burst:
                self.counters.rejected_503 += 1
                self._log(0, 503)
                return 503, {"error": "QUERY_LIMIT_EXCEEDED", "error_description": "Too many requests"}
            self._level += 1
            method = match.group(3)
            try:
                params = json.loads(body or b"{}") if "json" in content_type else parse_php_query(body.decode())
            except ValueError:
                return 400, {"error": "INVALID_REQUEST", "error_description": "The body is not JSON"}
            methods = [method]
            if method == "batch":
                commands = params.get("cmd") or {}
                if isinstance(commands, list):
                    commands = {str(i): c for i, c in enumerate(commands)}
                methods = [str(c).split("?", 1)[0] for c in commands.values()]
            blocked = [m for m in methods if self._is_blocked(m, "http")]
            if blocked:
                self.counters.rejected_429 += 1
                self._log(0, 429)
                return 429, {"error": "OPERATION_TIME_LIMIT",
                             "error_description": f"Method is blocked due to operation time limit: {blocked[0]}"}
            started = time.perf_counter()
            try:
                if method == "batch":
                    result = self.batch(params)
                    self._log(len(methods), 200)
                    return 200, {"result": result, "time": self._time(started)}
                result, total, following = self.call(method, params)
                self._log(1, 200)
            except ApiError as exc:
                self._log(1, exc.status)
                return exc.status, {"error": exc.code, "error_description": exc.description}
            answer: dict[str, Any] = {"result": result, "time": self._time(started)}
            if total is not None:
                answer["total"] = total
            if following is not None:
                answer["next"] = following
            return 200, answer

    def _log(self, commands: int, status: int) -> None:
        self.counters.log.append((self.clock(), commands, status))

    def _time(self, started: float) -> dict[str, Any]:
        spent = time.perf_counter() - started
        return {"start": time.time() - spent, "finish": time.time(), "duration": spent, "processing": spent,
                "date_start": self.now().isoformat(), "date_finish": self.now().isoformat(), "operating": spent}

    def _is_blocked(self, method: str, mode: str) -> bool:
        until = self._blocked.get(method)
        if until is None:
            return False
        if self.clock() >= until[0]:
            del self._blocked[method]
            return False
        return until[1] == mode

    def batch(self, params: dict[str, Any]) -> dict[str, Any]:
        commands = params.get("cmd") or {}
        if isinstance(commands, list):
            commands = {str(i): c for i, c in enumerate(commands)}
        if len(commands) > 50:
            raise ApiError("ERROR_BATCH_LENGTH_EXCEEDED", "Max batch length exceeded")
        halt = str(params.get("halt", "0")) not in ("0", "", "false")
        results: dict[str, Any] = {}
        errors: dict[str, Any] = {}
        totals: dict[str, Any] = {}
        nexts: dict[str, Any] = {}
        for key, text in commands.items():
            method, _, query = str(text).partition("?")
            if method == "batch":
                errors[key] = {"error": "ERROR_BATCH_METHOD_NOT_ALLOWED", "error_description": "Batch in batch"}
                continue
            if self._is_blocked(method, "command"):
                errors[key] = {"error": "OPERATION_TIME_LIMIT",
                               "error_description": "Method is blocked due to operation time limit."}
                continue
            try:
                sub = self._substitute(parse_php_query(query), results)
                result, total, following = self.call(method, sub)
            except ApiError as exc:
                errors[key] = {"error": exc.code, "error_description": exc.description}
                if halt:
                    break
                continue
            results[key] = result
            if total is not None:
                totals[key] = total
            if following is not None:
                nexts[key] = following

        def php(table: dict[str, Any]) -> Any:
            return table if table else []

        return {"result": php(results), "result_error": php(errors), "result_total": php(totals),
                "result_next": php(nexts), "result_time": []}

    def _substitute(self, value: Any, results: dict[str, Any]) -> Any:
        if isinstance(value, dict):
            return {k: self._substitute(v, results) for k, v in value.items()}
        if isinstance(value, list):
            return [self._substitute(v, results) for v in value]
        if isinstance(value, str):
            match = _RESULT_REF.match(value)
            if match and match.group(1) in results:
                found: Any = results[match.group(1)]
                for part in re.findall(r"\[([^\]]*)\]", match.group(2)):
                    if isinstance(found, dict) and part in found:
                        found = found[part]
                    elif isinstance(found, list) and part.isdigit() and int(part) < len(found):
                        found = found[int(part)]
                    else:
                        return value
                return found
        return value

    def call(self, method: str, params: dict[str, Any]) -> tuple[Any, int | None, int | None]:
        handler = self.METHODS.get(method)
        if handler is None:
            raise ApiError("ERROR_METHOD_NOT_FOUND", f"Method not found: {method}", 404)
        self.counters.commands += 1
        self.counters.methods[method] = self.counters.methods.get(method, 0) + 1
        if WRITE.search(method):
            self.counters.writes += 1
            self.counters.write_methods[method] = self.counters.write_methods.get(method, 0) + 1
        found = handler(self, params)
        if isinstance(found, tuple):
            return found
        return found, None, None

    # ------------------------------------------------------------ catalog: reference data

    def _catalog_list(self, params: dict[str, Any]) -> Any:
        page, total, following = listing(self.catalogs, params)
        return {"catalogs": page}, total, following

    def _price_type_list(self, params: dict[str, Any]) -> Any:
        page, total, following = listing(list(self.price_types.values()), params)
        return {"priceTypes": page}, total, following

    def _store_list(self, params: dict[str, Any]) -> Any:
        page, total, following = listing(list(self.stores.values()), params)
        return {"stores": page}, total, following

    def _measure_list(self, params: dict[str, Any]) -> Any:
        page, total, following = listing(self.measures, params)
        return {"measures": page}, total, following

    def _property_list(self, params: dict[str, Any]) -> Any:
        page, total, following = listing(self.properties, params)
        return {"productProperties": page}, total, following

    # ------------------------------------------------------------ catalog: products and variations

    def _fields(self, params: dict[str, Any]) -> dict[str, Any]:
        fields = params.get("fields")
        if not isinstance(fields, dict):
            raise ApiError("ERROR_REQUIRED_PARAMETERS_MISSING", "Required parameter 'fields' is missing")
        return fields

    def _product(self, value: Any, *, iblock: int | None = None) -> dict[str, Any]:
        product = self.products.get(_int(value, "id"))
        if product is None or (iblock is not None and product["iblockId"] != iblock):
            raise ApiError("ERROR_NOT_FOUND", f"Product {value} is not found")
        return product

    def _write_product(self, product: dict[str, Any], fields: dict[str, Any]) -> None:
        for key, value in fields.items():
            if key in ("id", "iblockId", "timestampX", "parentId"):
                continue
            if key == "name":
                if not str(value).strip():
                    raise ApiError("ERROR_VALIDATION", "Field name is required")
                if len(str(value)) > 255:
                    raise ApiError("ERROR_VALIDATION", "Field name is longer than 255 characters")
                product["name"] = str(value)
            elif key == "active":
                if value not in ("Y", "N"):
                    raise ApiError("ERROR_VALIDATION", "Field active must be Y or N")
                product["active"] = value
            elif key == "quantity":
                product["quantity"] = _json_number(_number(value, "quantity"))
            elif key == "measure":
                measure = _int(value, "measure")
                if measure not in {m["id"] for m in self.measures}:
                    raise ApiError("ERROR_VALIDATION", f"Measure {measure} does not exist")
                product["measure"] = measure
            elif key == "iblockSectionId":
                section = _int(value, "iblockSectionId")
                if section and section not in self.sections:
                    raise ApiError("ERROR_VALIDATION", f"Section {section} does not exist")
                product["iblockSectionId"] = section or None
            elif key.startswith("property"):
                known = {f"property{p['id']}" for p in self.properties}
                if key not in known:
                    raise ApiError("ERROR_VALIDATION", f"Unknown property {key}")
                raw = value.get("value") if isinstance(value, dict) else value
                product[key] = None if raw in (None, "") else {"valueId": self._next("value"), "value": str(raw)}
            elif key in ("xmlId", "detailText", "detailTextType", "previewText", "code"):
                product[key] = "" if value is None else str(value)
            else:
                raise ApiError("ERROR_VALIDATION", f"Unknown field {key}")

    def _product_list(self, params: dict[str, Any]) -> Any:
        filters = params.get("filter") or {}
        if not isinstance(filters, dict) or "iblockId" not in filters:
            raise ApiError("ERROR_REQUIRED_PARAMETERS_MISSING", "Required filter field iblockId is missing")
        iblock = _int(filters["iblockId"], "iblockId")
        rows = [p for p in self.products.values() if p["iblockId"] == iblock]
        xml = filters.get("xmlId")
        if isinstance(xml, list):  # the portal's index: an IN on xmlId does not scan the catalog
            wanted = set(xml)
            rows = [p for p in rows if p["xmlId"] in wanted]
        page, total, following = listing(rows, params)
        return {"products": page}, total, following

    def _new_product(self, fields: dict[str, Any], iblock: int) -> dict[str, Any]:
        if not str(fields.get("name") or "").strip():
            raise ApiError("ERROR_VALIDATION", "Field name is required")
        product_id = self._next("element")
        product = {"id": product_id, "iblockId": iblock, "name": "", "xmlId": str(product_id), "active": "Y",
                   "quantity": 0, "measure": 1, "detailText": "", "iblockSectionId": None, "type": 1,
                   "property101": None, "property102": None}
        self._write_product(product, fields)
        product["timestampX"] = self.now().isoformat()
        return product

    def _product_add(self, params: dict[str, Any]) -> Any:
        fields = self._fields(params)
        if _int(fields.get("iblockId") or 0, "iblockId") != PRODUCTS_IBLOCK:
            raise ApiError("ERROR_VALIDATION", "iblockId must be the product catalog's info block")
        product = self._new_product(fields, PRODUCTS_IBLOCK)
        self.products[product["id"]] = product
        return {"element": dict(product)}

    def _product_update(self, params: dict[str, Any]) -> Any:
        product = self._product(params.get("id"), iblock=PRODUCTS_IBLOCK)
        staged = dict(product)
        self._write_product(staged, self._fields(params))
        product.update(staged)
        return {"element": dict(product)}

    def _offer_add(self, params: dict[str, Any]) -> Any:
        fields = self._fields(params)
        if _int(fields.get("iblockId") or 0, "iblockId") != OFFERS_IBLOCK:
            raise ApiError("ERROR_VALIDATION", "iblockId must be the variations' info block")
        parent = self._product(fields.get("parentId"), iblock=PRODUCTS_IBLOCK)
        offer = self._new_product(fields, OFFERS_IBLOCK)
        offer["parentId"] = {"id": 120, "value": parent["id"]}
        parent["type"] = 3  # a product with variations
        self.products[offer["id"]] = offer
        return {"offer": dict(offer)}

    def _offer_update(self, params: dict[str, Any]) -> Any:
        offer = self._product(params.get("id"), iblock=OFFERS_IBLOCK)
        staged = dict(offer)
        self._write_product(staged, self._fields(params))
        offer.update(staged)
        return {"offer": dict(offer)}

    def _section_list(self, params: dict[str, Any]) -> Any:
        page, total, following = listing(list(self.sections.values()), params)
        return {"sections": page}, total, following

    def _section_add(self, params: dict[str, Any]) -> Any:
        fields = self._fields(params)
        if not str(fields.get("name") or "").strip():
            raise ApiError("ERROR_VALIDATION", "Field name is required")
        section_id = self._next("section")
        self.sections[section_id] = {"id": section_id, "iblockId": _int(fields.get("iblockId") or 0, "iblockId"),
                                     "name": str(fields["name"]), "xmlId": str(fields.get("xmlId") or section_id),
                                     "iblockSectionId": None}
        return {"section": dict(self.sections[section_id])}

    # ------------------------------------------------------------ catalog: prices

    def _price_list(self, params: dict[str, Any]) -> Any:
        page, total, following = listing(list(self.prices.values()), params)
        return {"prices": page}, total, following

    def _price_modify(self, params: dict[str, Any]) -> Any:
        product_fields = self._fields(params).get("product")
        if not isinstance(product_fields, dict):
            raise ApiError("ERROR_REQUIRED_PARAMETERS_MISSING", "fields.product is missing")
        product = self._product(product_fields.get("id"))
        sent = _as_list(product_fields.get("prices"))
        self.modify_log.append({"product": product["id"], "prices": sent})
        mine = {pid: p for pid, p in self.prices.items() if p["productId"] == product["id"]}
        seen_types: set[int] = set()
        staged = []
        for row in sent:
            if not isinstance(row, dict):
                raise ApiError("ERROR_VALIDATION", "prices must be a list of objects")
            type_id = _int(row.get("catalogGroupId") or 0, "catalogGroupId")
            if type_id not in self.price_types:
                raise ApiError("ERROR_VALIDATION", f"Price type {type_id} does not exist")
            if type_id in seen_types and not (row.get("quantityFrom") or row.get("quantityTo")):
                raise ApiError("ERROR_VALIDATION", "Validate price error. Prices without ranges. "
                                                   "It is possible to create one price.")
            seen_types.add(type_id)
            price_id = row.get("id")
            if price_id not in (None, "") and _int(price_id, "id") not in mine:
                raise ApiError("ERROR_NOT_FOUND", f"Price {price_id} is not a price of product {product['id']}")
            staged.append((None if price_id in (None, "") else _int(price_id, "id"), type_id,
                           _number(row.get("price"), "price"), str(row.get("currency") or "RUB")))
        kept = {price_id for price_id, *_ in staged if price_id is not None}
        for price_id in set(mine) - kept:  # "all entities not passed, or passed without an id, are deleted"
            del self.prices[price_id]
        answer = []
        for price_id, type_id, price, code in staged:
            if price_id is None:
                price_id = self._next("price")
            self.prices[price_id] = {"id": price_id, "productId": product["id"], "catalogGroupId": type_id,
                                     "price": _json_number(price), "currency": code, "quantityFrom": None,
                                     "quantityTo": None}
            answer.append(dict(self.prices[price_id]))
        return {"prices": answer}

    # ------------------------------------------------------------ catalog: stock through documents

    def _store_product_list(self, params: dict[str, Any]) -> Any:
        page, total, following = listing(list(self.store_products.values()), params)
        return {"storeProducts": page}, total, following

    def _document(self, value: Any) -> dict[str, Any]:
        document = self.documents.get(_int(value, "id"))
        if document is None:
            raise ApiError("ERROR_NOT_FOUND", f"Document {value} is not found")
        return document

    def _document_add(self, params: dict[str, Any]) -> Any:
        fields = self._fields(params)
        if fields.get("docType") not in ("A", "S", "M", "R", "D"):
            raise ApiError("ERROR_VALIDATION", f"Unknown document type {fields.get('docType')!r}")
        for required in ("currency", "responsibleId"):
            if not fields.get(required):
                raise ApiError("ERROR_REQUIRED_PARAMETERS_MISSING", f"Field {required} is required")
        doc_id = self._next("document")
        self.documents[doc_id] = {"id": doc_id, "docType": fields["docType"], "currency": fields["currency"],
                                  "responsibleId": _int(fields["responsibleId"], "responsibleId"),
                                  "title": fields.get("title"), "status": "N", "elements": []}
        return {"document": {k: v for k, v in self.documents[doc_id].items() if k != "elements"}}

    def _element_add(self, params: dict[str, Any]) -> Any:
        fields = self._fields(params)
        document = self._document(fields.get("docId"))
        if document["status"] != "N":
            raise ApiError("ERROR_VALIDATION", "A posted document cannot be changed")
        product = self._product(fields.get("elementId"))
        store_key = "storeTo" if document["docType"] in ("A", "S") else "storeFrom"
        store = _int(fields.get(store_key) or 0, store_key)
        if store not in self.stores:
            raise ApiError("ERROR_VALIDATION", f"Field {store_key}: warehouse {store} does not exist")
        amount = _number(fields.get("amount"), "amount")
        if amount <= 0:
            raise ApiError("ERROR_VALIDATION", "Field amount must be positive")
        element = {"id": self._next("element_row"), "docId": document["id"], "elementId": product["id"],
                   store_key: store, "amount": _json_number(amount)}
        document["elements"].append(element)
        return {"documentElement": dict(element)}

    def _document_conduct(self, params: dict[str, Any]) -> Any:
        document = self._document(params.get("id"))
        if document["status"] != "N":
            raise ApiError("ERROR_VALIDATION", "The document is already posted")
        if not document["elements"]:
            raise ApiError("ERROR_VALIDATION", "The document has no products")
        sign = 1 if document["docType"] in ("A", "S") else -1
        changes: dict[tuple[int, int], Decimal] = {}
        for element in document["elements"]:
            store = element.get("storeTo") or element.get("storeFrom")
            key = (element["elementId"], store)
            changes[key] = changes.get(key, Decimal(0)) + sign * Decimal(str(element["amount"]))
        for (product_id, store), change in changes.items():
            row = self.store_products.get((product_id, store))
            have = Decimal(str(row["amount"])) if row else Decimal(0)
            if have + change < 0:
                raise ApiError("ERROR_VALIDATION", f"Недостаточно товара {product_id} на складе {store}: "
                                                   f"есть {_json_number(have)}, списывается {_json_number(-change)}")
        for (product_id, store), change in changes.items():
            row = self.store_products.setdefault((product_id, store), {
                "id": self._next("store_product"), "productId": product_id, "storeId": store, "amount": 0,
                "quantityReserved": 0})
            row["amount"] = _json_number(Decimal(str(row["amount"])) + change)
            product = self.products[product_id]
            product["quantity"] = _json_number(Decimal(str(product["quantity"])) + change)
        document["status"] = "Y"
        return True

    def _document_delete(self, params: dict[str, Any]) -> Any:
        document = self._document(params.get("id"))
        if document["status"] != "N":
            raise ApiError("ERROR_VALIDATION", "A posted document cannot be deleted")
        del self.documents[document["id"]]
        return True

    # ------------------------------------------------------------ CRM items, requisites, product rows

    def _entity(self, params: dict[str, Any]) -> dict[int, dict[str, Any]]:
        entity = _int(params.get("entityTypeId") or 0, "entityTypeId")
        if entity not in self.items:
            raise ApiError("NOT_FOUND", f"Smart process {entity} is not found")
        return self.items[entity]

    def _item_view(self, item: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        original = str(params.get("useOriginalUfNames", "N")).upper() == "Y"
        view = {}
        for key, value in item.items():
            if key.startswith("UF_") and not original:
                key = "uf" + "".join(part.capitalize() for part in key[3:].lower().split("_"))
            view[key] = value
        return view

    def _item_fields(self, params: dict[str, Any]) -> Any:
        entity = _int(params.get("entityTypeId") or 0, "entityTypeId")
        fields = {name: {"type": "string"} for name in ("id", "title", "originatorId", "originId", "stageId")}
        if entity == 2:
            fields.update(self.deal_fields)
        return {"fields": fields}

    def _write_item(self, entity: int, item: dict[str, Any], fields: dict[str, Any]) -> None:
        for key, value in fields.items():
            if key in ("id", "createdTime", "updatedTime"):
                continue
            if key == "fm":
                self._write_fm(item, _as_list(value))
            elif key in ("companyId", "contactId"):
                target = _int(value or 0, key)
                if target and target not in self.items[4 if key == "companyId" else 3]:
                    raise ApiError("ERROR_VALIDATION", f"Field {key}: {target} does not exist")
                item[key] = target or None
            elif key == "stageId":
                if value not in DEAL_STAGES:
                    raise ApiError("ERROR_VALIDATION", f"Unknown stage {value!r}")
                item[key] = value
            elif key == "opportunity":
                item[key] = _json_number(_number(value, key))
            elif key.startswith("UF_"):
                if entity != 2 or key not in self.deal_fields:
                    continue  # the portal silently drops fields it does not have
                item[key] = value
            else:
                item[key] = value

    def _write_fm(self, item: dict[str, Any], changes: list[Any]) -> None:
        current = item.setdefault("fm", [])
        for change in changes:
            if not isinstance(change, dict):
                raise ApiError("ERROR_VALIDATION", "fm must be a list of objects")
            if change.get("id") not in (None, ""):
                found = next((f for f in current if f["id"] == _int(change["id"], "id")), None)
                if found is None:
                    raise ApiError("ERROR_VALIDATION", f"Multifield {change['id']} is not found")
                if not change.get("value"):
                    current.remove(found)
                else:
                    found["value"] = change["value"]
            elif change.get("value"):
                current.append({"id": self._next("fm"), "typeId": change.get("typeId", "EMAIL"),
                                "valueType": change.get("valueType", "WORK"), "value": change["value"]})

    def _item_list(self, params: dict[str, Any]) -> Any:
        table = self._entity(params)
        rows = [self._item_view(item, params) for item in table.values()]
        page, total, following = listing(rows, params)
        return {"items": page}, total, following

    def _item_add(self, params: dict[str, Any]) -> Any:
        table = self._entity(params)
        entity = _int(params["entityTypeId"], "entityTypeId")
        fields = self._fields(params)
        stamp = self.now().replace(microsecond=0).isoformat()
        item: dict[str, Any] = {"id": self._next(f"item{entity}"), "createdTime": stamp, "updatedTime": stamp,
                                "originatorId": None, "originId": None, "title": None}
        if entity == 2:
            item.update(stageId="NEW", opportunity=0, currencyId="RUB", companyId=None, contactId=None,
                        isManualOpportunity="N")
        if entity == 3:
            item.update(name=None, lastName=None, secondName=None, fm=[])
        self._write_item(entity, item, fields)
        table[item["id"]] = item
        return {"item": self._item_view(item, params)}

    def _item_update(self, params: dict[str, Any]) -> Any:
        table = self._entity(params)
        entity = _int(params["entityTypeId"], "entityTypeId")
        item = table.get(_int(params.get("id") or 0, "id"))
        if item is None:
            raise ApiError("NOT_FOUND", f"Item {params.get('id')} is not found")
        staged = json.loads(json.dumps(item))
        self._write_item(entity, staged, self._fields(params))
        staged["updatedTime"] = self.now().replace(microsecond=0).isoformat()
        item.clear()
        item.update(staged)
        return {"item": self._item_view(item, params)}

    def _item_delete(self, params: dict[str, Any]) -> Any:
        table = self._entity(params)
        if table.pop(_int(params.get("id") or 0, "id"), None) is None:
            raise ApiError("NOT_FOUND", f"Item {params.get('id')} is not found")
        return []

    def _productrow_set(self, params: dict[str, Any]) -> Any:
        owner_type, owner = str(params.get("ownerType")), _int(params.get("ownerId") or 0, "ownerId")
        if owner_type != "D" or owner not in self.items[2]:
            raise ApiError("NOT_FOUND", f"Owner {owner_type} {owner} is not found")
        rows = []
        for number, row in enumerate(_as_list(params.get("productRows"))):
            if not isinstance(row, dict):
                raise ApiError("ERROR_VALIDATION", "productRows must be a list of objects")
            product_id = _int(row.get("productId") or 0, "productId")
            if product_id and product_id not in self.products:
                raise ApiError("ERROR_VALIDATION", f"Product {product_id} is not found")
            rows.append({"id": self._next("row"), "ownerType": owner_type, "ownerId": owner, "productId": product_id,
                         "productName": row.get("productName") or (self.products[product_id]["name"]
                                                                   if product_id else ""),
                         "price": _json_number(_number(row.get("price") or 0, "price")),
                         "quantity": _json_number(_number(row.get("quantity") or 1, "quantity")),
                         "discountSum": _json_number(_number(row.get("discountSum") or 0, "discountSum")),
                         "taxRate": None if row.get("taxRate") in (None, "") else _json_number(
                             _number(row["taxRate"], "taxRate")),
                         "measureName": "шт", "sort": _int(row.get("sort") or 10 * (number + 1), "sort")})
        self.product_rows[(owner_type, owner)] = rows
        deal = self.items[2][owner]
        if deal.get("isManualOpportunity") != "Y":
            deal["opportunity"] = _json_number(sum((Decimal(str(r["price"])) * Decimal(str(r["quantity"]))
                                                    for r in rows), Decimal(0)))
        deal["updatedTime"] = self.now().replace(microsecond=0).isoformat()
        return {"productRows": [dict(r) for r in rows]}

    def _productrow_list(self, params: dict[str, Any]) -> Any:
        filters = params.get("filter") or {}
        if "=ownerType" not in filters or "=ownerId" not in filters:
            raise ApiError("ERROR_REQUIRED_PARAMETERS_MISSING", "Filter keys =ownerType and =ownerId are required")
        rows = [r for rows in self.product_rows.values() for r in rows]
        page, total, following = listing(rows, params)
        return {"productRows": page}, total, following

    def _requisite_list(self, params: dict[str, Any]) -> Any:
        page, total, following = listing(list(self.requisites.values()), params, case=str.upper)
        return page, total, following

    def _write_requisite(self, requisite: dict[str, Any], fields: dict[str, Any]) -> None:
        for key, value in fields.items():
            if key == "ID":
                continue
            if key.startswith("RQ_") or key in ("NAME", "XML_ID", "ORIGINATOR_ID", "ACTIVE", "SORT", "CODE"):
                requisite[key] = "" if value is None else str(value)
            elif key in ("ENTITY_TYPE_ID", "ENTITY_ID", "PRESET_ID"):
                requisite[key] = _int(value, key)
            else:
                raise ApiError("ERROR_VALIDATION", f"Unknown requisite field {key}")

    def _requisite_add(self, params: dict[str, Any]) -> Any:
        fields = self._fields(params)
        requisite: dict[str, Any] = {"ID": self._next("requisite"), "XML_ID": "", "RQ_INN": "", "RQ_KPP": "",
                                     "ACTIVE": "Y"}
        self._write_requisite(requisite, fields)
        entity = requisite.get("ENTITY_TYPE_ID")
        if entity not in (3, 4):
            raise ApiError("ERROR_VALIDATION", "ENTITY_TYPE_ID must be 3 (contact) or 4 (company)")
        if requisite.get("ENTITY_ID") not in self.items[entity]:
            raise ApiError("ERROR_VALIDATION", f"ENTITY_ID {requisite.get('ENTITY_ID')} does not exist")
        if requisite.get("PRESET_ID") not in self.presets:
            raise ApiError("ERROR_VALIDATION", f"PRESET_ID {requisite.get('PRESET_ID')} does not exist")
        if not requisite.get("NAME"):
            raise ApiError("ERROR_VALIDATION", "NAME is required")
        self.requisites[requisite["ID"]] = requisite
        return requisite["ID"]

    def _requisite_update(self, params: dict[str, Any]) -> Any:
        requisite = self.requisites.get(_int(params.get("id") or 0, "id"))
        if requisite is None:
            raise ApiError("NOT_FOUND", f"Requisite {params.get('id')} is not found")
        staged = dict(requisite)
        self._write_requisite(staged, self._fields(params))
        requisite.update(staged)
        return True

    METHODS: dict[str, Callable[[Emulator, dict[str, Any]], Any]] = {
        "catalog.catalog.list": _catalog_list, "catalog.priceType.list": _price_type_list,
        "catalog.store.list": _store_list, "catalog.measure.list": _measure_list,
        "catalog.productProperty.list": _property_list,
        "catalog.product.list": _product_list, "catalog.product.add": _product_add,
        "catalog.product.update": _product_update, "catalog.product.offer.add": _offer_add,
        "catalog.product.offer.update": _offer_update,
        "catalog.section.list": _section_list, "catalog.section.add": _section_add,
        "catalog.price.list": _price_list, "catalog.price.modify": _price_modify,
        "catalog.storeproduct.list": _store_product_list,
        "catalog.document.add": _document_add, "catalog.document.element.add": _element_add,
        "catalog.document.conduct": _document_conduct, "catalog.document.delete": _document_delete,
        "crm.item.fields": _item_fields, "crm.item.list": _item_list, "crm.item.add": _item_add,
        "crm.item.update": _item_update, "crm.item.delete": _item_delete,
        "crm.item.productrow.set": _productrow_set, "crm.item.productrow.list": _productrow_list,
        "crm.requisite.list": _requisite_list, "crm.requisite.add": _requisite_add,
        "crm.requisite.update": _requisite_update,
    }

    # ------------------------------------------------------------ records made "by hand" in the portal UI

    def hand_made_product(self, name: str, sku: str | None = None) -> int:
        with self.lock:
            product = self._new_product({"name": name}, PRODUCTS_IBLOCK)
            if sku is not None:
                product["property101"] = {"valueId": self._next("value"), "value": sku}
            self.products[product["id"]] = product
            return product["id"]

    def hand_made_company(self, name: str, inn: str | None = None, kpp: str | None = None) -> int:
        with self.lock:
            stamp = self.now().replace(microsecond=0).isoformat()
            company_id = self._next("item4")
            self.items[4][company_id] = {"id": company_id, "title": name, "originatorId": None, "originId": None,
                                         "createdTime": stamp, "updatedTime": stamp}
            requisite_id = self._next("requisite")
            self.requisites[requisite_id] = {"ID": requisite_id, "ENTITY_TYPE_ID": 4, "ENTITY_ID": company_id,
                                             "PRESET_ID": 1, "NAME": name, "XML_ID": "", "RQ_INN": inn or "",
                                             "RQ_KPP": kpp or "", "ACTIVE": "Y"}
            return company_id


def _handler_for(emulator: Emulator) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = 10

        def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            status, answer = emulator.handle(self.path, body, self.headers.get("Content-Type") or "")
            data = json.dumps(answer, ensure_ascii=False).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST  # noqa: N815

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
            pass

    return Handler
