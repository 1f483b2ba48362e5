"""Time the sandbox CRM adapter: microseconds per operation, in-process, ``apply()`` only.

The payloads have the shape ``bridge.sync.mapping`` gives them (a product with its
unit, groups, properties...; a variant from an offer; prices with currencies; stock by
warehouse with a total). Operations are built before the clock starts and sent in
batches of ``SandboxCrm.batch_size``, as ``bridge.sync.deliver`` does.

Two parts, each on a fresh sandbox in a temporary directory:

* per kind: all products, then all variants, then all prices, then all stock; each
  kind applied twice: the first apply creates (or first sets), the second changes nothing;
* mix: the order an exchange produces (the catalog's products, then for each offer its
  variant upsert, prices and stock), applied twice, then a third time with new prices
  and stock (a typical later exchange).

The default scale (``--products 10000``) is a tenth of the benchmark load
(100k products, 60k variants, 160k prices, 160k stock); ``--products 100000`` is
the full one. Shared machines are noisy, so each part runs ``--repeat`` times on
a fresh sandbox and the best and the median are shown. No pass/fail: it only
prints figures.
"""

from __future__ import annotations

import argparse
import os
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bridge.crm.base import SET_PRICES, SET_STOCK, UPSERT_PRODUCT, Operation  # noqa: E402
from bridge.crm.sandbox import SandboxCrm  # noqa: E402


def product_id(i: int) -> str:
    return f"00000000-0000-0000-0000-{i:012d}"  # the shape of a 1C Ид


def product_op(i: int) -> Operation:
    external_id = product_id(i)
    payload = {
        "external_id": external_id, "parent_external_id": None, "name": f"Чайник электрический модель {i}",
        "sku": f"SKU-{i:06d}", "barcode": f"46{i:011d}", "code": f"{i:09d}", "full_name": f"Чайник {i}, 1.7 л",
        "description": "Корпус из нержавеющей стали, автоотключение.",
        "unit": {"code": "796", "name": "шт"}, "groups": [{"id": f"g{i % 50}", "name": f"Группа {i % 50}"}],
        "properties": {"Цвет": "Серебристый", "Мощность": "2200"}, "characteristics": {},
        "requisites": {"ВидНоменклатуры": "Товар", "ТипНоменклатуры": "Товар"}, "taxes": {"НДС": "20"},
        "images": [], "manufacturer": None, "active": True,
    }
    return Operation(UPSERT_PRODUCT, external_id, payload, match={"sku": f"SKU-{i:06d}"})


def variant_id(i: int) -> str:
    return f"{product_id(i)}#{i % 7:08d}"  # product Ид#characteristic Ид: one variant of each of the first products


def variant_op(i: int) -> Operation:
    external_id = variant_id(i)
    payload = {"external_id": external_id, "parent_external_id": product_id(i),
               "name": f"Цвет: вариант {i % 7}", "characteristics": {"Цвет": f"вариант {i % 7}"}, "active": True,
               "unit": {"code": "796", "name": "шт"}}
    return Operation(UPSERT_PRODUCT, external_id, payload)


def offer_targets(products: int, variants: int) -> list[str]:
    """Every product and variant gets one offer (prices and stock): 160k of each at full scale."""
    return [product_id(i) for i in range(products)] + [variant_id(i) for i in range(variants)]


def prices_op(external_id: str, n: int, round_: int) -> Operation:
    # Canonical decimal text, as bridge.sync.mapping.number sends it.
    prices = {"Розничная": f"{1000 + n % 997 + round_}.5", "Оптовая": f"{900 + n % 991}"}
    return Operation(SET_PRICES, external_id, {"external_id": external_id, "prices": prices,
                                                "currencies": {"Розничная": "RUB", "Оптовая": "RUB"}})


def stock_op(external_id: str, n: int, round_: int) -> Operation:
    stock = {"Основной склад": str(n % 13 + round_), "Магазин": f"{n % 5}.5"}
    return Operation(SET_STOCK, external_id, {"external_id": external_id, "stock": stock,
                                               "quantity": f"{n % 13 + round_ + n % 5}.5"})


