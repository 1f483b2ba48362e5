"""The inbound pipeline: claim -> archive -> validate+read -> map -> outbox -> deliver.

One file at a time. While a file is read, its operations are *staged*; they
become deliverable in the single transaction that commits the file, so a
file that turns out to be broken (truncated at the end, say) is quarantined
with nothing of it sent. A crash at any point leaves either a claimed file
(its staged rows are dropped and it is read again) or a committed file
(its outbox is delivered): never half of one.

Early release: once a second, libxml2-only parse has proven the file sound
(commerceml/soundness.py), each chunk's operations become deliverable as soon
as they are mapped, while its fingerprints stay staged until the file is read
(writer.py). A crash in between reads the file again and sends those
operations again, which idempotent upserts absorb.
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
import time
from datetime import datetime
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bridge.commerceml.files import InputFile
from bridge.commerceml.header import Header
from bridge.commerceml.problems import ERROR, Problem
from bridge.commerceml.reader import ENDS_EARLY, FileReader
from bridge.commerceml.soundness import SoundnessCheck
from bridge.crm.base import SET_OFFER
from bridge.commerceml.records import Counterparty, Document, Offer, Product, Record
from bridge import faults
from bridge.config import Config
from bridge.store import journal, ledger, outbox, state
from bridge.store.db import transaction
from bridge.store.outbox import Intent, dumps
from bridge.sync import archive, mapping
from bridge.sync.codec import offer_from_json, offer_to_json
from bridge.sync.deactivation import Decision, deactivate
from bridge.sync.names import Names
from bridge.sync.rawskip import RawSkip
from bridge.sync.writer import ChunkWriter, database_path

log = logging.getLogger(__name__)
CHUNK = 2000
# Once a file is proven sound its chunks' operations commit straight into the outbox from the writer
# thread (sync/writer.py). Two chunks are in memory then (one written, one built); 4000 records keep
# the peak near 170 MB on the 20k catalog (235 MB with 8000); chunks of 500, 1000 and 4000 took the
# same time there, within this machine's noise.
DIRECT_CHUNK = 4000
_MISSING = object()
Progress = Callable[[str, int, int, int], None]  # name, bytes read, size, records
Look = Callable[[Callable[[sqlite3.Connection], Any]], Any]  # runs a query where the file's staging is


_PLAIN_TRAILERS: dict[str, bytes] = {}  # kind -> the trailer of an intent without match or create_only


def fingerprint(intent: Intent) -> str:
    digest = hashlib.sha256(intent.serialized().encode("utf-8"))  # SHA instructions: faster than BLAKE2 here
    if intent.match is None and intent.create_only is None:  # most intents: the same trailer per kind
        trailer = _PLAIN_TRAILERS.get(intent.kind)
        if trailer is None:
            trailer = _PLAIN_TRAILERS[intent.kind] = dumps([intent.kind, None, None]).encode("utf-8")
    else:
        trailer = dumps([intent.kind, intent.match, intent.create_only]).encode("utf-8")
    digest.update(trailer)
    return digest.hexdigest()[:32]  # 128 bits tell payloads apart; the id map stays small


def _fingerprints(intents: list[Intent]) -> dict[int, str]:
    """Each intent's fingerprint by id(); an only_if_known intent gets one in _changed, if its record is known."""
    return {id(intent): fingerprint(intent) for intent in intents if not intent.only_if_known}


def _claim_key(origin: str, sha256: str) -> str:
    """What a file is claimed under: where it came from and its content, not its name."""
    return hashlib.sha256(f"{origin}\n{sha256}".encode()).hexdigest()


def _plan() -> defaultdict[str, dict[str, int]]:
    return defaultdict(lambda: {"create": 0, "update": 0, "unchanged": 0, "waiting": 0, "failed": 0})


