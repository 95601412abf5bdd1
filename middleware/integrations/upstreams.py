"""Upstream health shared by every process: pauses after 429s and 5xx, and the note budget.

A 429 paused only the item that got it: other items and other workers kept calling, and a
rate-limited helpdesk got 288 refused requests in a minute. Here each upstream has one row in
the store. A 429 (or the plugin's own rate-limit answer) blocks the upstream until its
`Retry-After`; a 5xx, a timeout or a refused connection blocks it with backoff that doubles
with each failure in a row (capped), so an outage gets a probe now and then, not a storm.
Every process reads the row before it calls (cached for CACHE_S), so a pause seen by one
worker holds the others within that time. Other upstreams keep going.

The note budget (notes per minute an upstream allows) is a ledger of slots: a write takes
its slot before it is sent, under the upstream's row lock, so two workers cannot both take
the last one.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import requests
from sqlalchemy import Connection, Engine, delete, func, insert, select, update
from sqlalchemy.exc import SQLAlchemyError
from urllib3.exceptions import NameResolutionError, NewConnectionError

from middleware.config import MAX_UPSTREAM_CONCURRENCY
from middleware.errors import NotApplied, RateLimited, UpstreamError, UpstreamPaused
from middleware.store.tables import dialect_insert, upstream_state, utcnow, write_slots

if TYPE_CHECKING:
    from middleware.integrations.network import UpstreamGuard

log = logging.getLogger(__name__)
CACHE_S = 0.5  # how stale a process's view of a pause may be
READ_WAIT_S = 5.0  # how long a call waits for another thread's first read of the state
FIRST_PAUSE_S = 1.0  # the pause after one 5xx or timeout; it doubles with each in a row
BUDGET_WINDOW_S = 60.0
OK_REFRESH_S = 60.0  # how often a run of good answers dates the last one in the store
NO_ANSWER = "error"  # the status counted for a call that got no answer (see /metrics)
UNAUTHORIZED = 401


def call_failed(title: str, exc: requests.RequestException) -> UpstreamError:
    """Say how a call that got no answer failed: NotApplied only when nothing was sent.

    A connection that was never made (refused, no route, TLS handshake failed, connect
    timeout) cannot have changed anything upstream. A read timeout or a dropped connection
    may have: the upstream can still apply the request after we stopped waiting. The words
    are an admin's ("the name … could not be found"), not the client library's repr.
    """
    why = why_no_answer(exc)
    if isinstance(exc, requests.ConnectTimeout | requests.exceptions.SSLError):
        return NotApplied(f"{title} unreachable: {why}")
    if isinstance(exc, requests.ConnectionError) and _never_connected(exc):
        return NotApplied(f"{title} unreachable: {why}")
    if isinstance(exc, requests.ReadTimeout):
        return UpstreamError(f"{title} did not answer in time: {why}")
    return UpstreamError(f"{title}: no answer: {why}")


def why_no_answer(exc: requests.RequestException) -> str:
    """Say in plain words why a request got no answer, naming the host it went to."""
    url = exc.request.url if exc.request is not None and exc.request.url else ""
    parts = urlsplit(str(url))
    host = parts.hostname or "the server"
    where = parts.netloc or host
    causes = list(_causes(exc))
    if any(isinstance(c, socket.gaierror | NameResolutionError) for c in causes):
        return f"the name {host} could not be found (check the URL, or this server's DNS)"
    if isinstance(exc, requests.exceptions.SSLError):
        reasons = [c for c in causes if isinstance(c, ssl.SSLError)]
        detail = reasons[-1].reason or reasons[-1].strerror if reasons else None
        return f"the TLS handshake with {where} failed ({detail or 'certificate or protocol'})"
    if any(isinstance(c, ConnectionRefusedError) for c in causes):
        return f"{where} refused the connection (nothing listens there)"
    if isinstance(exc, requests.ConnectTimeout):
        return f"no connection to {where} within the timeout"
    if isinstance(exc, requests.ReadTimeout):
        return f"{where} sent no answer within the timeout"
    if isinstance(exc, requests.ConnectionError):
        return f"the connection to {where} failed or was dropped"
    return f"the request to {where} failed ({type(exc).__name__})"


def keep_connections(session: requests.Session) -> None:
    """Keep open as many connections to the upstream as the worker may have calls in flight.

    requests keeps 10 a host: each call past them would open a connection of its own, and
    close it again with a warning in the log.
    """
    adapter = requests.adapters.HTTPAdapter(pool_maxsize=MAX_UPSTREAM_CONCURRENCY)
    session.mount("http://", adapter)
    session.mount("https://", adapter)


def send_observed(
    guard: UpstreamGuard,
    title: str,
    url: str,
    send: Callable[[], requests.Response],
    limited: Callable[[requests.Response], tuple[str, RateLimited] | None],
) -> requests.Response:
    """Send one upstream call through its guard, and let every process see how it went.

    Nothing is sent to a refused host or while the upstream is paused (UpstreamPaused). No
    answer or a 5xx counts as a failure in a row; a 401 (the credentials refused) is
    recorded as the upstream's latest answer without a pause; any other answer clears both.
    An answer that `limited` calls a rate limit, as (the pause's reason, the error to
    raise), pauses the upstream until the error's retry_after and raises the error.
    """
    # UpstreamRefused: a permanent failure of the call; UpstreamPaused: not sent, retry
    guard.check(url)
    try:
        response = send()
    except requests.RequestException as exc:
        guard.counted(NO_ANSWER)
        error = call_failed(title, exc)
        guard.failed(str(error))
        raise error from exc
    guard.counted(str(response.status_code))
    limit = limited(response)
    if limit is not None:
        reason, refusal = limit
        guard.rate_limited(refusal.retry_after, reason)
        raise refusal
    if response.status_code >= 500:
        guard.failed(f"{title} answered {response.status_code}")
    elif response.status_code == UNAUTHORIZED:
        guard.refused(f"{title} refused the credentials (answered {UNAUTHORIZED})")
    else:
        guard.answered()
    return response


def _never_connected(exc: BaseException) -> bool:
    return any(isinstance(c, NewConnectionError | ConnectionRefusedError) for c in _causes(exc))


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """Yield an exception and what caused it, down the chain (urllib3 keeps it in .reason)."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        yield cause
        reason = getattr(cause, "reason", None)
        if isinstance(reason, BaseException):
            cause = reason
            continue
        args = [a for a in getattr(cause, "args", ()) if isinstance(a, BaseException)]
        cause = args[0] if args else cause.__cause__ or cause.__context__


