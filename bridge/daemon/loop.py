"""The daemon's main loop: scan every source, take complete files in load order, deliver.

One cycle: each due source is scanned; its complete files go through the
pipeline one at a time in load order and are disposed of once committed (or
quarantined); then deactivations, the outbox and the ledger are settled.
Between cycles the loop sleeps until a source has news (inotify), a pending
file may have become complete, a rescan is due, or systemd's watchdog needs a
ping — so an idle daemon costs next to nothing.
"""

from __future__ import annotations

import logging
import shutil
import sqlite3
import threading
import time
from datetime import UTC, datetime, timedelta
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bridge.commerceml.files import expand_inputs, load_order_key
from bridge.config import Config
from bridge.crm.base import CrmAdapter
from bridge.daemon.notify import Notifier
from bridge.daemon.signals import Shutdown
from bridge.errors import BridgeError, TransientError, UserError
from bridge.secrets import credential_path
from bridge.store import journal, outbox, state
from bridge.store.clock import stamp
from bridge.store.db import transaction
from bridge.sync.deliver import deliver
from bridge.sync.batch import fewer_collections
from bridge.sync import archive, retention
from bridge.sync.pipeline import Pipeline, finish_files
from bridge.transport.base import RemoteFile, Source, SourceSettings

log = logging.getLogger(__name__)
MAX_SOURCE_BACKOFF = 300.0


def shown(name: str) -> str:
    """A source file's name as the ledger, the journal and the log carry it. A folder can hold names
    that are not UTF-8 (os.scandir gives them as surrogates, which SQLite cannot store) or that hold a
    newline or an escape sequence: those bytes are written as \\xNN and control characters escaped, so
    a name can neither fail to be stored nor forge a log line. The same name always reads the same."""
    text = name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def make_source(settings: SourceSettings, config_dir: Path) -> Source:
    if settings.kind == "folder":
        from bridge.transport.folder import FolderSource
        return FolderSource(settings)
    if settings.kind == "sftp":
        from bridge.transport.sftp import SftpSource
        options = dict(settings.options)
        options["key_file"] = str(credential_path(str(options["key_file"]), config_dir))
        settings.options = options
        return SftpSource(settings)
    raise UserError(f"source {settings.name}: unknown kind {settings.kind}")


@dataclass
class _SourceState:
    source: Source
    next_scan: float = 0.0
    failures: int = 0
    pending_until: float | None = None
    # Files refused as cut off and left in the source, by RemoteFile.identity: not taken again
    # while they stay the same; grown, they are a new file.
    kept: set[tuple[str, int, float]] = field(default_factory=set)
    # Files taken and settled whose removal from the source failed, by RemoteFile.identity: their
    # removal is tried again at each scan without fetching (downloading, hashing) them again.
    undisposed: set[tuple[str, int, float]] = field(default_factory=set)
    # A file of the last scan could not be read (refused to us): the package it belongs to is not
    # complete here, so no full export is decided meanwhile (its goods would look absent).
    unreadable: bool = False


@dataclass
class CycleReport:
    taken: int = 0
    quarantined: int = 0
    delivered: int = 0
    errors: list[str] = field(default_factory=list)