@dataclass(slots=True)
class FileOutcome:
    file_id: int | None
    name: str
    status: str  # committed, quarantined, skipped (taken before)
    plan: dict[str, dict[str, int]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    message: str = ""
    ends_early: bool = False  # quarantined as cut off: its writer (1C) may not have finished it


class Pipeline:
    def __init__(self, conn: sqlite3.Connection, config: Config, *, dry_run: bool = False, force: bool = False,
                 progress: Progress | None = None, on_release: Callable[[int], None] | None = None) -> None:
        """on_release(n): called whenever n more operations became deliverable (a chunk of a file
        proven sound, a committed file), so a caller may deliver while the pipeline goes on reading."""
        self.conn = conn
        self.config = config
        self.rules = config.mapping
        self.dry_run = dry_run
        self.force = force
        self.progress = progress
        self.on_release = on_release
        self.archive_dir = None if dry_run else config.archive_path
        self._writer: ChunkWriter | None = None
        self._released_so_far = 0
        self._syncing: archive.Syncing | None = None  # the fsync of the archived copy of the file being read

    # -- a batch ----------------------------------------------------------------
    def finish(self, *, settled_before: str | None = None) -> list[Decision]:
        """After the files of a run: deactivations of full exports (deliver separately).

        settled_before: only catalogs whose last full file was received before this moment (the
        daemon's runs see a package one file at a time; see deactivation.deactivate)."""
        return deactivate(self.conn, self.rules.max_deactivate_share, self.force, settled_before=settled_before)

    # -- one file ---------------------------------------------------------------
    def ingest_all(self, items: Iterable[InputFile], *, source: str = "cli",
                   replay_of: dict[str, int] | None = None) -> Iterator[FileOutcome]:
        """``ingest_file`` for each item, in order. While one file is read, the next one is already
        hashed and copied into the archive: reading, SHA-256, writing and fsync all run without the
        interpreter lock, on the core the reader leaves free, instead of before the next file's reading."""
        queue = list(items)
        ahead: Future[archive.Taken] | None = None
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="bridge-take") as pool:
            try:
                for index, item in enumerate(queue):
                    # The first copy's fsync runs beside its reading, as in ingest_file; a copy made ahead
                    # was already synced on the worker.
                    taken = ahead.result() if ahead is not None else archive.take(item.path, self.archive_dir,
                                                                                  durable=False)
                    ahead = None
                    if index + 1 < len(queue):
                        ahead = pool.submit(archive.take, queue[index + 1].path, self.archive_dir)
                    yield self.ingest_file(item, source=source, replay_of=(replay_of or {}).get(item.name), taken=taken)
            finally:
                if ahead is not None and not ahead.cancel():  # stopped early: the copy made ahead is not needed
                    try:
                        archive.discard(ahead.result())
                    except OSError:
                        pass  # the copy failed, and take removed its own partial copy

    def ingest_file(self, item: InputFile, *, source: str = "cli", replay_of: int | None = None,
                    taken: archive.Taken | None = None) -> FileOutcome:
        """Take one file through the pipeline. taken: its archive copy when made ahead (ingest_all)."""
        if taken is None:
            # The fsync of the copy runs beside the reading (self._syncing), not before it.
            taken = archive.take(item.path, self.archive_dir, durable=False)
        basename = item.name.rsplit("!", 1)[-1].rsplit("/", 1)[-1]
        # The claim key is the content and where it came from, not the name: a file renamed
        # (or sent again under another name) is still the same file and is not taken twice.
        origin = f"replay:{replay_of}:{time.time_ns()}" if replay_of is not None else source
        claim_key = _claim_key(origin, taken.sha256)
        row = ledger.by_claim(self.conn, claim_key)
        if row is None and replay_of is not None:
            # A replay's key is new every time: the same replay run again after a crash picks up the row
            # the interrupted one left (claimed or archived), instead of leaving it unfinished for ever.
            row = ledger.unfinished_replay(self.conn, replay_of, taken.sha256)
        if row is not None and row.status not in ("claimed", "archived"):
            archive.discard(taken)
            message = f"already taken as file #{row.id} ({row.status}); nothing to do"
            journal.write(self.conn, journal.Entry("claim", "skipped", message, row.id))
            # A file refused as cut off is left in its source (daemon/loop.py) and seen again after a restart.
            cut_off = row.status == "quarantined" and ENDS_EARLY in (row.error or "")
            return FileOutcome(row.id, item.name, "skipped", row.plan, row.counts, message=message, ends_early=cut_off)
        with transaction(self.conn):
            if row is not None:
                # Interrupted before: forget what was staged and read the file again.
                state.discard_file(self.conn, row.id)
                outbox.discard_staged(self.conn, row.id)
                journal.write(self.conn, journal.Entry("claim", "ok", "resumed after an interrupted run", row.id))
            else:
                row = ledger.claim(self.conn, claim_key=claim_key, source=source, name=item.name,
                                   sha256=taken.sha256, size=taken.size, replay_of=replay_of)
                journal.write(self.conn, journal.Entry("claim", "ok", f"claimed {item.name} ({taken.size} bytes, "
                                                       f"sha256 {taken.sha256})", row.id))
        file_id = row.id
        with archive.locked(self.archive_dir) if self.archive_dir is not None else nullcontext():
            stored = archive.store(taken, self.archive_dir, basename) if self.archive_dir is not None else item.path
            faults.checkpoint("claimed")
            with transaction(self.conn):
                ledger.update(self.conn, file_id, status="archived", archive_path=str(stored))
                journal.write(self.conn, journal.Entry("archive", "ok", f"archived as {stored}", file_id))
        log.info("file.archived id=%d name=%r sha256=%s", file_id, item.name, taken.sha256)
        self._syncing = archive.Syncing(stored) if self.archive_dir is not None and not taken.durable else None
        try:
            if item.error is not None:
                problem = Problem(ERROR, item.name, item.error.line, item.error.path, item.error.message)
                return self._quarantine(file_id, item.name, stored, [problem], Header(file=item.name), {})
            return self._read(file_id, item.name, stored)
        finally:
            if self._syncing is not None:
                self._syncing.join()  # an exception left early: never leave the thread behind
                self._syncing = None

    def take_container(self, path: Path, name: str, members: list[str], *, source: str) -> int | None:
        """Archive a zip a source sent, beside its XML members (each taken on its own): its other
        entries (import_files/ pictures) are kept, and a zip without any XML leaves a trace instead of
        vanishing with its source. Its ledger row says 'unpacked'; replaying it replays its members.
        Returns the row's id (None in a dry run)."""
        if self.archive_dir is None:
            return None
        taken = archive.take(path, self.archive_dir)
        claim_key = _claim_key(source, taken.sha256)
        row = ledger.by_claim(self.conn, claim_key)
        if row is not None and row.status == "unpacked":
            archive.discard(taken)
            return row.id
        with archive.locked(self.archive_dir):
            stored = archive.store(taken, self.archive_dir, name.rsplit("/", 1)[-1])
            xml = ", ".join(members) if members else "no XML file: nothing in it to apply"
            with transaction(self.conn, durable=True):  # the source may be deleted once this returns
                if row is None:
                    row = ledger.claim(self.conn, claim_key=claim_key, source=source, name=name, sha256=taken.sha256,
                                       size=taken.size)
                ledger.update(self.conn, row.id, status="unpacked", archive_path=str(stored),
                              counts={"xml_files": len(members)})
                journal.write(self.conn, journal.Entry("archive", "ok" if members else "warning",
                                                       f"zip {name} ({taken.size} bytes) archived as {stored}; "
                                                       f"XML: {xml}", row.id))
        log.info("file.unpacked id=%d name=%r members=%d", row.id, name, len(members))
        return row.id

    def _archive_durable(self) -> None:
        """Before a file's outcome is committed (after which its source may be deleted), its archived
        copy must be on disk."""
        if self._syncing is not None:
            self._syncing.wait()

    def _read(self, file_id: int, name: str, path: Path) -> FileOutcome:
        size = path.stat().st_size

        def progress(position: int, records: int) -> None:
            if self.progress is not None:
                self.progress(name, position, size, records)

        names = Names(self.conn)
        plan = _plan()
        raw = RawSkip(self.conn, file_id, names, self.rules, plan)
        reader = FileReader(path, name, progress=progress if self.progress is not None else None, skip=raw)
        raw.header = reader.header
        self._raw = raw
        # While the file is proven sound on another core, its chunks are released as they are
        # staged, and delivery may start long before the reader reaches the end. The proof starts
        # with the first record that needs work: an unchanged re-export skips every record and has
        # nothing to release early, so it does not pay for a second parse (nor does a dry run).
        check: SoundnessCheck | None = None
        self._released_so_far = 0
        self._writer = None  # proven sound: chunks commit straight into the outbox and id map, from a thread
        chunk: list[Record] = []
        try:
            for record in reader.records():
                if names.learn(record):
                    continue
                chunk.append(record)
                if check is None and not self.dry_run:
                    check = SoundnessCheck(path).start()
                if len(chunk) >= (DIRECT_CHUNK if self._writer is not None else CHUNK):
                    if self._writer is None and check is not None and check.sound:
                        self._release(file_id, names)  # what was staged before the proof, first
                        self._writer = self._new_writer()
                    self._stage(file_id, chunk, reader.header, names, plan)
                    chunk = []
            self._await_writes()
            if self._writer is not None and not reader.has_errors:
                self._merge_direct(file_id)
        finally:
            if self._writer is not None:
                self._writer.close()
                self._writer = None
        released = self._released_so_far
        if reader.has_errors:
            outcome = self._quarantine(file_id, name, path, reader.problems, reader.header, reader.counts, released)
            outcome.ends_early = reader.ends_early
            return outcome
        if chunk:
            self._stage(file_id, chunk, reader.header, names, plan)
        raw.flush_seen()
        return self._commit(file_id, name, reader, names, plan, released)

    def _new_writer(self) -> ChunkWriter | None:
        """None for a database without a file: its chunks then go on being staged and released."""
        path = database_path(self.conn)
        return ChunkWriter(path) if path is not None else None

    def _look_here(self, query: Callable[[sqlite3.Connection], Any]) -> Any:
        return query(self.conn)

    def _merge_direct(self, file_id: int) -> None:
        """The fingerprints the writer staged go into records, once the file is read to its end."""
        def merge(conn: sqlite3.Connection) -> None:
            with transaction(conn):
                state.merge_staged(conn, file_id)
                forget_refused(conn, file_id)
        assert self._writer is not None
        self._writer.run(merge)

    def _await_writes(self) -> None:
        """The chunk in flight is committed: what it enqueued is released now."""
        if self._writer is not None:
            self._released(self._writer.wait())

    def _release(self, file_id: int, names: Names) -> None:
        """Make what is staged of a sound file deliverable now, with the fingerprints and names it implies.

        Should the process die before the file commits, the file is read again from the start; what
        was released is then unchanged and skipped, so the end state is that of an uninterrupted run.
        """
        with transaction(self.conn):
            state.put_dictionary(self.conn, names.flush())
            state.merge_staged(self.conn, file_id)
            released = outbox.release_staged(self.conn, file_id)
        self._released(released)

    def _released(self, count: int) -> None:
        """``count`` operations of the file being read became deliverable."""
        self._released_so_far += count
        if count:
            faults.checkpoint("released")
        self._notify(count)

    def _notify(self, count: int) -> None:
        if count and self.on_release is not None:
            self.on_release(count)

    def _stage(self, file_id: int, records: list[Record], header: Header, names: Names,
               plan: defaultdict[str, dict[str, int]]) -> None:
        """Map a chunk and stage what changed; once the file is proven sound (a writer exists), have
        the writer enqueue it at once, and stage its fingerprints in the writer's connection."""
        self._await_writes()  # every lookup below must see the chunk before
        direct = self._writer is not None
        # Where this file's staged fingerprints are: they are looked up on the same connection.
        look: Look = self._writer.run if self._writer is not None else self._look_here
        mapped: list[tuple[Record, mapping.Mapped]] = []
        failures: list[journal.Entry] = []
        for record in records:
            try:
                mapped.append((record, self._map(record, names)))
            except Exception as exc:  # one record's failure must not stop the file
                plan[record.kind]["failed"] += 1
                failures.append(journal.Entry("map", "error", f"could not map this {record.kind}: {exc!r}", file_id,
                                              record.kind, getattr(record, "id", None)))
                log.exception("map.failed file=%d record=%r", file_id, getattr(record, "id", None))
        # One round trip for the chunk's lookups (its products' needs, and the current fingerprint of
        # every intent), asked before the fingerprints are computed: on the writer's connection the
        # query runs while this thread hashes the payloads.
        needs = _product_needs(m for _, m in mapped)
        intents = [intent for _, m in mapped for intent in m.intents]

        def lookups(conn: sqlite3.Connection) -> tuple[set[str], dict[str, dict[str, str | None]]]:
            return state.known_products(conn, needs, file_id), _current_fingerprints(conn, intents, file_id)

        answer = self._writer.ask(lookups) if self._writer is not None else None
        fingerprints = _fingerprints(intents)
        known, current = answer.result() if answer is not None else lookups(self.conn)
        ready: list[Intent] = []
        waiting: list[tuple[str, str, dict[str, Any]]] = []
        waiting_entries: list[journal.Entry] = []
        for record, m in mapped:
            unmet = _unmet(m.needs, known)
            if unmet:
                assert isinstance(record, Offer)
                plan["offer"]["waiting"] += 1
                waiting.append((record.id, unmet[0], offer_to_json(record)))
                waiting_entries.append(journal.Entry("map", "waiting", f"waits for {unmet[0].replace(':', ' ')}, "
                                                     "which is not known yet", file_id, "offer", record.id))
                continue
            for intent in m.intents:
                if intent.entity in state.PRODUCT_ENTITIES:
                    known.add(intent.external_id)
            ready.extend(m.intents)
        ready, stale = self._drop_stale(ready, header, file_id, plan, look)
        to_stage = _changed(ready, current, fingerprints, plan)
        waiting_ids = {w[0] for w in waiting}
        failed_ids = {e.external_id for e in failures}
        raw_digests: list[tuple[Intent, str]] = []
        for record, _ in mapped:
            kind = "product" if isinstance(record, Product) else "offer" if isinstance(record, Offer) else None
            if kind and record.id not in waiting_ids and record.id not in failed_ids:
                digest = self._raw.digests.pop((kind, record.id), None)
                if digest is not None:
                    raw_digests.append((Intent(f"raw:{kind}", "", record.id, {}), digest))
        seen = []
        if header.is_full_catalog:
            seen = [r.id for r in records if isinstance(r, Product)]
        operations = _operations([intent for intent, _ in to_stage])
        entries = failures + waiting_entries + stale
        if direct:
            dictionary = names.flush()

            def write(conn: sqlite3.Connection) -> int:
                # The operations go out now; their fingerprints wait in the writer connection's staging
                # table (temporary: no WAL) until the file is read, and then go into records in key
                # order (_merge_direct). A crash before that reads the file again and sends those
                # operations again: idempotent upserts, the same end state.
                with transaction(conn):
                    state.put_dictionary(conn, dictionary)
                    state.stage(conn, file_id, to_stage + raw_digests)
                    enqueued = outbox.add(conn, file_id, operations, "pending")
                    state.wait(conn, file_id, waiting)
                    state.mark_seen(conn, file_id, seen)
                    journal.write_many(conn, entries)
                faults.checkpoint("staged")
                return enqueued

            assert self._writer is not None
            self._writer.submit(write)
            return
        with transaction(self.conn):
            state.stage(self.conn, file_id, to_stage + raw_digests)
            outbox.add(self.conn, file_id, operations, "staged")
            state.wait(self.conn, file_id, waiting)
            state.mark_seen(self.conn, file_id, seen)
            journal.write_many(self.conn, entries)
        faults.checkpoint("staged")

    def _drop_stale(self, intents: list[Intent], header: Header, file_id: int, plan: defaultdict[str, dict[str, int]],
                    look: Look) -> tuple[list[Intent], list[journal.Entry]]:
        """A document older than what the deal already shows must not overwrite it (GUIDE §2)."""
        deals = [i for i in intents if i.entity == "deal"]
        moment = _moment(header.generated_at)
        if not deals or moment is None:
            return intents, []
        known = look(lambda conn: state.fingerprints(conn, "facts:deal", [i.external_id for i in deals], file_id))
        keep, entries, newest = [], [], []
        for intent in intents:
            if intent.entity == "deal":
                seen = known.get(intent.external_id)
                if seen is not None and seen > moment:
                    plan["deal"]["stale"] = plan["deal"].get("stale", 0) + 1
                    entries.append(journal.Entry("map", "skipped", f"stale: this document was generated at {moment}, "
                                                 f"the deal already shows 1C's state of {seen}", file_id, "deal",
                                                 intent.external_id))
                    continue
                newest.append((Intent("facts:deal", "", intent.external_id, {}), moment))
            keep.append(intent)
        if newest:
            def stage_newest(conn: sqlite3.Connection) -> None:
                with transaction(conn):
                    state.stage(conn, file_id, newest)
            look(stage_newest)
        return keep, entries

    def _map(self, record: Record, names: Names) -> mapping.Mapped:
        if isinstance(record, Product):
            return mapping.product(record, names, self.rules)
        if isinstance(record, Offer):
            return mapping.offer(record, names, self.rules)
        if isinstance(record, Counterparty):
            return mapping.Mapped(intents=[mapping.counterparty(record, self.rules)])
        if isinstance(record, Document):
            return mapping.Mapped(intents=mapping.document(record, self.rules, self.config.statuses))
        raise TypeError(f"no mapping for {type(record).__name__}")

    def _changed(self, intents: list[Intent], plan: defaultdict[str, dict[str, int]]) -> list[tuple[Intent, str]]:
        """Keep the intents whose fingerprint differs from what records holds (outside a file being read)."""
        current = _current_fingerprints(self.conn, intents, None)
        return _changed(intents, current, _fingerprints(intents), plan)

    def _commit(self, file_id: int, name: str, reader: FileReader, names: Names,
                plan: defaultdict[str, dict[str, int]], released: int = 0) -> FileOutcome:
        header = reader.header
        catalog_id = header.catalog_id or ""
        self._archive_durable()
        with transaction(self.conn, durable=True):  # the source may be deleted once this returns
            state.put_dictionary(self.conn, names.flush())
            state.merge_staged(self.conn, file_id)
            forget_refused(self.conn, file_id)
            last = outbox.release_staged(self.conn, file_id)
            enqueued = released + last
            ledger.update(self.conn, file_id, status="committed", kind=header.kind, counts=reader.counts,
                          plan=dict(plan), catalog_id=catalog_id, full_catalog=header.is_full_catalog,
                          deactivation="pending" if header.is_full_catalog else None)
            journal.write_many(self.conn, [journal.Entry("validate", p.severity if p.severity != "skipped" else "skipped",
                                                         p.format(), file_id) for p in reader.problems])
            journal.write(self.conn, journal.Entry(
                "commit", "ok", f"read {sum(reader.counts.values())} record(s), {enqueued} operation(s) enqueued",
                file_id, detail={"kind": header.kind, "counts": reader.counts, "plan": dict(plan),
                                 "contains_only_changes": header.contains_only_changes}))
        log.info("file.committed id=%d name=%r operations=%d", file_id, name, enqueued)
        faults.checkpoint("committed")
        self._notify(last)
        self.release_waiting()
        return FileOutcome(file_id, name, "committed", dict(plan), reader.counts, reader.problems)

    def _quarantine(self, file_id: int, name: str, path: Path, problems: list[Problem], header: Header,
                    counts: dict[str, int], released: int = 0) -> FileOutcome:
        errors = [p for p in problems if p.severity == ERROR]
        reason = errors[0].format() if errors else "refused"
        if released:
            # Only when the file changed or could not be read after it was proven sound: say so loudly.
            reason += (f" (after {released} operation(s) of it had been released: the file parsed to its end"
                       " when it was first checked)")
        self._archive_durable()
        with transaction(self.conn, durable=True):  # the source may be deleted once this returns
            state.discard_file(self.conn, file_id)
            outbox.discard_staged(self.conn, file_id)
            if self.dry_run:
                report = None
            else:
                report = archive.quarantine(path, self.config.quarantine_path, file_id, name, problems, reason)
            ledger.update(self.conn, file_id, status="quarantined", kind=header.kind, counts=counts, error=reason)
            journal.write(self.conn, journal.Entry("quarantine", "error", f"refused: {reason}", file_id,
                                                   detail={"report": str(report) if report else None,
                                                           "errors": [p.format() for p in errors[:50]]}))
        log.error("file.quarantined id=%d name=%r reason=%r", file_id, name, reason)
        return FileOutcome(file_id, name, "quarantined", {}, counts, problems, message=reason)

    # -- offers that waited for their product -------------------------------------------
    def release_waiting(self) -> int:
        rows = state.waiting_rows(self.conn)
        if not rows:
            return 0
        names = Names(self.conn)
        offers = [(row_id, file_id, need, offer_from_json(record)) for row_id, file_id, _, need, record in rows]
        mapped = [(row_id, file_id, need, o, mapping.offer(o, names, self.rules)) for row_id, file_id, need, o in offers]
        known = state.known_products(self.conn, _product_needs(m for *_, m in mapped), None)
        released, still, entries = [], [], []
        intents_by_file: dict[int, list[Intent]] = defaultdict(list)
        for row_id, file_id, need, offer, m in mapped:
            unmet = _unmet(m.needs, known)
            if unmet:
                if unmet[0] != need:
                    still.append((unmet[0], row_id))
                continue
            released.append(row_id)
            for intent in m.intents:
                if intent.entity in state.PRODUCT_ENTITIES:
                    known.add(intent.external_id)
            intents_by_file[file_id].extend(m.intents)
            entries.append(journal.Entry("map", "ok", f"released: {need.replace(':', ' ')} is known now", file_id,
                                         "offer", offer.id))
        if not released and not still:
            return 0
        enqueued = 0
        with transaction(self.conn):
            for file_id, intents in intents_by_file.items():
                changed = self._changed(intents, _plan())
                enqueued += outbox.add(self.conn, file_id, _operations([i for i, _ in changed]), "pending")
                state.remember(self.conn, changed)
            state.unwait(self.conn, released)
            state.rewait(self.conn, still)
            journal.write_many(self.conn, entries)
        self._notify(enqueued)
        return len(released)


