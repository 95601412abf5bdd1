"""Live updates: wake the open screen-pops whose customer or number just changed.

The worker publishes topics ("phone:+14155550142", "customer:7") after each commit; each
open pop stream waits for a topic it shows. This only makes pops fast: a stream also looks
at the store every few seconds, so changes made by a worker in another process reach it too.

A web process under gevent holds thousands of streams, so the board is built for that:
- a publication wakes only the streams waiting for one of its topics, never all of them;
- the store checks on timeout are paced process-wide (POLLS_PER_S): a few dozen streams
  check every pop.poll_s as before, thousands take turns, so their checks take a bounded
  share of the CPU and webhooks are still answered first. A publication is never paced.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict, deque
from collections.abc import Iterable

KEEP = 1024  # publications remembered, so a stream that was busy rendering misses none
DEFAULT_STREAMS = 64
# Store checks (re-renderings not caused by a publication) per second and process: 64
# streams at the default pop.poll_s of 2 s need 32; each costs a few ms of CPU.
POLLS_PER_S = 40


class LiveUpdates:
    """A process-wide board of recent changes that pop streams wait on."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seq = 0
        self._recent: deque[tuple[int, frozenset[str]]] = deque(maxlen=KEEP)
        self._waiting: defaultdict[str, set[threading.Event]] = defaultdict(set)
        self._everyone: set[threading.Event] = set()
        self._next_poll = 0.0  # monotonic time of the next free store check
        self._ending = False
        self._streams = threading.BoundedSemaphore(DEFAULT_STREAMS)
        self._open = 0  # streams open now, for /metrics
        self._open_lock = threading.Lock()

    @property
    def open_streams(self) -> int:
        """Return how many streams (open screen-pops) this process holds now."""
        return self._open

    @property
    def ending(self) -> bool:
        """Tell whether the process is shutting down, so open streams should end now."""
        return self._ending

    def end_streams(self) -> None:
        """Wake every waiting stream for good, so each ends and its page reconnects elsewhere."""
        with self._lock:
            self._ending = True
            for waiter in self._everyone:
                waiter.set()

    def limit_streams(self, count: int) -> None:
        """Allow at most `count` open streams in this process."""
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
        with self._lock:
            return self._seq

    def publish(self, topics: Iterable[str]) -> None:
        """Tell every stream waiting for one of these topics that it changed."""
        names = frozenset(topics)
        with self._lock:
            self._seq += 1
            self._recent.append((self._seq, names))
            for name in names:
                for waiter in self._waiting.get(name, ()):
                    waiter.set()

    def wait(self, after: int, topics: set[str], timeout: float) -> tuple[int, bool]:
        """Wait until a publication after `after` names one of the topics, or the timeout.

        Past the timeout, wait on for this process's next turn to check the store (at once
        while few streams are open). Return the newest sequence number seen and whether a
        wanted topic changed.
        """
        waiter = threading.Event()
        with self._lock:
            if self._ending or self._published(after, topics):
                return self._seq, True
            for name in topics:
                self._waiting[name].add(waiter)
            self._everyone.add(waiter)
        try:
            changed = waiter.wait(timeout) or waiter.wait(self._poll_turn())
        finally:
            self._forget(waiter, topics)
        with self._lock:
            return self._seq, changed

    def _published(self, after: int, topics: set[str]) -> bool:
        """Tell whether a publication after `after` names one of the topics (lock held)."""
        for seq, names in reversed(self._recent):  # newest first
            if seq <= after:
                return False
            if names & topics:
                return True
        return False

    def _poll_turn(self) -> float:
        """Book the next free store check; return how long until it."""
        now = time.monotonic()
        with self._lock:
            turn = max(now, self._next_poll)
            self._next_poll = turn + 1 / POLLS_PER_S
        return turn - now

    def _forget(self, waiter: threading.Event, topics: set[str]) -> None:
        with self._lock:
            self._everyone.discard(waiter)
            for name in topics:
                waiting = self._waiting.get(name)
                if waiting is not None:
                    waiting.discard(waiter)
                    if not waiting:
                        del self._waiting[name]
