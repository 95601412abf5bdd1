"""Zendesk: ticket webhooks in, private notes out."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from middleware.config import Setting
from middleware.errors import (
    InvalidSignature,
    MalformedPayload,
    PermanentUpstreamError,
    UnsupportedEvent,
    UpstreamError,
)
from middleware.ingest import json_input
from middleware.integrations.network import UpstreamGuard
from middleware.integrations.plugin import (
    NOTE_SETTINGS,
    Capability,
    Comment,
    HistoryPage,
    IdentityType,
    InboundEvent,
    InboundRequest,
    Pacer,
    Plugin,
    period_progress,
)
from middleware.interaction import Identity, Interaction
from plugins.zendesk.client import ZendeskClient
from plugins.zendesk.rich import COMMENT_MAX_BYTES, fits, note_html

EVENT_PREFIX = "zen:event-type:"
TIMESTAMP_HEADER = "X-Zendesk-Webhook-Signature-Timestamp"
TRIGGER_EVENTS = ("ticket.created", "ticket.updated")
MAX_EVENT_ID = 200
MAX_ID_DIGITS = 20  # Zendesk ids are 64-bit integers
# Zendesk identity types and the Carryover identity each one is.
IDENTITY_TYPES = {
    "email": "email",
    "google": "email",
    "phone_number": "phone",
    "twitter": "twitter",
    "facebook": "facebook",
}

ZENDESK_ID = re.compile(r"^[0-9]{1,20}$")  # tickets, users, comments: 64-bit integers
# An export cursor is base64 text ("MTc4MjExNzAwMC4wfHw1MDEwfA=="); it goes into the next
# request's query, so anything else (an & or # that would add to it) is refused.
EXPORT_CURSOR = re.compile(r"[A-Za-z0-9+/=_-]{1,512}")
SHOW_MANY = 100  # users one show_many call returns
MAX_TIME_CHARS = 40  # 2026-03-01T10:00:00.123456+00:00 and no longer: it goes into a key
# What a user look-up keeps (in memory and in the store every process shares): what enrich()
# reads, never the user's notes, details, tags or custom fields.
KEPT_USER_FIELDS = ("name", "email", "phone")
KEPT_IDENTITY_FIELDS = ("type", "value")


def normalise_user(value: str) -> str | None:
    """Return a Zendesk user id, or None for anything else (a placeholder, a redacted value)."""
    value = value.strip()
    if not value.isdigit() or not value.strip("0"):
        return None
    return value


SETUP = """\
1. In Zendesk Admin Center → Apps and integrations → Webhooks, create a webhook that
   subscribes to Zendesk events: Ticket created, Ticket comment added, Ticket status changed.
   Endpoint URL: {public_url}/hooks/zendesk, request method POST, format JSON.
2. Copy the webhook's signing secret into webhook_secret below (or
   integrations.zendesk.webhook_secret in the configuration file).
3. Create an API token (Admin Center → Apps and integrations → Zendesk API) and enter it as
   api_token, with your Zendesk url and the email of the agent it belongs to.
