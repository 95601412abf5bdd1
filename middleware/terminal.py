"""Progress on the terminal for long commands: one line redrawn in place, or plain lines.

On a terminal the line is redrawn at most a few times a second; written to a file or a pipe
(a log, CI), a line is printed every few seconds instead, so the log stays readable.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

BAR_CELLS = 24
REDRAW_S = 0.2  # on a terminal
LOG_EVERY_S = 5.0  # elsewhere


def duration(seconds: float) -> str:
    """Say a duration as people read it: under 1 s, 45 s, 3 min 5 s, 2 h 10 min."""
    if seconds < 0.5:
        return "under 1 s"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds} s" if seconds else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


class ProgressLine:
    """Show how far a job has come: a bar, counts, rate and time left."""

    def __init__(self, label: str, out: TextIO | None = None) -> None:
        self.label = label
        self.out = out or sys.stderr
        self.live = self.out.isatty()
        self._shown_at = float("-inf")
        self._width = 0
        self._text = ""

    def show(
        self,
        fraction: float | None,
        done: int,
        rate: float | None,
        left_s: float | None,
        note: str | None = None,
        *,
        force: bool = False,
    ) -> None:
        """Draw the line (or print it, off a terminal) unless it was drawn a moment ago."""
        now = time.monotonic()
        if not force and now - self._shown_at < (REDRAW_S if self.live else LOG_EVERY_S):
            return
        text = f"{self.label}  {bar(fraction)}  {done:,} records"
        if rate:
            text += f"  {rate:,.0f}/s"
        if left_s is not None and left_s >= 1:
            text += f"  about {duration(left_s)} left"
        if note:
            text += f"  ({note})"
        if text == self._text:
            return  # nothing new to show (printed twice, a log would read as two events)
        self._shown_at, self._text = now, text
        if self.live:
            padding = " " * max(0, self._width - len(text))
            self.out.write(f"\r{text}{padding}")
            self._width = len(text)
        else:
            self.out.write(text + "\n")
        self.out.flush()

    def end(self) -> None:
        """Leave the line as it is and go on below it."""
        if self.live and self._width:
            self.out.write("\n")
            self.out.flush()
        self._width = 0


def bar(fraction: float | None) -> str:
    """Return a bar of BAR_CELLS cells and the percentage, or dots when unknown."""
    if fraction is None:
        return "[" + "·" * BAR_CELLS + "]    "
    fraction = max(0.0, min(1.0, fraction))
    filled = round(fraction * BAR_CELLS)
    return "[" + "█" * filled + "░" * (BAR_CELLS - filled) + f"] {fraction:4.0%}"
