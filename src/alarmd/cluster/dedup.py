"""Event ids seen lately: a trap's second copy or a redelivered message is counted, not judged again."""

from __future__ import annotations

from collections import OrderedDict


class SeenIds:
    """Ids seen within ``window`` seconds, at most ``size`` of them (the oldest forgotten first).

    Each id is remembered with the events partition it came from, so that a partition whose
    judging this instance drops (it left, was fenced, or is claimed afresh) has its ids
    forgotten too: fetched again, its events are judged again rather than taken for copies.
    """

    def __init__(self, window: float, size: int) -> None:
        self.window = window
        self.size = size
        self._seen: OrderedDict[str, tuple[float, int | None]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    def check(self, event_id: str, now: float, partition: int | None = None) -> bool:
        """Remember ``event_id`` (of ``partition``); true if it was seen within the window (a duplicate)."""
        seen = self._seen
        horizon = now - self.window
        while seen:
            oldest, (at, _) = next(iter(seen.items()))
            if at >= horizon and len(seen) < self.size:
                break
            del seen[oldest]
        if event_id in seen:
            return True
        seen[event_id] = (now, partition)
        return False

    def forget(self, partitions: set[int]) -> int:
        """Forget the ids seen in these partitions; how many."""
        gone = [i for i, (_, partition) in self._seen.items() if partition in partitions]
        for event_id in gone:
            del self._seen[event_id]
        return len(gone)