class Daemon:
    def __init__(self, config: Config, conn: sqlite3.Connection, adapter: CrmAdapter, *, once: bool = False,
                 notifier: Notifier | None = None) -> None:
        self.config = config
        self.conn = conn
        self.adapter = adapter
        self.once = once
        self.notifier = notifier or Notifier()
        self.wakeup = threading.Event()
        self.shutdown = Shutdown(self.wakeup)
        self.spool: Path = config.daemon.get("spool", config.state_path.parent / "spool")
        self.rescan = float(config.daemon.get("rescan", 30))
        self.patience = float(config.daemon.get("deliver_patience", 5))
        # Seconds a catalog's full export must be quiet before what it lacks is deactivated.
        self.deactivate_after = float(config.daemon.get("deactivate_after", 300))
        self.pipeline = Pipeline(conn, config, progress=self._progress)
        self.orders = _orders_flow(config, conn, adapter)
        self.sources: list[_SourceState] = []
        self.last_file = "none yet"
        self.next_prune = 0.0  # monotonic; retention runs at start and then once a day

    # -- lifecycle ----------------------------------------------------------------
    def run(self) -> int:
        self.shutdown.install()
        try:
            self.spool.mkdir(parents=True, exist_ok=True)
            self._sweep_spool()
            if archive.sweep_incoming(self.config.archive_path):
                log.info("archive.swept folder=%s", self.config.archive_path / ".incoming")
            for settings in self.config.sources:
                source = make_source(settings, self.config.path.resolve().parent)
                if not self.once:
                    source.watch(self.wakeup)
                self.sources.append(_SourceState(source))
            if not self.sources:
                log.warning("daemon.no_sources config=%s; only the outbox is delivered", self.config.path)
            self.notifier.ready(self._status())
            log.info("daemon.ready sources=%s", [s.source.name for s in self.sources])
            if self.once:
                self._once()
                return 0
            while True:
                self.cycle()
                if self.shutdown.requested:
                    break
                self._sleep()
                if self.shutdown.requested:
                    break
            return 0
        finally:
            self.notifier.stopping()
            for item in self.sources:
                item.source.close()
            self.shutdown.restore()
            log.info("daemon.stopped")

    def _once(self) -> None:
        """One cycle; files still settling (younger than min_age by our clock) are waited for,
        briefly: a file that keeps growing is left for the next run."""
        limit = time.monotonic() + max((s.min_age for s in self.config.sources), default=0) * 3 + 5
        self.cycle()
        while not self.shutdown.requested:
            pending = [item.pending_until for item in self.sources if item.pending_until is not None]
            if not pending or min(pending) > limit:
                break
            time.sleep(max(0.0, min(pending) - time.monotonic()) + 0.05)
            for item in self.sources:
                item.next_scan = 0.0
            self.cycle()

    def _sleep(self) -> None:
        now = time.monotonic()
        deadlines = [item.next_scan for item in self.sources]
        deadlines += [item.pending_until for item in self.sources if item.pending_until is not None]
        due = _next_outbox_due(self.conn)
        if due is not None:
            deadlines.append(now + due)
        timeout = max(0.05, min(deadlines, default=now + self.rescan) - now)
        if self.notifier.watchdog_interval is not None:
            timeout = min(timeout, self.notifier.watchdog_interval)
        self.wakeup.wait(timeout)
        if self.wakeup.is_set():
            self.wakeup.clear()
            if not self.shutdown.requested:
                # inotify news: rescan folders now (events are hints; the scan decides).
                for item in self.sources:
                    if item.failures == 0:
                        item.next_scan = min(item.next_scan, time.monotonic())
        self.notifier.ping()

    def _journal_once(self, entry: journal.Entry) -> None:
        """A failure that repeats every scan is journaled the first time only (the log has every one):
        not when the journal already has this message for this file or target (its external_id)."""
        try:
            with transaction(self.conn):
                if not journal.said(self.conn, entry):
                    journal.write(self.conn, entry)
        except sqlite3.Error as exc:  # a locked database must not turn a reported failure into a crash
            log.error("journal.write_failed error=%r", str(exc))

    def _sweep_spool(self) -> None:
        """Downloads and unpacked zips a killed daemon left behind: one process uses the spool at a
        time (the unit), and what was in it is taken again from its source."""
        for leftover in list(self.spool.glob(".sftp-*.part*")) + list(self.spool.glob(".bridge-zip-*")):
            if leftover.is_dir() and not leftover.is_symlink():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)
            log.info("spool.swept path=%s", leftover)

    # -- one cycle ------------------------------------------------------------------
    def cycle(self) -> CycleReport:
        with fewer_collections():  # a cycle may read a whole catalog (sync/batch.py)
            return self._cycle()

    def _settled_before(self) -> str | None:
        """Full exports received before this moment may be decided (``deactivate_after`` of quiet);
        while a source still holds a file being written, none. ``--once`` settles at its end, as
        ``bridge ingest`` does: its run is the whole export."""
        if self.once:
            return None
        if any(item.pending_until is not None or item.unreadable for item in self.sources):
            return ""  # earlier than any timestamp: nothing is settled yet
        return stamp(datetime.now(UTC) - timedelta(seconds=self.deactivate_after))

    def _cycle(self) -> CycleReport:
        report = CycleReport()
        for item in self.sources:
            if self.shutdown.requested:
                break
            now = time.monotonic()
            if item.next_scan > now and (item.pending_until is None or item.pending_until > now):
                continue
            self._scan_source(item, report)
        decisions = self.pipeline.finish(settled_before=self._settled_before())
        for decision in decisions:
            if not decision.applied:
                report.errors.append(decision.message)
                log.error("deactivate.refused %s", decision.message)
        if self.orders is not None and not self.shutdown.requested:
            flow, writer = self.orders
            try:
                flow.poll()
            except BridgeError as exc:  # the CRM is away: the cursor has not moved, nothing is lost
                report.errors.append(str(exc))
                log.error("orders.poll_failed error=%r", str(exc))
            try:
                writer.deliver()
            except BridgeError as exc:  # the order target refused us (SFTP auth, host key): its ops stay pending
                report.errors.append(str(exc))
                log.error("orders.write_failed error=%r", str(exc))
                self._journal_once(journal.Entry("orders", "error", f"writing orders for 1C: {exc}", entity="target",
                                                 external_id="outgoing"))
        try:
            stats = deliver(self.conn, self.adapter, patience=0 if self.shutdown.requested else self.patience,
                            stop=lambda: self.shutdown.requested, progress=self.notifier.ping)
            report.delivered = stats.sent
        except BridgeError as exc:  # bad credentials and the like: keep running, keep the outbox
            report.errors.append(str(exc))
            log.error("deliver.failed error=%r", str(exc))
        finish_files(self.conn)
        self._prune(report)
        self.notifier.status(self._status())
        self.notifier.ping()
        return report

    def _prune(self, report: CycleReport) -> None:
        """Retention ([archive]/[state] keep_days), once a day; off when both are 0."""
        if self.shutdown.requested or time.monotonic() < self.next_prune:
            return
        self.next_prune = time.monotonic() + retention.DAILY
        limits = retention.cutoffs(self.config)
        if not limits.active:
            return
        try:
            retention.prune(self.conn, self.config.archive_path, limits)
        except (sqlite3.Error, OSError) as exc:  # a locked database, a read-only archive: tried again tomorrow
            report.errors.append(f"retention: {exc}")
            log.error("retention.failed error=%r", str(exc))

    def _scan_source(self, item: _SourceState, report: CycleReport) -> None:
        source = item.source
        try:
            files, pending = source.scan()
        except Exception as exc:  # noqa: BLE001 - a listing nobody foresaw must not stop the daemon
            expected = isinstance(exc, (TransientError, UserError))
            if not expected:
                log.exception("source.scan_crashed source=%s", source.name)
            item.failures += 1
            delay = min(source.settings.interval * (2 ** (item.failures - 1)), MAX_SOURCE_BACKOFF)
            item.next_scan = time.monotonic() + delay
            log.error("source.unavailable source=%s error=%r retry_in=%.0fs", source.name, str(exc), delay)
            if item.failures == 1:
                said = str(exc) if expected else f"could not list it: {exc!r} (a bug: please report it with this entry)"
                with transaction(self.conn):
                    journal.write(self.conn, journal.Entry("source", "error", f"source {source.name}: {said}"))
            return
        if item.failures:
            log.info("source.back source=%s", source.name)
        item.failures = 0
        item.next_scan = time.monotonic() + min(source.settings.interval, self.rescan)
        item.pending_until = time.monotonic() + pending if pending is not None else None
        refused = False  # the previous file was refused (a UserError): a second one means the source refuses us
        item.unreadable = False
        for remote in sorted(files, key=lambda f: load_order_key(Path(f.name))):
            if self.shutdown.requested:
                return
            if remote.identity in item.kept:
                continue
            if remote.identity in item.undisposed:
                self._dispose_again(item, remote)
                continue
            name = shown(remote.name)
            label = f"{source.name}:{name}"  # what the ledger and the journal call it
            try:
                self._take(item, remote, label, report)
                refused = False
            except _NotDisposed as exc:  # taken and settled; only its removal failed: go on with the rest
                item.undisposed.add(remote.identity)
                report.errors.append(str(exc))
                log.error("source.dispose_failed source=%s file=%s error=%r", source.name, name, str(exc))
                self._journal_file(label, "error", str(exc))
            except Exception as exc:  # noqa: BLE001 - a file nobody foresaw must not stop the daemon
                if not isinstance(exc, (BridgeError, OSError)):
                    log.exception("source.take_crashed source=%s file=%s", source.name, name)
                    self._journal_file(label, "error", f"{source.name}: could not take {name}: {exc!r}; it stays "
                                       "in the source and is tried again (a bug: please report it with this entry)")
                # The source dropped mid-file (or refused us): nothing of the file was committed
                # unless the ledger says so; it is taken again at the next scan.
                log.error("source.fetch_failed source=%s file=%s error=%r", source.name, name, str(exc))
                if isinstance(exc, UserError) and not refused:
                    # This file refuses us (no read permission, say): it stays, said once in the journal,
                    # and must not hold back the files after it, which are tried now. Two refusals in a
                    # row are the source itself (a host key or login refused mid-cycle): stop there.
                    refused = item.unreadable = True
                    self._journal_file(label, "error", f"{source.name}: could not take {name}: {exc}; it stays "
                                       "in the source and is tried again at every scan")
                    continue
                item.failures += isinstance(exc, UserError)
                item.next_scan = time.monotonic() + min(source.settings.interval, 5.0)
                return

    def _dispose_again(self, item: _SourceState, remote: RemoteFile) -> None:
        """A file taken before whose removal failed (journaled then): try the removal alone."""
        source, name = item.source, shown(remote.name)
        try:
            source.dispose(remote)
        except (BridgeError, OSError) as exc:
            log.debug("source.dispose_failed_again source=%s file=%s error=%r", source.name, name, str(exc))
            return
        item.undisposed.discard(remote.identity)
        log.info("source.disposed source=%s file=%s (after an earlier failure)", source.name, name)

    def _journal_file(self, label: str, status: str, message: str) -> None:
        """Something about one source file, said once (the log has every time it happens)."""
        self._journal_once(journal.Entry("source", status, message, entity="source_file", external_id=label))

    def _take(self, item: _SourceState, remote: RemoteFile, label: str, report: CycleReport) -> None:
        source = item.source
        self.last_file = label
        self.notifier.status(self._status(f"reading {label}"))
        zipped = Path(remote.name).suffix.lower() == ".zip"
        with source.fetch(remote, self.spool) as local:
            finished, cut_off = True, False
            with expand_inputs([local], unpack_in=self.spool) as items:
                members = [shown(i.name.rsplit("!", 1)[1]) for i in items if "!" in i.name]
                if zipped and len(members) == len(items):  # else: refused whole
                    self.pipeline.take_container(local, label, members, source=source.name)
                for entry in items:
                    name = f"{label}!{shown(entry.name.rsplit('!', 1)[1])}" if "!" in entry.name else label
                    entry.name = name
                    outcome = self.pipeline.ingest_file(entry, source=source.name)
                    report.taken += 1
                    report.quarantined += outcome.status == "quarantined"
                    finished = finished and outcome.status in ("committed", "skipped", "quarantined")
                    cut_off = cut_off or outcome.ends_early
                    log.info("file.%s source=%s name=%s id=%s", outcome.status, source.name, name, outcome.file_id)
        if cut_off and not zipped:
            # It may be 1C pausing mid-export for longer than min_age: deleting it now would send the
            # rest of the export into an unlinked file. It stays; once it grows it is a new file.
            item.kept.add(remote.identity)
            self._journal_file(label, "warning", f"{label} ends too early and stays in its source in case 1C is "
                               "still writing it; a longer version is taken as a new file")
            return
        if finished:
            try:
                source.dispose(remote)
            except (BridgeError, OSError) as exc:
                raise _NotDisposed(f"{label} was taken, but could not be removed from its source: {exc}; "
                                   "it is skipped as already taken until it is removed") from exc

    # -- reporting --------------------------------------------------------------------
    def _progress(self, name: str, position: int, size: int, records: int) -> None:
        self.notifier.ping()  # a long file must not look like a hung daemon

    def _status(self, doing: str | None = None) -> str:
        depth = outbox.depth(self.conn).get("pending", 0)
        waiting = state.waiting_count(self.conn)
        head = doing or f"idle; last file {self.last_file}"
        return f"{head}; outbox {depth} pending; {waiting} offers waiting"


def _orders_flow(config: Config, conn: sqlite3.Connection, adapter: CrmAdapter) -> tuple[Any, Any] | None:
    """The CRM -> 1C half, when [orders] and [outgoing] are configured."""
    if config.orders is None:
        return None
    from bridge.commerceml.render import Renderer
    from bridge.sync.orders import OrdersFlow, OrderWriter, order_settings
    from bridge.transport.outgoing import open_target
    settings = config.orders
    flow = OrdersFlow(conn, adapter, order_settings(config), file_name=settings.file_name)
    writer = OrderWriter(conn, Renderer(settings.template_dir), open_target(settings, config.path.resolve().parent),
                         settings.profile, settings.encoding)
    return flow, writer


def _next_outbox_due(conn: sqlite3.Connection) -> float | None:
    row = conn.execute("SELECT MIN(next_attempt_at) FROM outbox WHERE status = 'pending'").fetchone()
    if row is None or row[0] is None:
        return None
    return max(0.0, row[0] - time.time())


class _NotDisposed(Exception):
    """A file was taken and settled, but its source could not be deleted or moved."""