"""


class ZendeskPlugin(Plugin):
    """Receive Zendesk ticket events and write summaries as private notes."""

    key = "zendesk"
    title = "Zendesk"
    capabilities = frozenset(
        {Capability.RECEIVE, Capability.ENRICH, Capability.WRITE_NOTE, Capability.IMPORT_HISTORY}
    )
    identity_types = (IdentityType("zendesk_user", normalise_user, system_id=True, lookup=True),)
    # Zendesk's ids ("id", "requester_id") have 13 digits or more: one in ten passes Luhn.
    id_fields = ("id", "*_id")
    id_formats = {"ticket": ZENDESK_ID, "user": ZENDESK_ID, "comment": ZENDESK_ID}
    settings = {
        "url": Setting(str, required=True, doc="https://acme.zendesk.com or any base URL"),
        "email": Setting(str, required=True, doc="the agent the API token belongs to"),
        "api_token": Setting(str, required=True, secret=True),
        "webhook_secret": Setting(str, required=True, secret=True),
        "signature_tolerance_s": Setting(int, 3600, doc="0 turns the freshness check off"),
        "ticket_updates_per_minute": Setting(int, 100),
        "user_cache_ttl_s": Setting(int, 300),
        "timeout_s": Setting(float, 10.0),
        "export_requests_per_minute": Setting(
            int,
            10,
            doc="pages of the ticket export a minute: Zendesk allows 10 (30 with High Volume API)",
        ),
        **NOTE_SETTINGS,
    }
    history_event_types = ("history.ticket",)
    event_types = (
        "ticket.created",
        "ticket.comment_added",
        "ticket.comment_added.by_agent",
        "ticket.status_changed",
        "trigger.ticket.created",
        "trigger.ticket.updated",
    )
    setup_doc = SETUP
    refusal_hints = {
        "signature": "check webhook_secret is Zendesk's signing secret of this webhook "
        "(Admin Center > Apps and integrations > Webhooks > the webhook > Reveal secret)",
        "missing-signature": "Zendesk signs every webhook: is something else posting to this "
        "URL, or does a proxy in front drop the X-Zendesk-Webhook-Signature headers?",
        "timestamp": "the signature is right but old: check the server clock, or raise "
        "signature_tolerance_s if Zendesk retried for longer",
        "malformed": "check the trigger's JSON body is the one in the setup steps",
    }
    note_max_bytes = COMMENT_MAX_BYTES  # one comment; its HTML, if larger, goes as text

    def __init__(self, settings: dict[str, Any], config: Any) -> None:
        super().__init__(settings, config)
        self.client = ZendeskClient(
            self.upstream_url("url"), self.options["email"], self.options["api_token"],
            self.options["timeout_s"], self.upstream_guard,
        )  # fmt: skip
        self._users = self.lookups.cached(
            "zendesk_user", self.options["user_cache_ttl_s"], self._fetch_user, key=zendesk_id
        )
        # The export has a rate limit of its own: its 429s must not pause notes and lookups.
        self.exports = ZendeskClient(
            self.upstream_url("url"), self.options["email"], self.options["api_token"],
            self.options["timeout_s"], UpstreamGuard(config.allow_private_upstreams, self.key,
                                                     self.title),
        )  # fmt: skip
        self._export_pacer = Pacer(self.options["export_requests_per_minute"])

    # -- naming records for agents ---------------------------------------------------------
    @classmethod
    def record_label(cls, item: Mapping[str, Any]) -> str:
        """Name a ticket as agents do: "#2"."""
        ticket = zendesk_id(str(item.get("external_id") or "").partition("#")[0])
        if item.get("kind") == "ticket" and ticket is not None:
            return f"#{ticket}"
        return super().record_label(item)

    @classmethod
    def record_url(cls, item: Mapping[str, Any], settings: Mapping[str, Any]) -> str | None:
        """Link a ticket in the agent workspace: <url>/agent/tickets/2."""
        ticket = zendesk_id(str(item.get("external_id") or "").partition("#")[0])
        base = str(settings.get("url") or "").rstrip("/")
        if ticket is None or not base:
            return None
        return f"{base}/agent/tickets/{ticket}"

    # -- receiving -------------------------------------------------------------------------
    def verify(self, request: InboundRequest) -> str:
        """Check X-Zendesk-Webhook-Signature over timestamp + raw body, and its freshness."""
        signature = request.headers.get("x-zendesk-webhook-signature")
        timestamp = request.headers.get("x-zendesk-webhook-signature-timestamp")
        if not signature or not timestamp:
            raise InvalidSignature(
                "missing X-Zendesk-Webhook-Signature(-Timestamp) header", "missing-signature"
            )
        expected = sign(self.options["webhook_secret"], timestamp, request.body)
        if not hmac.compare_digest(expected.encode(), signature.strip().encode()):
            raise InvalidSignature("X-Zendesk-Webhook-Signature does not match")
        tolerance = self.options["signature_tolerance_s"]
        if tolerance:
            try:
                sent = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
            except ValueError:
                raise InvalidSignature(f"{TIMESTAMP_HEADER} is not ISO-8601", "timestamp") from None
            if sent.tzinfo is None:
                sent = sent.replace(tzinfo=UTC)
            if abs((datetime.now(UTC) - sent).total_seconds()) > tolerance:
                raise InvalidSignature(
                    f"{TIMESTAMP_HEADER} {timestamp} is over {tolerance}s off", "timestamp"
                )
        return "signature"

    def parse(self, request: InboundRequest) -> list[InboundEvent]:
        """Read an event-subscription payload or a Carryover trigger body."""
        try:
            # Decode first: json.loads would also take UTF-16 and UTF-32, which JSON forbids.
            text = request.body.decode("utf-8-sig")
            # Trigger placeholders are raw text: a description brings its newlines unescaped.
            payload = json_input.loads(text, strict=False)
        except UnicodeDecodeError:
            raise MalformedPayload("body is not UTF-8") from None
        except json.JSONDecodeError as exc:
            raise MalformedPayload(
                f"body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
            ) from None
        except json_input.DuplicateKey as exc:
            # A trigger placeholder's text (a description with "…", "link": "…") can repeat
            # a key of the body: such a body is refused, never read with the forged value.
            raise MalformedPayload(f"body: {exc}") from None
        except (ValueError, RecursionError) as exc:
            # Numbers of over 4,300 digits, or nesting deeper than Python's stack.
            raise MalformedPayload(f"body: JSON beyond what Carryover reads ({exc})") from None
        if not isinstance(payload, dict):
            raise MalformedPayload("body: expected a JSON object")
        if isinstance(payload.get("type"), str) and payload["type"].startswith(EVENT_PREFIX):
            return [_subscription_event(payload)]
        if "event" in payload:
            return [_trigger_event(payload, request.body)]
        raise MalformedPayload(
            "body: neither an event-subscription payload (type zen:event-type:…) "
            "nor a Carryover trigger body (event, ticket)"
        )

    def comment_of(self, event: InboundEvent) -> Comment | None:
        """Return the comment of a comment event or trigger body, with its ticket."""
        if event.type.startswith("trigger."):
            ticket = event.payload.get("ticket") or {}
            return Comment(str(ticket.get("id")), _texts(ticket.get("latest_comment")))
        comment = (event.payload.get("event") or {}).get("comment")
        if not isinstance(comment, dict):
            return None
        ticket_id = str((event.payload.get("detail") or {}).get("id"))
        return Comment(ticket_id, _texts(comment.get("body"), comment.get("html_body")))

    # -- upstream API ------------------------------------------------------------------------
    def enrich(self, interaction: Interaction) -> Interaction:
        """Add the requester's name, emails, phones and social ids from the Users API."""
        user_ids = [i.value for i in interaction.identities if i.type == "zendesk_user"]
        user_id = zendesk_id(user_ids[0]) if user_ids else None
        if user_id is None:
            return interaction
        user, identities = self._user(int(user_id))
        found = list(interaction.identities)
        if user.get("email"):
            found.append(Identity("email", str(user["email"])))
        if user.get("phone"):
            found.append(Identity("phone", str(user["phone"])))
        for item in identities:
            kind = IDENTITY_TYPES.get(str(item.get("type")))
            if kind and item.get("value"):
                found.append(Identity(kind, str(item["value"])))
        return replace(
            interaction,
            identities=tuple(dict.fromkeys(found)),
            customer_name=interaction.customer_name or user.get("name"),
        )

    def _user(self, user_id: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Return a user and their identities: from memory, the shared store, or the API."""
        found = self._users(str(user_id))
        return found["user"], found["identities"]

    def _fetch_user(self, user_id: str) -> dict[str, Any]:
        return _kept_user(*self.client.user_with_identities(int(user_id)))

    def write_note(self, target_ref: str, body: str) -> None:
        """Add a private comment (public: false) to the ticket, as rich text with links.

        Zendesk keeps the comment's text (its `body`) with the marker line in it, so the
        note is recognised when it comes back and found by note_exists. A note whose HTML
        would pass the comment size limit goes as plain text.
        """
        markup = note_html(body)
        html_body = markup if fits(markup) else None
        self.client.add_private_note(_ticket_id(target_ref), body, html_body)

    def note_exists(self, target_ref: str, marker: str) -> bool:
        """Look for a comment carrying the marker on the ticket."""
        return self.client.has_comment_containing(_ticket_id(target_ref), marker)

    def api_calls(self) -> int:
        """Return the requests sent to Zendesk's API (notes, lookups and exports)."""
        return self.client.session.sent + self.exports.session.sent

    # -- importing history -----------------------------------------------------------------
    def history(self, since: datetime, cursor: str | None) -> Iterator[HistoryPage]:
        """Yield the pages of the incremental ticket export, requesters looked up in bulk."""
        start_time = int(since.replace(tzinfo=UTC).timestamp())
        while True:
            self._export_pacer.wait()
            found = self.history_page(
                self.exports.export_tickets(None if cursor else start_time, cursor), since
            )
            yield found
            if found.done or not found.cursor:
                return
            cursor = found.cursor

    def prefetch_history(self, events: Sequence[InboundEvent]) -> None:
        """Look the requesters of new tickets up, 100 a call, for enrich() to find."""
        self._look_up_requesters(e.payload["ticket"].get("requester_id") for e in events)

    def history_plan(self, since: datetime) -> str | None:
        """Say how fast the export reads: a page of 1,000 tickets, so many pages a minute."""
        pace = self.options["export_requests_per_minute"]
        if pace <= 0:
            return "reads 1,000 tickets a request, as fast as Zendesk answers"
        return f"reads 1,000 tickets a request, at most {pace} requests a minute"

    @classmethod
    def history_page(cls, page: Mapping[str, Any], since: datetime) -> HistoryPage:
        """Turn a page of the incremental ticket export into history.ticket events."""
        tickets = page.get("tickets")
        cursor = page.get("after_cursor")
        if not isinstance(tickets, list) or not isinstance(cursor, str | None):
            raise UpstreamError("Zendesk sent an export page without tickets or cursor")
        if cursor is not None and not EXPORT_CURSOR.fullmatch(cursor):
            # Refused before the page is recorded, so the cursor is never stored or asked for.
            raise PermanentUpstreamError("Zendesk sent an export cursor that is not one")
        users = {str(u.get("id")): u for u in page.get("users") or [] if isinstance(u, dict)}
        events, skipped, refused = [], [], []
        for ticket in tickets:
            ticket_id = zendesk_id(ticket.get("id")) if isinstance(ticket, dict) else None
            if ticket_id is None:
                refused.append(("a ticket", "its id is not a Zendesk id"))
                continue
            record = f"ticket #{ticket_id}"
            version = ticket.get("updated_at")
            requester = ticket.get("requester_id")
            if not isinstance(version, str) or _time(version) is None:
                refused.append((record, "updated_at is not a time"))
            elif ticket.get("status") == "deleted":
                skipped.append((record, "deleted in Zendesk"))
            elif requester not in (None, "") and zendesk_id(requester) is None:
                refused.append((record, "requester_id is not a Zendesk id"))
            else:
                payload = {
                    "ticket": ticket,
                    "requester": users.get(str(requester)),
                    "assignee": users.get(str(ticket.get("assignee_id"))),
                }
                key = f"history:ticket:{ticket_id}@{version}"
                events.append(InboundEvent(key, "history.ticket", payload))
        versions = [_time(str(e.payload["ticket"]["updated_at"])) for e in events]
        reached = max((v for v in versions if v is not None), default=None)
        return HistoryPage(
            tuple(events),
            cursor=cursor,
            done=page.get("end_of_stream") is True,
            skipped=tuple(skipped),
            refused=tuple(refused),
            progress=period_progress(since, reached) if reached else None,
        )

    def _look_up_requesters(self, user_ids: Iterable[Any]) -> None:
        """Look the requesters not yet known up, 100 a call, for enrich() to find."""
        wanted = sorted(int(u) for u in self._users.missing(user_ids))
        for i in range(0, len(wanted), SHOW_MANY):
            chunk = wanted[i : i + SHOW_MANY]
            users, identities = self.client.users_with_identities(chunk)
            by_user: dict[int, list[dict[str, Any]]] = {u: [] for u in chunk}
            for item in identities:
                owner = zendesk_id(item.get("user_id"))
                if owner is not None and int(owner) in by_user:
                    by_user[int(owner)].append(item)
            found = {int(u["id"]): u for u in users if zendesk_id(u.get("id")) is not None}
            # A user gone since is known as gone: not asked again.
            self._users.remember({str(u): _kept_user(found.get(u, {}), by_user[u]) for u in chunk})

    def check_connection(self) -> str | None:
        """Ask Zendesk who the API token belongs to."""
        return f"Zendesk answered as {self.client.whoami()}"

    def write_budget_per_minute(self) -> int | None:
        """Keep ticket updates under the configured share of Zendesk's 100/min limit."""
        return int(self.options["ticket_updates_per_minute"]) or None


def _time(text: str) -> datetime | None:
    """Read a Zendesk time (2026-03-01T10:00:00Z) as naive UTC; None if it is none."""
    if len(text) > MAX_TIME_CHARS:
        return None
    try:
        moment = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment


def _kept_user(user: Mapping[str, Any], identities: Iterable[Any]) -> dict[str, Any]:
    """Return what a user look-up keeps of a user and their identities."""
    return {
        "user": {k: user[k] for k in KEPT_USER_FIELDS if k in user},
        "identities": [
            {k: item[k] for k in KEPT_IDENTITY_FIELDS if k in item}
            for item in identities
            if isinstance(item, dict)
        ],
    }


def _texts(*values: Any) -> tuple[str, ...]:
    return tuple(v for v in values if isinstance(v, str))


def zendesk_id(value: Any) -> str | None:
    """Return a Zendesk id (a positive integer, sent as a number or a string) as a string.

    None for anything else: ids go into API URLs, so "5141/../../users/me" or "١٢" never do.
    """
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    text = str(value).strip()
    if not (text.isascii() and text.isdigit()) or len(text) > MAX_ID_DIGITS:
        return None
    return text if text.strip("0") else None


def _ticket_id(target_ref: str) -> int:
    ticket = zendesk_id(target_ref)
    if ticket is None:
        raise PermanentUpstreamError(f"{target_ref!r} is not a Zendesk ticket id")
    return int(ticket)


def _require_id(value: Any, where: str, optional: bool = False) -> None:
    """Refuse a payload whose id is not a Zendesk id (400 names where)."""
    if optional and value in (None, ""):
        return
    if zendesk_id(value) is None:
        raise MalformedPayload(f"{where}: expected a Zendesk id (a positive integer)")


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """Return Zendesk's signature: base64(HMAC-SHA256(secret, timestamp + body))."""
    digest = hmac.new(secret.encode(), timestamp.encode() + body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def _subscription_event(payload: dict[str, Any]) -> InboundEvent:
    event_type = payload["type"][len(EVENT_PREFIX) :]
    event_id = payload.get("id")
    if not isinstance(event_id, str) or not event_id:
        raise MalformedPayload("id: expected the event id as a string")
    # Zendesk's ids are UUIDs; anything else must not reach the 255-character key column.
    if len(event_id) > MAX_EVENT_ID or not event_id.isprintable():
        raise MalformedPayload(f"id: expected at most {MAX_EVENT_ID} printable characters")
    if not event_type.startswith("ticket."):
        raise UnsupportedEvent(event_type)
    detail = payload.get("detail")
    if not isinstance(detail, dict) or not detail.get("id"):
        raise MalformedPayload("detail.id: missing (the ticket id)")
    _require_id(detail["id"], "detail.id")
    _require_id(detail.get("requester_id"), "detail.requester_id", optional=True)
    change = payload.get("event")
    if change is not None and not isinstance(change, dict):
        raise MalformedPayload("event: expected an object")
    if event_type == "ticket.comment_added":
        comment = (change or {}).get("comment")
        if not isinstance(comment, dict) or "id" not in comment:
            raise MalformedPayload("event.comment: missing (the comment that was added)")
        _require_id(comment["id"], "event.comment.id")
        author = comment.get("author")
        if isinstance(author, dict) and author.get("is_staff"):
            event_type = "ticket.comment_added.by_agent"
    return InboundEvent(key=f"event:{event_id}", type=event_type, payload=payload)


def _trigger_event(payload: dict[str, Any], body: bytes) -> InboundEvent:
    event = payload.get("event")
    if event not in TRIGGER_EVENTS:
        raise UnsupportedEvent(str(event))
    if "ticket" not in payload:
        # The "Test webhook" button sends {"event": "ticket.updated", "id": 123}.
        raise UnsupportedEvent(f"trigger.{event} without a ticket (a test delivery)")
    ticket = payload.get("ticket")
    if not isinstance(ticket, dict) or not str(ticket.get("id", "")).strip():
        raise MalformedPayload('ticket.id: missing (put "id": "{{ticket.id}}" in the body)')
    _require_id(ticket["id"], "ticket.id")
    requester = ticket.get("requester")
    if requester is not None and not isinstance(requester, dict):
        raise MalformedPayload("ticket.requester: expected an object")
    _require_id((requester or {}).get("id"), "ticket.requester.id", optional=True)
    # Trigger bodies carry no event id; a retry repeats the body byte for byte.
    key = "trigger:" + hashlib.sha256(body).hexdigest()
    return InboundEvent(key=key, type=f"trigger.{event}", payload=payload)
