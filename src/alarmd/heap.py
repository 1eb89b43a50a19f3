"""The garbage collector, set for a long-running daemon."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


def settle() -> int:
    """Put every object alive after start-up out of the cyclic collector's reach; the count moved.

    What start-up builds (modules, pysnmp's MIB objects, configuration, inventory, compiled rules)
    lives as long as the process.  Left in the collector's generations, every full collection walks
    all of it again, which stalls the event loop for tens of milliseconds in the middle of a trap
    burst.  Objects made later are collected as usual.
    """
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


@contextlib.contextmanager
def paused() -> Iterator[None]:
    """No cyclic collection inside: a reload builds a whole inventory of objects that all survive.

    Left on, the collector would run many times during the build, each full pass walking the
    daemon's heap (every poller and series) for objects that are garbage-free anyway.
    """
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()
