"""The plugin interface: what an integration is, declares and can do (an extension point)."""

from __future__ import annotations

import json
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import parse_qsl

from middleware.config import ConfigError, Setting
from middleware.errors import InboundError, MalformedPayload
from middleware.ingest import json_input
from middleware.integrations.lookups import PluginLookups
from middleware.integrations.network import UpstreamGuard, UpstreamRefused, check_url

if TYPE_CHECKING:
    from middleware.config import Config
    from middleware.integrations.usage import ApiUsage
    from middleware.interaction import Interaction

# The proof of a delivery that came from its sender's address space but carries nothing
# that proves its content (a Salesforce Outbound Message with only the org id): its records
# are read back from the upstream's API before anything in it is believed.
UNVERIFIED = "unverified"


class Capability(StrEnum):
    """What a plugin can do; core code asks for a capability instead of probing methods."""

    RECEIVE = "receive"  # accepts webhooks at /hooks/<key>
    ENRICH = "enrich"  # looks up the customer behind a record through the upstream API
    WRITE_NOTE = "write_note"  # writes a private note on a ticket or case
    FIND_OPEN_ITEMS = "find_open_items"  # lists a customer's open tickets or cases upstream
    IMPORT_HISTORY = "import_history"  # reads past records through the API (carryover backfill)


# The capabilities that make a plugin call its upstream's API (and so can find it failing).
UPSTREAM_CAPABILITIES = (
    Capability.ENRICH,
    Capability.WRITE_NOTE,
    Capability.FIND_OPEN_ITEMS,
    Capability.IMPORT_HISTORY,
)


# How a record is named when its plugin has no better name: never by its raw id.
# Settings of every plugin that writes notes (spread into its `settings`).
UPDATE_NOTES = "update_notes"
NOTE_SETTINGS = {
    UPDATE_NOTES: Setting(
        bool,
        True,
        doc="a short note on open items here when the customer "
        "calls, writes or opens something in another tool",
    ),
}
NEUTRAL_LABELS = {
    "ticket": "ticket", "case": "case", "call": "phone call", "message": "message",
    "order": "order",
    "visit": "visit", "survey": "survey answer",
}  # fmt: skip


@dataclass(frozen=True)
class IdentityType:
    """An identity type a plugin brings, and how the core treats it.

    `normalise` turns a raw value into its canonical form, or None for junk that must never
    link. A system id is one tool's id for its own people: two different values of one type
    are two people. A lookup type is accepted by the context API as a query parameter.
    """

    type: str
    normalise: Callable[[str], str | None]
    system_id: bool = False
    lookup: bool = False


@dataclass(frozen=True)
class InboundRequest:
    """One webhook delivery as received: what a plugin needs to verify and parse it."""

    path: str
    url: str  # the public URL the sender called (public_url + path + query)
    headers: Mapping[str, str]  # lower-case names
    body: bytes
    path_token: str | None = None
    remote_addr: str = ""  # the client's address (behind trusted proxies, what they said)
    via_trusted_proxy: bool = False  # the peer is a trusted proxy: its headers are believed
    proof: str = ""  # how the delivery was proven authentic (what verify() returned)
    # The URL as this server received it (its Host header), to tell an admin that a sender
    # signed another URL than public_url; never used to accept a delivery.
    received_url: str = ""

    @property
    def content_type(self) -> str:
        """Return the media type without parameters."""
        return self.headers.get("content-type", "").split(";")[0].strip().lower()


@dataclass(frozen=True)
class InboundEvent:
    """One event inside a delivery: a dedupe key, the event type and its parsed payload."""

    key: str
    type: str
    payload: Mapping[str, Any]


@dataclass(frozen=True)
class HistoryPage:
    """One page of past records read through an upstream's API, and where the next begins.

    Each record is an event of one of the plugin's history_event_types, keyed by the record
    and its version ("history:ticket:5158@2026-03-01T10:00:00Z"): a record imported before in
    the same version is not imported again. Records that cannot be imported are listed with
    the reason: skipped (nothing to import, such as a deleted ticket) or refused (malformed).
    """

    events: tuple[InboundEvent, ...]
    cursor: str | None  # where the next page starts; stored so that a killed import resumes
    done: bool  # no page follows (for now: a later import continues from the cursor)
    skipped: tuple[tuple[str, str], ...] = ()  # (record, reason)
    refused: tuple[tuple[str, str], ...] = ()  # (record, reason)
    progress: float | None = None  # 0 to 1: how far through the period this page reaches