def _current_fingerprints(conn: sqlite3.Connection, intents: list[Intent],
                          file_id: int | None) -> dict[str, dict[str, str | None]]:
    """Per entity, the fingerprint each intent's record has now (staged in ``file_id`` wins)."""
    by_entity: dict[str, list[str]] = defaultdict(list)
    for intent in intents:
        by_entity[intent.entity].append(intent.external_id)
    return {entity: state.fingerprints(conn, entity, ids, file_id) for entity, ids in by_entity.items()}


def _changed(intents: list[Intent], current: dict[str, dict[str, str | None]], fingerprints: dict[int, str],
             plan: defaultdict[str, dict[str, int]]) -> list[tuple[Intent, str]]:
    """The intents whose fingerprint (by ``id()`` in ``fingerprints``) differs from ``current``'s.
    ``current`` then holds the new ones, so a record listed twice alike in one chunk is sent once."""
    changed: list[tuple[Intent, str]] = []
    for intent in intents:
        known = current.setdefault(intent.entity, {})
        old = known.get(intent.external_id, _MISSING)
        if intent.only_if_known and old is _MISSING:
            continue  # it concerns a record nothing was ever sent about: nothing to undo
        fp = fingerprints.get(id(intent)) or fingerprint(intent)
        if old == fp:
            plan[intent.entity]["unchanged"] += 1
            continue
        plan[intent.entity]["create" if old is _MISSING else "update"] += 1
        known[intent.external_id] = fp
        changed.append((intent, fp))
    return changed


