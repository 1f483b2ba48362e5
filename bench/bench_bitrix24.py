"""Benchmark the Bitrix24 adapter at the portal's REAL rate limit, through the bridge's pipeline.

An emulated portal (tests/bitrix24_emulator.py) on 127.0.0.1 enforces the
cloud plans' leaky bucket: 2 requests a second with a burst of 50. A
generated УТ 11 style package of N products (default 5,000; bench/generate_catalog.py:
every 5th product has 3 variants, each offer has 2 price types and stock in 2
warehouses) is ingested by ``bridge ingest`` in a subprocess, configured with
``[crm] kind = "bitrix24"`` and the webhook URL in an environment variable, exactly
as a user would run it. Then the same files, re-stamped as an unchanged
re-export, are ingested again.

Figures (from the portal's own request log):

* commands per second after the first burst of 50 requests, against what the
  limit allows (50 commands x 2 requests a second = 100 commands/s);
* requests the portal refused (503 QUERY_LIMIT_EXCEEDED) after the first burst;
* write commands the unchanged re-export made.

Targets: >= 90% of the allowed command rate, no request refused after the
first burst, zero write calls on the unchanged re-export. Exit 1 when one fails.
At the real limit the first ingest takes several minutes; that is the point.

CLI: ``python bench/bench_bitrix24.py [N] [--rate 2] [--burst 50]``
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from bench_ingest import unchanged_reexport  # noqa: E402
from bitrix24_emulator import Emulator  # noqa: E402
from generate_catalog import generate  # noqa: E402
from verdict import verdict  # noqa: E402

OUT_ROOT = ROOT / "bench" / "out"
TARGET_SHARE = 0.90
COMMANDS_PER_REQUEST = 50


def write_config(folder: Path) -> Path:
    config = folder / "bridge.toml"
    config.write_text('[state]\npath = "var/bridge.db"\n[archive]\npath = "var/archive"\nquarantine = "var/quarantine"\n'
                      '[crm]\nkind = "bitrix24"\nwebhook_url_env = "BENCH_BITRIX24_WEBHOOK_URL"\n', encoding="utf-8")
    return config


def ingest(config: Path, package: Path, url: str) -> tuple[float, subprocess.CompletedProcess[str]]:
    env = {**os.environ, "BENCH_BITRIX24_WEBHOOK_URL": url, "PYTHONPATH": str(ROOT)}
    started = time.monotonic()
    run = subprocess.run([sys.executable, "-m", "bridge", "ingest", "-c", str(config), str(package)],
                         env=env, capture_output=True, text=True, cwd=ROOT)
    return time.monotonic() - started, run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("n", nargs="?", type=int, default=5000)
    parser.add_argument("--rate", type=float, default=2.0, help="the portal's requests per second")
    parser.add_argument("--burst", type=int, default=50, help="the portal's burst")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    package = OUT_ROOT / str(args.n)
    generate(package, args.n, args.seed)
    work = Path(tempfile.mkdtemp(prefix="bridge-bench-bitrix24-"))
    try:
        again = unchanged_reexport(package, work / "again")
        config = write_config(work)
        with Emulator(rate=args.rate, burst=args.burst) as portal:
            # The bench process configures the adapter's limits through [crm] when they differ from the defaults.
            if (args.rate, args.burst) != (2.0, 50):
                config.write_text(config.read_text() + f"rate_limit = {args.rate}\nburst = {args.burst}\n")
            first_seconds, first = ingest(config, package, portal.url)
            first_log = list(portal.counters.log)
            writes_before = portal.counters.writes
            requests_before = portal.counters.requests
            second_seconds, second = ingest(config, again, portal.url)
            repush_writes = portal.counters.writes - writes_before
            repush_requests = portal.counters.requests - requests_before
            products, prices = len(portal.products), len(portal.prices)
            stock_rows, documents = len(portal.store_products), len(portal.documents)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for name, run in (("first ingest", first), ("re-ingest", second)):
        if run.returncode != 0:
            print(f"{name} failed (exit {run.returncode}):\n{run.stdout[-2000:]}\n{run.stderr[-2000:]}")
            return 1
    accepted = [(at, n) for at, n, status in first_log if status == 200]
    if len(accepted) <= args.burst + 1:
        print(f"only {len(accepted)} requests: too few to measure past the burst of {args.burst}")
        return 1
    burst_end = accepted[args.burst - 1][0]
    after = [(at, n) for at, n in accepted[args.burst:]]
    elapsed = after[-1][0] - burst_end
    commands = sum(n for _, n in after)
    rate = commands / elapsed
    allowed = COMMANDS_PER_REQUEST * args.rate
    refused_after = sum(1 for at, _, status in first_log if status == 503 and at > burst_end)
    refused_total = sum(1 for _, _, status in first_log if status == 503)
    total_commands = sum(n for _, n in accepted)
    print(f"N={args.n} products; portal limit {args.rate:g} requests/s, burst {args.burst}")
    print(f"portal state: {products} products and variations, {prices} prices, {stock_rows} stock rows, "
          f"{documents} inventory documents")
    print(f"first ingest: {first_seconds:.1f} s, {len(accepted)} requests, {total_commands} commands "
          f"({total_commands / len(accepted):.1f} a request)")
    print(f"after the first burst: {len(after)} requests, {commands} commands in {elapsed:.1f} s = "
          f"{rate:.1f} commands/s of {allowed:.0f} allowed ({rate / allowed:.1%})")
    print(f"requests refused (503): {refused_after} after the first burst, {refused_total} in all")
    print(f"unchanged re-ingest: {second_seconds:.1f} s, {repush_writes} write commands, "
          f"{repush_requests} requests")
    checks = [(f"throughput after the burst >= {TARGET_SHARE:.0%} of the limit", rate >= TARGET_SHARE * allowed),
              ("no request rejected after the first burst", refused_after == 0),
              ("unchanged re-push makes zero write calls", repush_writes == 0)]
    return verdict(checks)


if __name__ == "__main__":
    sys.exit(main())
