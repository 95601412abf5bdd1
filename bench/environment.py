"""Describe what was measured: machine, interpreter, SQLite, commit, and the other load."""

from __future__ import annotations

import os
import platform
import sqlite3
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PRODUCT_DIRS = ("middleware", "plugins", "mappings", "webui")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _git(*args: str) -> str:
    # --no-optional-locks: never take .git/index.lock; others may be using git meanwhile.
    try:
        done = subprocess.run(["git", "--no-optional-locks", *args], cwd=ROOT,
                              capture_output=True, text=True, timeout=10, check=True)  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout


def describe_environment() -> dict[str, Any]:
    """Return the facts a reader needs to compare two runs."""
    changed = _git("status", "--porcelain", "--", *PRODUCT_DIRS).splitlines()
    return {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "sqlite": sqlite3.sqlite_version,
        "commit": _git("rev-parse", "--short", "HEAD").strip() or "unknown",
        "uncommitted_product_files": [line[3:] for line in changed],
    }


def _busy_cpu_seconds() -> float:
    """Return the CPU time the whole machine has spent busy since boot (Linux /proc/stat)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, _irq, _softirq, steal = (int(f) for f in fields[:8])
    # Interrupt time is left out: here it is mostly our own loopback traffic, which no
    # process is charged for. Steal (the hypervisor running someone else) counts as other load.
    return (user + nice + system + steal) / CLOCK_TICKS


def _own_cpu_seconds() -> float:
    """Return the CPU time of this process and of its children that have been waited for."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


class OtherLoad:
    """Measure how much CPU other processes took while the benchmark ran.

    The benchmark needs the machine to itself; a test suite running beside it moves every
    figure. Call `cores()` after every server has been stopped (waited for).
    """

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.busy = _busy_cpu_seconds()
        self.own = _own_cpu_seconds()

    def cores(self) -> float:
        """Return the average number of CPUs that other processes kept busy."""
        other = (_busy_cpu_seconds() - self.busy) - (_own_cpu_seconds() - self.own)
        return round(max(0.0, other) / (time.monotonic() - self.started), 2)
