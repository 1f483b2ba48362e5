"""Crash points for the crash-safety tests.

``BRIDGE_CRASH_AT=<point>[:<n>]`` makes the process kill itself with SIGKILL
the n-th time (default first) it passes ``point``: the same abrupt end as a
power cut or ``kill -9``, at a moment the test chooses. Unset (always, in
production) it costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal

_passes: dict[str, int] = {}
# A helper process (the background delivery of an ingest) crashes with the process it helps:
# a power cut ends both, and the test watching the main process must see it die.
_also_kill: list[int] = []


def die_together_with(pid: int) -> None:
    _also_kill.append(pid)


def checkpoint(point: str) -> None:
    wanted = os.environ.get("BRIDGE_CRASH_AT")
    if not wanted:
        return
    name, _, count = wanted.partition(":")
    if name != point:
        return
    _passes[point] = _passes.get(point, 0) + 1
    if _passes[point] >= int(count or 1):
        for pid in _also_kill:
            os.kill(pid, signal.SIGKILL)
        os.kill(os.getpid(), signal.SIGKILL)
