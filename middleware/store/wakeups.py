"""Wake every process that shares the store: work arrived, or what a screen-pop shows changed.

In one process an event does it: a stored webhook wakes the embedded worker, and a worker's
commit wakes the open pops (see middleware/reads/live.py). Processes that share PostgreSQL
learn of each other's changes through it, with `NOTIFY` (sent in a statement of its own,
after the change committed) and `LISTEN` (one connection per process, in a thread of its
own): a worker wakes within milliseconds of a webhook stored by a web process, and a pop in
one web process within milliseconds of a worker's commit in another. Polling stays only as
the safety net: a notification that is lost (the listener reconnecting, PostgreSQL
restarting) is made up for by the worker's next poll and the pop's next look at the store.
SQLite has one writer process and needs none of it: there, these calls do nothing.

One channel per schema carries both kinds, so that installations sharing a database in
schemas of their own (as the tests do) never wake each other. A payload is the kind, then
the sending process's id (a process ignores its own: it has already woken itself), then the
topics:

    work <origin>
    topics <origin> phone:+14155550142 customer:7
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import threading
from collections.abc import Callable, Iterable, Iterator

from psycopg import sql
from sqlalchemy import Connection, Engine, func, select, text
from sqlalchemy.exc import SQLAlchemyError

from middleware.throttled_log import ThrottledLog, store_error

log = logging.getLogger(__name__)
WORK = "work"
TOPICS = "topics"
# PostgreSQL refuses a payload of 8,000 bytes or more; topics past this go in several.
MAX_PAYLOAD = 7_000
MAX_CHANNEL = 63  # PostgreSQL's identifier length
LISTEN_SLICE_S = 1.0  # how often the listener looks whether it is asked to stop
RECONNECT_MAX_S = 30.0
# Every payload of a commit in one statement, built once: one round trip however many.
_NOTIFY = text("SELECT count(pg_notify(:channel, p)) FROM unnest(CAST(:payloads AS text[])) AS p")


def channel_for(schema: str) -> str:
    """Return the channel of one schema's installation (the default schema: "carryover")."""
    if schema == "public":
        return "carryover"
    name = f"carryover_{schema}"
    if len(name) <= MAX_CHANNEL:
        return name
    return f"carryover_{hashlib.sha256(schema.encode()).hexdigest()[:32]}"


def payloads(origin: str, topics: Iterable[str]) -> Iterator[str]:
    """Yield the payloads that carry these topics (several when they are too many for one)."""
    head = f"{TOPICS} {origin}"
    payload = head
    for topic in sorted(set(topics)):
        if len(payload) + 1 + len(topic.encode()) > MAX_PAYLOAD and payload != head:
            yield payload
            payload = head
        payload += " " + topic
    if payload != head:
        yield payload