@dataclass(frozen=True)
class UpstreamStatus:
    """One upstream's health as the store has it."""

    target: str
    blocked_until: datetime | None
    failures: int
    reason: str | None
    last_error: str | None
    last_error_at: datetime | None
    last_ok_at: datetime | None

    def paused_for(self, now: datetime) -> float:
        """Return how many seconds the upstream stays paused (0 when it is not)."""
        if self.blocked_until is None:
            return 0.0
        return max(0.0, (self.blocked_until - now).total_seconds())

    @property
    def last_answer_failed(self) -> bool:
        """Tell whether the newest answer recorded is an error (no success since it).

        A rate limit's error is not one: it paused the upstream until after it was met.
        """
        if self.last_error_at is None:
            return False
        if self.blocked_until is not None and self.blocked_until >= self.last_error_at:
            return False
        return self.last_ok_at is None or self.last_ok_at < self.last_error_at

    @property
    def last_answer_at(self) -> datetime | None:
        """Return when the upstream last answered, well or not, as far as the store knows."""
        times = [t for t in (self.last_ok_at, self.last_error_at) if t is not None]
        return max(times) if times else None

    def state(self, now: datetime) -> str:
        """Return "paused", "failing" (not paused, failed last time), "refused" or "ok".

        "refused": the upstream answered, but with an error that no pause helps (a refused
        token, a failed connection test); nothing waits for it, and a success clears it.
        """
        if self.paused_for(now) > 0:
            return "paused"
        if self.failures:
            return "failing"
        return "refused" if self.last_answer_failed else "ok"


