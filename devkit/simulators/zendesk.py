"""Local fake of the Zendesk Support REST API for tests, benchmarks and demos."""

from __future__ import annotations

import argparse
import base64
import binascii
import html
import itertools
import json
import logging
import math
import re
import secrets
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import requests
from requests.structures import CaseInsensitiveDict
from werkzeug.exceptions import HTTPException
from werkzeug.http import HTTP_STATUS_CODES
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from devkit.fake_server import FakeUpstream, agent_page
from plugins.zendesk import sign

log = logging.getLogger(__name__)

BOT_USER_ID = 900000000001
RATE_LIMIT = 700
JSON_TYPE = "application/json; charset=utf-8"
RATE_LIMITED = (
    "Rate limit for ticket updates exceeded, please wait before updating this ticket again"
)
UNAUTHORIZED = {"error": "Couldn't authenticate you"}
NOT_FOUND = {"error": "RecordNotFound", "description": "Not found"}
NO_ENDPOINT = {"error": "InvalidEndpoint", "description": "Not found"}
UNPARSABLE = {"error": "Unprocessable", "description": "Server could not parse JSON"}
BLANK_COMMENT = {"error": "RecordInvalid", "description": "Record validation errors"}
TICKET_FIELDS = ("subject", "status", "priority", "type", "assignee_id", "group_id", "tags")
STATUSES = ("new", "open", "pending", "hold", "solved", "closed")
# What event-subscription payloads carry besides the ticket: the account, brand, form and
# custom status of the fixtures (plugins/zendesk/fixtures/), so fake and fixtures agree.
ACCOUNT_ID = 22129848
BRAND_ID = "8447346621310"
FORM_ID = "8646151517822"
CUSTOM_STATUS_ID = "8447320465790"
EVENT_VERSION = "2022-11-06"
WEBHOOK_TIMEOUT = 12.0  # Zendesk's own delivery timeout
# A ticket's REST channel and the via type its webhook events name instead.
VIA_TYPES = {
    "web": "web_form",
    "email": "mail",
    "api": "web_service",
    "chat": "chat",
    "twitter": "twitter",
    "facebook": "facebook_message",
    "voice": "phone_call_inbound",
    "native_messaging": "native_messaging",
    "sms": "sms",
    "any_channel": "any_channel",
    "mobile_sdk": "mobile_sdk",
    "rule": "rule",
}
CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
# Where a test switches fault modes over HTTP (the fake's own, not Zendesk's API).
CONTROL_PREFIX = "/_control/"
UNAVAILABLE = {"error": "ServiceUnavailable", "description": "Service temporarily unavailable"}
# Each fault mode and its parameters over HTTP, the optional ones last.
FAULT_MODES = {
    "rate_limit": (("seconds", "retry_after"), ()),
    "unavailable": (("seconds",), ()),
    "stall": (("seconds", "hold"), ()),
    "apply_late": (("delay",), ("seconds",)),
}
NOTE_WRITE = re.compile(r"/api/v2/tickets/\d+\.json")
# The incremental ticket export: Zendesk's own limits and answers. Its wording, where the docs
# give none, is what clients are known to receive (see the export endpoint's comment).
EXPORT_PATH = "/api/v2/incremental/tickets/cursor.json"
EXPORT_LIMIT_PER_MINUTE = 10  # 30 on High Volume plans
EXPORT_PAGE_MAX = 1000
EXPORT_LAG_SECONDS = 60.0  # changes of the last minute are left for the next request
SHOW_MANY_MAX = 100
EXPORT_RATE_LIMITED = {
    "error": "APIRateLimitExceeded",
    "description": "Number of allowed incremental export API requests per minute exceeded",
}
TOO_RECENT = {
    "error": "InvalidValue",
    "description": "Too recent start_time. Use a start_time older than 1 minute",
}
EXPORT_PARAMETERS = {
    "error": "InvalidPaginationParameter",
    "description": "Either start_time or cursor must be provided, not both",
}
BAD_START_TIME = {"error": "InvalidValue", "description": "start_time must be a Unix epoch time"}
BAD_CURSOR = {"error": "InvalidPaginationParameter", "description": "cursor is invalid"}
TOO_MANY_IDS = {"error": "InvalidValue", "description": "ids: at most 100 ids are accepted"}

ROUTES = Map(
    [
        Rule("/api/v2/users/show_many.json", endpoint="show_many", methods=["GET"]),
        Rule("/api/v2/users/me.json", endpoint="me", methods=["GET"]),
        Rule("/api/v2/users/<int:user_id>.json", endpoint="user", methods=["GET"]),
        Rule("/api/v2/users/<int:user_id>/identities.json", endpoint="identities", methods=["GET"]),
        Rule("/api/v2/tickets/<int:ticket_id>.json", endpoint="ticket", methods=["GET"]),
        Rule("/api/v2/tickets/<int:ticket_id>.json", endpoint="update_ticket", methods=["PUT"]),
        Rule("/api/v2/tickets/<int:ticket_id>/comments.json", endpoint="comments", methods=["GET"]),
        Rule("/api/v2/search.json", endpoint="search", methods=["GET"]),
        Rule(EXPORT_PATH, endpoint="export_tickets", methods=["GET"]),
    ]
)


def _utc(at: datetime | None = None) -> datetime:
    """Return `at` in UTC (a naive value is taken as UTC), or now."""
    if at is None:
        return datetime.now(UTC)
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def _rest_time(at: datetime | None = None) -> str:
    """Return a time as the REST API and event details write it: seconds, Z."""
    return _utc(at).strftime("%Y-%m-%dT%H:%M:%SZ")


