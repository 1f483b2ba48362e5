"""Carry the outbox to the CRM: batches, retries with backoff, results journaled."""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass

from bridge import faults
from bridge.crm.base import CrmAdapter, Result
from bridge.errors import TransientError
from bridge.store import journal, outbox, state
from bridge.store.db import transaction

log = logging.getLogger(__name__)
_ID_ENTITIES = {"product", "variant", "company", "contact", "deal"}
DOCUMENT_KINDS = ("write_order",)  # carried by the writer of files for 1C, not by the CRM adapter
MAX_BACKOFF = 300.0
# How much is applied to the CRM before the outcomes are recorded in one transaction (see _send).
RECORD_EVERY = 4000
RECORD_AFTER = 1.0  # seconds


@dataclass(slots=True)
class DeliveryStats:
    sent: int = 0
    failed: int = 0
    retried: int = 0
    left: int = 0  # still pending when we stopped (the CRM kept failing)


def backoff(attempts: int) -> float:
    return min(2.0 ** attempts, MAX_BACKOFF)


def deliver(conn: sqlite3.Connection, adapter: CrmAdapter, *, patience: float = 30.0,
            sleep: Callable[[float], None] = time.sleep, stop: Callable[[], bool] | None = None,
            progress: Callable[[], None] | None = None) -> DeliveryStats:
    """Send everything due; wait out transient failures for up to ``patience`` seconds.

    What is still pending after that stays in the outbox for the next run:
    nothing is dropped, and the next run sends it first. ``progress`` is called between
    recorded batches (the daemon pings systemd's watchdog there: a big outbox to a rate-limited
    CRM takes far longer than the watchdog allows); once ``stop()`` is true, what is left stays
    pending (a stop request must not wait for a whole outbox to be sent).
    """
    stats = DeliveryStats()
    give_up_at = time.monotonic() + patience
    while True:
        if progress is not None:
            progress()
        if stop is not None and stop():
            stats.left = outbox.depth(conn).get("pending", 0)
            break
        batch = outbox.due(conn, max(adapter.batch_size, RECORD_EVERY), exclude=DOCUMENT_KINDS)
        if not batch:
            wait = _next_due_in(conn)
            if wait is None:
                break
            if time.monotonic() + wait > give_up_at:
                stats.left = outbox.depth(conn).get("pending", 0)
                break
            sleep(wait)
            continue
        sent, unavailable = _send(adapter, batch)
        with transaction(conn):
            _record(conn, adapter, sent, stats)
            if unavailable is not None:
                rest, exc = unavailable
                outbox.postpone(conn, [(p.operation.id, str(exc), time.time() + backoff(rest[0].attempts)) for p in rest])
                journal.write(conn, journal.Entry("deliver", "retry", f"the CRM is unavailable, retrying "
                                                  f"{len(rest)} operation(s) later: {exc}",
                                                  detail={"outbox_ids": [p.operation.id for p in rest]}))
        if sent:
            faults.checkpoint("delivered")
        if unavailable is not None:
            stats.retried += len(unavailable[0])
            log.warning("deliver.retry count=%d error=%r", len(unavailable[0]), str(unavailable[1]))
    return stats


def _send(adapter: CrmAdapter, batch: list[outbox.Pending]) -> tuple[
        list[tuple[outbox.Pending, Result]], tuple[list[outbox.Pending], TransientError] | None]:
    """Apply ``batch`` in the adapter's batch size until RECORD_EVERY operations or RECORD_AFTER seconds.

    What was applied is recorded in one transaction: every state transaction of the delivery
    process makes the ingest's connection drop its page cache, so fewer of them leave the
    reading process faster. A crash before the record only means those operations are sent
    again, which every adapter takes as the idempotent upserts they are.
    """
    sent: list[tuple[outbox.Pending, Result]] = []
    started = time.monotonic()
    for start in range(0, len(batch), adapter.batch_size):
        if sent and time.monotonic() - started > RECORD_AFTER:
            break  # the rest stays pending and comes with the next fetch
        part = batch[start:start + adapter.batch_size]
        try:
            results = adapter.apply([p.operation for p in part])
        except TransientError as exc:
            return sent, (batch[start:], exc)
        faults.checkpoint("crm_applied")  # the CRM has it; the outbox does not know yet
        if len(results) != len(part):
            raise RuntimeError(f"CRM adapter {adapter.name} returned {len(results)} results for {len(part)} operations")
        sent.extend(zip(part, results))
    return sent, None


def _record(conn: sqlite3.Connection, adapter: CrmAdapter, sent: list[tuple[outbox.Pending, Result]],
            stats: DeliveryStats) -> None:
    """Outcomes of applied operations, inside the caller's transaction."""
    done, failed, retry, crm_ids, entries = [], [], [], [], []
    for pending, result in sent:
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
            # Send it again with the next export that lists it, whatever its fingerprint.
            state.forget_fingerprint(conn, pending.entity, op.external_id)
            entries.append(journal.Entry("deliver", "error", f"{op.kind} refused by {adapter.name}: {result.error}",
                                         pending.file_id, pending.entity, op.external_id,
                                         {"answer": result.answer, "payload": op.payload}))
    outbox.mark_done(conn, done)
    state.set_crm_ids(conn, crm_ids)
    outbox.mark_failed(conn, failed)
    outbox.postpone(conn, retry)
    journal.write_many(conn, entries)
    stats.sent += len(done)
    stats.failed += len(failed)
    stats.retried += len(retry)


def _next_due_in(conn: sqlite3.Connection) -> float | None:
    marks = ",".join("?" * len(DOCUMENT_KINDS))
    row = conn.execute(f"SELECT MIN(next_attempt_at) FROM outbox WHERE status = 'pending' AND kind NOT IN ({marks})",
                       DOCUMENT_KINDS).fetchone()
    if row is None or row[0] is None:
        return None
    return max(0.0, row[0] - time.time())
