"""Benchmark the orders to 1C: rendering and checking N orders vs reading them back.

Builds N orders of L lines (default 10,000 x 20) and, in one run:
1. renders each with the configured profile, encodes it and checks it through our reader and
   schema (what the bridge does before it writes an order file), writing each to a folder;
2. reads every written file back with our reader, building the typed documents.

Target: step 1 takes no longer than step 2 (ratio <= 1.0). Prints both times and the ratio.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bridge.commerceml.reader import FileReader  # noqa: E402
from bridge.commerceml.render import Renderer, render_checked  # noqa: E402
from bridge.sync.orders import Order, OrderLine, generated_at  # noqa: E402


def make_order(number: int, lines: int) -> Order:
    items = []
    for index in range(lines):
        quantity, price = Decimal(index % 5 + 1), Decimal(100 + index * 7) + Decimal("0.50")
        amount = quantity * price
        items.append(OrderLine(id=f"{number:08d}-0000-4000-8000-{index:012d}", name=f"Товар {index} для заказа {number}",
                               quantity=quantity, price=price, amount=amount, sku=f"SKU-{index}", vat_rate="20",
                               vat_amount=(amount * 20 / 120).quantize(Decimal("0.01"))))
    return Order(id=f"order-{number}", number=str(number), date="2026-11-27", time="12:00:00", currency="RUB", rate="1",
                 amount=sum((i.amount for i in items), Decimal(0)),
                 counterparty={"id": f"c-{number}", "name": f"Покупатель {number} ООО", "inn": "7812045738",
                               "kpp": "781201001"},
                 lines=items, requisites=[("Номер сделки в CRM", str(number))], deal_id=str(number))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=10_000)
    parser.add_argument("--lines", type=int, default=20)
    parser.add_argument("--profile", default="ut11")
    parser.add_argument("--encoding", default="utf-8-bom")
    args = parser.parse_args(argv)
    orders = [make_order(n, args.lines) for n in range(args.orders)]
    renderer = Renderer()
    folder = Path(tempfile.mkdtemp(prefix="bridge-bench-orders-"))
    try:
        start = time.perf_counter()
        for order in orders:
            data = render_checked(renderer, args.profile, {"orders": [order], "generated_at": generated_at()},
                                  args.encoding)
            (folder / f"orders-{order.id}.xml").write_bytes(data)
        render_seconds = time.perf_counter() - start
        start = time.perf_counter()
        lines = 0
        for path in sorted(folder.iterdir()):
            for record in FileReader(path).records():
                lines += len(getattr(record, "lines", []))
        read_seconds = time.perf_counter() - start
        size = sum(p.stat().st_size for p in folder.iterdir()) / 1e6
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    assert lines == args.orders * args.lines, lines
    ratio = render_seconds / read_seconds
    print(f"{args.orders} orders x {args.lines} lines ({args.profile}, {args.encoding}), {size:.0f} MB")
    print(f"  render + check + write: {render_seconds:.1f} s")
    print(f"  read back:              {read_seconds:.1f} s")
    print(f"  ratio {ratio:.2f}")
    ok = ratio <= 1.0
    print(f"{'PASS' if ok else 'FAIL'}  rendering and checking take no longer than reading back")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
