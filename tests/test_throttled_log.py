"""ThrottledLog: one line per kind per interval, and the next line counts those left out."""

from __future__ import annotations

import logging

import pytest

from middleware import throttled_log
from middleware.throttled_log import ThrottledLog


class Clock:
    """A monotonic clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """Stand in for the clock ThrottledLog reads."""
    fake = Clock()
    monkeypatch.setattr(throttled_log, "monotonic", fake)
    return fake


@pytest.fixture
def throttled(caplog: pytest.LogCaptureFixture) -> ThrottledLog:
    """Return a ThrottledLog of 10 s on a logger whose lines caplog keeps."""
    caplog.set_level(logging.INFO, logger="tests.throttled")
    return ThrottledLog(logging.getLogger("tests.throttled"), interval_s=10.0)


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Return the messages logged so far."""
    return [record.getMessage() for record in caplog.records]


def test_a_repeated_failure_is_logged_once_per_interval(throttled, clock, caplog):
    """Within the interval only the first of a kind is logged; the rest are not."""
    for _ in range(50):
        throttled.log(logging.ERROR, "store", "store down: %s", "refused")
        clock.now += 0.1  # 5 s in all
    assert lines(caplog) == ["store down: refused"]
    assert caplog.records[0].levelno == logging.ERROR


def test_the_first_line_after_the_interval_counts_those_left_out(throttled, clock, caplog):
    """After the interval the next one is logged with how many were left out, and over how long."""
    for _ in range(5):
        throttled.log(logging.ERROR, "store", "store down")
    clock.now += 12
    throttled.log(logging.ERROR, "store", "store down")
    clock.now += 10
    throttled.log(logging.ERROR, "store", "store down")  # none left out in between
    assert lines(caplog) == [
        "store down",
        "store down (4 more in the 12 s since the last such line)",
        "store down",
    ]


def test_kinds_are_throttled_apart(throttled, clock, caplog):
    """One kind's line does not hold back another kind's."""
    throttled.log(logging.WARNING, "store:zendesk", "zendesk refused")
    throttled.log(logging.WARNING, "store:twilio", "twilio refused")
    throttled.log(logging.WARNING, "store:zendesk", "zendesk refused")
    assert lines(caplog) == ["zendesk refused", "twilio refused"]


def test_a_line_carries_the_traceback_only_when_asked(throttled, clock, caplog):
    """exc_info=True logs the exception being handled, else none; a line names its caller."""
    try:
        raise ValueError("a bug")
    except ValueError:
        throttled.log(logging.ERROR, "bug", "with traceback", exc_info=True)
        throttled.log(logging.ERROR, "store", "without")
    with_traceback, without = caplog.records
    assert with_traceback.exc_info is not None and with_traceback.exc_info[0] is ValueError
    assert not without.exc_info
    assert {record.filename for record in caplog.records} == {"test_throttled_log.py"}
