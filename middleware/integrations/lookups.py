"""Lookups shared by every process: what plugins look up upstream, in memory and in the store.

Each worker looked Zendesk users up on its own, so a second worker added 200 API calls to a
run of 689. Here a look-up is found first in the process's memory (it costs nothing), then
in the lookup_cache table that every process shares, and only then asked of the upstream,
whose answer goes to both. A stored answer expires after the plugin's own TTL, as the one in
memory does; an expired row is a miss, overwritten by the next answer, and deleted by the
retention purge.

Each kind of look-up is named by the identity type its key is (a user id, a contact id):
erasing a customer deletes the rows of their identities without knowing any plugin. The rows
hold personal data (names, emails, phones) and never a credential: plugins keep only the
fields they use.

A store that cannot be read or written costs an API call, never the delivery: the failure
is logged (once per interval, with a count of the rest) and the upstream answers.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any, Generic, TypeVar

from cachetools import TLRUCache
from sqlalchemy import Connection, Engine, bindparam, delete, select, tuple_
from sqlalchemy.exc import SQLAlchemyError

from middleware.store.tables import (
    dialect_insert,
    dumps,
    identities,
    lookup_cache,
    reading,
    utcnow,
)
from middleware.store.together import Together
from middleware.throttled_log import ThrottledLog, store_error

log = logging.getLogger(__name__)
MEMORY_ENTRIES = 10_000  # per kind of look-up, per process
FAILURES_LOGGED_EVERY_S = 60.0
V = TypeVar("V")
Asked = tuple[str, str, tuple[str, ...]]  # a plugin, a kind of look-up, keys

_c = lookup_cache.c
# Built once: building SQLAlchemy statements per call costs more than running them.
_READ = select(_c.key, _c.value, _c.expires_at).where(
    _c.plugin == bindparam("plugin"),
    _c.kind == bindparam("kind"),
    _c.key.in_(bindparam("keys", expanding=True)),
    _c.expires_at > bindparam("now"),
)
_UPSERTS: dict[str, Any] = {}  # by dialect name


class LookupStore:
    """The lookup_cache table of one installation, read and written by every process.

    Reads (and writes) made by threads at the same time go to the store together (Together):
    a worker with many look-ups in flight makes one round trip for many of them.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.failures = ThrottledLog(log, FAILURES_LOGGED_EVERY_S)
        self._reads = Together(self._read_all)
        self._writes = Together(self._write_all)

    def read(self, plugin: str, kind: str, keys: Iterable[str]) -> dict[str, tuple[float, Any]]:
        """Return the unexpired values stored for these keys, each with the seconds it has left.

        Nothing when the store cannot be read.
        """
        wanted = tuple(keys)
        return self._reads((plugin, kind, wanted)) if wanted else {}

    def _read_all(self, asked: list[Asked]) -> list[dict[str, tuple[float, Any]]]:
        """Read what several callers asked for at once: one query per kind of look-up."""
        now = utcnow()
        kinds: dict[tuple[str, str], set[str]] = {}
        for plugin, kind, keys in asked:
            kinds.setdefault((plugin, kind), set()).update(keys)
        stored: dict[tuple[str, str, str], tuple[float, str]] = {}
        try:
            with reading(self.engine) as conn:
                for (plugin, kind), names in kinds.items():
                    wanted = {"plugin": plugin, "kind": kind, "keys": sorted(names), "now": now}
                    for r in conn.execute(_READ, wanted):
                        left = (r.expires_at - now).total_seconds()
                        stored[(plugin, kind, r.key)] = (left, r.value)
        except SQLAlchemyError as exc:
            self._failed("read", exc)
            return [{} for _ in asked]
        # Each caller gets values of its own, as if it had read them alone.
        return [
            {key: (found[0], json.loads(found[1]))
             for key in keys if (found := stored.get((plugin, kind, key))) is not None}
            for plugin, kind, keys in asked
        ]  # fmt: skip

    def write(self, plugin: str, kind: str, found: Mapping[str, Any], ttl_s: float) -> None:
        """Store the values looked up; a key another process stored meanwhile is overwritten."""
        if not found:
            return
        now = utcnow()
        rows = [
            {"plugin": plugin, "kind": kind, "key": key, "value": dumps(value),
             "fetched_at": now, "expires_at": now + timedelta(seconds=ttl_s)}
            for key, value in found.items()
        ]  # fmt: skip
        self._writes(rows)

    def _write_all(self, written: list[list[dict[str, Any]]]) -> list[None]:
        """Store what several callers looked up at once, in one transaction."""
        latest = {(r["plugin"], r["kind"], r["key"]): r for rows in written for r in rows}
        # In key order: two processes writing the same keys lock them in the same order.
        rows = [latest[name] for name in sorted(latest)]
        try:
            with self.engine.begin() as conn:
                conn.execute(_upsert(conn), rows)
        except SQLAlchemyError as exc:
            self._failed("write", exc)
        return [None] * len(written)

    def _failed(self, action: str, exc: SQLAlchemyError) -> None:
        # One kind for reads and writes: a store that fails says so once, not twice.
        self.failures.log(
            logging.WARNING, "store", "could not %s the shared lookup cache (look-ups go "
            "to the upstream meanwhile): %s", action, store_error(exc),
        )  # fmt: skip


