"""Where a first ingest's time goes: the same package ingested with parts of the pipeline switched off.

bench_ingest.py says how long a first ingest takes against ``bridge inspect``; this script says
why. For N products (default 20000) the generated package of bench_ingest.py is, in one run and
each step in its own process with a fresh state database and sandbox CRM:

1. inspect: ``bridge inspect --json`` (the reference);
2. build: ``FileReader`` over every file, building each record and taking the SHA-256 of its XML
   as the pipeline's digest hook does (the reader's share of an ingest: no state, no CRM);
3. no staging: ``bridge ingest`` with chunks neither mapped nor written, and no delivery;
4. no delivery: ``bridge ingest`` with delivery switched off (operations stay in the outbox);
5. whole: ``bridge ingest`` as users run it.

For each it prints the wall time, the ratio to inspect, the CPU time (the process and the helper
processes it waited for: the background delivery) and the peak RSS. On a 2-core machine the CPU
column says whether a step is limited by its own work or by waiting. No targets: it explains a
figure and passes or fails nothing; the exit status is 1 only when a step failed to run.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
import tempfile
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
sys.path.insert(0, str(BENCH_DIR))
# The steps run in children of this script: they must use this checkout's bridge, as ``python -m
# bridge`` run from the repo root does, not whichever copy is installed.
sys.path.insert(0, str(REPO_ROOT))
from bench_ingest import write_config  # noqa: E402
from bench_inspect import OUT_ROOT, Run, measure  # noqa: E402
from generate_catalog import generate  # noqa: E402

PARTS = ("inspect", "build", "no staging", "no delivery", "whole")


def build_records(package: Path) -> None:
    """Step 2, in the child: read and build every record, hashing each one's XML like the digest hook."""
    from lxml import etree

    from bridge.commerceml.reader import FileReader

    salt = hashlib.sha256(b"bench")

    def digest(kind: str, record_id: str, element: etree._Element) -> bool:
        hasher = salt.copy()
        hasher.update(etree.tostring(element, encoding="utf-8", with_tail=False))
        hasher.digest()
        return False  # never skipped: every record is checked and built

    for path in sorted(package.glob("*.xml")):
        reader = FileReader(path, skip=digest)
        for _ in reader.records():
            pass
        if reader.has_errors:
            raise SystemExit(f"{path}: {reader.problems[0].format()}")


def ingest_without(parts: set[str], config: Path, package: Path) -> None:
    """Steps 3 and 4, in the child: ``bridge ingest`` with the named parts switched off."""
    import bridge.cli.sync_commands as commands
    from bridge.sync.background import BackgroundDelivery
    from bridge.sync.deliver import DeliveryStats
    from bridge.sync.pipeline import Pipeline

    if "delivery" in parts:
        BackgroundDelivery.released = lambda self, count: None  # type: ignore[method-assign]
        commands.deliver = lambda conn, adapter, **kwargs: DeliveryStats()  # type: ignore[assignment]
    if "staging" in parts:
        Pipeline._stage = lambda self, *args, **kwargs: None  # type: ignore[method-assign]
        Pipeline._merge_direct = lambda self, file_id: None  # type: ignore[method-assign]
    from bridge.cli.main import cli

    cli.main(["ingest", "-c", str(config), str(package)], prog_name="bridge")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("n", nargs="?", type=int, default=20_000)
    parser.add_argument("--quick", action="store_true", help="N=2000, a smoke run")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--child", nargs=3, metavar=("PART", "CONFIG", "PACKAGE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        part, config, package = args.child
        if part == "build":
            build_records(Path(package))
        else:
            ingest_without({"no staging": {"staging", "delivery"}, "no delivery": {"delivery"}}[part],
                           Path(config), Path(package))
        return 0
    n = 2000 if args.quick else args.n
    package = OUT_ROOT / str(n)
    generate(package, n, args.seed)
    size_mb = sum(p.stat().st_size for p in package.glob("*.xml")) / 1e6
    bridge = [sys.executable, "-m", "bridge"]
    steps: list[tuple[str, Run]] = []
    for part in PARTS:
        work = Path(tempfile.mkdtemp(prefix="bridge-bench-parts-"))
        try:
            config = write_config(work)
            if part == "inspect":
                cmd = [*bridge, "inspect", "--json", str(package)]
            elif part == "whole":
                cmd = [*bridge, "ingest", "-c", str(config), str(package)]
            else:
                cmd = [sys.executable, str(Path(__file__).resolve()), "--child", part, str(config), str(package)]
            steps.append((part, measure(cmd)))
        finally:
            shutil.rmtree(work, ignore_errors=True)
    reference = steps[0][1].seconds
    print(f"N={n} products, {size_mb:.0f} MB of XML")
    print(f"{'step':<12} {'seconds':>9} {'x inspect':>10} {'CPU s':>8} {'peak RSS MB':>12}")
    for name, run in steps:
        if run.ok:
            print(f"{name:<12} {run.seconds:>9.1f} {run.seconds / reference:>10.2f} {run.cpu:>8.1f}"
                  f" {run.rss_mb:>12.0f}")
        else:
            print(f"{name:<12} failed: {run.error}")
    return 0 if all(run.ok for _, run in steps) else 1


if __name__ == "__main__":
    sys.exit(main())
