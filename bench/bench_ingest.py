"""Benchmark ``bridge ingest`` into the sandbox CRM against ``bridge inspect`` of the same files.

For N products (default 100000; ``--quick`` uses 2000) the generated УТ 11 style package
(bench/generate_catalog.py, cached under bench/out/<N>/) is, in one run and each in its own
process:

1. inspected: ``bridge inspect --json`` (the reference time);
2. ingested into a fresh state and sandbox CRM (the first ingest: every record is created);
3. inspected again;
4. ingested again as a new, unchanged export: the same files re-stamped with a later
   ДатаФормирования, as 1C writes them, so the bridge must really read them (a byte-identical
   file would be recognised by its claim and skipped without reading);
5. inspected a third time.

Each ingest is compared with the mean of the two inspects around it, so a drift of the machine's
speed over the minutes of the run weighs on both sides of a ratio alike.

Targets: first ingest <= 4x the inspect time; unchanged re-ingest <= 1.5x and zero write calls
to the CRM. Prints the times, ratios, peak RSS of each step and the CRM's write calls.
Exit status 0 when every target is met.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_inspect import OUT_ROOT, measure  # noqa: E402
from generate_catalog import STAMP_DATE, generate  # noqa: E402
from verdict import verdict  # noqa: E402

MAX_FIRST = 4.0
MAX_REINGEST = 1.5
_HEAD = 4096


def restamp(source: Path, target: Path, stamp: str) -> None:
    """Copy a file, changing only the ДатаФормирования in its head (an unchanged re-export)."""
    with open(source, "rb") as src, open(target, "wb") as dst:
        head = src.read(_HEAD)
        dst.write(head.replace(STAMP_DATE.encode(), stamp.encode(), 1))
        shutil.copyfileobj(src, dst, 1 << 20)


def unchanged_reexport(package: Path, folder: Path) -> Path:
    """Every file of ``package`` re-stamped into ``folder``: an unchanged export as 1C writes it again."""
    folder.mkdir()
    for path in sorted(package.glob("*.xml")):
        restamp(path, folder / path.name, "2026-11-21T03:00:00")
    return folder


def write_config(folder: Path) -> Path:
    config = folder / "bridge.toml"
    config.write_text('[state]\npath = "var/bridge.db"\n[archive]\npath = "var/archive"\nquarantine = "var/quarantine"\n'
                      '[crm]\nkind = "sandbox"\npath = "var/crm.db"\n', encoding="utf-8")
    return config


def calls(config: Path) -> int:
    """The sandbox's count of write calls, read from the head of its dump.

    The dump of a 100k catalog is hundreds of MB: parsed here, it would swell this process,
    and Linux counts a parent's resident memory at fork in its child's peak RSS, so the next
    measured step would report the benchmark's memory instead of its own.
    """
    with tempfile.TemporaryFile() as out:
        code = subprocess.run([sys.executable, "-m", "bridge", "sandbox", "-c", str(config), "dump", "--json"],
                              stdout=out, stderr=subprocess.DEVNULL, check=False).returncode
        out.seek(0)
        found = re.search(rb'"calls":\s*(\d+)', out.read(4096))
    return int(found.group(1)) if code == 0 and found else -1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("n", nargs="?", type=int, default=100_000)
    parser.add_argument("--quick", action="store_true", help="N=2000, a smoke run")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    n = 2000 if args.quick else args.n
    package = OUT_ROOT / str(n)
    generate(package, n, args.seed)
    size_mb = sum(p.stat().st_size for p in package.glob("*.xml")) / 1e6
    work = Path(tempfile.mkdtemp(prefix="bridge-bench-ingest-"))
    try:
        again = unchanged_reexport(package, work / "again")
        config = write_config(work)
        bridge = [sys.executable, "-m", "bridge"]
        inspect_command = [*bridge, "inspect", "--json", str(package)]
        # The baseline is taken before, between and after the two ingests, and each ingest is compared
        # with the mean of the two inspects around it: this machine's speed drifts within minutes.
        before = measure(inspect_command)
        first = measure([*bridge, "ingest", "-c", str(config), str(package)])
        calls_first = calls(config)
        between = measure(inspect_command)
        second = measure([*bridge, "ingest", "-c", str(config), str(again)])
        calls_second = calls(config) - calls_first
        after = measure(inspect_command)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    runs = {"inspect before": before, "first ingest": first, "inspect between": between, "re-ingest": second,
            "inspect after": after}
    failed = [name for name, run in runs.items() if not run.ok]
    for name in failed:
        print(f"{name} failed: {runs[name].error}")
    if failed:
        return 1
    first_base = (before.seconds + between.seconds) / 2
    second_base = (between.seconds + after.seconds) / 2
    first_ratio, second_ratio = first.seconds / first_base, second.seconds / second_base
    print(f"N={n} products, {size_mb:.0f} MB of XML")
    print(f"{'step':<16} {'seconds':>9} {'x inspect':>10} {'peak RSS MB':>12} {'CRM write calls':>16}")
    for name, run in (("inspect before", before), ("inspect between", between), ("inspect after", after)):
        print(f"{name:<16} {run.seconds:>9.1f} {'-':>10} {run.rss_mb:>12.0f} {'-':>16}")
    print(f"{'first ingest':<16} {first.seconds:>9.1f} {first_ratio:>10.2f} {first.rss_mb:>12.0f} {calls_first:>16}"
          f"   (against {first_base:.1f} s, the inspects before and between)")
    print(f"{'re-ingest':<16} {second.seconds:>9.1f} {second_ratio:>10.2f} {second.rss_mb:>12.0f} {calls_second:>16}"
          f"   (against {second_base:.1f} s, the inspects between and after)")
    checks = [(f"first ingest <= {MAX_FIRST}x inspect", first_ratio <= MAX_FIRST),
              (f"unchanged re-ingest <= {MAX_REINGEST}x inspect", second_ratio <= MAX_REINGEST),
              ("unchanged re-ingest makes zero write calls", calls_second == 0)]
    return verdict(checks)


if __name__ == "__main__":
    sys.exit(main())
