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
from test_daemon import write_config

N_PRODUCTS = 5000  # ten sandbox batches of 500
APPLY_SECONDS = 0.4  # a slow CRM: 4 s for the whole outbox


class SlowCrm:
    def __init__(self, inner: Any, on_apply: Any = None) -> None:
        self.inner, self.on_apply, self.calls = inner, on_apply, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def apply(self, ops: Any) -> Any:
        self.calls += 1
        if self.on_apply is not None:
            self.on_apply()
        time.sleep(APPLY_SECONDS)
        return self.inner.apply(ops)


class RecordingNotifier(Notifier):
    def __init__(self, watchdog_sec: float) -> None:
        super().__init__()
        self.watchdog_interval = watchdog_sec / 2  # as from WATCHDOG_USEC
        self.pings: list[float] = []

    def send(self, *lines: str) -> None:
        if "WATCHDOG=1" in lines:
            self.pings.append(time.monotonic())


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
    watchdog_sec = 2.0
    notifier = RecordingNotifier(watchdog_sec)
    slow = SlowCrm(adapter)
    daemon = _daemon(config, conn, slow, notifier)
    started = time.monotonic()
    notifier.ping()
    report = daemon.cycle()
    ended = time.monotonic()
    assert report.delivered == N_PRODUCTS and slow.calls == N_PRODUCTS // 500
    moments = [started, *notifier.pings, ended]
    gap = max(b - a for a, b in zip(moments, moments[1:]))
    assert gap < watchdog_sec, f"no watchdog ping for {gap:.1f} s (WatchdogSec={watchdog_sec}): systemd kills it"


def test_a_stop_request_during_delivery_leaves_the_rest_pending_for_the_next_start(daemon_parts) -> None:  # type: ignore[no-untyped-def]
    config, conn, adapter = daemon_parts
    holder: list[Daemon] = []

    def sigterm() -> None:  # what the first SIGTERM's handler does, arriving while the CRM works
        holder[0].shutdown.requested = True

    slow = SlowCrm(adapter, on_apply=sigterm)
    daemon = _daemon(config, conn, slow, RecordingNotifier(60))
    holder.append(daemon)
    daemon.cycle()
    assert slow.calls <= 3, f"{slow.calls} CRM batches sent after the stop request"
    assert outbox.depth(conn).get("pending", 0) > 0
    # The next start sends the rest.
    again = _daemon(config, conn, SlowCrm(adapter), RecordingNotifier(60))
    again.cycle()
    assert outbox.depth(conn).get("pending", 0) == 0
