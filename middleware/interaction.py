"""The canonical interaction: what every plugin's payload becomes after mapping."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import urlsplit

KINDS = ("ticket", "case", "call", "message", "note", "transfer", "order", "visit", "survey")
# Purchases: part of a customer's timeline, never contacts nor open items that get notes.
ORDER_KINDS = ("order",)
# The statuses of an order that an agent should know about before answering (the mappings
# name them so): money went back, or the order will not arrive.
ORDER_PROBLEM_STATUSES = frozenset({"refunded", "partially refunded", "cancelled"})
CHANNELS = (
    "phone", "sms", "email", "chat", "web", "facebook", "twitter", "whatsapp",
    "messaging", "api", "in_person", "letter", "other",
)  # fmt: skip
# How a channel is said to agents where its name is not a plain word.
CHANNEL_WORDS = {"in_person": "in person"}
DIRECTIONS = ("inbound", "outbound", "internal")
# Who wrote an interaction's text; None when the payload does not tell (and on older rows).
AUTHORS = ("customer", "agent")
OPEN_STATUSES = frozenset({"new", "open", "pending", "hold", "on-hold", "working", "escalated"})
CLOSED_STATUSES = frozenset({"solved", "closed", "deleted", "resolved"})
# Final statuses of a call (Twilio's CallStatus, the hang-up causes of generic CTI, and
# Placetel's hang-up types: a call sent to voicemail, or blocked).
CALL_ENDED_STATUSES = frozenset(
    {"completed", "busy", "no-answer", "failed", "canceled", "forwarded", "voicemail", "blocked"}
)
CALL_ANSWERED_STATUS = "in-progress"
MAX_LINK = 2048


def http_link(value: object) -> str | None:
    """Return the value if it is an absolute http(s) URL to show as a link, else None.

    Links come from payloads (a trigger's {{ticket.link}}, a message's PartnerUrl):
    javascript:, data: and every other scheme never become an href.
    """
    if not isinstance(value, str) or len(value) > MAX_LINK or not value.isprintable():
        return None
    if any(ch.isspace() for ch in value):
        return None
    try:
        parts = urlsplit(value)
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return None
    return value


@dataclass(frozen=True)
class Identity:
    """One identifier of a customer, e.g. ("email", "ann@example.com")."""

    type: str
    value: str


@dataclass(frozen=True)
class Interaction:
    """One contact in the timeline, in Carryover's own vocabulary, whatever tool it came from."""

    source: str
    external_id: str
    kind: str
    channel: str
    occurred_at: datetime
    updated_at: datetime
    record_ref: str
    direction: str | None = None
    status: str | None = None
    subject: str | None = None
    text: str | None = None
    identities: tuple[Identity, ...] = field(default_factory=tuple)
    customer_name: str | None = None
    agent: str | None = None
    team: str | None = None
    link: str | None = None
    duration_s: int | None = None
    creates: bool = False
    # The record's number as agents know it (a case's CaseNumber, a ticket's id); None for calls.
    number: str | None = None
    # Who wrote `text`: "customer", "agent", or None when unknown.
    said_by: str | None = None
    # The channels the customer said they prefer (a survey answer), as the payload named
    # them; None when the record says nothing about it.
    preferred_channels: tuple[str, ...] | None = None
    # Where agents listen to a call's recording (an http(s) link, e.g. the phone system's
    # console page of it); None when the call was not recorded.
    recording: str | None = None

    @property
    def is_open(self) -> bool:
        """Tell whether this ticket or case still waits for someone."""
        return is_open_status(self.status)


@dataclass(frozen=True)
class CustomerRecord:
    """A trusted record of who a customer is (e.g. a Salesforce contact), not a contact."""

    source: str
    external_id: str
    record_ref: str
    customer_name: str | None = None
    identities: tuple[Identity, ...] = field(default_factory=tuple)


def channel_word(channel: str | None) -> str:
    """Return a channel's name as agents read it ("in person" for in_person)."""
    return CHANNEL_WORDS.get(channel or "", channel or "")


def is_open_status(status: str | None) -> bool:
    """Tell whether a status means the item is still open (unknown statuses count as open)."""
    return status is not None and status.lower() not in CLOSED_STATUSES
