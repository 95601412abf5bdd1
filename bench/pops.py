"""Benchmark 11: webhook ack latency while one web process holds 2,000 open screen-pops.

The server is one web process of `carryover serve --processes N` (gunicorn, gevent worker,
the very command serve runs, with one process), web-only, on a fresh SQLite store with the
Zendesk and agent settings. Each run starts it afresh and measures, in order: the open loop
of benchmark 2 (200/s for 10 s) with no stream open, the baseline; the process's RSS; then
2,000 pop streams (`GET /pop/events`, each for its own number, each read up to its first
`pop` event and then drained as the server writes); the RSS again; the same open loop with
them open. The figures are medians of the runs.
"""

from __future__ import annotations

import http.client
import os
import resource
import selectors
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy.engine import make_url

from bench.faults import fresh_schema
from bench.load import open_loop
from bench.report import latency_figures, median, progress
from bench.servers import AGENT_KEY, HOST, LINK_SECRET, Server, free_port, write_config
from middleware.config import SERVER
from middleware.store.tables import make_engine, upgrade
from middleware.web.serving import gunicorn_command

STREAMS = 2000
RUNS = 3
RATE = 200
SECONDS = 10.0
CONNECTIONS = 16
GOAL_P99_MS = 50.0
OPEN_BATCH = 100  # streams requested before their first events are awaited
NOWHERE = "http://127.0.0.1:9"  # the web path never calls Zendesk


class PopStreams:
    """Many open `/pop/events` streams, drained by one thread so the server never blocks."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.selector = selectors.DefaultSelector()
        self.sockets: list[socket.socket] = []
        self.closed_by_server = 0
        self._stop = threading.Event()
        self._drainer = threading.Thread(target=self._drain, daemon=True)

    def open(self, count: int) -> None:
        """Open `count` streams, each answered 200 with its first pop event, or fail."""
        for start in range(0, count, OPEN_BATCH):
            batch = [self._request(start + i) for i in range(min(OPEN_BATCH, count - start))]
            for sock in batch:
                self._await_first_event(sock)
                self.selector.register(sock, selectors.EVENT_READ)
            self.sockets += batch
        self._drainer.start()

    def _request(self, index: int) -> socket.socket:
        sock = socket.create_connection((HOST, self.port), timeout=30)
        phone = f"%2B1646555{index:04d}"
        sock.sendall(
            f"GET /pop/events?phone={phone} HTTP/1.1\r\nHost: {HOST}\r\n"
            f"Authorization: Bearer {AGENT_KEY}\r\n\r\n".encode()
        )
        return sock

    @staticmethod
    def _await_first_event(sock: socket.socket) -> None:
        received = b""
        while b"event: pop" not in received:
            chunk = sock.recv(65536)
            if not chunk:
                raise RuntimeError(f"a pop stream closed before its first event: {received!r}")
            received += chunk
        if not received.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"a pop stream was refused: {received[:200]!r}")

    def _drain(self) -> None:
        while not self._stop.is_set():
            for key, _ in self.selector.select(timeout=0.2):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                if not sock.recv(65536):
                    self.selector.unregister(sock)
                    self.closed_by_server += 1

    def close(self) -> None:
        """Stop draining and close every stream."""
        self._stop.set()
        if self._drainer.is_alive():
            self._drainer.join()
        for sock in self.sockets:
            sock.close()
        self.selector.close()


def web_process_rss_kib(server: Server) -> int:
    """Return the resident memory (KiB) of the one web process a gunicorn master runs."""
    pid = server.process.pid
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    if len(children) != 1:  # gunicorn restarts a web process that missed its heartbeats
        raise RuntimeError(f"expected one web process, found {children}:\n{server.log_tail()}")
    for line in Path(f"/proc/{children[0]}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc status")


def write_pops_config(directory: Path, port: int, database_url: str) -> Path:
    """Write the configuration: benchmark 2's web-only Zendesk one, plus the agent settings."""
    path = write_config(directory, "pops", port, NOWHERE, worker=False)
    config = yaml.safe_load(path.read_text(encoding="utf-8"))
    config |= {"database_url": database_url, "secret_key": LINK_SECRET,
               "agent_api_keys": [AGENT_KEY]}  # fmt: skip
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def start_web_process(config: Path, port: int, log_dir: Path, run: int) -> Server:
    """Start one gunicorn web process as `carryover serve --processes` would."""
    settings = {name: setting.default for name, setting in SERVER.items()} | {"processes": 1}
    command = gunicorn_command(settings, HOST, port)
    command[-1:-1] = ["--env", f"CARRYOVER_CONFIG={config}"]
    server = Server(f"pops-{run}", command, port, log_dir).wait_ready()
    answered = 0
    while answered != 200:  # the master listens before its web process has booted
        connection = http.client.HTTPConnection(HOST, port, timeout=30)
        connection.request("GET", "/healthz")
        answered = connection.getresponse().status
        connection.close()
    return server