def _event_time(at: datetime | None = None) -> str:
    """Return a time as an event's `time` carries it: nanoseconds, Z."""
    moment = _utc(at)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond:06d}000Z"


def _id_text(value: int | None) -> str | None:
    return None if value is None else str(value)


def _upper(value: str | None) -> str | None:
    # Event details write status, priority and type in UPPER CASE where REST has lower case.
    return None if value is None else value.upper()


def _status(status: str) -> str:
    if status.lower() not in STATUSES:
        raise ValueError(f"not a ticket status: {status!r} (one of {', '.join(STATUSES)})")
    return status.lower()


def _ulid() -> str:
    """Return a new ULID (26 characters, time-ordered), the form of Zendesk's webhook ids."""
    value = (int(time.time() * 1000) << 80) | secrets.randbits(80)
    return "".join(CROCKFORD[(value >> shift) & 31] for shift in range(125, -1, -5))


def _via(channel: str) -> dict:
    return {"channel": channel, "source": {"from": {}, "to": {}, "rel": None}}


def _page(key: str, items: list[dict], request: Request | None = None) -> dict[str, Any]:
    """Wrap a list as one offset page, or one cursor page when `page[size]` is asked for."""
    if request is not None and "page[size]" in request.args:
        cursors = {"has_more": False, "after_cursor": None, "before_cursor": None}
        return {key: items, "meta": cursors, "links": {"prev": None, "next": None}}
    return {key: items, "next_page": None, "previous_page": None, "count": len(items)}


def _json(payload: dict, status: int = 200) -> Response:
    return Response(json.dumps(payload), status=status, content_type=JSON_TYPE)


def _seconds_text(value: float) -> str:
    return f"{value:g}"


def _epoch(stamp: str) -> int:
    """Return a REST time ("2026-12-04T10:00:00Z") as Unix seconds."""
    return int(datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp())


def _export_cursor(position: tuple[int, int]) -> str:
    """Encode an export position (generated_timestamp, ticket id) as Zendesk's cursors look.

    A real one decodes to e.g. "1580753798.0||432|": the time, then the last ticket's id.
    """
    stamp, ticket_id = position
    text = f"{stamp}.0||{ticket_id if ticket_id >= 0 else ''}|"
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _export_position(cursor: str) -> tuple[int, int] | None:
    """Decode a cursor of _export_cursor(), or None when it is not one."""
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        stamp, empty, ticket_id, end = text.split("|")
        if empty or end or not stamp.endswith(".0"):
            return None
        return int(stamp.removesuffix(".0")), int(ticket_id) if ticket_id else -1
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None


@dataclass(frozen=True)
class Answered:
    """One API request: when it arrived (time.time()), what it asked and the status it got."""

    at: float
    method: str
    path: str
    status: int


@dataclass(frozen=True)
class Traffic:
    """How many API requests arrived in a window: all, PUTs, and those refused 429 or 503."""

    api: int
    puts: int
    rate_limited: int
    unavailable: int

    @classmethod
    def count(cls, answered: list[Answered], since: float, until: float) -> Traffic:
        """Count the requests that arrived in [since, until)."""
        window = [a for a in answered if since <= a.at < until]
        return cls(
            api=len(window),
            puts=sum(a.method == "PUT" for a in window),
            rate_limited=sum(a.status == 429 for a in window),
            unavailable=sum(a.status == 503 for a in window),
        )


@dataclass(frozen=True)
class _Fault:
    """A fault mode in force until a time.monotonic() instant (math.inf: until cleared)."""

    until: float
    value: float  # retry_after, hold or delay; 0 for unavailable


class WebhookFailed(Exception):
    """The webhook target refused an event (not 2xx) or could not be reached."""


@dataclass(frozen=True)
class _Webhook:
    """Where the fake sends ticket events, and the secret it signs them with."""

    url: str
    signing_secret: str
    webhook_id: str
    timeout: float


@dataclass(frozen=True)
class WebhookAnswer:
    """What the webhook target answered: status, headers (any case) and body."""

    status_code: int
    headers: CaseInsensitiveDict[str]
    text: str


@dataclass(frozen=True)
class WebhookDelivery:
    """One signed event POST and the answer (None when the target could not be reached)."""

    event_type: str
    body: bytes
    headers: dict[str, str]
    response: WebhookAnswer | None


def _post(webhook: _Webhook, body: bytes, headers: dict[str, str]) -> WebhookAnswer:
    """POST an event to the webhook target and return a copy of the answer."""
    response = requests.post(webhook.url, data=body, headers=headers, timeout=webhook.timeout,
                             allow_redirects=False)  # fmt: skip
    # Only a copy is kept: a response holds its connection pool, and urllib3 2 closes a pool's
    # connections only once the pool is garbage collected. Kept responses held one connection
    # open per event, which filled the target's connection limit.
    return WebhookAnswer(response.status_code, CaseInsensitiveDict(response.headers),
                         response.text)  # fmt: skip


