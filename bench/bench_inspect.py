"""Benchmark ``bridge inspect`` against a bare lxml streaming loop on generated catalogs.

For each N (default 100000 and 400000; ``--quick`` uses 2000) a УТ 11 style package is
generated, or reused from the cache, under ``bench/out/<N>/``. Then two subprocesses each
read it once:

* baseline: ``bench_inspect.py --baseline DIR``, which is lxml ``iterparse`` over every file,
  counting ``Товар`` and ``Предложение``, clearing each one and dropping the cleared siblings;
* subject: ``python -m bridge inspect --json DIR``.

Each run is timed with ``perf_counter`` and measured for peak RSS (``ru_maxrss`` from
``os.wait4``). Every run is its own process, so neither inherits the other's memory. The
subject's counts must equal the baseline's. Targets: throughput ratio (baseline time / subject
time) >= 0.5 and subject peak RSS < 150 MB at 100,000 products; subject RSS growth from the
smallest N to the largest < 20%. MB means 10^6 bytes throughout.
Exit status: 0 when every check that applies passes, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from verdict import verdict  # the bench folder is the script's own: on sys.path

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
OUT_ROOT = BENCH_DIR / "out"
TARGET_N = 100_000
MIN_RATIO = 0.5
MAX_RSS_MB = 150.0
MAX_GROWTH_PCT = 20.0


def baseline(directory: Path) -> None:
    """The reference loop: what streaming with lxml costs at the least (run in a child)."""
    from lxml import etree

    products = offers = 0
    for path in sorted(directory.glob("*.xml")):
        with open(path, "rb") as f:
            for _, el in etree.iterparse(f, tag=("{*}Товар", "{*}Предложение")):
                if el.tag.endswith("}Товар") or el.tag == "Товар":
                    products += 1
                else:
                    offers += 1
                el.clear()
                # clear() leaves the emptied element attached to its parent; without dropping
                # those siblings the baseline grows by ~25 MB per 100,000 goods and is no
                # longer a constant-memory reference. Dropping them costs no measurable time.
                while el.getprevious() is not None:
                    del el.getparent()[0]
    print(json.dumps({"products": products, "offers": offers}))


@dataclass
class Run:
    ok: bool
    seconds: float
    rss_mb: float
    stdout: str
    error: str = ""
    cpu: float = 0.0  # user + system seconds, with the helper processes the command waited for


def measure(cmd: list[str]) -> Run:
    """Run ``cmd`` from the repo root and take its wall time, CPU time and peak RSS from wait4."""
    # Output goes to temporary files, not pipes: while we block in wait4 nobody would drain a
    # pipe, and a chatty child would then block on a full pipe forever.
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        code = os.waitstatus_to_exitcode(status)
        proc.returncode = code  # already reaped: stop Popen from waiting for it again
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode("utf-8", "replace")
        stderr = err.read().decode("utf-8", "replace")
    rss_mb = usage.ru_maxrss * 1024 / 1e6  # Linux reports ru_maxrss in KiB
    cpu = usage.ru_utime + usage.ru_stime
    if code != 0:
        tail = "\n".join(stderr.strip().splitlines()[-5:]) or "(no output on stderr)"
        return Run(False, seconds, rss_mb, stdout, f"exit code {code}:\n{tail}", cpu)
    return Run(True, seconds, rss_mb, stdout, cpu=cpu)


def parse_baseline(run: Run) -> dict[str, int] | None:
    try:
        counts = json.loads(run.stdout)
        return {"products": int(counts["products"]), "offers": int(counts["offers"])}
    except (ValueError, KeyError, TypeError):
        return None


def parse_subject(run: Run) -> tuple[dict[str, int] | None, str]:
    """Sum the per-file counts that ``bridge inspect --json`` prints."""
    try:
        files = json.loads(run.stdout)
        total = {"products": 0, "offers": 0}
        for item in files:
            counts = item.get("counts", {})
            for key in total:
                total[key] += int(counts.get(key, 0) or 0)
        return total, ""
    except (ValueError, AttributeError, TypeError) as exc:
        head = run.stdout.strip()[:200] or "(empty)"
        return None, f"output is not the expected JSON list ({exc}): {head}"


@dataclass
class Row:
    n: int
    xml_mb: float
    base: Run
    subj: Run
    counts_ok: bool
    note: str


def bench_one(n: int, seed: int) -> Row:
    sys.path.insert(0, str(BENCH_DIR))
    from generate_catalog import generate

    out_dir = OUT_ROOT / str(n)
    t0 = time.perf_counter()
    paths = generate(out_dir, n, seed)
    gen_s = time.perf_counter() - t0
    xml_mb = sum(p.stat().st_size for p in paths) / 1e6
    print(f"N={n}: {xml_mb:.0f} MB of XML in {out_dir} (ready in {gen_s:.1f} s)", flush=True)

    base = measure([sys.executable, str(Path(__file__).resolve()), "--baseline", str(out_dir)])
    if not base.ok:
        raise SystemExit(f"baseline failed for N={n}: {base.error}")
    base_counts = parse_baseline(base)
    print(f"  baseline: {base.seconds:.2f} s, {base.rss_mb:.0f} MB peak RSS, counts {base_counts}", flush=True)

    subj = measure([sys.executable, "-m", "bridge", "inspect", "--json", str(out_dir)])
    counts_ok, note = False, ""
    if not subj.ok:
        note = f"subject did not run: {subj.error}"
    else:
        subj_counts, problem = parse_subject(subj)
        if subj_counts is None:
            note = f"subject {problem}"
        elif subj_counts != base_counts:
            note = f"count mismatch: subject {subj_counts} vs baseline {base_counts}"
        else:
            counts_ok = True
    status = "ok" if counts_ok else "FAILED"
    print(f"  subject:  {subj.seconds:.2f} s, {subj.rss_mb:.0f} MB peak RSS, {status}", flush=True)
    if note:
        print("  " + note.replace("\n", "\n    "), flush=True)
    return Row(n, xml_mb, base, subj, counts_ok, note)


def report(rows: list[Row]) -> bool:
    print()
    head = (f"{'N':>8} {'XML MB':>8} {'base s':>8} {'base MB/s':>10} {'subj s':>8} {'subj MB/s':>10} "
            f"{'ratio':>6} {'base RSS':>9} {'subj RSS':>9}  counts")
    print(head)
    print("-" * len(head))
    for r in rows:
        if r.subj.ok:
            subj = f"{r.subj.seconds:8.2f} {r.xml_mb / r.subj.seconds:10.1f} {r.base.seconds / r.subj.seconds:6.2f}"
            subj_rss = f"{r.subj.rss_mb:9.1f}"
        else:
            subj, subj_rss = f"{'-':>8} {'-':>10} {'-':>6}", f"{'-':>9}"
        print(f"{r.n:>8} {r.xml_mb:8.0f} {r.base.seconds:8.2f} {r.xml_mb / r.base.seconds:10.1f} {subj} "
              f"{r.base.rss_mb:9.1f} {subj_rss}  {'ok' if r.counts_ok else 'FAIL'}")
    print()

    checks: list[tuple[str, bool]] = [(f"counts match at N={r.n}", r.counts_ok) for r in rows]
    target = next((r for r in rows if r.n == TARGET_N), None)
    if target is None:
        print(f"(no N={TARGET_N} run: the throughput and RSS targets do not apply)")
    else:
        ok = target.subj.ok
        ratio = target.base.seconds / target.subj.seconds if ok else 0.0
        checks.append((f"throughput ratio at N={TARGET_N} = {ratio:.2f} >= {MIN_RATIO}", ok and ratio >= MIN_RATIO))
        rss = target.subj.rss_mb if ok else float("nan")
        checks.append((f"subject peak RSS at N={TARGET_N} = {rss:.1f} MB < {MAX_RSS_MB:.0f} MB",
                       ok and rss < MAX_RSS_MB))
    if len(rows) > 1:
        small, large = min(rows, key=lambda r: r.n), max(rows, key=lambda r: r.n)
        base_growth = (large.base.rss_mb / small.base.rss_mb - 1) * 100
        print(f"baseline RSS growth N={small.n} -> N={large.n}: {base_growth:+.1f}%")
        ok = small.subj.ok and large.subj.ok
        growth = (large.subj.rss_mb / small.subj.rss_mb - 1) * 100 if ok else float("nan")
        checks.append((f"subject RSS growth N={small.n} -> N={large.n} = {growth:+.1f}% < {MAX_GROWTH_PCT:.0f}%",
                       ok and growth < MAX_GROWTH_PCT))
    return verdict(checks) == 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sizes", nargs="*", type=int, help="numbers of products (default: 100000 400000)")
    ap.add_argument("--quick", action="store_true", help="smoke run with N=2000")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--baseline", type=Path, metavar="DIR", help=argparse.SUPPRESS)  # internal: the child
    args = ap.parse_args(argv)
    if args.baseline is not None:
        baseline(args.baseline)
        return 0
    sizes = [2000] if args.quick else (args.sizes or [100_000, 400_000])
    rows = [bench_one(n, args.seed) for n in sorted(set(sizes))]
    return 0 if report(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
