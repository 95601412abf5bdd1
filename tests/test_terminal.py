"""The terminal's progress line: what `carryover backfill` shows while it runs."""

from __future__ import annotations

import io

import pytest

from middleware.terminal import ProgressLine, bar, duration


class Terminal(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    ("seconds", "said"),
    [(0.2, "under 1 s"), (0.6, "1 s"), (45, "45 s"), (185, "3 min 5 s"), (7800, "2 h 10 min")],
)
def test_a_duration_reads_as_people_say_it(seconds, said):
    assert duration(seconds) == said


def test_the_bar_fills_with_the_fraction_and_shows_dots_when_unknown():
    assert bar(0.5) == "[" + "█" * 12 + "░" * 12 + "]  50%"
    assert bar(None) == "[" + "·" * 24 + "]    "


def test_off_a_terminal_each_change_is_one_line_and_a_repeat_is_not_printed():
    out = io.StringIO()
    line = ProgressLine("Zendesk", out)
    line.show(0.5, 1000, 250.0, 4.0, force=True)
    line.show(0.5, 1000, 250.0, 4.0, force=True)  # the same again: a log would read it twice
    line.show(1.0, 2000, 280.0, None, force=True)
    line.end()
    assert out.getvalue().splitlines() == [
        "Zendesk  " + bar(0.5) + "  1,000 records  250/s  about 4 s left",
        "Zendesk  " + bar(1.0) + "  2,000 records  280/s",
    ]


def test_off_a_terminal_updates_between_log_lines_are_left_out():
    out = io.StringIO()
    line = ProgressLine("Twilio", out)
    line.show(0.1, 10, None, None)
    line.show(0.2, 20, None, None)  # a moment later: not another line
    assert len(out.getvalue().splitlines()) == 1


def test_on_a_terminal_the_line_is_redrawn_in_place_and_a_shorter_one_wipes_the_longer():
    out = Terminal()
    line = ProgressLine("Zendesk", out)
    line.show(0.5, 1000, 250.0, 120.0, force=True)
    line.show(1.0, 2000, None, None, force=True)
    line.end()
    first, second = out.getvalue().split("\r")[1:]
    assert second.rstrip("\n").rstrip(" ") == "Zendesk  " + bar(1.0) + "  2,000 records"
    assert len(second.rstrip("\n")) == len(first)
    assert out.getvalue().endswith("\n")