@dataclass(frozen=True)
class Comment:
    """The text of a comment an event carries, which may be Carryover's own note coming back."""

    thread_ref: str | None  # the ticket or case it was written on
    texts: tuple[str, ...]


class Plugin:
    """Base of every integration; subclasses live in plugins/<key>/ (an extension point).

    A plugin verifies and parses what its tool sends, enriches records through the tool's
    API and writes notes back. What fields mean lives in mappings/<key>.yaml; storage,
    retries, identity and rendering live in the core.
    """

    key: ClassVar[str]
    title: ClassVar[str]
    short_title: ClassVar[str] = ""  # the name agents use in a sentence, if shorter than title
    capabilities: ClassVar[frozenset[Capability]] = frozenset()
    settings: ClassVar[Mapping[str, Setting]] = {}
    event_types: ClassVar[tuple[str, ...]] = ()
    setup_doc: ClassVar[str] = ""
    note_max_bytes: ClassVar[int | None] = None  # the upstream's size limit of one note
    # The setting holding a webhook secret that Carryover makes (see generate_secret), for
    # senders that take one instead of giving one.
    generated_secret: ClassVar[str | None] = None
    # Whether the generated secret may also be sent in the URL, /hooks/<key>/<secret>, by
    # senders that cannot sign (the setup page then shows that URL).
    secret_in_path: ClassVar[bool] = False

    # -- declarations the core reads (it names no vendor) -----------------------------
    # The identity types this plugin brings beyond the core's phone, email and customer.
    identity_types: ClassVar[tuple[IdentityType, ...]] = ()
    # Names of the fields (JSON keys, form fields, XML elements) whose values are the
    # sender's ids and are never redacted: an id of 13-19 digits may pass the Luhn check
    # and would be taken for a card number. "*_id" stands for every name ending in "_id".
    id_fields: ClassVar[tuple[str, ...]] = ()
    # The formats of the upstream's ids by name (linear regular expressions, anchored).
    id_formats: ClassVar[Mapping[str, re.Pattern[str]]] = {}
    # The event types of past records read through the API (see history()); the mapping maps
    # them like webhook events.
    history_event_types: ClassVar[tuple[str, ...]] = ()
    # The event types whose webhook only names a record (a transcript that is ready): the
    # worker reads the record through read_back() before mapping it, never the request.
    read_back_types: ClassVar[tuple[str, ...]] = ()
    # What to check when a delivery is refused, by reason (see ingest/refusals.py): which
    # setting, and where the vendor shows the right value. Reasons left out get the core's.
    refusal_hints: ClassVar[Mapping[str, str]] = {}

    def __init__(self, settings: Mapping[str, Any], config: Config) -> None:
        self.options = dict(settings)
        self.config = config
        # Checks every upstream call's host (see integrations/network.py); the clients use it.
        self.upstream_guard = UpstreamGuard(config.allow_private_upstreams, self.key, self.title)
        # What it looks up upstream, cached in memory and in the store every process shares
        # (see integrations/lookups.py; the registry attaches the store).
        self.lookups = PluginLookups(self.key)

    def upstream_url(self, name: str) -> str:
        """Return a URL setting, refused with ConfigError unless Carryover may call it."""
        url = str(self.options[name]).strip()
        try:
            check_url(url, self.config.allow_private_upstreams, f"integrations.{self.key}.{name}")
        except UpstreamRefused as exc:
            raise ConfigError(str(exc)) from None
        return url

    @classmethod
    def generate_secret(cls) -> str:
        """Return a new random webhook secret for the `generated_secret` setting."""
        raise NotImplementedError

    @classmethod
    def folder(cls) -> Path:
        """Return the plugin's folder (fixtures, templates)."""
        return Path(sys.modules[cls.__module__].__file__ or ".").resolve().parent

    @classmethod
    def fixture_headers(cls, path: Path) -> dict[str, str]:
        """Return the headers (lower-case) a sender sends with a fixture file's body.

        For senders that name the event in a header, not in the body (Shopify's topic); the
        contract tests and the mapping preview read the fixtures with them.
        """
        return {}

    @classmethod
    def templates_folder(cls) -> Path:
        """Return the folder of the plugin's note templates (<key>.txt.j2 and the like)."""
        return cls.folder() / "templates"

    # -- naming records for agents ---------------------------------------------------------
    @classmethod
    def record_label(cls, item: Mapping[str, Any]) -> str:
        """Name a record (an item dict of a note) the way agents know it, without raw ids."""
        kind = str(item.get("kind") or "")
        return NEUTRAL_LABELS.get(kind, kind.replace("_", " ") or "record")

    @classmethod
    def record_url(cls, item: Mapping[str, Any], settings: Mapping[str, Any]) -> str | None:
        """Return the URL agents open the record at, or None (settings: the plugin's own)."""
        return None

    @classmethod
    def tool_name(cls) -> str:
        """Return the tool's name as a note says it ("Salesforce case 00001001")."""
        return cls.short_title or cls.title

    def writes_update_notes(self) -> bool:
        """Tell whether open items in this tool get update notes about other tools' news."""
        return self.has_capability(Capability.WRITE_NOTE) and bool(
            self.options.get(UPDATE_NOTES, True)
        )

    def has_capability(self, capability: Capability) -> bool:
        """Tell whether this plugin declares the capability."""
        return capability in self.capabilities

    # -- receiving -------------------------------------------------------------------
    def verify(self, request: InboundRequest) -> str:
        """Return how the delivery is proven authentic; raise InvalidSignature if it is not.

        The proof ("signature", "path token", …) is kept with the delivery. UNVERIFIED means
        the delivery may be processed only through read_back().
        """
        raise NotImplementedError

    def parse(self, request: InboundRequest) -> list[InboundEvent]:
        """Split a verified delivery into events; raise MalformedPayload or UnsupportedEvent."""
        raise NotImplementedError

    def acknowledgement(self) -> tuple[bytes, str]:
        """Return the body and content type that tell the sender a delivery was accepted."""
        return b"{}", "application/json"

    def acknowledge(
        self, request: InboundRequest, events: Sequence[InboundEvent]
    ) -> tuple[bytes, str]:
        """Return the reply to an accepted delivery: by default, the fixed acknowledgement.

        For senders that take instructions in the reply (sipgate.io subscribes to a call's
        later events through the URLs its first event's reply names); `events` are the events
        used, and the reply is the same when the delivery is a retry.
        """
        return self.acknowledgement()

    def ignored_reply(self, event_type: str) -> tuple[bytes, str]:
        """Return the reply to an authentic delivery that Carryover does not use."""
        return json.dumps({"ignored": event_type}).encode(), "application/json"

    def refusal(self, error: InboundError) -> tuple[bytes, str] | None:
        """Return a refusal in the sender's own format, or None for the JSON error."""
        return None

    def storable_body(self, body: bytes) -> bytes:
        """Return the body as it may be stored: credentials the sender put in it removed."""
        return body

    def read_back(self, event: InboundEvent) -> InboundEvent | None:
        """Return the event with its record as the upstream API has it, None if it has none.

        Called for the events of UNVERIFIED deliveries, so that nothing a forger wrote
        reaches the timeline or the identities, and for events of read_back_types, whose
        webhook only names the record. Raise UpstreamError or RateLimited to be retried.
        """
        return None

    def comment_of(self, event: InboundEvent) -> Comment | None:
        """Return the comment an event carries (to recognise Carryover's own notes), or None."""
        return None

    # -- upstream API ------------------------------------------------------------------
    def enrich(self, interaction: Interaction) -> Interaction:
        """Return the interaction with identities and name looked up upstream."""
        return interaction

    def write_note(self, target_ref: str, body: str) -> None:
        """Write a private note on a ticket or case; raise UpstreamError or RateLimited."""
        raise NotImplementedError

    def note_exists(self, target_ref: str, marker: str) -> bool:
        """Tell whether a note carrying the marker is already on the ticket or case."""
        raise NotImplementedError

    def write_budget_per_minute(self) -> int | None:
        """Return how many writes a minute this upstream allows us, or None for no limit."""
        return None

    def check_connection(self) -> str | None:
        """Call the upstream API once and say who answered; None when it has no API to call.

        Raise UpstreamError when the call fails.
        """
        return None

    def api_usage(self) -> ApiUsage | None:
        """Return the API usage the upstream last reported, if it reports any."""
        return None

    def api_calls(self) -> int:
        """Return how many API calls this plugin has sent since it was built."""
        return 0

    # -- importing history (Capability.IMPORT_HISTORY) ----------------------------------------
    def history(self, since: datetime, cursor: str | None) -> Iterator[HistoryPage]:
        """Yield pages of the records changed since `since`, starting at `cursor` if given.

        Raise RateLimited to be called again from the last cursor after its retry_after,
        UpstreamError when the upstream fails, PermanentUpstreamError (naming the setting to
        check) when it refuses the credentials. Nothing is ever written upstream.
        """
        raise NotImplementedError

    @classmethod
    def history_page(cls, page: Mapping[str, Any], since: datetime) -> HistoryPage:
        """Turn one page as the API sent it into a HistoryPage (no call made).

        The fixtures in plugins/<key>/fixtures/history/ are such pages.
        """
        raise NotImplementedError

    def prefetch_history(self, events: Sequence[InboundEvent]) -> None:
        """Read in bulk what enrich() needs for these records, before they are recorded.

        Called with the records of a page that were not imported before (a page read again
        costs no look-up); raises as history() does.
        """

    def history_plan(self, since: datetime) -> str | None:
        """Say what an import since `since` will cost in API calls, before it starts."""
        return None

    def history_budget_left(self) -> int | None:
        """Return how many API calls an import may still make today, None for no daily limit.

        An import stops (to be continued later) rather than spend the rest of the budget that
        the upstream's other users and Carryover's notes need.
        """
        return None


