"""Settings for a process that works through a whole export at once."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

# Reading a catalog allocates millions of short-lived objects (an element's strings, a record,
# its payload) and keeps few, none in reference cycles. With the default thresholds the
# collector ran 2,300 times over a 20k catalog and took 1.8 s of its 22 s; with these, 11 times
# and 0.5 s (measured with gc.callbacks). Garbage that does form cycles is still collected.
_THRESHOLDS = (100_000, 50, 1000)


@contextmanager
def fewer_collections() -> Iterator[None]:
    """Run the block with the cycle collector invoked rarely; restore the thresholds after it."""
    previous = gc.get_threshold()
    gc.set_threshold(*_THRESHOLDS)
    try:
        yield
    finally:
        gc.set_threshold(*previous)