def one_run(config: Path, port: int, log_dir: Path, run: int) -> dict[str, Any]:
    """Measure the baseline, open the streams, measure again; stop the server."""
    server = start_web_process(config, port, log_dir, run)
    streams = PopStreams(port)
    try:
        open_loop(HOST, port, RATE, 2.0, CONNECTIONS)  # warm-up: imports, pool, pages
        baseline = open_loop(HOST, port, RATE, SECONDS, CONNECTIONS)
        rss_none = web_process_rss_kib(server)
        started = time.perf_counter()
        streams.open(STREAMS)
        opening_s = time.perf_counter() - started
        rss_open = web_process_rss_kib(server)
        loaded = open_loop(HOST, port, RATE, SECONDS, CONNECTIONS)
        closed = streams.closed_by_server
    finally:
        streams.close()
        server.stop()
    return {
        "baseline": latency_figures(baseline.latencies) | {"errors": baseline.errors},
        "with_streams": latency_figures(loaded.latencies) | {"errors": loaded.errors},
        "opening_s": round(opening_s, 1),
        "rss_none_mib": round(rss_none / 1024, 1),
        "rss_open_mib": round(rss_open / 1024, 1),
        "kib_per_stream": round((rss_open - rss_none) / STREAMS, 1),
        "streams_closed_by_server": closed,
    }


@contextmanager
def store_url(workdir: Path) -> Iterator[str]:
    """Yield the store: a fresh PostgreSQL schema with CARRYOVER_TEST_DATABASE_URL, else SQLite.

    Several web processes are for PostgreSQL: under gevent a SQLite commit (its fsync) holds
    the whole process, so the SQLite figures say what a web process costs on one machine's
    file, not what the topology of issue 19 does.
    """
    base = os.environ.get("CARRYOVER_TEST_DATABASE_URL")
    if not base:
        url = f"sqlite:///{workdir / 'pops.db'}"
        engine = make_engine(url)
        upgrade(engine)
        engine.dispose()
        yield url
        return
    with fresh_schema(base, f"bench_pops_{uuid.uuid4().hex[:8]}") as url:
        yield url


def pops_benchmark() -> dict[str, Any]:
    """Run benchmark 11 RUNS times on fresh web processes and summarise."""
    needed = STREAMS + CONNECTIONS + 64
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(needed, hard), hard))
    with (
        tempfile.TemporaryDirectory(prefix="carryover-bench-pops-") as tmp,
        store_url(Path(tmp)) as url,
    ):
        workdir = Path(tmp)
        port = free_port()
        config = write_pops_config(workdir, port, url)
        runs = []
        for run in range(RUNS):
            progress(f"pops run {run + 1}/{RUNS}: ack latency, then {STREAMS} streams opened")
            runs.append(one_run(config, port, workdir, run))
    return summarise(runs) | {"store": make_url(url).get_backend_name()}


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Reduce the runs to medians, the ratio to the baseline and the goal's verdict."""
    p99 = median([r["with_streams"]["p99_ms"] for r in runs])
    baseline_p99 = median([r["baseline"]["p99_ms"] for r in runs])
    return {
        "streams": STREAMS,
        "rate": RATE,
        "runs": runs,
        "baseline_p99_ms": baseline_p99,
        "p99_ms": p99,
        "p50_ms": median([r["with_streams"]["p50_ms"] for r in runs]),
        "baseline_p50_ms": median([r["baseline"]["p50_ms"] for r in runs]),
        "p99_ratio": round(p99 / baseline_p99, 2) if baseline_p99 else None,
        "kib_per_stream": median([r["kib_per_stream"] for r in runs]),
        "errors": sum(r["with_streams"]["errors"] + r["baseline"]["errors"] for r in runs),
        "goal_p99_ms": GOAL_P99_MS,
        "met": p99 <= GOAL_P99_MS,
    }
