from __future__ import annotations

import gc
import weakref

from alarmd import heap


class Node:
    def __init__(self) -> None:
        self.me = self


def test_settle_freezes_what_start_up_built_and_later_garbage_is_still_collected() -> None:
    before = Node()
    try:
        frozen = heap.settle()
        assert frozen == gc.get_freeze_count() > 1000  # the interpreter and the imported modules at least
        tracked = {id(o) for o in gc.get_objects()}
        assert id(before) not in tracked, "a frozen object is not walked by collections any more"

        later = Node()
        gone = weakref.ref(later)
        assert id(later) in {id(o) for o in gc.get_objects()}
        del later
        gc.collect()
        assert gone() is None, "a cycle made after settle() is collected as usual"
    finally:
        gc.unfreeze()