class Wakeups:
    """Send and receive the wake-ups of the processes that share one PostgreSQL store.

    on_work and on_topics are called from the listener's thread when another process stored
    work or changed topics (and on_work also after each (re)connection, since notifications
    sent while the listener was away are lost).
    """

    def __init__(
        self,
        engine: Engine,
        on_work: Callable[[], None],
        on_topics: Callable[[frozenset[str]], None],
    ) -> None:
        self.engine = engine
        self.enabled = engine.dialect.name == "postgresql"
        self.on_work = on_work
        self.on_topics = on_topics
        self.origin = secrets.token_hex(6)  # this process (its own notifications are skipped)
        self.received = 0  # notifications from other processes, for tests and metrics
        self.faults = ThrottledLog(log)
        self._channel: str | None = None
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._listening = threading.Event()

    # -- sending ---------------------------------------------------------------------------
    # PostgreSQL sends a notification only when its transaction commits: sent in the
    # transaction that makes the change (the *_in methods), it never arrives before the
    # change is there to find, and costs no commit of its own.
    def work(self) -> None:
        """Tell the other processes that work is waiting (a replay, say)."""
        self._in_own_transaction(self.work_in)

    def work_in(self, conn: Connection) -> None:
        """Tell the other processes, at the commit of conn's transaction, that work is waiting."""
        if self.enabled:
            self._send(conn, [f"{WORK} {self.origin}"])

    def topics(self, topics: Iterable[str]) -> None:
        """Tell the other processes' open pops that these topics changed."""
        self._in_own_transaction(lambda conn: self.topics_in(conn, topics))

    def topics_in(self, conn: Connection, topics: Iterable[str]) -> None:
        """Tell the other processes' open pops, at conn's commit, that these topics changed."""
        if self.enabled:
            self._send(conn, list(payloads(self.origin, topics)))

    def _send(self, conn: Connection, sent: list[str]) -> None:
        if sent:
            channel = self._channel or self._find_channel(conn)
            conn.execute(_NOTIFY, {"channel": channel, "payloads": sent})

    def _in_own_transaction(self, send: Callable[[Connection], None]) -> None:
        """Send in a transaction of its own; a failure is logged, never raised.

        The change is committed already: a wake-up that fails costs only speed, since the
        others find the change when they next poll.
        """
        if not self.enabled:
            return
        try:
            with self.engine.begin() as conn:
                send(conn)
        except SQLAlchemyError as exc:
            self.faults.log(logging.WARNING, "notify", "could not wake the other processes "
                            "(they find the change when they next poll): %s",
                            store_error(exc))  # fmt: skip

    @property
    def channel(self) -> str | None:
        """Return the channel this installation uses, once known (None before first use)."""
        return self._channel

    def _find_channel(self, conn: Connection) -> str:
        """Return the channel of the schema this installation's tables are in."""
        schema = conn.execute(select(func.current_schema())).scalar()
        self._channel = channel_for(str(schema or "public"))
        return self._channel

    # -- receiving -------------------------------------------------------------------------
    def start(self) -> None:
        """Listen in a daemon thread until stop() (on PostgreSQL; elsewhere nothing to do)."""
        if not self.enabled or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._listen, name="carryover-listen", daemon=True)
        self._thread.start()

    @property
    def listening(self) -> bool:
        """Tell whether the listener is connected now (for /metrics)."""
        return self._listening.is_set()

    def wait_listening(self, timeout: float) -> bool:
        """Wait until the listener is connected (for tests and the start of a process)."""
        return self._listening.wait(timeout)

    def stop(self) -> None:
        """Ask the listener to stop; it does within a second."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(LISTEN_SLICE_S * 3)
            self._thread = None

    def _listen(self) -> None:
        """Listen, reconnecting with backoff while the store is unreachable."""
        wait = 1.0
        while not self._stopping.is_set():
            try:
                self._listen_once()
                wait = 1.0
            except Exception as exc:  # the store went away, or a bug: said, and tried again
                self._listening.clear()
                self.faults.log(logging.WARNING, "listen", "not listening for the other "
                                "processes' changes (polling meanwhile), retrying in %g s: %s",
                                wait, f"{type(exc).__name__}: {exc}")  # fmt: skip
                self._stopping.wait(wait)
                wait = min(RECONNECT_MAX_S, wait * 2)

    def _listen_once(self) -> None:
        """Hold one connection that listens, until stop() or until it fails."""
        pooled = self.engine.raw_connection()
        conn = pooled.driver_connection
        pooled.detach()  # a connection of its own, never handed back to the pool
        try:
            conn.autocommit = True  # type: ignore[union-attr]
            schema = conn.execute("SELECT current_schema()").fetchone()[0]  # type: ignore[union-attr,index]
            channel = channel_for(str(schema or "public"))
            self._channel = channel
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))  # type: ignore[union-attr]
            self.on_work()  # what was stored while no one listened is looked for now
            self._listening.set()
            while not self._stopping.is_set():
                for note in conn.notifies(timeout=LISTEN_SLICE_S):  # type: ignore[union-attr]
                    self._received(note.payload)
        finally:
            self._listening.clear()
            pooled.close()

    def _received(self, payload: str) -> None:
        """Act on one notification from another process; ignore this process's own."""
        kind, _, rest = payload.partition(" ")
        origin, _, topics = rest.partition(" ")
        if origin == self.origin:
            return
        self.received += 1
        if kind == WORK:
            self.on_work()
        elif kind == TOPICS and topics:
            self.on_topics(frozenset(topics.split(" ")))