class Pacer:
    """Space calls out to at most `per_minute` a minute (an upstream's own limit)."""

    def __init__(self, per_minute: int) -> None:
        self.interval = 60.0 / per_minute if per_minute > 0 else 0.0
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self) -> None:
        """Return when the next call may be made."""
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + self.interval
        if start > now:
            time.sleep(start - now)


def period_progress(
    since: datetime, reached: datetime, *, newest_first: bool = False, now: datetime | None = None
) -> float:
    """Return how far through the period from `since` to now a read has come (0 to 1).

    Records read oldest first have reached `reached`; read newest first, they go back to it.
    """
    now = now or datetime.now(UTC).replace(tzinfo=None)
    period = (now - since).total_seconds()
    if period <= 0:
        return 1.0
    covered = (now - reached) if newest_first else (reached - since)
    return max(0.0, min(1.0, covered.total_seconds() / period))


def decode_form(body: bytes) -> list[tuple[str, str]]:
    """Read an application/x-www-form-urlencoded body as (name, value) pairs, in order."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedPayload("body is not UTF-8") from None
    try:
        return parse_qsl(text, keep_blank_values=True, strict_parsing=bool(text), errors="strict")
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedPayload(f"body is not a form (name=value&…): {exc}") from None


def decode_form_fields(body: bytes) -> dict[str, Any]:
    """Read a form as PBXs send it: name[]=a&name[]=b as a list under name, else the first value.

    A name sent as a value and then as a list (user=a&user[]=b) is refused, as Rails does.
    """
    fields: dict[str, Any] = {}
    for name, value in decode_form(body):
        if name.endswith("[]"):
            values = fields.setdefault(name[:-2], [])
            if not isinstance(values, list):
                raise MalformedPayload(f"{name[:-2]}: sent both as {name[:-2]} and as {name}")
            values.append(value)
        else:
            fields.setdefault(name, value)
    return fields


def decode_json_object(body: bytes) -> dict[str, Any]:
    """Read a body that must be one JSON object (UTF-8, a BOM allowed)."""
    try:
        payload = json_input.loads(body.decode("utf-8-sig"))
    except UnicodeDecodeError:
        raise MalformedPayload("body is not UTF-8") from None
    except (ValueError, RecursionError) as exc:
        raise MalformedPayload(f"body is not valid JSON ({exc})") from None
    if not isinstance(payload, dict):
        raise MalformedPayload("body: expected a JSON object")
    return {str(k): v for k, v in payload.items()}


def looks_like_json(request: InboundRequest) -> bool:
    """Tell whether a body that may be JSON or a form is JSON."""
    return request.content_type == "application/json" or request.body.lstrip().startswith(b"{")
