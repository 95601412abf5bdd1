"""Live updates: wake the open screen-pops whose customer or number just changed.

The worker publishes topics ("phone:+14155550142", "customer:7") after each commit; each
open pop stream waits for a topic it shows. This only makes pops fast: a stream also looks
at the store every few seconds, so changes made by a worker in another process reach it too.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable

KEEP = 1024  # publications remembered, so a stream that was busy rendering misses none
DEFAULT_STREAMS = 64


class LiveUpdates:
    """A process-wide board of recent changes that pop streams wait on."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._seq = 0
        self._recent: deque[tuple[int, frozenset[str]]] = deque(maxlen=KEEP)
        self._streams = threading.BoundedSemaphore(DEFAULT_STREAMS)
        self._open = 0  # streams open now, for /metrics
        self._open_lock = threading.Lock()

    @property
    def open_streams(self) -> int:
        """Return how many streams (open screen-pops) this process holds now."""
        return self._open

    def limit_streams(self, count: int) -> None:
        """Allow at most `count` open streams (each holds a web server thread)."""
        self._streams = threading.BoundedSemaphore(max(1, count))

    def open_stream(self) -> bool:
        """Take a stream slot; False when every slot is taken."""
        if not self._streams.acquire(blocking=False):
            return False
        with self._open_lock:
            self._open += 1
        return True

    def close_stream(self) -> None:
        """Give a stream slot back."""
        with self._open_lock:
            self._open -= 1
        self._streams.release()

    @property
    def seq(self) -> int:
        """Return the number of the newest publication."""
        with self._changed:
            return self._seq

    def publish(self, topics: Iterable[str]) -> None:
        """Tell every waiting stream that these topics changed."""
        with self._changed:
            self._seq += 1
            self._recent.append((self._seq, frozenset(topics)))
            self._changed.notify_all()

    def wait(self, after: int, topics: set[str], timeout: float) -> tuple[int, bool]:
        """Wait until a publication after `after` names one of the topics, or the timeout.

        Return the newest sequence number seen and whether a wanted topic changed.
        """

        def hit() -> bool:
            for seq, names in reversed(self._recent):  # newest first
                if seq <= after:
                    return False
                if names & topics:
                    return True
            return False

        with self._changed:
            changed = self._changed.wait_for(hit, timeout)
            return self._seq, changed
