"""Carry the outbox to the CRM: batches, retries with backoff, results journaled."""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass

from bridge import faults
from bridge.crm.base import CrmAdapter
from bridge.errors import TransientError
from bridge.store import journal, outbox, state
from bridge.store.db import transaction

log = logging.getLogger(__name__)
_ID_ENTITIES = {"product", "variant", "company", "contact", "deal"}
DOCUMENT_KINDS = ("write_order",)  # carried by the writer of files for 1C, not by the CRM adapter
MAX_BACKOFF = 300.0


@dataclass(slots=True)
class DeliveryStats:
    sent: int = 0
    failed: int = 0
    retried: int = 0
    left: int = 0  # still pending when we stopped (the CRM kept failing)


def backoff(attempts: int) -> float:
    return min(2.0 ** attempts, MAX_BACKOFF)


def deliver(conn: sqlite3.Connection, adapter: CrmAdapter, *, patience: float = 30.0,
            sleep: Callable[[float], None] = time.sleep) -> DeliveryStats:
    """Send everything due; wait out transient failures for up to ``patience`` seconds.

    What is still pending after that stays in the outbox for the next run:
    nothing is dropped, and the next run sends it first.
    """
    stats = DeliveryStats()
    give_up_at = time.monotonic() + patience
    while True:
        batch = outbox.due(conn, adapter.batch_size, exclude=DOCUMENT_KINDS)
        if not batch:
            wait = _next_due_in(conn)
            if wait is None:
                break
            if time.monotonic() + wait > give_up_at:
                stats.left = outbox.depth(conn).get("pending", 0)
                break
            sleep(wait)
            continue
        try:
            results = adapter.apply([p.operation for p in batch])
        except TransientError as exc:
            stats.retried += len(batch)
            at = time.time() + backoff(batch[0].attempts)
            with transaction(conn):
                outbox.postpone(conn, [(p.operation.id, str(exc), at) for p in batch])
                journal.write(conn, journal.Entry("deliver", "retry", f"the CRM is unavailable, retrying "
                                                  f"{len(batch)} operation(s) later: {exc}",
                                                  detail={"outbox_ids": [p.operation.id for p in batch]}))
            log.warning("deliver.retry count=%d error=%r", len(batch), str(exc))
            continue
        faults.checkpoint("crm_applied")  # the CRM has it; the outbox does not know yet
        if len(results) != len(batch):
            raise RuntimeError(f"CRM adapter {adapter.name} returned {len(results)} results for {len(batch)} operations")
        done, failed, retry, crm_ids, entries = [], [], [], [], []
        for pending, result in zip(batch, results):
            op = pending.operation
            if result.ok:
                done.append(op.id)
                if result.crm_id is not None and pending.entity in _ID_ENTITIES:
                    crm_ids.append((result.crm_id, pending.entity, op.external_id))
                entries.append(journal.Entry("deliver", "ok", f"{op.kind} {'created' if result.created else 'updated'}"
                                             f" in {adapter.name} as {result.crm_id}" if result.crm_id else
                                             f"{op.kind} applied in {adapter.name}", pending.file_id,
                                             pending.entity, op.external_id, {"answer": result.answer}))
            elif result.retryable:
                retry.append((op.id, result.error or "retryable failure", time.time() + backoff(pending.attempts)))
                entries.append(journal.Entry("deliver", "retry", f"{op.kind}: {result.error}", pending.file_id,
                                             pending.entity, op.external_id, {"answer": result.answer}))
            else:
                failed.append((op.id, result.error or "failed"))
                entries.append(journal.Entry("deliver", "error", f"{op.kind} refused by {adapter.name}: {result.error}",
                                             pending.file_id, pending.entity, op.external_id,
                                             {"answer": result.answer, "payload": op.payload}))
        with transaction(conn):
            outbox.mark_done(conn, done)
            state.set_crm_ids(conn, crm_ids)
            outbox.mark_failed(conn, failed)
            outbox.postpone(conn, retry)
            for (op_id, _), pending in ((f, next(p for p in batch if p.operation.id == f[0])) for f in failed):
                # Send it again with the next export that lists it, whatever its fingerprint.
                state.forget_fingerprint(conn, pending.entity, pending.operation.external_id)
            journal.write_many(conn, entries)
        faults.checkpoint("delivered")
        stats.sent += len(done)
        stats.failed += len(failed)
        stats.retried += len(retry)
    return stats


def _next_due_in(conn: sqlite3.Connection) -> float | None:
    marks = ",".join("?" * len(DOCUMENT_KINDS))
    row = conn.execute(f"SELECT MIN(next_attempt_at) FROM outbox WHERE status = 'pending' AND kind NOT IN ({marks})",
                       DOCUMENT_KINDS).fetchone()
    if row is None or row[0] is None:
        return None
    return max(0.0, row[0] - time.time())
