"""Log a failure that repeats on every request once per interval, with a count of the rest.

During a store outage every webhook is refused, and a line (with its traceback) per refusal
buried the log: 1,172 tracebacks in 10 s. The operator needs to know that it happens, why,
and how often, not each time: the first occurrence of a kind is logged at once, later ones
within the interval are only counted, and the next line after the interval tells how many
were left out.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from time import monotonic
from typing import Any

from sqlalchemy.exc import DBAPIError


@dataclass
class _Kind:
    """When a kind of failure was last logged, and how many of it went unlogged since."""

    logged_at: float
    left_out: int = 0


class ThrottledLog:
    """Log each kind of recurring failure at most once per interval, counting the others."""

    def __init__(self, logger: logging.Logger, interval_s: float = 10.0) -> None:
        self.logger = logger
        self.interval_s = interval_s
        self._kinds: dict[str, _Kind] = {}
        self._lock = threading.Lock()  # web threads report at the same time

    def log(
        self, level: int, kind: str, message: str, *args: Any, exc_info: bool = False,
        extra: Mapping[str, Any] | None = None,
    ) -> None:  # fmt: skip
        """Log message for kind unless one was logged within the interval; else count it.

        extra: the line's fields (see middleware/logs.py); a line after the interval also
        carries `left_out`, how many were not logged since the last one.
        """
        now = monotonic()
        with self._lock:
            last = self._kinds.get(kind)
            if last is not None and now - last.logged_at < self.interval_s:
                last.left_out += 1
                return
            self._kinds[kind] = _Kind(now)
        fields = dict(extra or {})
        if last is not None and last.left_out:
            message += " (%d more in the %.0f s since the last such line)"
            args += (last.left_out, now - last.logged_at)
            fields["left_out"] = last.left_out
        # stacklevel: the line names the caller, not this module.
        self.logger.log(level, message, *args, exc_info=exc_info, stacklevel=2, extra=fields)


def store_error(exc: BaseException) -> str:
    """Say why the store failed in one line: the driver's error and its first line.

    SQLAlchemy's own message adds the statement and its parameters (a customer's message,
    a delivery's headers), which must not reach the log.
    """
    cause = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    lines = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {lines[0] if lines else 'no message'}"