class FakeZendesk(FakeUpstream):
    """Serve a fake Zendesk REST API on 127.0.0.1 for tests, benchmarks and demos."""

    def __init__(
        self,
        email: str = "bot@example.com",
        api_token: str = "test-token",
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        export_limit_per_minute: int | None = EXPORT_LIMIT_PER_MINUTE,
    ) -> None:
        self.email = email
        self.api_token = api_token
        self.delay_seconds: float = 0.0
        self.export_limit_per_minute = export_limit_per_minute
        # Zendesk leaves the last minute's changes out of an export; tests may lift that.
        self.export_lag_seconds = EXPORT_LAG_SECONDS
        self._export_recent: deque[float] = deque()
        self.users: dict[int, dict] = {}
        self.identities: dict[int, list[dict]] = {}
        self.tickets: dict[int, dict] = {}
        self.comments: dict[int, list[dict]] = {}
        self.requests_log: list[tuple[str, str, bytes, float]] = []
        self.deliveries: list[WebhookDelivery] = []
        self._lock = threading.RLock()
        self._ids = itertools.count(10000000001)
        self._failures: deque[tuple[int, dict, dict | None]] = deque()
        self._recent: deque[float] = deque()
        self._webhook: _Webhook | None = None
        self._faults: dict[str, _Fault] = {}
        self.answered: list[Answered] = []
        self._echoes = threading.Condition()
        self._pending_echoes = 0
        super().__init__(host, port)
        self.add_user(BOT_USER_ID, "Carryover Bot", email=email)["role"] = "agent"

    def subscribe(self, url: str, signing_secret: str, timeout: float = WEBHOOK_TIMEOUT) -> None:
        """Send ticket events to `url`, signed with `signing_secret`, as a Zendesk webhook does."""
        self._webhook = _Webhook(url, signing_secret, _ulid(), timeout)

    def set_export_limit(self, per_minute: int | None) -> None:
        """Allow `per_minute` incremental export requests a minute (None: no limit)."""
        with self._lock:
            self.export_limit_per_minute = per_minute
            self._export_recent.clear()

    def open_ticket(
        self,
        requester_id: int,
        subject: str,
        body: str,
        channel: str = "email",
        *,
        group_id: int | None = None,
        status: str = "new",
        at: datetime | None = None,
    ) -> int:
        """Open a ticket as the requester, send ticket.created and return the ticket id.

        `channel` is a REST channel name (a key of VIA_TYPES); the event names its via type.
        `at` backdates the ticket and the event (not the signature, which Carryover checks).
        """
        self._subscribed()
        if channel not in VIA_TYPES:
            raise ValueError(f"not a channel: {channel!r} (one of {', '.join(VIA_TYPES)})")
        with self._lock:
            self._user(requester_id)  # KeyError for a requester the fake does not know
            ticket_id = max(self.tickets, default=0) + 1
            self.add_ticket(ticket_id, requester_id, subject, _status(status), channel,
                            description=body, group_id=group_id, at=at)  # fmt: skip
            payload = self._event("ticket.created", ticket_id, {}, requester_id, at)
        self._send(payload)
        return ticket_id

    def add_comment(
        self,
        ticket_id: int,
        body: str,
        public: bool = True,
        author_id: int | None = None,
        *,
        at: datetime | None = None,
    ) -> int:
        """Add a comment (the requester's by default), send ticket.comment_added, return its id."""
        self._subscribed()
        with self._lock:
            ticket = self._ticket(ticket_id)
            author = self._user(author_id or ticket["requester_id"])
            stamp = _rest_time(at)
            given = {"body": body, "public": public}
            comment = self._comment(author["id"], given, ticket["via"]["channel"], stamp)
            self.comments[ticket_id].append(comment)
            ticket["updated_at"] = stamp
            payload = self._comment_event(ticket_id, comment, at)
        self._send(payload)
        return int(comment["id"])

    def set_status(self, ticket_id: int, status: str, *, at: datetime | None = None) -> None:
        """Change a ticket's status and send ticket.status_changed (nothing when unchanged)."""
        self._subscribed()
        current = _status(status)
        with self._lock:
            ticket = self._ticket(ticket_id)
            previous = ticket["status"]
            if current == previous:
                return
            ticket["status"] = current
            ticket["updated_at"] = _rest_time(at)
            change = {"current": current.upper(), "previous": previous.upper()}
            # The fake's one agent is the API user: it stands for whoever changed the status.
            actor_id = ticket["assignee_id"] or BOT_USER_ID
            payload = self._event("ticket.status_changed", ticket_id, change, actor_id, at)
        self._send(payload)

    def wait_for_echoes(self, timeout: float = 5.0) -> None:
        """Wait until the comment events of comments added through the API have been sent."""
        with self._echoes:
            if not self._echoes.wait_for(lambda: self._pending_echoes == 0, timeout):
                raise TimeoutError(f"{self._pending_echoes} echo(es) unsent after {timeout}s")

    def add_user(
        self,
        user_id: int,
        name: str,
        email: str | None = None,
        phone: str | None = None,
        extra_identities: list[dict] | None = None,
    ) -> dict:
        """Create an end user with email, phone and extra identities and return its JSON."""
        stamp = _rest_time()
        user = {
            "id": user_id,
            "url": f"{self.url}/api/v2/users/{user_id}.json",
            "name": name,
            "email": email,
            "phone": phone,
            "role": "end-user",
            "active": True,
            "time_zone": "UTC",
            "organization_id": None,
            "tags": [],
            "created_at": stamp,
            "updated_at": stamp,
        }
        wanted = [{"type": "email", "value": email}] if email else []
        wanted += [{"type": "phone_number", "value": phone}] if phone else []
        identities: list[dict] = []
        with self._lock:
            for spec in wanted + (extra_identities or []):
                identity_id = next(self._ids)
                first_of_type = all(i["type"] != spec["type"] for i in identities)
                identities.append(
                    {
                        "url": f"{self.url}/api/v2/users/{user_id}/identities/{identity_id}.json",
                        "id": identity_id,
                        "user_id": user_id,
                        "type": spec["type"],
                        "value": spec["value"],
                        "verified": spec.get("verified", True),
                        "primary": spec.get("primary", first_of_type),
                        "created_at": stamp,
                        "updated_at": stamp,
                    }
                )
            self.users[user_id] = user
            self.identities[user_id] = identities
        return user

    def add_agent(self, user_id: int, name: str, email: str | None = None) -> dict:
        """Create an agent (a user with role agent), who can be a ticket's assignee."""
        agent = self.add_user(user_id, name, email=email)
        agent["role"] = "agent"
        return agent

    def add_ticket(
        self,
        ticket_id: int,
        requester_id: int,
        subject: str,
        status: str = "open",
        channel: str = "web",
        *,
        description: str | None = None,
        group_id: int | None = None,
        at: datetime | None = None,
        updated: datetime | None = None,
        assignee_id: int | None = None,
        priority: str | None = None,
    ) -> dict:
        """Create a ticket opened by a public comment (its description) and return its JSON.

        The description defaults to the subject; `at` backdates the ticket, `updated` its
        last change (default: `at`); `assignee_id` names an agent of add_agent().
        """
        stamp = _rest_time(at)
        ticket = {
            "id": ticket_id,
            "url": f"{self.url}/api/v2/tickets/{ticket_id}.json",
            "via": _via(channel),
            "created_at": stamp,
            "updated_at": stamp if updated is None else _rest_time(updated),
            "type": None,
            "subject": subject,
            "description": description or subject,
            "priority": priority,
            "status": status.lower(),
            "requester_id": requester_id,
            "submitter_id": requester_id,
            "assignee_id": assignee_id,
            "group_id": group_id,
            "tags": [],
        }
        opening = self._comment(requester_id, {"body": description or subject}, channel, stamp)
        with self._lock:
            self.tickets[ticket_id] = ticket
            self.comments[ticket_id] = [opening]
        return ticket

    def fail_next(
        self, status: int, count: int = 1, headers: dict | None = None, body: dict | None = None
    ) -> None:
        """Answer the next `count` requests with this status, headers and body."""
        with self._lock:
            self._failures.extend([(status, dict(headers or {}), body)] * count)

    # -- fault modes: switched here, or over HTTP at /_control/faults (FaultControl) --------
    def rate_limit(self, seconds: float, retry_after: float) -> None:
        """Answer every API request 429 with Retry-After for `seconds` from now."""
        self._set_fault("rate_limit", seconds, retry_after)

    def unavailable(self, seconds: float) -> None:
        """Answer every API request 503 for `seconds` from now."""
        self._set_fault("unavailable", seconds, 0.0)

    def stall(self, seconds: float, hold: float) -> None:
        """Hold each API request arriving in the next `seconds` for `hold` s, then handle it."""
        self._set_fault("stall", seconds, hold)

    def apply_late(self, delay: float, seconds: float | None = None) -> None:
        """Apply and answer each note write (a ticket PUT with a comment) `delay` s after it came.

        For `seconds` from now, or until clear_faults() when None. A client whose timeout is
        shorter has given up by then, and the note is written all the same.
        """
        self._set_fault("apply_late", math.inf if seconds is None else seconds, delay)

    def clear_faults(self) -> None:
        """End every fault mode now (requests already held are still answered when due)."""
        with self._lock:
            self._faults.clear()

    def faults(self) -> dict[str, dict[str, float | None]]:
        """Return the fault modes in force: remaining seconds (None: until cleared), value."""
        now = time.monotonic()
        with self._lock:
            in_force = self._in_force(now)
        return {
            mode: {
                "remaining_s": None if math.isinf(f.until) else round(f.until - now, 3),
                "value": f.value,
            }
            for mode, f in in_force.items()
        }

    def traffic(self, since: float | None = None, until: float | None = None) -> Traffic:
        """Count the API requests that arrived in [since, until) (time.time() seconds)."""
        with self._lock:
            answered = list(self.answered)
        return Traffic.count(answered, since or 0.0, math.inf if until is None else until)

    def _set_fault(self, mode: str, seconds: float, value: float) -> None:
        for name, number in (("seconds", seconds), ("value", value)):
            if isinstance(number, bool) or not isinstance(number, int | float):
                raise ValueError(f"{mode}: {name} must be a number, got {number!r}")
            if number < 0 or math.isnan(number) or (name == "value" and math.isinf(number)):
                raise ValueError(f"{mode}: {name} must be a finite number ≥ 0, got {number!r}")
        with self._lock:
            self._faults[mode] = _Fault(time.monotonic() + seconds, float(value))

    def _in_force(self, at: float) -> dict[str, _Fault]:
        """Forget the faults over at a time.monotonic() instant, return the rest (lock held)."""
        for mode in [m for m, f in self._faults.items() if f.until <= at]:
            del self._faults[mode]
        return dict(self._faults)

    def notes(self, ticket_id: int) -> list[dict]:
        """Return the private comments written to a ticket."""
        with self._lock:
            return [c for c in self.comments.get(ticket_id, []) if not c["public"]]

    def _subscribed(self) -> _Webhook:
        if self._webhook is None:
            raise WebhookFailed("no webhook target: call subscribe(url, signing_secret) first")
        return self._webhook

    def _ticket(self, ticket_id: int) -> dict:
        if ticket_id not in self.tickets:
            raise KeyError(f"no ticket {ticket_id}")
        return self.tickets[ticket_id]

    def _user(self, user_id: int) -> dict:
        if user_id not in self.users:
            raise KeyError(f"no user {user_id}: add_user() first")
        return self.users[user_id]

    def _event(
        self, event_type: str, ticket_id: int, change: dict, actor_id: int, at: datetime | None
    ) -> dict[str, Any]:
        """Return an event-subscription payload about a ticket, as the fixtures show one."""
        return {
            "account_id": ACCOUNT_ID,
            "detail": self._detail(self.tickets[ticket_id], actor_id),
            "event": change,
            "id": str(uuid.uuid4()),
            "subject": f"zen:ticket:{ticket_id}",
            "time": _event_time(at),
            "type": f"zen:event-type:{event_type}",
            "zendesk_event_version": EVENT_VERSION,
        }

    def _detail(self, ticket: dict, actor_id: int) -> dict[str, Any]:
        """Return a ticket as an event's detail: string ids, UPPER-CASE values, a via type."""
        requester = self.users.get(ticket["requester_id"], {})
        channel = ticket["via"]["channel"]
        return {
            "actor_id": str(actor_id),
            "assignee_id": _id_text(ticket["assignee_id"]),
            "brand_id": BRAND_ID,
            "created_at": ticket["created_at"],
            "custom_status": CUSTOM_STATUS_ID,
            "description": ticket["description"],
            "external_id": None,
            "form_id": FORM_ID,
            "group_id": _id_text(ticket["group_id"]),
            "id": str(ticket["id"]),
            "is_public": True,
            "organization_id": _id_text(requester.get("organization_id")),
            "priority": _upper(ticket["priority"]),
            "requester_id": str(ticket["requester_id"]),
            "status": ticket["status"].upper(),
            "subject": ticket["subject"],
            "submitter_id": str(ticket["submitter_id"]),
            "tags": list(ticket["tags"]),
            "type": _upper(ticket["type"]),
            "updated_at": ticket["updated_at"],
            "via": {"channel": VIA_TYPES.get(channel, channel)},
        }

    def _comment_event(self, ticket_id: int, comment: dict, at: datetime | None) -> dict:
        author = self.users.get(comment["author_id"], {})
        change = {
            "comment": {
                "author": {
                    "id": str(comment["author_id"]),
                    "is_staff": author.get("role", "end-user") != "end-user",
                    "name": author.get("name"),
                },
                "body": comment["body"],
                "html_body": comment["html_body"],
                "id": str(comment["id"]),
                "is_public": comment["public"],
            }
        }
        return self._event("ticket.comment_added", ticket_id, change, comment["author_id"], at)

    def _send(self, payload: dict[str, Any]) -> WebhookAnswer:
        """POST an event to the webhook target, signed; raise WebhookFailed unless 2xx."""
        webhook = self._subscribed()
        event_type = payload["type"].removeprefix("zen:event-type:")
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
        raw = body.encode("utf-8")
        # Zendesk signs at delivery time, whatever time the event itself tells.
        timestamp = _rest_time()
        headers = {
            "Content-Type": "application/json",
            "X-Zendesk-Account-Id": str(ACCOUNT_ID),
            "X-Zendesk-Webhook-Id": webhook.webhook_id,
            "X-Zendesk-Webhook-Invocation-Id": _ulid(),
            "X-Zendesk-Webhook-Signature": sign(webhook.signing_secret, timestamp, raw),
            "X-Zendesk-Webhook-Signature-Timestamp": timestamp,
        }
        where = f"{event_type} for ticket {payload['detail']['id']} to {webhook.url}"
        try:
            answer = _post(webhook, raw, headers)
        except requests.RequestException as exc:
            self._record(WebhookDelivery(event_type, raw, headers, None))
            raise WebhookFailed(f"{where}: not delivered ({exc})") from exc
        self._record(WebhookDelivery(event_type, raw, headers, answer))
        if not 200 <= answer.status_code < 300:
            raise WebhookFailed(f"{where}: answered {answer.status_code} {answer.text[:300]}")
        return answer

    def _record(self, delivery: WebhookDelivery) -> None:
        with self._lock:
            self.deliveries.append(delivery)

    def _echo_after(self, response: Response, payload: dict[str, Any]) -> None:
        """Send a comment event once the API reply that added the comment has gone out."""
        with self._echoes:
            self._pending_echoes += 1
        echo = threading.Thread(target=self._send_echo, args=(payload,), daemon=True)
        response.call_on_close(echo.start)

    def _send_echo(self, payload: dict[str, Any]) -> None:
        try:
            self._send(payload)
        except WebhookFailed as failure:
            log.warning("echo of a comment: %s", failure)  # kept in self.deliveries too
        finally:
            with self._echoes:
                self._pending_echoes -= 1
                self._echoes.notify_all()

    def _agent_view(self) -> Response:
        """Render the tickets, newest first, as an agent would read them (read-only)."""
        with self._lock:
            tickets = sorted(self.tickets.values(), key=lambda t: (t["created_at"], t["id"]),
                             reverse=True)  # fmt: skip
            sections = "\n".join(self._ticket_html(ticket) for ticket in tickets)
        return agent_page("Zendesk (fake): tickets", sections, "No tickets yet.")

    def _ticket_html(self, ticket: dict) -> str:
        requester = self.users.get(ticket["requester_id"], {}).get("name")
        facts = (requester or f"user {ticket['requester_id']}", ticket["via"]["channel"],
                 ticket["status"], ticket["created_at"])  # fmt: skip
        comments = "".join(self._comment_html(c) for c in self.comments.get(ticket["id"], []))
        return (
            f"<section><h2>#{ticket['id']} {html.escape(ticket['subject'] or '')}</h2>"
            f'<p class="meta">{html.escape(" · ".join(facts))}</p>{comments}</section>'
        )

    def _comment_html(self, comment: dict) -> str:
        author = self.users.get(comment["author_id"], {}).get("name")
        kind = "public reply" if comment["public"] else "internal note"
        facts = (author or f"user {comment['author_id']}", kind, comment["created_at"])
        return (
            f'<article class="{"public" if comment["public"] else "internal"}">'
            f'<p class="meta">{html.escape(" · ".join(facts))}</p>'
            f"<pre>{html.escape(comment['body'] or '')}</pre></article>"
        )

    def _comment(self, author_id: int, given: dict, channel: str, stamp: str) -> dict:
        body, html_body = given.get("body"), given.get("html_body")
        if html_body is None:
            markup = html.escape(body or "").replace("\n", "<br>")
            html_body = f'<div class="zd-comment" dir="auto">{markup}</div>'
        if body is None:  # Zendesk keeps the text of an HTML comment: a line per block
            text = re.sub(r"<br\s*/?>|</p>|</li>|</ul>|</div>", "\n", html_body)
            text = re.sub(r"<li>", "- ", text)
            text = html.unescape(re.sub(r"<[^>]+>", "", text))
            body = re.sub(r"\n{2,}", "\n", text).strip()
        return {
            "id": next(self._ids),
            "type": "Comment",
            "author_id": author_id,
            "body": body,
            "html_body": html_body,
            "plain_body": body,
            "public": bool(given.get("public", True)),
            "attachments": [],
            "audit_id": next(self._ids),
            "via": _via(channel),
            "metadata": {},
            "created_at": stamp,
        }

    def _wsgi(self, environ: dict, start_response: Any) -> Any:
        if environ.get("PATH_INFO", "").startswith(CONTROL_PREFIX):
            # The test's switch, not the API: no log entry, no delay, no fault.
            return self._control(Request(environ))(environ, start_response)
        return super()._wsgi(environ, start_response)

    def _control(self, request: Request) -> Response:
        """Switch fault modes and read the traffic counters over HTTP (see FaultControl)."""
        path = request.path.removeprefix(CONTROL_PREFIX)
        try:
            if path == "faults" and request.method == "POST":
                self._set_fault_from(request.get_json(force=True, silent=True))
            elif path == "faults" and request.method == "DELETE":
                self.clear_faults()
            elif path == "traffic" and request.method == "GET":
                since = float(request.args.get("since", 0))
                until = float(request.args.get("until", math.inf))
                return _json(vars(self.traffic(since, until)))
            elif path != "faults" or request.method != "GET":
                return _json(NO_ENDPOINT, 404)
        except ValueError as exc:
            return _json({"error": str(exc)}, 400)
        return _json({"faults": self.faults()})

    def _set_fault_from(self, given: Any) -> None:
        """Switch a fault mode on from a JSON object: {"mode": "stall", "seconds": 5, …}."""
        if not isinstance(given, dict) or given.get("mode") not in FAULT_MODES:
            raise ValueError(f"expected a JSON object with mode one of {', '.join(FAULT_MODES)}")
        mode = given.pop("mode")
        required, optional = FAULT_MODES[mode]
        missing = [name for name in required if name not in given]
        unknown = sorted(set(given) - set(required) - set(optional))
        if missing or unknown:
            wanted = ", ".join(required + tuple(f"[{name}]" for name in optional))
            raise ValueError(f"{mode}: expected {wanted}; got {', '.join(sorted(given))}")
        getattr(self, mode)(**given)

    def _api(self, request: Request, received: float) -> Response:
        arrived = time.time() - (time.monotonic() - received)
        with self._lock:
            self._recent.append(received)
            while self._recent[0] < received - 60:
                self._recent.popleft()
            remaining = max(RATE_LIMIT - len(self._recent), 0)
            in_force = self._in_force(received)
            refused = "unavailable" in in_force or "rate_limit" in in_force
            failure = self._failures.popleft() if self._failures and not refused else None
        hold = self._hold(request, in_force)
        if hold > 0:
            time.sleep(max(0.0, received + hold - time.monotonic()))
        if "unavailable" in in_force:
            response = _json(UNAVAILABLE, 503)
        elif "rate_limit" in in_force:
            retry_after = _seconds_text(in_force["rate_limit"].value)
            response = self._failure(429, {"Retry-After": retry_after}, None)
        else:
            response = self._failure(*failure) if failure else self._dispatch(request)
        response.headers.setdefault("X-Rate-Limit", str(RATE_LIMIT))
        response.headers.setdefault("X-Rate-Limit-Remaining", str(remaining))
        with self._lock:
            answered = Answered(arrived, request.method, request.path, response.status_code)
            self.answered.append(answered)
        return response

    def _hold(self, request: Request, in_force: dict[str, _Fault]) -> float:
        """Return how long after its arrival a request is handled (0: at once)."""
        hold = in_force["stall"].value if "stall" in in_force else 0.0
        if "apply_late" in in_force and self._is_note_write(request):
            hold = max(hold, in_force["apply_late"].value)
        return hold

    @staticmethod
    def _is_note_write(request: Request) -> bool:
        if request.method != "PUT" or not NOTE_WRITE.fullmatch(request.path):
            return False
        try:
            return bool(json.loads(request.get_data())["ticket"].get("comment"))
        except (ValueError, TypeError, KeyError, AttributeError):
            return False

    def _failure(self, status: int, headers: dict, body: dict | None) -> Response:
        if body is None and status == 429:
            response = Response(RATE_LIMITED, 429, content_type="text/plain; charset=utf-8")
        else:
            response = _json(body or {"error": HTTP_STATUS_CODES.get(status, "Error")}, status)
        response.headers.update(headers)
        return response

    def _dispatch(self, request: Request) -> Response:
        auth = request.authorization
        expected = (f"{self.email}/token", self.api_token)
        if auth is None or auth.type != "basic" or (auth.username, auth.password) != expected:
            return _json(UNAUTHORIZED, 401)
        try:
            endpoint, args = ROUTES.bind_to_environ(request.environ).match()
        except HTTPException:
            return _json(NO_ENDPOINT, 404)
        with self._lock:
            response: Response = getattr(self, f"_api_{endpoint}")(request, **args)
            return response

    def _api_me(self, request: Request) -> Response:
        return _json({"user": self.users[BOT_USER_ID]})

    def _api_user(self, request: Request, user_id: int) -> Response:
        user = self.users.get(user_id)
        return _json({"user": user}) if user else _json(NOT_FOUND, 404)

    def _api_identities(self, request: Request, user_id: int) -> Response:
        if user_id not in self.users:
            return _json(NOT_FOUND, 404)
        return _json(_page("identities", self.identities.get(user_id, []), request))

    def _api_show_many(self, request: Request) -> Response:
        ids = [int(i) for i in request.args.get("ids", "").split(",") if i.strip().isdigit()]
        if len(ids) > SHOW_MANY_MAX:
            return _json(TOO_MANY_IDS, 400)
        found = [self.users[uid] for uid in ids if uid in self.users]
        payload = _page("users", found)
        if "identities" in request.args.get("include", "").split(","):
            payload["identities"] = [i for u in found for i in self.identities.get(u["id"], [])]
        return _json(payload)

    # Incremental Ticket Export, Cursor Based (and its 10-a-minute limit):
    # https://developer.zendesk.com/api-reference/ticketing/ticket-management/incremental_exports/
    # https://developer.zendesk.com/documentation/ticketing/managing-tickets/using-the-incremental-export-api
    def _api_export_tickets(self, request: Request) -> Response:
        refusal = self._export_refusal()
        if refusal is not None:
            return refusal
        args = request.args
        if ("start_time" in args) == ("cursor" in args):
            return _json(EXPORT_PARAMETERS, 400)
        horizon = time.time() - self.export_lag_seconds
        if "cursor" in args:
            position = _export_position(args["cursor"])
            if position is None:
                return _json(BAD_CURSOR, 400)
        else:
            if not args["start_time"].isdigit():
                return _json(BAD_START_TIME, 400)
            if int(args["start_time"]) > horizon:
                return _json(TOO_RECENT, 422)
            position = (int(args["start_time"]), -1)  # from start_time on, itself included
        per_page = min(args.get("per_page", EXPORT_PAGE_MAX, type=int) or 1, EXPORT_PAGE_MAX)
        pending = self._exported_after(position, horizon)
        page = pending[:per_page]
        after = (page[-1]["generated_timestamp"], page[-1]["id"]) if page else position
        return _json(self._export_page(page, after, len(pending) <= per_page, args))

    def _export_refusal(self) -> Response | None:
        """Count an export request; return Zendesk's 429 when over the per-minute limit."""
        now = time.monotonic()
        while self._export_recent and self._export_recent[0] <= now - 60:
            self._export_recent.popleft()
        limit = self.export_limit_per_minute
        if limit is not None and len(self._export_recent) >= limit:
            retry_after = math.ceil(self._export_recent[0] + 60 - now)
            response = _json(EXPORT_RATE_LIMITED, 429)
            response.headers["Retry-After"] = str(max(retry_after, 1))
            return response
        self._export_recent.append(now)
        return None

    def _exported_after(self, position: tuple[int, int], horizon: float) -> list[dict]:
        """Return the tickets past an export position up to the horizon, in export order."""
        exported = [
            ticket | {"generated_timestamp": _epoch(ticket["updated_at"])}
            for ticket in self.tickets.values()
        ]
        exported.sort(key=lambda t: (t["generated_timestamp"], t["id"]))
        return [
            ticket
            for ticket in exported
            if (ticket["generated_timestamp"], ticket["id"]) > position
            and ticket["generated_timestamp"] <= horizon
        ]

    def _export_page(
        self, tickets: list[dict], after: tuple[int, int], end_of_stream: bool, args: Any
    ) -> dict[str, Any]:
        cursor = _export_cursor(after)
        # The next page keeps the page size and side-loads asked for.
        kept = "".join(
            f"&{name}={quote(args[name], safe=',')}"
            for name in ("per_page", "include")
            if name in args
        )
        page: dict[str, Any] = {
            "tickets": tickets,
            "after_url": f"{self.url}{EXPORT_PATH}?cursor={cursor}{kept}",
            "after_cursor": cursor,
            "before_url": None,
            "before_cursor": None,
            "end_of_stream": end_of_stream,
        }
        if "users" in args.get("include", "").split(","):
            roles = ("requester_id", "submitter_id", "assignee_id")
            named = (ticket[role] for ticket in tickets for role in roles)
            wanted = dict.fromkeys(uid for uid in named if uid in self.users)
            page["users"] = [self.users[uid] for uid in wanted]
        return page

    def _api_ticket(self, request: Request, ticket_id: int) -> Response:
        ticket = self.tickets.get(ticket_id)
        return _json({"ticket": ticket}) if ticket else _json(NOT_FOUND, 404)

    def _api_comments(self, request: Request, ticket_id: int) -> Response:
        if ticket_id not in self.tickets:
            return _json(NOT_FOUND, 404)
        comments = list(self.comments.get(ticket_id, []))
        if request.args.get("sort_order") == "desc":
            comments.reverse()
        return _json(_page("comments", comments, request))

    def _api_update_ticket(self, request: Request, ticket_id: int) -> Response:
        ticket = self.tickets.get(ticket_id)
        if ticket is None:
            return _json(NOT_FOUND, 404)
        try:
            changes = json.loads(request.get_data())["ticket"]
            given = changes.get("comment") or {}
        except (ValueError, TypeError, KeyError, AttributeError):
            return _json(UNPARSABLE, 400)
        if given and not (given.get("body") or given.get("html_body")):
            return _json(BLANK_COMMENT | {"details": {"base": ["Comment: cannot be blank"]}}, 422)
        stamp = _rest_time()
        audit_id = next(self._ids)
        events: list[dict] = []
        comment: dict | None = None
        if given:
            comment = self._comment(given.get("author_id", BOT_USER_ID), given, "api", stamp)
            comment["audit_id"] = audit_id
            self.comments.setdefault(ticket_id, []).append(comment)
            hidden = ("via", "metadata", "created_at")
            events.append({key: value for key, value in comment.items() if key not in hidden})
        for field in TICKET_FIELDS:
            value = changes.get(field, ticket[field])
            value = value.lower() if field == "status" else value
            if value != ticket[field]:
                event = {"id": next(self._ids), "type": "Change", "field_name": field}
                events.append(event | {"value": value, "previous_value": ticket[field]})
                ticket[field] = value
        ticket["updated_at"] = stamp
        audit = {
            "id": audit_id,
            "ticket_id": ticket_id,
            "created_at": stamp,
            "author_id": BOT_USER_ID,
            "metadata": {},
            "via": _via("api"),
            "events": events,
        }
        response = _json({"ticket": ticket, "audit": audit})
        if comment is not None and self._webhook is not None:
            # Zendesk announces every added comment, Carryover's own notes included.
            self._echo_after(response, self._comment_event(ticket_id, comment, None))
        return response

    def _api_search(self, request: Request) -> Response:
        query = request.args.get("query", "").split()
        terms = dict(term.split(":", 1) for term in query if ":" in term)
        terms.setdefault("type", request.args.get("filter[type]", ""))
        requester = terms.get("requester_id", terms.get("requester", ""))
        results: list[dict] = []
        if terms.get("type") == "ticket" and requester.isdigit():
            for ticket in self.tickets.values():
                if ticket["requester_id"] == int(requester):
                    results.append(ticket | {"result_type": "ticket"})
        return _json(_page("results", results) | {"facets": None})


