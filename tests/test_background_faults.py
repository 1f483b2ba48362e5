"""The background delivery process of an ingest killed on its own: the ingest must notice and go on."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

from bridge.store import db
from bridge.sync.background import BackgroundDelivery
from test_sync import write_config


def test_stop_returns_when_the_delivery_process_was_killed_while_idle(tmp_path: Path) -> None:
    """The helper spends its idle time waiting for the stop request; a kill -9 there (the OOM killer,
    an operator) must not leave the ingest blocked for ever in stop()."""
    cfg = write_config(tmp_path)
    (tmp_path / "var").mkdir()
    db.connect(tmp_path / "var" / "bridge.db").close()
    background = BackgroundDelivery(cfg, start_after=1)
    background.released(1)
    process = background._process
    assert process is not None
    time.sleep(3)  # started, connected, idle: nothing is due
    assert process.is_alive()
    os.kill(process.pid, signal.SIGKILL)
    process.join(10)
    stopper = threading.Thread(target=background.stop, daemon=True)
    stopper.start()
    stopper.join(20)
    assert not stopper.is_alive(), "stop() hangs after the delivery process was killed"
    assert background.error == "the background delivery process ended unexpectedly"
