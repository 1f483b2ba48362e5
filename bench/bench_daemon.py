"""Benchmark ``bridge run``: how soon a complete file reaches the CRM, and what an idle daemon costs.

Starts the daemon on a temporary folder source (inotify, ``min_age`` seconds), then writes N
small changes-only catalogs one after another, each naming one new product, and measures from
the moment a file is closed to the moment its product is in the sandbox CRM (read straight from
the sandbox's SQLite file). Then lets the daemon idle and measures its CPU use (utime+stime from
/proc over the idle window) and its resident memory.

Targets: every latency <= 2 s + min_age; idle CPU < 1% of one core; RSS < 60 MB.
"""

from __future__ import annotations

import argparse
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from verdict import verdict  # the bench folder is the script's own: on sys.path

REPO = Path(__file__).resolve().parents[1]
HEAD = ('\ufeff<?xml version="1.0" encoding="UTF-8"?>\n<КоммерческаяИнформация xmlns="urn:1C.ru:commerceml_2" '
        'ВерсияСхемы="2.09" ДатаФормирования="2026-11-20T10:00:00">\n')


def catalog(number: int) -> str:
    return (HEAD + '<Каталог СодержитТолькоИзменения="true"><Ид>bench</Ид><Наименование>Каталог</Наименование><Товары>'
            f"<Товар><Ид>lat-{number}</Ид><Артикул>LAT-{number}</Артикул><Наименование>Товар {number}</Наименование>"
            "</Товар></Товары></Каталог></КоммерческаяИнформация>\n")


def ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime, in clock ticks


def rss_mb(pid: int) -> tuple[float, float]:
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(status["VmRSS"].split()[0]) / 1024, int(status["VmHWM"].split()[0]) / 1024


def present(db: Path, external_id: str) -> bool:
    if not db.exists():
        return False
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as conn:
            return conn.execute("SELECT 1 FROM products WHERE external_id = ?", (external_id,)).fetchone() is not None
    except sqlite3.OperationalError:  # the tables are being created
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=50)
    parser.add_argument("--min-age", type=float, default=1.0)
    parser.add_argument("--idle", type=float, default=30.0, help="seconds of idle to measure")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bridge-bench-daemon-"))
    (work / "in").mkdir()
    config = work / "bridge.toml"
    config.write_text('[state]\npath = "var/bridge.db"\n[archive]\npath = "var/archive"\nquarantine = "var/quarantine"\n'
                      '[crm]\nkind = "sandbox"\npath = "var/crm.db"\n'
                      f'[[source]]\nname = "bench"\nkind = "folder"\npath = "in"\nmin_age = {args.min_age}\n',
                      encoding="utf-8")
    daemon = subprocess.Popen([sys.executable, "-m", "bridge", "run", "-c", str(config)], cwd=REPO,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    crm = work / "var" / "crm.db"
    latencies: list[float] = []
    try:
        time.sleep(1.0)  # started and watching
        for number in range(args.files):
            path = work / "in" / f"import_{number}.xml"
            with open(path, "w", encoding="utf-8") as f:
                f.write(catalog(number))
            closed = time.monotonic()
            while not present(crm, f"lat-{number}"):
                if time.monotonic() - closed > 30:
                    print(f"file {number} not applied within 30 s")
                    return 1
                time.sleep(0.01)
            latencies.append(time.monotonic() - closed)
        time.sleep(3.0)  # let the last cycle settle before measuring idle
        hz = os.sysconf("SC_CLK_TCK")
        before, started = ticks(daemon.pid), time.monotonic()
        time.sleep(args.idle)
        cpu = (ticks(daemon.pid) - before) / hz / (time.monotonic() - started) * 100
        rss, peak = rss_mb(daemon.pid)
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=60)
    quantiles = statistics.quantiles(latencies, n=10)
    budget = 2.0 + args.min_age
    print(f"{args.files} files, min_age {args.min_age:g} s: latency from close to CRM, seconds")
    print(f"  min {min(latencies):.2f}  median {statistics.median(latencies):.2f}  p90 {quantiles[-1]:.2f}"
          f"  max {max(latencies):.2f}  (budget {budget:.1f})")
    print(f"idle {args.idle:.0f} s: CPU {cpu:.2f}% of one core, RSS {rss:.1f} MB (peak {peak:.1f} MB)")
    checks = [(f"every file applied within {budget:.1f} s", max(latencies) <= budget),
              ("idle CPU < 1% of one core", cpu < 1.0), ("idle RSS < 60 MB", rss < 60.0)]
    return verdict(checks)


if __name__ == "__main__":
    sys.exit(main())
