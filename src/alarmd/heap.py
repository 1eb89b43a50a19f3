"""The garbage collector, set for a long-running daemon."""

from __future__ import annotations

import gc


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
