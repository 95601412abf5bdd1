"""Load generators: a closed loop for throughput and an open loop for latency.

Both speak HTTP/1.1 with keep-alive through http.client, one connection per client thread,
and send a fresh signed delivery (new event id, new signature) with every request, unless
the open loop is given other requests to send (bench/salesforce.py: prepared messages).
"""

from __future__ import annotations

import http.client
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from bench.deliveries import HOOK_PATH, TicketCreated

Request = tuple[str, bytes, dict[str, str]]  # path, body, headers of one POST
RequestSource = Callable[[], Request]


@dataclass(frozen=True)
class ClosedLoopResult:
    """What one closed-loop run achieved."""

    requests: int
    errors: int
    seconds: float
    client_cpu_s: float

    @property
    def per_second(self) -> float:
        """Return successful requests per second."""
        return self.requests / self.seconds


@dataclass(frozen=True)
class OpenLoopResult:
    """Latencies (seconds, from each request's scheduled send time) of one open-loop run."""

    latencies: list[float]
    errors: int
    sent: int
    seconds: float


def zendesk_deliveries() -> RequestSource:
    """Return a source of new signed ticket.created deliveries to the Zendesk hook."""
    deliveries = TicketCreated()

    def next_request() -> Request:
        body, headers = deliveries.delivery()
        return HOOK_PATH, body, headers

    return next_request


class Client:
    """One keep-alive connection that posts deliveries (by default signed ticket.created)."""

    def __init__(self, host: str, port: int, requests: RequestSource | None = None) -> None:
        self.host = host
        self.port = port
        self.requests = requests or zendesk_deliveries()
        self.connection = http.client.HTTPConnection(host, port, timeout=30)

    def post_delivery(self) -> int:
        """Send one new delivery and return the HTTP status (0 when the connection failed)."""
        path, body, headers = self.requests()
        try:
            self.connection.request("POST", path, body=body, headers=headers)
            response = self.connection.getresponse()
            response.read()
            return response.status
        except (OSError, http.client.HTTPException):
            # Reconnect next time; the failure counts as an error, not as a request.
            self.connection.close()
            self.connection = http.client.HTTPConnection(self.host, self.port, timeout=30)
            return 0

    def close(self) -> None:
        """Close the connection."""
        self.connection.close()


def _process_cpu() -> float:
    """Return the CPU time of this process (the load generator) so far."""
    times = os.times()
    return times.user + times.system


def closed_loop(host: str, port: int, connections: int, seconds: float) -> ClosedLoopResult:
    """Keep `connections` requests in flight for `seconds`; count the answers."""
    clients = [Client(host, port) for _ in range(connections)]
    counts = [[0, 0] for _ in clients]  # per thread: [ok, errors], so no lock is needed
    start = threading.Barrier(connections + 1)
    stop = threading.Event()

    def run(index: int) -> None:
        start.wait()
        while not stop.is_set():
            status = clients[index].post_delivery()
            counts[index][0 if status == 200 else 1] += 1

    threads = [threading.Thread(target=run, args=(i,)) for i in range(connections)]
    for thread in threads:
        thread.start()
    cpu_before = _process_cpu()
    start.wait()
    began = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    cpu = _process_cpu() - cpu_before
    for client in clients:
        client.close()
    ok = sum(c[0] for c in counts)
    errors = sum(c[1] for c in counts)
    return ClosedLoopResult(requests=ok, errors=errors, seconds=elapsed, client_cpu_s=cpu)


class Schedule:
    """Hand out send times `1 / rate` apart, from `start`, until `total` have been given."""

    def __init__(self, start: float, rate: float, total: int) -> None:
        self.start = start
        self.rate = rate
        self.total = total
        self.given = 0
        self.lock = threading.Lock()

    def next_time(self) -> float | None:
        """Return the next scheduled send time (perf_counter seconds), or None when done."""
        with self.lock:
            index = self.given
            self.given += 1
        return self.start + index / self.rate if index < self.total else None


def open_loop(
    host: str,
    port: int,
    rate: float,
    seconds: float,
    connections: int,
    requests: RequestSource | None = None,
) -> OpenLoopResult:
    """Send at a fixed rate from a schedule; measure each latency from its scheduled time.

    Measuring from the schedule, not from the moment a thread got round to sending, keeps a
    slow answer from hiding the requests that should have gone out meanwhile (coordinated
    omission): if the server stalls, every request scheduled during the stall counts the wait.
    `requests`, shared by every connection (so it must be thread-safe), says what to send;
    by default each connection makes its own signed ticket.created deliveries.
    """
    total = int(rate * seconds)
    clients = [Client(host, port, requests) for _ in range(connections)]
    # Start a little later, so that every thread is waiting for its first send time.
    schedule = Schedule(time.perf_counter() + 0.1, rate, total)
    outcomes: list[tuple[int, float]] = []  # (status, latency); list.append is thread-safe

    def run(client: Client) -> None:
        while (scheduled := schedule.next_time()) is not None:
            delay = scheduled - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            status = client.post_delivery()
            outcomes.append((status, time.perf_counter() - scheduled))

    threads = [threading.Thread(target=run, args=(c,)) for c in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - schedule.start
    for client in clients:
        client.close()
    latencies = [latency for status, latency in outcomes if status == 200]
    return OpenLoopResult(
        latencies=latencies, errors=total - len(latencies), sent=total, seconds=elapsed
    )
