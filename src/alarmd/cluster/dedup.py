"""Event ids seen lately: a trap's second copy or a redelivered message is counted, not judged again."""

from __future__ import annotations

from collections import OrderedDict


class SeenIds:
    """Ids seen within ``window`` seconds, at most ``size`` of them (the oldest forgotten first)."""

    def __init__(self, window: float, size: int) -> None:
        self.window = window
        self.size = size
        self._seen: OrderedDict[str, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    def check(self, event_id: str, now: float) -> bool:
        """Remember ``event_id``; true if it was already seen within the window (a duplicate)."""
        seen = self._seen
        horizon = now - self.window
        while seen:
            oldest, at = next(iter(seen.items()))
            if at >= horizon and len(seen) < self.size:
                break
            del seen[oldest]
        if event_id in seen:
            return True
        seen[event_id] = now
        return False
