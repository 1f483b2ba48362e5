"""The client side of Bitrix24's leaky bucket.

The portal counts requests in a bucket that drains ``rate`` per second and
refuses (503 QUERY_LIMIT_EXCEEDED) any request that finds it full (``burst``).
Keeping the same count here lets the adapter send the first ``burst``
requests at once and then exactly ``rate`` per second, instead of being
refused and backing off: refusals cost time and, at scale, get a webhook
blocked.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

# Requests arrive at the portal a little later than they leave, unevenly: kept this far
# below the portal's limit, jitter of up to MARGIN/rate seconds is never seen as a burst.
MARGIN = 0.5


class LeakyBucket:
    def __init__(self, rate: float, burst: int, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = rate
        self.capacity = max(burst - MARGIN, 1.0)
        self._clock = clock
        self._sleep = sleep
        self._level = 0.0
        self._at = clock()
        self._lock = threading.Lock()

    def _drain(self, now: float) -> None:
        self._level = max(0.0, self._level - (now - self._at) * self.rate)
        self._at = now

    def acquire(self) -> float:
        """Wait until one more request fits, count it, and return the seconds waited."""
        waited = 0.0
        with self._lock:
            while True:
                now = self._clock()
                self._drain(now)
                excess = self._level + 1.0 - self.capacity
                if excess <= 0:
                    self._level += 1.0
                    return waited
                pause = excess / self.rate
                self._sleep(pause)
                waited += pause

    def saturate(self) -> None:
        """The portal says the bucket is full (someone else shares it): count it as full from now."""
        with self._lock:
            self._drain(self._clock())
            self._level = self.capacity