def timed_apply(crm: SandboxCrm, ops: Sequence[Operation]) -> float:
    """Seconds spent inside ``apply`` for all of ``ops``, batch by batch; every op must succeed."""
    size, spent = crm.batch_size, 0.0
    for start in range(0, len(ops), size):
        batch = ops[start:start + size]
        began = time.perf_counter()
        results = crm.apply(batch)
        spent += time.perf_counter() - began
        failed = [r.error for r in results if not r.ok]
        if failed:
            raise SystemExit(f"benchmark operations failed: {failed[:3]}")
    return spent


Timings = dict[str, tuple[int, float]]  # line label: (operations, seconds), in the order measured


def per_kind(directory: Path, products: int, variants: int) -> Timings:
    targets = offer_targets(products, variants)
    kinds: list[tuple[str, Callable[[], list[Operation]]]] = [
        ("upsert_product", lambda: [product_op(i) for i in range(products)]),
        ("upsert_product (variant)", lambda: [variant_op(i) for i in range(variants)]),
        ("set_prices", lambda: [prices_op(t, n, 0) for n, t in enumerate(targets)]),
        ("set_stock", lambda: [stock_op(t, n, 0) for n, t in enumerate(targets)]),
    ]
    timings: Timings = {}
    with SandboxCrm(directory / "kinds.db") as crm:
        for label, build in kinds:
            ops = build()
            timings[f"{label}, first"] = len(ops), timed_apply(crm, ops)
            timings[f"{label}, second (unchanged)"] = len(ops), timed_apply(crm, ops)
    return timings


def mix(directory: Path, products: int, variants: int) -> Timings:
    def exchange(round_: int) -> list[Operation]:
        ops = [product_op(i) for i in range(products)]
        offers = offer_targets(products, variants)
        for n, target in enumerate(offers):
            if n >= products:  # a variant: its offer carries the variant itself first
                ops.append(variant_op(n - products))
            ops.append(prices_op(target, n, round_))
            ops.append(stock_op(target, n, round_))
        return ops

    timings: Timings = {}
    with SandboxCrm(directory / "mix.db") as crm:
        ops = exchange(0)
        timings["mix, first (creates)"] = len(ops), timed_apply(crm, ops)
        timings["mix, second (unchanged)"] = len(ops), timed_apply(crm, ops)
        ops = exchange(1)
        timings["mix, third (new prices and stock)"] = len(ops), timed_apply(crm, ops)
    return timings


def report(title: str, runs: list[Timings]) -> None:
    print(f"{title}  (µs per op; best and median of {len(runs)})")
    for label, (count, _) in runs[0].items():
        per_op = sorted(run[label][1] * 1e6 / count for run in runs)
        print(f"  {label:<44} {count:>7} ops  best {per_op[0]:7.1f}  median {statistics.median(per_op):7.1f}",
              flush=True)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--products", type=int, default=10_000, help="products; variants are 0.6 of this")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each part, each on a fresh sandbox")
    parser.add_argument("--only", choices=("kinds", "mix"), help="run one part only")
    args = parser.parse_args(argv)
    products, variants = args.products, args.products * 6 // 10
    print(f"sandbox CRM: {products} products, {variants} variants; Python {platform.python_version()}, "
          f"SQLite {sqlite3.sqlite_version}, {os.cpu_count()} CPUs")
    parts = {"kinds": ("per kind (first apply, then the same again)", per_kind),
             "mix": ("mix (products, then variants, prices and stock per offer)", mix)}
    for name, (title, part) in parts.items():
        if args.only not in (None, name):
            continue
        runs = []
        for _ in range(args.repeat):
            with tempfile.TemporaryDirectory(prefix="bench-sandbox-") as tmp:
                runs.append(part(Path(tmp), products, variants))
        report(title, runs)


if __name__ == "__main__":
    main()
