"""Faults across the whole topology: web + two workers on PostgreSQL, a misbehaving Zendesk.

The scenario (bench/faults.py, also `python -m bench faults`) starts real processes, kills
one worker with SIGKILL and switches the fake Zendesk through 429, 503, a stall and late
writes; it returns the figures and the checks they failed.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.faults import Processes, empty_tables, run_scenario
from tests.values import PG_URL

pytestmark = pytest.mark.skipif(not PG_URL, reason="CARRYOVER_TEST_DATABASE_URL is not set")


@pytest.fixture
def store_url(postgres_url: str) -> str:
    """Return the test PostgreSQL schema, emptied."""
    empty_tables(postgres_url)
    return postgres_url


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    """Start Carryover processes for a test; stop every one left running at the end."""
    started = Processes(tmp_path)
    yield started
    started.close()


def test_through_kill_429_503_stall_and_late_writes_each_note_is_written_once(
    store_url: str, processes: Processes, tmp_path: Path
) -> None:
    """Every delivery is done once, every note written once, nothing dead, a takeover happens.

    How soon (the takeover, the drain) is the benchmark's figure (`python -m bench faults`).
    """
    figures = run_scenario(store_url, tmp_path, processes)
    report = "\n".join(["Faults across the topology", *figures.render()])
    print(report)
    assert figures.failures(timed=False) == [], report
