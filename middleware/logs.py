"""Set up the log of a Carryover process: its level, and lines of text or of JSON.

The lines an operator follows a delivery by (accepted, refused, processed, note written)
carry their ids twice: in the message, for a person reading text, and as fields passed with
`extra=`, which the JSON format writes as keys of their own, for a log pipeline to search.
The standard library does this with one small Formatter; nothing else is needed.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# What every LogRecord holds whatever the call: anything else on a record came with extra=.
RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message", "asctime", "taskName",
}  # fmt: skip
DEFAULTS = {"level": "INFO", "format": "text"}


class JsonFormatter(logging.Formatter):
    """Format a record as one JSON object on one line, with the fields given by extra=."""

    def format(self, record: logging.LogRecord) -> str:
        """Return time (ISO-8601 UTC), level, logger, message, the extra fields, any error."""
        at = datetime.fromtimestamp(record.created, UTC)
        line: dict[str, Any] = {
            "time": at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name, value in vars(record).items():
            if name not in RECORD_ATTRIBUTES and name not in line:
                line[name] = value
        if record.exc_info:
            line["traceback"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["traceback"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, ensure_ascii=False, default=str)


class StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Write to the sys.stderr of the moment (a test or a daemon may swap it)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self) -> Any:
        """Return the current sys.stderr."""
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        """Ignore the stream given: the current sys.stderr is always used."""


def formatter(kind: str) -> logging.Formatter:
    """Return the formatter of a logging.format value: text or json."""
    return JsonFormatter() if kind == "json" else logging.Formatter(TEXT_FORMAT)


def configure_logging(settings: Mapping[str, Any] = DEFAULTS) -> logging.Handler:
    """Send the process's log to stderr at the level and in the format of the settings.

    Called again (once the configuration is read), it replaces its own handler and leaves
    any other (a test's capture, a handler of the host program) alone.
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, StderrHandler):
            root.removeHandler(handler)
    handler = StderrHandler()
    handler.setFormatter(formatter(settings["format"]))
    root.addHandler(handler)
    root.setLevel(settings["level"])
    # Migrations say each step at INFO: nothing an operator needs on every start.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    return handler


def start_logging() -> None:
    """Log text at INFO until the configuration is read, unless logging is set up already."""
    if not logging.getLogger().handlers:  # else a host program (or a test) set it up
        configure_logging(DEFAULTS)
    logging.getLogger("alembic").setLevel(logging.WARNING)