def _upsert(conn: Connection) -> Any:
    """Return the dialect's INSERT … ON CONFLICT DO UPDATE of a row (built once per dialect)."""
    name = conn.dialect.name
    if name not in _UPSERTS:
        insert = dialect_insert(conn, lookup_cache)
        _UPSERTS[name] = insert.on_conflict_do_update(
            index_elements=[_c.kind, _c.key, _c.plugin],
            set_={column: insert.excluded[column] for column in ("value", "fetched_at",
                                                                 "expires_at")},
        )  # fmt: skip
    return _UPSERTS[name]


class PluginLookups:
    """The cached look-ups of one plugin; the store is attached once the installation has one.

    Without a store (a plugin built on its own, as in a test) look-ups are cached in memory
    only, as before.
    """

    def __init__(self, plugin: str) -> None:
        self.plugin = plugin
        self.store: LookupStore | None = None

    def cached(
        self, kind: str, ttl_s: float, fetch: Callable[[str], V], key: Callable[[Any], str | None]
    ) -> CachedLookup[V]:
        """Return a look-up of one kind: `kind` is the identity type its keys are.

        `key` turns what callers pass into that identity's value (None: not one, not cached).
        """
        return CachedLookup(self, kind, ttl_s, fetch, key)


class CachedLookup(Generic[V]):
    """One kind of look-up: memory first, then the shared store, then the upstream.

    Thread-safe: the memory is read and written under a lock that is never held during a
    call to the store or the upstream. Two threads (or processes) missing the same key at
    once may both ask the upstream; the last answer stored wins, and both succeed.
    """

    def __init__(
        self, owner: PluginLookups, kind: str, ttl_s: float, fetch: Callable[[str], V],
        key: Callable[[Any], str | None],
    ) -> None:  # fmt: skip
        self.owner, self.kind, self.ttl_s = owner, kind, ttl_s
        self.fetch, self.key = fetch, key
        # Each entry is (when it expires, value): one read from the store lives no longer
        # than its row, so nothing is older than the TTL in any process.
        self.memory: TLRUCache[str, tuple[float, V]] = TLRUCache(
            MEMORY_ENTRIES, lambda _key, entry, _now: entry[0]
        )
        self.lock = threading.Lock()

    def __call__(self, raw_key: str) -> V:
        """Return the value for a key, asking the upstream only when nobody has it."""
        key = self.key(raw_key)
        if key is None:
            return self.fetch(raw_key)
        with self.lock:
            entry = self.memory.get(key)
        if entry is not None:
            return entry[1]
        stored = self._stored([key])
        if key in stored:
            return stored[key]
        value = self.fetch(key)
        self.remember({key: value})
        return value

    def missing(self, raw_keys: Iterable[Any]) -> list[str]:
        """Return the keys nobody has looked up yet (neither this process nor the store)."""
        keys = list(dict.fromkeys(k for k in map(self.key, raw_keys) if k is not None))
        with self.lock:
            keys = [k for k in keys if k not in self.memory]
        stored = self._stored(keys) if keys else {}
        return [k for k in keys if k not in stored]

    def remember(self, found: Mapping[Any, V]) -> None:
        """Keep values looked up (one by one, or in bulk) in memory and in the store."""
        if self.ttl_s <= 0:
            return  # a TTL of 0 caches nothing
        keyed = {key: v for raw, v in found.items() if (key := self.key(raw)) is not None}
        deadline = time.monotonic() + self.ttl_s
        with self.lock:
            self.memory.update((key, (deadline, value)) for key, value in keyed.items())
        if self.owner.store is not None:
            self.owner.store.write(self.owner.plugin, self.kind, keyed, self.ttl_s)

    def _stored(self, keys: list[str]) -> dict[str, V]:
        """Read keys from the store into memory; return the ones it had."""
        if self.owner.store is None:
            return {}
        found = self.owner.store.read(self.owner.plugin, self.kind, keys)
        now = time.monotonic()
        with self.lock:
            self.memory.update((key, (now + left, value)) for key, (left, value) in found.items())
        return {key: value for key, (_, value) in found.items()}


def erase_lookups(conn: Connection, customer_ids: Iterable[int]) -> int:
    """Delete the stored look-ups keyed by these customers' identities; return how many."""
    theirs = select(identities.c.type, identities.c.value).where(
        identities.c.customer_id.in_(list(customer_ids))
    )
    gone = conn.execute(delete(lookup_cache).where(tuple_(_c.kind, _c.key).in_(theirs)))
    return int(gone.rowcount or 0)


def purge_expired_lookups(engine: Engine, now: datetime | None = None, batch: int = 500) -> int:
    """Delete the stored look-ups that have expired, a short transaction a batch; count them."""
    expired = select(_c.kind, _c.key, _c.plugin).where(_c.expires_at <= (now or utcnow()))
    gone = delete(lookup_cache).where(tuple_(_c.kind, _c.key, _c.plugin).in_(expired.limit(batch)))
    removed = 0
    while True:
        with engine.begin() as conn:
            deleted = int(conn.execute(gone).rowcount or 0)
        removed += deleted
        if deleted < batch:
            return removed
