"""Many upstream calls in flight at once, in the order that matters, within a bound.

Against a real API every answer takes a few hundred ms: a worker that waited for each in
turn would process a handful of deliveries a second. So each upstream gets a pool of at most
`worker.upstream_concurrency` threads, shared by two kinds of calls:

- Lookups. Before a batch of deliveries is processed, in the order they came, the records
  their events name are looked up all at once (the plugin's own enrich, which caches what it
  reads); the processing then finds them cached. Only the lookups run at once: identity and
  the timeline are still written one delivery after the other.
- Note writes. Notes to different tickets go out at once; the notes to one ticket one after
  the other, in the order they were queued, so an agent never reads them out of order.

Every call still goes through the upstream's guard: after a 429 or while the upstream is
paused, a call not yet sent is not sent.
"""

from __future__ import annotations

import json
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import ExitStack, contextmanager
from typing import Any

from sqlalchemy import Row

from middleware.ingest.inbox import request_of
from middleware.installation import Installation
from middleware.integrations.plugin import UNVERIFIED, Plugin
from middleware.process.pipeline import prepare_event


class UpstreamCalls:
    """Run the calls to each upstream on a pool of its own, at most `limit` at once."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._pools: dict[str, ThreadPoolExecutor] = {}
        self._lock = threading.Lock()  # lanes submit from threads of their own
        self._closed = False

    def submit(self, upstream: str, call: Callable[..., Any], *args: Any) -> Future[Any]:
        """Start a call to the upstream as soon as one of its threads is free.

        Once closed, the call is not made: its future is cancelled at once.
        """
        with self._lock:
            if self._closed:
                return _cancelled()
            return self._pool(upstream).submit(call, *args)

    def _pool(self, upstream: str) -> ThreadPoolExecutor:
        pool = self._pools.get(upstream)
        if pool is None:
            pool = ThreadPoolExecutor(self.limit, thread_name_prefix=f"carryover-{upstream}")
            self._pools[upstream] = pool
        return pool

    def write_in_turn(self, rows: Sequence[Row], write: Callable[[Row], Any]) -> None:
        """Write the rows at once across tickets, one ticket's in their order; wait for all.

        Each upstream is asked once before the others go: a 429 or an outage then meets that
        one call, and the rest find the upstream paused and are not sent. A failure that
        `write` lets through (the store unreachable) is raised once every call has ended, as
        it would have been had the rows been written one by one.
        """
        chains = by_ticket(rows)
        leads: dict[str, list[Row]] = {}
        for (target, _ref), chain in chains.items():
            leads.setdefault(target, chain)
        self._run_chains([(target, chain[:1]) for target, chain in leads.items()], write)
        rest = [(target, chain[1:] if chain is leads[target] else chain)
                for (target, _ref), chain in chains.items()]  # fmt: skip
        self._run_chains([(target, chain) for target, chain in rest if chain], write)

    def _run_chains(self, chains: list[tuple[str, list[Row]]], write: Callable[[Row], Any]) -> None:
        """Write each chain in turn and the chains at once; wait, then raise the first error."""
        started = [self.submit(target, _one_after_another, write, chain)
                   for target, chain in chains]  # fmt: skip
        wait(started)
        for future in started:
            if not future.cancelled():  # closed: its rows wait, leased, for another worker
                future.result()

    def close(self) -> None:
        """Start no call not started yet; the calls in flight finish on their threads."""
        with self._lock:
            self._closed = True
            for pool in self._pools.values():
                pool.shutdown(wait=False, cancel_futures=True)


def _cancelled() -> Future[Any]:
    future: Future[Any] = Future()
    future.cancel()
    return future


def by_ticket(rows: Iterable[Row]) -> dict[tuple[str, str], list[Row]]:
    """Group queued notes by the ticket or case they go to, each group in queue order."""
    chains: dict[tuple[str, str], list[Row]] = defaultdict(list)
    for row in sorted(rows, key=lambda row: row.id):
        chains[row.target, row.target_ref].append(row)
    return chains


def _one_after_another(write: Callable[[Row], Any], chain: list[Row]) -> None:
    """Write one ticket's notes in turn: each starts once the one before was answered."""
    for row in chain:
        write(row)


class NamedLocks:
    """Locks by name, always taken in one order, so that two holders never wait on each other."""

    def __init__(self) -> None:
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    @contextmanager
    def holding(self, names: Iterable[str]) -> Iterator[None]:
        """Hold the locks of all the names while the block runs."""
        with self._guard:
            locks = [self._locks.setdefault(name, threading.Lock()) for name in sorted(set(names))]
        with ExitStack() as stack:
            for lock in locks:
                stack.enter_context(lock)
            yield


def look_up(core: Installation, plugin: Plugin, row: Row, records: NamedLocks) -> None:
    """Make the lookups that processing a delivery will make, so that it finds them cached.

    Only for events taken as sent: an unverified delivery's records, and records that the
    webhook only names, are read back first when processed. Two deliveries that name one
    record (two tickets of one requester) look it up one after the other, holding the
    record's lock in `records`: the second finds it cached. Nothing is stored here, and a
    failure is left to the processing, which meets it again and handles it.
    """
    request = request_of(row)
    if request.proof == UNVERIFIED:
        return
    keys = set(json.loads(row.event_keys))
    mapping = core.mappings[plugin.key]
    for event in plugin.parse(request):
        if event.key not in keys or event.type in plugin.read_back_types:
            continue
        if not mapping.handles(event.type) or mapping.describes_customer(event.type):
            continue  # no lookup: nothing recorded, or a record that names itself
        named = mapping.apply(event.type, event.payload, row.received_at).identities
        with records.holding(f"{i.type}:{i.value}" for i in named):
            prepare_event(core, plugin, event, row.received_at)
