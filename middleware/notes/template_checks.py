"""Keep an admin-edited template from breaking notes: the samples a new version must render,
and the failures of a saved version at run time (the note then uses the shipped file).

A template with `{{ customer.nmae }}` used to be saved although its preview failed, and then
every returning customer's webhook failed until it was a dead letter. A version is now saved
only if it renders on these samples and on a real customer; one that fails later anyway (on
data the samples lack) is recorded here, shown on its page and the overview, and logged.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any

from middleware.throttled_log import ThrottledLog

if TYPE_CHECKING:
    from middleware.notes.summary import SummaryRenderer

log = logging.getLogger(__name__)
# The file name Jinja is given for a saved version: its traceback then names the template.
SAVED_PREFIX = "<saved "
LOG_EVERY_S = 60.0

# When no customer has called yet, the call note is previewed with this call.
SAMPLE_CALL: dict[str, Any] = {
    "source": "pbx", "external_id": "call-sample", "direction": "inbound",
    "status": "completed", "ended": True, "started_at": "2025-02-03T09:30:00Z",
    "updated_at": "2025-02-03T09:36:40Z", "duration_s": 400, "phone": "+14155550142",
    "agents": ["emma", "bob"], "team": "billing",
    "transfers": [{"at": "2025-02-03T09:33:00Z", "from": "emma", "to": "bob", "team": "billing",
                   "text": "Transferred from emma to bob"}],
    "handoffs": [{"at": "2025-02-03T09:32:40Z", "by": "emma",
                  "text": "Charged twice for the January invoice; refund approved up to $50."}],
    "recording": "https://pbx.example.com/recordings/call-sample.mp3",
    "said": "Hello, I was charged twice for my January invoice.",
}  # fmt: skip

_ITEM = {
    "source": "helpdesk", "external_id": "5141", "kind": "ticket", "channel": "email",
    "direction": "inbound", "status": "open", "subject": "Charged twice for my January invoice",
    "excerpt": "Hello, I was charged twice for my January invoice.",
    "occurred_at": "2025-02-03T09:12:00Z", "agent": "emma", "agents": ["emma"], "team": "billing",
    "link": "https://helpdesk.example.com/tickets/5141", "duration_s": None, "number": "5141",
    "said_by": "customer", "said": "Hello, I was charged twice for my January invoice.",
    "recording": None,
}  # fmt: skip
_ORDER: dict[str, Any] = {
    "source": "shop", "external_id": "450789469", "kind": "order", "channel": "web",
    "direction": None, "status": "refunded", "subject": "2× Blue mug · 38.00 EUR",
    "excerpt": "refund of 19.00 EUR", "occurred_at": "2025-01-28T17:40:00Z",
    "updated_at": "2025-02-01T10:05:00Z", "agent": None, "agents": [], "team": None,
    "link": "https://shop.example.com/admin/orders/450789469", "duration_s": None,
    "number": "#1001", "said_by": None, "said": None, "problem": "refund of 19.00 EUR",
}  # fmt: skip


def sample_contexts(renderer: SummaryRenderer) -> list[tuple[str, dict[str, Any]]]:
    """Return the variables of the sample customers a summary template must render (one
    known, one new), as the renderer gives them to a template."""
    from middleware.notes.summary import CustomerContext

    known = CustomerContext(
        customer={
            "id": 1,
            "name": "Ann Example",
            "preferred_channels": ["email"],
            "identities": [
                {
                    "type": "email",
                    "value": "ann@example.com",
                    "shared": False,
                    "linked_by": "helpdesk ticket 5141",
                }
            ],
        },  # fmt: skip
        open_items=[dict(_ITEM)],
        interactions=[
            dict(_ITEM),
            {
                **_ITEM,
                "kind": "call",
                "channel": "voice",
                "source": "pbx",
                "external_id": "call-1",
                "subject": None,
                "duration_s": 400,
                "agents": ["emma", "bob"],
            },
        ],  # fmt: skip
        said=[
            {
                "occurred_at": "2025-02-03T09:12:00Z",
                "channel": "email",
                "source": "helpdesk",
                "text": "I was charged twice for my January invoice.",
            }
        ],  # fmt: skip
        preferred_channels=["email"],
        mood="negative",
        repeat_contacts_7d=2,
        contacts_lately=2,
        channels_lately=["email", "voice"],
        recognised_by=["email"],
        orders=[dict(_ORDER)],
        order_problems=[dict(_ORDER)],
    )
    new = CustomerContext(
        customer={"id": 2, "name": None, "preferred_channels": [], "identities": []},
        open_items=[], interactions=[], said=[], preferred_channels=[], mood=None,
        repeat_contacts_7d=1,
    )  # fmt: skip
    return [
        ("the sample customer Ann Example", renderer.variables(known)),
        ("a sample first-time customer", renderer.variables(new)),
    ]


def sample_calls() -> list[tuple[str, dict[str, Any]]]:
    """Return the sample calls the call note must render."""
    return [("the sample call", {"call": SAMPLE_CALL, "customer_name": "Ann Example"}),
            ("a sample call of an unknown caller",
             {"call": {**SAMPLE_CALL, "agents": [], "team": None, "transfers": [],
                       "handoffs": [], "recording": None, "said": None},
              "customer_name": None})]  # fmt: skip


def sample_updates(renderer: SummaryRenderer) -> list[tuple[str, dict[str, Any]]]:
    """Return the sample news the update note must render: a ticket the customer opened, a
    case an agent opened for a team, and an SMS from a customer with no name yet."""
    from middleware.notes.summary import update_variables

    case = {**_ITEM, "kind": "case", "source": "crm", "external_id": "case-7", "said": None,
            "said_by": "agent", "channel": "phone", "number": "00001001"}  # fmt: skip
    sms = {**_ITEM, "kind": "message", "source": "sms", "external_id": "sms-1", "subject": None,
           "channel": "sms", "team": None, "agent": None, "agents": [], "link": None}  # fmt: skip
    return [
        (
            "a sample ticket",
            update_variables(renderer.named(dict(_ITEM)), "Helpdesk", "Ann Example"),
        ),
        ("a sample case", update_variables(renderer.named(case), "CRM", "Ann Example")),
        ("a sample SMS", update_variables(renderer.named(sms), "SMS", None)),
    ]


def samples_for(name: str, renderer: SummaryRenderer) -> list[tuple[str, dict[str, Any]]]:
    """Return the samples a new version of a template must render."""
    from middleware.notes.summary import CALL_NOTE_TEMPLATE, UPDATE_NOTE_TEMPLATE

    if name == CALL_NOTE_TEMPLATE:
        return sample_calls()
    if name == UPDATE_NOTE_TEMPLATE:
        return sample_updates(renderer)
    return sample_contexts(renderer)


@dataclass(frozen=True)
class TemplateFailure:
    """A saved version failed to render a note; the shipped file wrote it instead."""

    name: str
    version: int | None
    error: str
    at: datetime
    count: int = 1


def saved_template_in(tb: TracebackType | None) -> tuple[str, int | None] | None:
    """Return the innermost saved template (name, line) a traceback went through."""
    found = None
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if filename.startswith(SAVED_PREFIX):
            found = (filename[len(SAVED_PREFIX) : -1], tb.tb_lineno)
        tb = tb.tb_next
    return found


def template_line(tb: TracebackType | None, filename: str) -> int | None:
    """Return the innermost line of a template (by its file name) a traceback went through."""
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == filename:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def describe(exc: BaseException, line: int | None) -> str:
    """Say in one line why a template failed."""
    where = f"line {line}: " if line else ""
    return f"{where}{type(exc).__name__}: {exc}"


class TemplateFailures:
    """The last failure of each template in this process, and a rate-limited log of them."""

    def __init__(self) -> None:
        self._last: dict[str, TemplateFailure] = {}
        self._lock = threading.Lock()
        self._log = ThrottledLog(log, LOG_EVERY_S)

    def record(self, name: str, version: int | None, error: str, at: datetime) -> None:
        """Remember that a version failed (counting repeats) and log it."""
        with self._lock:
            last = self._last.get(name)
            count = last.count + 1 if last and last.version == version else 1
            self._last[name] = TemplateFailure(name, version, error, at, count)
        self._log.log(logging.ERROR, f"template:{name}",
                      "Template %s (version %s) failed, the shipped one wrote the note: %s",
                      name, version, error)  # fmt: skip

    def forget(self, name: str) -> None:
        """Drop a template's failure (a new version is in use)."""
        with self._lock:
            self._last.pop(name, None)

    def of(self, name: str, version_in_use: int | None) -> TemplateFailure | None:
        """Return the failure of the version still in use, if any."""
        failure = self._last.get(name)
        return failure if failure and failure.version == version_in_use else None
