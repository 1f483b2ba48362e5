"""The daemon while it delivers a big outbox: systemd's watchdog must keep hearing from it, and a
stop request must not wait for the whole outbox (a rate-limited CRM takes an hour for a big catalog)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

import exchange as x
from bridge import config as config_module
from bridge.crm.registry import open_adapter
from bridge.daemon.loop import Daemon, _SourceState, make_source
from bridge.daemon.notify import Notifier
from bridge.store import db, outbox
from bridge.sync.deliver import RECORD_AFTER
from test_daemon import write_config

N_PRODUCTS = 5000  # ten sandbox batches of 500
APPLY_SECONDS = 0.4  # a slow CRM: 4 s for the whole outbox


class SlowCrm:
    def __init__(self, inner: Any, on_apply: Any = None, events: list[str] | None = None) -> None:
        self.inner, self.on_apply, self.calls, self.events = inner, on_apply, 0, events

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def apply(self, ops: Any) -> Any:
        self.calls += 1
        if self.events is not None:
            self.events.append("apply")
        if self.on_apply is not None:
            self.on_apply()
        time.sleep(APPLY_SECONDS)
        return self.inner.apply(ops)


class RecordingNotifier(Notifier):
    """Records each chance the daemon gives the watchdog (Notifier.ping itself sends at most one
    WATCHDOG=1 per half interval, so the chances are what the daemon controls)."""

    def __init__(self, events: list[str] | None = None) -> None:
        super().__init__()
        self.events = events if events is not None else []

    def ping(self) -> None:
        self.events.append("ping")


@pytest.fixture
def daemon_parts(tmp_path: Path):  # type: ignore[no-untyped-def]
    cfg = write_config(tmp_path, min_age=0)
    x.write(tmp_path / "in", "import.xml",
            x.catalog([x.product(f"p{i}", f"Товар {i}") for i in range(N_PRODUCTS)], full=False))
    config = config_module.load(cfg)
    conn = db.connect(config.state_path)
    adapter = open_adapter(config)
    yield config, conn, adapter
    adapter.close()
    conn.close()


def _daemon(config: Any, conn: Any, adapter: Any, notifier: Notifier) -> Daemon:
    daemon = Daemon(config, conn, adapter, notifier=notifier)
    for settings in config.sources:
        daemon.sources.append(_SourceState(make_source(settings, config.path.resolve().parent)))
    return daemon


def test_the_watchdog_hears_from_the_daemon_while_it_delivers_a_big_outbox(daemon_parts) -> None:  # type: ignore[no-untyped-def]
    config, conn, adapter = daemon_parts
    events: list[str] = []
    slow = SlowCrm(adapter, events=events)
    daemon = _daemon(config, conn, slow, RecordingNotifier(events))
    report = daemon.cycle()
    assert report.delivered == N_PRODUCTS and slow.calls == N_PRODUCTS // 500
    # Delivery records its outcomes at least every RECORD_AFTER seconds, and each CRM batch here takes
    # APPLY_SECONDS: between two chances to ping there are at most that many batches, however slow
    # the machine (a slower one fits fewer batches in), never the whole outbox.
    most = int(RECORD_AFTER / APPLY_SECONDS) + 1
    runs = [len(run) for run in "".join("a" if e == "apply" else "|" for e in events).split("|")]
    assert max(runs) <= most, f"{max(runs)} CRM batches in a row without a watchdog ping: {events}"


def test_a_stop_request_during_delivery_leaves_the_rest_pending_for_the_next_start(daemon_parts) -> None:  # type: ignore[no-untyped-def]
    config, conn, adapter = daemon_parts
    holder: list[Daemon] = []

    def sigterm() -> None:  # what the first SIGTERM's handler does, arriving while the CRM works
        holder[0].shutdown.requested = True

    slow = SlowCrm(adapter, on_apply=sigterm)
    daemon = _daemon(config, conn, slow, RecordingNotifier())
    holder.append(daemon)
    daemon.cycle()
    assert slow.calls <= 3, f"{slow.calls} CRM batches sent after the stop request"
    assert outbox.depth(conn).get("pending", 0) > 0
    # The next start sends the rest.
    again = _daemon(config, conn, SlowCrm(adapter), RecordingNotifier())
    again.cycle()
    assert outbox.depth(conn).get("pending", 0) == 0


def test_a_listing_that_fails_unexpectedly_is_journaled_and_the_daemon_goes_on(daemon_parts) -> None:  # type: ignore[no-untyped-def]
    config, conn, adapter = daemon_parts
    daemon = _daemon(config, conn, adapter, RecordingNotifier())

    def broken() -> Any:
        raise UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")  # as paramiko's listing raised

    real = daemon.sources[0].source.scan
    daemon.sources[0].source.scan = broken  # type: ignore[method-assign]
    report = daemon.cycle()  # must not raise
    assert report.taken == 0
    said = [m for (m,) in conn.execute("SELECT message FROM journal WHERE step = 'source'")]
    assert len(said) == 1 and "could not list it" in said[0] and "UnicodeDecodeError" in said[0]
    daemon.sources[0].source.scan = real  # type: ignore[method-assign]
    daemon.sources[0].next_scan = 0.0
    assert daemon.cycle().taken == 1  # the source is read again once its listing works


def test_a_file_that_cannot_be_removed_is_not_fetched_again_and_goes_once_it_can(tmp_path: Path) -> None:
    (tmp_path / "done").write_text("a file where the done folder should be", encoding="utf-8")
    cfg = write_config(tmp_path, min_age=0, after="move", move_to=str(tmp_path / "done" / "sub"))
    x.write(tmp_path / "in", "import.xml", x.catalog([x.product("p1", "Дрель")], full=False))
    config = config_module.load(cfg)
    conn = db.connect(config.state_path)
    adapter = open_adapter(config)
    try:
        daemon = _daemon(config, conn, adapter, RecordingNotifier())
        source = daemon.sources[0].source
        fetched: list[str] = []
        real_fetch = source.fetch

        def counting_fetch(remote: Any, spool: Any) -> Any:
            fetched.append(remote.name)
            return real_fetch(remote, spool)

        source.fetch = counting_fetch  # type: ignore[method-assign]
        for _ in range(3):
            daemon.sources[0].next_scan = 0.0
            daemon.cycle()
        assert fetched == ["import.xml"]  # taken once; the scans after it only try the removal again
        assert (tmp_path / "in" / "import.xml").exists()
        (tmp_path / "done").unlink()  # the operator fixes the folder
        daemon.sources[0].next_scan = 0.0
        daemon.cycle()
        assert fetched == ["import.xml"] and not (tmp_path / "in" / "import.xml").exists()
        assert (tmp_path / "done" / "sub" / "import.xml").exists()
    finally:
        adapter.close()
        conn.close()
