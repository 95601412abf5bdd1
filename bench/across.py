"""Ring → pop with the worker in another process, on PostgreSQL (`python -m bench across`).

The scale-out topology: a web process (`carryover serve`, no embedded worker) holds the
agent's open pop, and a `carryover worker` process, sharing the PostgreSQL store, processes
the CTI `newCall` the web process stored. Only the store connects them: the web process's
commit must wake the worker, and the worker's commit the pop. The baseline, measured in the
same run on the same store, is one `carryover serve` with its embedded worker, where an
in-process event does both. The two layouts take turns, ROUNDS times; the figures are the
medians of the rounds.

Each call is timed as in benchmark 5 (bench/phone.py): load the pop of a caller, open its
event stream, read the current state, send a signed `newCall`, wait for the event that shows
the call ringing. The callers are new numbers, one per call, so each call makes a customer.
"""

from __future__ import annotations

import os
import statistics
import tempfile
from pathlib import Path
from typing import Any

from bench.faults import Processes, fresh_schema
from bench.phone import RING_WARMUP, ring_each
from bench.report import latency_figures, progress
from bench.servers import HOST, free_port, write_phone_config
from middleware.config import POP, WORKER

SCHEMA = "carryover_bench_across"
ROUNDS = 3
CALLS = 30  # counted per round and layout, after RING_WARMUP
FIRST_CALLER = 1  # phone_of(1) onwards: on a fresh store, numbers nobody holds yet
GOAL_P95_MS = 300.0
AIM_P95_MS = 50.0


class Callers:
    """Hand out callers nobody has called as yet (RingProbe rings bench.generate.phone_of)."""

    def __init__(self) -> None:
        self.next = FIRST_CALLER

    def take(self, count: int) -> list[int]:
        """Return `count` new caller ids."""
        taken = list(range(self.next, self.next + count))
        self.next += count
        return taken


def measure(port: int, callers: list[int]) -> list[float]:
    """Ring each caller in turn; return the seconds to the ringing pop (misses: inf)."""
    return [t.pop_s if t.pop_s is not None else float("inf") for t in ring_each(port, callers)]


def one_round(processes: Processes, workdir: Path, url: str, callers: Callers) -> dict[str, Any]:
    """Measure both layouts once, the baseline first; return their timings."""
    port = free_port()
    config = write_phone_config(workdir, "together", port, url)
    together = processes.start("together", "serve", "--config", str(config), "--host", HOST,
                               "--port", str(port), port=port)  # fmt: skip
    try:
        baseline = measure(together.wait_ready().port, callers.take(RING_WARMUP + CALLS))
    finally:
        together.stop()
    port = free_port()
    web_config = write_phone_config(workdir, "web", port, url, worker=False)
    worker_config = write_phone_config(workdir, "worker", port, url)
    web = processes.start("web", "serve", "--config", str(web_config), "--host", HOST,
                          "--port", str(port), port=port)  # fmt: skip
    worker = processes.start("worker", "worker", "--config", str(worker_config))
    try:
        web.wait_ready()
        worker.wait_output("started")
        across = measure(port, callers.take(RING_WARMUP + CALLS))
    finally:
        web.stop()
        worker.stop()
    return {"together": baseline, "across": across}


def summarise(rounds: list[dict[str, Any]], layout: str) -> dict[str, Any]:
    """Return the medians over the rounds of one layout's latency figures, and its misses."""
    figures = []
    missed = 0
    for timings in (r[layout] for r in rounds):
        arrived = [t for t in timings if t != float("inf")]
        missed += len(timings) - len(arrived)
        figures.append(latency_figures(arrived))
    keys = ("p50_ms", "p95_ms", "p99_ms", "max_ms")
    return {k: round(statistics.median(f[k] for f in figures), 1) for k in keys} | {
        "missed": missed,
        "calls": sum(len(r[layout]) for r in rounds),
    }


def across_benchmark() -> dict[str, Any]:
    """Ring → pop with the worker in another process, against one process; medians of rounds."""
    base_url = os.environ.get("CARRYOVER_TEST_DATABASE_URL")
    if not base_url:
        raise SystemExit(
            "bench across: set CARRYOVER_TEST_DATABASE_URL to a PostgreSQL database "
            "(a schema of its own is made and dropped)"
        )
    rounds = []
    callers = Callers()
    with (
        tempfile.TemporaryDirectory(prefix="carryover-bench-across-") as tmp,
        fresh_schema(base_url, SCHEMA) as url,
    ):
        processes = Processes(Path(tmp))
        try:
            for number in range(1, ROUNDS + 1):
                progress(f"ring → pop across processes: round {number} of {ROUNDS}")
                rounds.append(one_round(processes, Path(tmp), url, callers))
        finally:
            processes.close()
    across, together = summarise(rounds, "across"), summarise(rounds, "together")
    return {
        "rounds": ROUNDS,
        "calls_per_round": CALLS,
        "across": across,
        "together": together,
        "ratio_p95": round(across["p95_ms"] / together["p95_ms"], 2),
        "pop_poll_s": POP["poll_s"].default,
        "worker_poll_interval_s": WORKER["poll_interval_s"].default,
        "goal_p95_ms": GOAL_P95_MS,
        "aim_p95_ms": AIM_P95_MS,
        "met": not across["missed"] and across["p95_ms"] <= GOAL_P95_MS,
    }
