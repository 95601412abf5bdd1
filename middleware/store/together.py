"""Group commit: calls that arrive while one is under way are run as one call.

Under load, many threads' small transactions (reads and writes of the shared lookup cache,
the settling of leased queue rows) then cost one round trip and one commit, not one each.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Together(Generic[T, R]):
    """Run calls that arrive while one is under way as one call, as a database's group commit
    does.

    The first caller runs at once; callers arriving meanwhile wait, and the first of them
    then runs one call for all of them. Nobody waits longer than for the call under way and
    its own; alone, a caller does not wait at all. `run` takes the items and returns one
    answer per item, in order.
    """

    def __init__(self, run: Callable[[list[T]], list[R]]) -> None:
        self._run = run
        self._lock = threading.Lock()
        self._waiting: list[_Turn[T, R]] = []
        self._busy = False

    def __call__(self, item: T) -> R:
        turn = _Turn[T, R](item)
        with self._lock:
            self._waiting.append(turn)
            leads, self._busy = not self._busy, True
        if not leads:
            turn.done.wait()
            if not turn.leads:  # another caller's call answered it
                return turn.result()
        with self._lock:
            batch, self._waiting = self._waiting, []
        try:
            answers = self._run([t.item for t in batch])
            for waiting, answer in zip(batch, answers, strict=True):
                waiting.answer = answer
        except BaseException as exc:  # each caller meets the failure, as if alone
            for waiting in batch:
                waiting.failure = exc
        finally:
            with self._lock:  # hand the next call to the first caller waiting, if any
                if self._waiting:
                    self._waiting[0].leads = True
                    self._waiting[0].done.set()
                else:
                    self._busy = False
            for waiting in batch:
                if waiting is not turn:
                    waiting.leads = False
                    waiting.done.set()
        return turn.result()


class _Turn(Generic[T, R]):
    """One caller's item, and what it gets back."""

    def __init__(self, item: T) -> None:
        self.item = item
        self.done = threading.Event()
        self.leads = False
        self.answer: R | None = None
        self.failure: BaseException | None = None

    def result(self) -> R:
        if self.failure is not None:
            raise self.failure
        return self.answer  # type: ignore[return-value]