def forget_refused(conn: sqlite3.Connection, file_id: int) -> None:
    """After a merge of the file's fingerprints: the CRM may have refused some of its operations (released
    early) before there was a fingerprint to forget. Forget them now, so the next export sends them again."""
    for entity, external_id in outbox.refused_of_file(conn, file_id):
        state.forget_fingerprint(conn, entity, external_id)


def _operations(intents: list[Intent]) -> list[Intent]:
    """What the outbox carries for ``intents``: an offer's prices and stock (each kept, fingerprinted and
    counted on its own) travel as one set_offer with the parts that changed."""
    result: list[Intent] = []
    last: Intent | None = None  # the set_offer being filled
    for intent in intents:
        if intent.entity not in state.PARTS["offer"]:
            result.append(intent)
            last = None
        elif last is not None and last.external_id == intent.external_id:
            last.payload.update(intent.payload)  # mapping sends the prices first, then the stock
        else:
            last = Intent("offer", SET_OFFER, intent.external_id, dict(intent.payload))  # a copy: the part keeps its own
            result.append(last)
    return result



def _moment(value: str | None) -> str | None:
    """ДатаФормирования as a sortable 'YYYY-MM-DDTHH:MM:SS' (1C writes date-only values too)."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00").replace(" ", "T"))
    except ValueError:
        return None
    if parsed.tzinfo is not None:
        # Stamps with an offset (МойСклад writes +03:00, others Z) are compared in one clock: the local
        # one, which is what 1C's stamps without an offset are in. Dropping the offset would order a
        # 12:00+03:00 file after a 10:00Z one, three hours later, and skip the newer as stale.
        parsed = parsed.astimezone()
    return parsed.replace(tzinfo=None).isoformat(timespec="seconds")


def _product_needs(mapped: Iterable[mapping.Mapped]) -> list[str]:
    """Every product id some record needs ("product:a|b" means a or b)."""
    return [alternative for m in mapped for need in m.needs if need.startswith("product:")
            for alternative in need.split(":", 1)[1].split("|")]


def _unmet(needs: list[str], known: set[str]) -> list[str]:
    """Needs not met yet; price types and warehouses only appear here when unknown."""
    return [n for n in needs
            if not (n.startswith("product:") and any(a in known for a in n.split(":", 1)[1].split("|")))]


def finish_files(conn: sqlite3.Connection) -> list[ledger.FileRow]:
    """Committed files whose operations are all delivered become applied (or partial)."""
    finished = []
    for row in ledger.all_files(conn):
        if row.status != "committed":
            continue
        open_ops = outbox.open_for_file(conn, row.id)
        if open_ops.get("pending") or open_ops.get("staged"):
            continue
        status = "partial" if open_ops.get("failed") else "applied"
        with transaction(conn):
            ledger.update(conn, row.id, status=status)
            message = (f"{open_ops.get('done', 0)} operation(s) delivered" +
                       (f", {open_ops['failed']} refused by the CRM" if open_ops.get("failed") else ""))
            journal.write(conn, journal.Entry("apply", "ok" if status == "applied" else "error", message, row.id))
        row.status = status
        finished.append(row)
    return finished
