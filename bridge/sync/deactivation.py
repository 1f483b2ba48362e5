"""Full exports deactivate what they no longer list, within the interlock.

A full catalog export (Каталог СодержитТолькоИзменения="false") speaks for
its own catalog only. Products of that catalog that no full file of the run
listed become inactive (never deleted), and so do their variants, unless that
would be more than ``max_deactivate_share`` of the catalog's active products:
then nothing is deactivated without --force, because a partial export
mistaken for a full one must not wipe half the catalog.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from bridge.crm.base import DEACTIVATE_PRODUCT
from bridge.store import journal, ledger, outbox
from bridge.store.db import transaction
from bridge.store.outbox import Intent


@dataclass(slots=True)
class Decision:
    catalog_id: str
    active: int
    absent: int
    applied: bool
    message: str
    variants: int = 0  # of ``absent``, how many are variants (the plan shows them as their own kind)


def deactivate(conn: sqlite3.Connection, max_share: float, force: bool, *,
               settled_before: str | None = None) -> list[Decision]:
    """Decide every catalog with full files pending; what their files listed together counts.

    settled_before (a clock.now() timestamp): leave pending the catalogs that received a full file
    after it. 1C splits one full export over several files (import0_1.xml, import0_2.xml, ...) and
    a daemon takes each as soon as it is complete: decided after the first, the rest of the
    catalog would look absent. Waiting until the catalog has been quiet for a while lets all the
    files of the package count together.
    """
    # A refused deactivation waits, with what the export listed, until someone forces it.
    states = ("pending", "refused" if force else "pending")
    pending = conn.execute("SELECT id, catalog_id, received_at FROM files WHERE full_catalog = 1 AND deactivation"
                           " IN (?, ?) AND status IN ('committed','applied','partial') ORDER BY id", states).fetchall()
    by_catalog: dict[str, list[int]] = {}
    latest: dict[str, str] = {}
    for file_id, catalog_id, received_at in pending:
        key = catalog_id or ""
        by_catalog.setdefault(key, []).append(file_id)
        latest[key] = max(latest.get(key, ""), received_at)
    return [_catalog(conn, catalog, files, max_share, force) for catalog, files in by_catalog.items()
            if settled_before is None or latest[catalog] < settled_before]


def _catalog(conn: sqlite3.Connection, catalog_id: str, files: list[int], max_share: float, force: bool) -> Decision:
    marks = ",".join("?" * len(files))
    active = conn.execute("SELECT COUNT(*) FROM records WHERE entity = 'product' AND catalog_id = ? AND active = 1",
                          (catalog_id,)).fetchone()[0]
    absent = [r[0] for r in conn.execute(
        "SELECT external_id FROM records r WHERE entity = 'product' AND catalog_id = ? AND active = 1"
        f" AND NOT EXISTS (SELECT 1 FROM seen s WHERE s.external_id = r.external_id AND s.file_id IN ({marks}))"
        " ORDER BY external_id", (catalog_id, *files))]
    share = len(absent) / active if active else 0.0
    label = catalog_id or "(no catalog Ид)"
    with transaction(conn):
        if absent and share > max_share and not force:
            message = (f"catalog {label}: the full export would deactivate {len(absent)} of {active} active products "
                       f"({share:.0%}), more than mapping.max_deactivate_share = {max_share:.0%}; nothing was "
                       "deactivated. If the export really is complete, run again with --force.")
            for file_id in files:
                ledger.update(conn, file_id, deactivation="refused")
            journal.write(conn, journal.Entry("deactivate", "refused", message, files[-1],
                                              detail={"absent": absent[:100], "files": files}))
            return Decision(label, active, len(absent), False, message)
        variants = []
        for external_id in absent:
            variants += [r[0] for r in conn.execute(
                "SELECT external_id FROM records WHERE entity IN ('product', 'variant') AND active = 1"
                " AND external_id LIKE ? ESCAPE '\\'",
                (external_id.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "#%",))]
        targets = list(dict.fromkeys(absent + variants))  # a variant listed as a good may be absent itself
        variant_count = len(set(variants) - set(absent))
        outbox.add(conn, files[-1], [Intent("product", DEACTIVATE_PRODUCT, ext, {"external_id": ext}) for ext in targets],
                   "pending")
        # Inactive now; the fingerprint is forgotten so the product's return is sent in full.
        conn.executemany("UPDATE records SET active = 0, fingerprint = NULL WHERE entity IN ('product', 'variant')"
                         " AND external_id = ?",
                         [(ext,) for ext in targets])
        conn.executemany("UPDATE records SET fingerprint = NULL WHERE entity IN ('raw:product', 'raw:offer')"
                         " AND external_id = ?", [(ext,) for ext in targets])
        journal.write_many(conn, [journal.Entry("deactivate", "ok", "absent from the full export of the catalog; "
                                                "deactivated (kept in the CRM)", files[-1], "product", ext)
                                  for ext in targets])
        for file_id in files:
            ledger.update(conn, file_id, deactivation="done")
        conn.execute(f"DELETE FROM seen WHERE file_id IN ({marks})", files)
    message = (f"catalog {label}: {len(targets) - variant_count} product(s) deactivated ({share:.0%} of {active} "
               f"active)" + (f", with {variant_count} variant(s) of theirs" if variant_count else ""))
    return Decision(label, active, len(targets), True, message, variant_count)
