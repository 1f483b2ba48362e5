"""Deliver the outbox from a second process while an ingest goes on reading.

Reading a file and delivering its operations both keep one core busy; done one
after the other, a large export takes the sum of the two. The pipeline releases
the operations of a file proven sound chunk by chunk (``Pipeline.on_release``),
and this helper process carries them to the CRM meanwhile, through the same
durable outbox and the same ``deliver`` as always: it only moves the moment of
delivery, never what is delivered or what is recorded about it.

A process, not a thread: both halves are Python, and one interpreter runs only
one of them at a time. The helper starts only once enough operations are
released to be worth its start-up, so small exchanges never see it. It dies
with the process it helps (a ``kill -9`` of the ingest must not leave it
writing behind the next run), and whatever it had not sent when it stopped or
died is still in the outbox, where the ingest's own delivery finds it.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import signal
from pathlib import Path
from typing import Any

from bridge import config as config_module
from bridge import faults
from bridge.crm.registry import open_adapter
from bridge.store import db
from bridge.sync.batch import fewer_collections
from bridge.sync.deliver import DeliveryStats, deliver

log = logging.getLogger(__name__)
START_AFTER = 2000  # operations released before a second process pays for its start-up (about half a second)
IDLE_WAIT = 0.1  # seconds between looks at an outbox that had nothing due
_PR_SET_PDEATHSIG = 1


class BackgroundDelivery:
    """Pass ``released`` as the pipeline's ``on_release``; call ``stop`` when reading is over."""

    def __init__(self, config_path: Path, *, start_after: int = START_AFTER) -> None:
        self.config_path = config_path
        self.start_after = start_after
        self.error: str | None = None  # why the helper stopped early, if it did
        self._released = 0
        self._failed_to_start = False
        self._process: Any = None
        self._stop: Any = None
        self._results: Any = None

    def released(self, count: int) -> None:
        self._released += count
        if self._process is None and not self._failed_to_start and self._released >= self.start_after:
            try:
                self._start()
            except OSError as exc:  # no process to be had (limits, memory): the ingest delivers it all itself
                self._failed_to_start = True
                self._process = None
                log.warning("deliver.background not started error=%r; delivering after reading instead", str(exc))

    def _start(self) -> None:
        # spawn, not fork: a forked child would inherit the open SQLite connections of this one.
        context = multiprocessing.get_context("spawn")
        # The stop request travels through a pipe, not a multiprocessing.Event: an Event's set() waits
        # for every process sleeping in its wait() to acknowledge, and a helper killed there (kill -9,
        # the OOM killer) never does, which left the ingest blocked in stop() for ever.
        stop_reader, self._stop = context.Pipe(duplex=False)
        self._results, sender = context.Pipe(duplex=False)
        self._process = context.Process(
            target=_deliver_until_stopped, name="bridge-delivery", daemon=True,
            args=(str(self.config_path), os.getpid(), logging.getLogger().getEffectiveLevel(), stop_reader, sender))
        self._process.start()
        sender.close()
        stop_reader.close()
        log.info("deliver.background started pid=%d after=%d", self._process.pid, self._released)

    def stop(self) -> DeliveryStats:
        """Let the helper send what is due now, then end it; what it delivered in all.

        Anything it left (it failed, or the CRM is unavailable) stays pending in the outbox.
        """
        stats = DeliveryStats()
        if self._process is None:
            return stats
        try:
            self._stop.send(True)
        except OSError:  # it is gone already: what it did not send is still pending
            pass
        self._stop.close()
        try:
            stats.sent, stats.failed, stats.retried, self.error = self._results.recv()
        except (EOFError, OSError):  # it died without a word: the outbox still holds what it did not send
            self.error = "the background delivery process ended unexpectedly"
        self._process.join()
        self._results.close()
        if self.error:
            log.warning("deliver.background stopped error=%r", self.error)
        self._process = None
        return stats


def _deliver_until_stopped(config_path: str, parent: int, log_level: int, stop: Any, report: Any) -> None:
    _die_with(parent)
    logging.basicConfig(level=log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    totals, error = DeliveryStats(), None
    try:
        config = config_module.load(Path(config_path))
        conn = db.connect(config.state_path)
        try:
            with fewer_collections(), open_adapter(config) as adapter:
                while True:
                    stopping = stop.poll()  # asked before this pass: the pass sends all that was due
                    stats = deliver(conn, adapter, patience=0.0)
                    totals.sent += stats.sent
                    totals.failed += stats.failed
                    totals.retried += stats.retried
                    if stopping:
                        break
                    if not stats.sent and not stats.failed:
                        stop.poll(IDLE_WAIT)
        finally:
            conn.close()
    except Exception as exc:  # reported to the parent, whose own delivery meets the same problem and says it
        log.exception("deliver.background failed")
        error = str(exc) or type(exc).__name__
    report.send((totals.sent, totals.failed, totals.retried, error))
    report.close()


def _die_with(parent: int) -> None:
    """End this process when ``parent`` ends, however it ends (Linux), and crash with it in tests."""
    faults.die_together_with(parent)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # it ended before the request above took hold
        os._exit(1)