class FaultControl:
    """Switch a FakeZendesk's fault modes and read its counters over HTTP, from any process."""

    def __init__(self, url: str, timeout: float = 5.0) -> None:
        self.url = url.rstrip("/") + CONTROL_PREFIX
        self.timeout = timeout

    def rate_limit(self, seconds: float, retry_after: float) -> None:
        """Answer every API request 429 with Retry-After for `seconds` from now."""
        self._switch(mode="rate_limit", seconds=seconds, retry_after=retry_after)

    def unavailable(self, seconds: float) -> None:
        """Answer every API request 503 for `seconds` from now."""
        self._switch(mode="unavailable", seconds=seconds)

    def stall(self, seconds: float, hold: float) -> None:
        """Hold each API request arriving in the next `seconds` for `hold` s, then handle it."""
        self._switch(mode="stall", seconds=seconds, hold=hold)

    def apply_late(self, delay: float, seconds: float | None = None) -> None:
        """Apply and answer each note write `delay` s after it came (until cleared: None)."""
        given = {} if seconds is None else {"seconds": seconds}
        self._switch(mode="apply_late", delay=delay, **given)

    def clear_faults(self) -> None:
        """End every fault mode now."""
        requests.delete(self.url + "faults", timeout=self.timeout).raise_for_status()

    def faults(self) -> dict[str, dict[str, float | None]]:
        """Return the fault modes in force."""
        response = requests.get(self.url + "faults", timeout=self.timeout)
        response.raise_for_status()
        return response.json()["faults"]  # type: ignore[no-any-return]

    def traffic(self, since: float | None = None, until: float | None = None) -> Traffic:
        """Count the API requests that arrived in [since, until) (time.time() seconds)."""
        window = {"since": since, "until": until}
        params = {name: value for name, value in window.items() if value is not None}
        response = requests.get(self.url + "traffic", params=params, timeout=self.timeout)
        response.raise_for_status()
        return Traffic(**response.json())

    def _switch(self, **given: Any) -> None:
        response = requests.post(self.url + "faults", json=given, timeout=self.timeout)
        if response.status_code != 200:
            raise ValueError(response.json().get("error", response.text))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Serve a fake Zendesk REST API until Ctrl-C.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--email", default="bot@example.com")
    parser.add_argument("--token", default="test-token")
    parser.add_argument(
        "--seed", action="store_true", help="add the requester and tickets of the fixtures"
    )
    options = parser.parse_args()
    fake = FakeZendesk(options.email, options.token, options.host, options.port)
    if options.seed:
        # The requester and tickets that plugins/zendesk/fixtures/ talk about.
        fake.add_user(
            8447388090501, "Ann Example", email="ann.example@example.com", phone="+14155550142"
        )
        for ticket_id in (5141, 5149, 5158, 5160):
            fake.add_ticket(ticket_id, 8447388090501, f"ticket {ticket_id}")
    print(f"Fake Zendesk at {fake.url} (user {options.email}/token, token {options.token})")
    print(f"  agent view {fake.url}/")
    print(f'  faults: POST {fake.url}{CONTROL_PREFIX}faults {{"mode": "stall", …}}')
    fake.start()
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        fake.stop()