class UpstreamHealth:
    """Pause and resume upstreams for every process; keep the note budget's ledger."""

    def __init__(self, engine: Engine, pause_max_s: float = 60.0) -> None:
        self.engine = engine
        self.pause_max_s = pause_max_s
        self._seen: dict[str, tuple[float, UpstreamStatus | None]] = {}
        self._reading: dict[str, threading.Event] = {}  # the one read under way, per upstream
        # The changes this process made to all upstreams' state, and to each (see _forget).
        self._forgotten_all = 0
        self._forgotten: dict[str, int] = {}
        self._lock = threading.Lock()
        # The calls this process made, by (target, HTTP status or NO_ANSWER), for /metrics.
        self._calls: Counter[tuple[str, str]] = Counter()

    def count_call(self, target: str, status: str) -> None:
        """Count one call this process made to the upstream, by the status it got."""
        with self._lock:
            self._calls[target, status] += 1

    def call_counts(self) -> dict[tuple[str, str], int]:
        """Return the calls this process made, by (target, status)."""
        with self._lock:
            return dict(self._calls)

    # -- before and after each call -----------------------------------------------------
    def check(self, target: str, title: str) -> None:
        """Raise UpstreamPaused, sending nothing, while the upstream is paused."""
        status = self._cached(target)
        if status is None:
            return
        wait = status.paused_for(utcnow())
        if wait > 0:
            raise UpstreamPaused(wait, f"{title} paused ({status.reason})")

    def rate_limited(self, target: str, retry_after: float, detail: str) -> None:
        """Pause the upstream for every process until its Retry-After has passed."""
        now = utcnow()
        with self._best_effort(target), self.engine.begin() as conn:
            self._ensure_row(conn, target)
            self._pause(conn, target, now + timedelta(seconds=retry_after), detail, detail, now)
        self._forget(target)

    def failed(self, target: str, detail: str) -> float:
        """Count a 5xx, timeout or refused connection and pause with backoff; return the pause."""
        now = utcnow()
        pause = 0.0
        with self._best_effort(target), self.engine.begin() as conn:
            self._ensure_row(conn, target)
            failures = conn.execute(
                update(upstream_state)
                .where(upstream_state.c.target == target)
                .values(failures=upstream_state.c.failures + 1)
                .returning(upstream_state.c.failures)
            ).scalar_one()
            pause = min(self.pause_max_s, FIRST_PAUSE_S * 2 ** (failures - 1))
            reason = f"{detail}; {failures} in a row"
            self._pause(conn, target, now + timedelta(seconds=pause), reason, detail, now)
        self._forget(target)
        return pause

    @staticmethod
    def _pause(
        conn: Connection, target: str, until: datetime, reason: str, detail: str, now: datetime
    ) -> None:
        # A pause only ever grows: a short backoff must not cut a long Retry-After short.
        longest = func.max if conn.dialect.name == "sqlite" else func.greatest
        conn.execute(
            update(upstream_state)
            .where(upstream_state.c.target == target)
            .values(
                blocked_until=func.coalesce(longest(upstream_state.c.blocked_until, until), until),
                reason=reason,
                last_error=detail,
                last_error_at=now,
            )
        )

    def refused(self, target: str, detail: str) -> None:
        """Record an answer that refuses the call for good (a 401): shown, but no pause."""
        now = utcnow()
        with self._best_effort(target), self.engine.begin() as conn:
            self._ensure_row(conn, target)
            conn.execute(
                update(upstream_state)
                .where(upstream_state.c.target == target)
                .values(last_error=detail, last_error_at=now)
            )
        self._forget(target)

    def checked(self, target: str, error: str | None) -> None:
        """Record the outcome of a connection test: a success, or the error it met.

        A success clears a run of failures and dates the upstream's last good answer; an
        error becomes its latest answer, without a pause (an admin asked for this call).
        """
        if error is not None:
            self.refused(target, error)
            return
        self._answered_well(target)

    def succeeded(self, target: str) -> None:
        """Clear a run of failures once the upstream answers again, and date its last good
        answer (a write only after failures, or once a minute: the admin pages say "connected"
        from it)."""
        status = self._cached(target)
        stale = (
            status is None
            or status.last_ok_at is None
            or ((utcnow() - status.last_ok_at).total_seconds() >= OK_REFRESH_S)
        )
        if status is not None and not (status.failures or status.last_answer_failed or stale):
            return
        self._answered_well(target)

    def _answered_well(self, target: str) -> None:
        """Clear the upstream's failures in a row and date its last good answer now."""
        with self._best_effort(target), self.engine.begin() as conn:
            self._ensure_row(conn, target)
            conn.execute(
                update(upstream_state)
                .where(upstream_state.c.target == target)
                .values(failures=0, last_ok_at=utcnow())
            )
        self._forget(target)

    def paused_for(self, target: str) -> float:
        """Return how many seconds the upstream stays paused, as this process last saw it."""
        status = self._cached(target)
        return status.paused_for(utcnow()) if status is not None else 0.0

    def failing(self, target: str) -> bool:
        """Tell whether the upstream's last answers were failures, as this process last saw it."""
        status = self._cached(target)
        return status is not None and status.failures > 0

    def resume(self, target: str) -> None:
        """End a pause and forget the failures in a row (the upstream is known to be back)."""
        with self.engine.begin() as conn:
            conn.execute(
                update(upstream_state)
                .where(upstream_state.c.target == target)
                .values(blocked_until=None, failures=0)
            )
        self._forget(target)

    # -- the note budget -----------------------------------------------------------------
    def reserve_write(self, target: str, per_minute: int) -> float:
        """Take a slot of the note budget; return 0, or the seconds until one frees up.

        The upstream's row is locked first (an UPDATE), so two workers reserving at once
        queue on it and the count they read is the count they write against.
        """
        now = utcnow()
        since = now - timedelta(seconds=BUDGET_WINDOW_S)
        with self.engine.begin() as conn:
            self._ensure_row(conn, target)
            conn.execute(
                update(upstream_state)
                .where(upstream_state.c.target == target)
                .values(failures=upstream_state.c.failures)
            )
            conn.execute(delete(write_slots).where(write_slots.c.target == target,
                                                   write_slots.c.at < since))  # fmt: skip
            used, oldest = conn.execute(
                select(func.count(), func.min(write_slots.c.at)).where(
                    write_slots.c.target == target
                )
            ).one()
            if used >= per_minute:
                return max(0.5, (oldest - since).total_seconds())
            conn.execute(insert(write_slots).values(target=target, at=now))
        return 0.0

    # -- reading -----------------------------------------------------------------------------
    def status(self, target: str) -> UpstreamStatus | None:
        """Return the upstream's health as the store has it now."""
        with self.engine.connect() as conn:
            return _status_of(conn, target)

    def _cached(self, target: str) -> UpstreamStatus | None:
        """Return the upstream's state as last read, read again once it is CACHE_S old.

        One thread reads it; the others meanwhile go on with what was read last, or, with
        nothing read since the last change this process made, wait for a read that began
        after it: a hundred calls in flight that all found it stale at once would each take
        a store connection to read the same row.
        """
        deadline = time.monotonic() + READ_WAIT_S
        while True:
            now = time.monotonic()
            with self._lock:
                seen = self._seen.get(target)
                if seen is not None and now - seen[0] < CACHE_S:
                    return seen[1]
                reading = self._reading.get(target)
                if reading is None:  # this thread reads it
                    reading = self._reading[target] = threading.Event()
                    generation = self._generation_of(target)
                    break
            if seen is not None:
                return seen[1]
            if now >= deadline:  # the read under way is stuck: ask the store directly
                try:
                    return self._read_status(target)
                except SQLAlchemyError:
                    return None
            reading.wait(deadline - now)  # then a fresh state, or this thread reads
        try:
            status = self._read_status(target)
        except SQLAlchemyError:
            return seen[1] if seen else None
        else:
            with self._lock:
                if self._generation_of(target) == generation:  # nothing changed meanwhile
                    self._seen[target] = (now, status)
            return status
        finally:
            with self._lock:
                self._reading.pop(target, None)
            reading.set()

    def _read_status(self, target: str) -> UpstreamStatus | None:
        """Read the state from the store (None: it has none); a failure is logged, and raised."""
        try:
            return self.status(target)
        except SQLAlchemyError:
            log.warning("could not read the state of upstream %s", target)
            raise

    def _generation_of(self, target: str) -> tuple[int, int]:
        """Count the changes this process made to the upstream's state (lock held)."""
        return self._forgotten_all, self._forgotten.get(target, 0)

    @contextmanager
    def _best_effort(self, target: str) -> Iterator[None]:
        """Keep going when the store cannot record a pause: the call's own error still counts."""
        try:
            yield
        except SQLAlchemyError:
            log.warning("could not record the state of upstream %s", target)

    def _forget(self, target: str | None = None) -> None:
        with self._lock:
            # A read under way may have missed the change: what it reads is not kept.
            if target is None:
                self._forgotten_all += 1
                self._seen.clear()
            else:
                self._forgotten[target] = self._forgotten.get(target, 0) + 1
                self._seen.pop(target, None)

    @staticmethod
    def _ensure_row(conn: Connection, target: str) -> None:
        statement = dialect_insert(conn, upstream_state).values(target=target, failures=0)
        conn.execute(statement.on_conflict_do_nothing())


def _status_of(conn: Connection, target: str) -> UpstreamStatus | None:
    return stored_statuses(conn, target).get(target)


def stored_statuses(conn: Connection, target: str | None = None) -> dict[str, UpstreamStatus]:
    """Return the stored health of every upstream (or of one), by target."""
    query = select(upstream_state).order_by(upstream_state.c.target)
    if target is not None:
        query = query.where(upstream_state.c.target == target)
    return {row.target: UpstreamStatus(**row._asdict()) for row in conn.execute(query)}


def upstream_report(conn: Connection) -> dict[str, dict[str, Any]]:
    """Return each upstream's pause and latest failure, for /readyz and the overview."""
    now = utcnow()
    report: dict[str, dict[str, Any]] = {}
    for status in stored_statuses(conn).values():
        paused = status.paused_for(now)
        entry: dict[str, Any] = {"state": status.state(now), "failures_in_a_row": status.failures}
        if paused:
            entry["paused_for_s"] = round(paused, 1)
            entry["reason"] = status.reason
        if status.last_error_at is not None:
            entry["last_error"] = status.last_error
            entry["last_error_at"] = status.last_error_at.isoformat(timespec="seconds") + "Z"
        report[status.target] = entry
    return report
