"""Twilio: voice status callbacks, recordings, transcriptions and incoming SMS in; the reply
is empty TwiML."""

from __future__ import annotations

import base64
import email.utils
import hashlib
import hmac
import re
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

from middleware.config import Config, ConfigError, Setting
from middleware.errors import (
    InvalidSignature,
    MalformedPayload,
    PermanentUpstreamError,
    UpstreamError,
)
from middleware.integrations.plugin import (
    Capability,
    HistoryPage,
    InboundEvent,
    InboundRequest,
    Plugin,
    decode_form,
    decode_json_object,
    looks_like_json,
    period_progress,
)
from plugins.twilio.client import CALLS_PAGE, NOT_CALLS, TwilioClient
from plugins.twilio.words import (
    CALL_SID_ANY,
    RECORDING_SID,
    console_link,
    customer_channel,
    customer_words,
    intelligence_event,
    recording_event,
    source_of,
    transcription_event,
)

EMPTY_TWIML = b'<?xml version="1.0" encoding="UTF-8"?><Response/>'
DEFAULT_PORTS = {"https": 443, "http": 80}
# A Twilio SID: two letters naming the resource (CA a call, SM/MM a message), 32 hex digits.
SID = re.compile(r"[A-Z]{2}[0-9a-fA-F]{32}")
CALL_SID = re.compile(r"CA[0-9a-f]{32}")
ACCOUNT_SID = re.compile(r"AC[0-9a-f]{32}")
NO_ACCOUNT = "set integrations.twilio.account_sid (Console → Account info) to import calls"
NO_ACCOUNT_WORDS = (
    "set integrations.twilio.account_sid (Console → Account info) to read Voice Intelligence "
    "transcripts"
)
INTELLIGENCE_EVENT = "intelligence.transcript.available"
# CallStatus values, grouped into the three moments of a call Carryover cares about.
STARTED = frozenset({"queued", "initiated", "ringing"})
ANSWERED = frozenset({"in-progress", "answered"})
ENDED = frozenset({"completed", "busy", "no-answer", "failed", "canceled"})
# The SmsStatus / MessageStatus of a message someone sent to one of the account's numbers.
RECEIVED = frozenset({"received", "receiving"})

SETUP = """\
1. Use Carryover as the status callback, never as the Voice URL that routes calls: in the
   Console (Phone Numbers → your number → Voice configuration), or in the TwiML of your
   routing (<Number statusCallback=…> / <Client statusCallback=…> for agent legs), set
   Call status changes to {public_url}/hooks/twilio (HTTP POST) with the events initiated,
   ringing, answered and completed.
2. For text messages, set "A message comes in" to {public_url}/hooks/twilio, or add it as a
   webhook of your Messaging Service; Carryover answers with empty TwiML (no reply is sent).
3. Copy the account's Auth Token into auth_token below (or integrations.twilio.auth_token
   in the configuration file), and set public_url in the configuration file to the exact
   base URL Twilio calls (Twilio signs the URL it called).
4. Recorded calls: set recordingStatusCallback="{public_url}/hooks/twilio" on the <Dial>,
   <Record>, <Start><Recording> or the API call that records (completed recordings only).
   Carryover links the recording's Console page in the call note and the pop.
5. What the caller said: on a <Record transcribe="true">, set
   transcribeCallback="{public_url}/hooks/twilio". With Voice Intelligence, set the
   Service's Webhook URL (Console → Voice → Voice Intelligence → Services → your service,
   HTTP POST) to {public_url}/hooks/twilio and fill account_sid below: Carryover reads each
   transcript's sentences through the API and keeps the participant whose role is Customer
   (name the roles when you create transcripts; without them nothing counts as the caller's).
"""


class TwilioPlugin(Plugin):
    """Receive Twilio voice status callbacks and incoming SMS."""

    key = "twilio"
    title = "Twilio"
    capabilities = frozenset({Capability.RECEIVE, Capability.IMPORT_HISTORY})
    id_fields = ("*Sid",)  # CallSid, MessageSid, AccountSid: ids, never card numbers
    id_formats = {
        "call": re.compile(r"^CA[0-9a-f]{32}$"),
        "message": re.compile(r"^(SM|MM)[0-9a-f]{32}$"),
        "account": re.compile(r"^AC[0-9a-f]{32}$"),
        "recording": re.compile(r"^RE[0-9a-fA-F]{32}$"),
        "transcript": re.compile(r"^GT[0-9a-fA-F]{32}$"),
    }
    settings = {
        "auth_token": Setting(str, required=True, secret=True, doc="the account's Auth Token"),
        "account_sid": Setting(str, doc="AC…, the account's SID: needed to import past calls"),
        "api_url": Setting(str, "https://api.twilio.com", doc="Twilio's REST API, or any base URL"),
        "intelligence_url": Setting(
            str, "https://intelligence.twilio.com",
            doc="Twilio's Voice Intelligence API (transcripts), or any base URL",
        ),
        "timeout_s": Setting(float, 10.0),
    }  # fmt: skip
    history_event_types = ("history.call",)
    event_types = (
        "call.started",
        "call.answered",
        "call.ended",
        "call.leg.started",
        "call.leg.answered",
        "call.leg.ended",
        "message.received",
        "message.status",
        "call.recorded",
        "call.transcribed",
        INTELLIGENCE_EVENT,
    )
    # A Voice Intelligence webhook names a transcript only: the worker reads its sentences.
    read_back_types = (INTELLIGENCE_EVENT,)
    setup_doc = SETUP
    refusal_hints = {
        "signature": "check auth_token is the Auth Token of the account whose number calls "
        "(Console > Account info), and that public_url is the base of the URL set in Twilio",
        "url": "Twilio signs the URL it calls: check public_url is the base of the webhook "
        "URL set in Twilio (scheme, host and port)",
        "missing-signature": "Twilio signs every request: is something else posting to this "
        "URL, or does a proxy in front drop X-Twilio-Signature?",
    }

    def __init__(self, settings: Mapping[str, Any], config: Config) -> None:
        super().__init__(settings, config)
        sid = (self.options.get("account_sid") or "").strip()
        if sid and not ACCOUNT_SID.fullmatch(sid):
            raise ConfigError(
                "integrations.twilio.account_sid: expected AC and 32 hex digits (Console → "
                f"Account info), got {sid[:40]!r}"
            )
        self.client = (
            TwilioClient(self.upstream_url("api_url"), sid, self.options["auth_token"],
                         self.options["timeout_s"], self.upstream_guard,
                         self.upstream_url("intelligence_url"))
            if sid
            else None
        )  # fmt: skip

    # -- receiving -------------------------------------------------------------------------
    def verify(self, request: InboundRequest) -> str:
        """Check X-Twilio-Signature as Twilio's own validator does (port variants included)."""
        signature = request.headers.get("x-twilio-signature", "").strip()
        if not signature:
            raise InvalidSignature("missing X-Twilio-Signature header", "missing-signature")
        token = self.options["auth_token"]
        query = parse_qs(urlsplit(request.url).query)
        if "bodySHA256" in query:  # a JSON body: the URL carries the body's hash instead
            digest = hashlib.sha256(request.body).hexdigest()
            if not hmac.compare_digest(digest.encode(), query["bodySHA256"][0].encode()):
                raise InvalidSignature("bodySHA256 does not match the body")
            params: list[tuple[str, str]] = []
        elif looks_like_json(request):
            # Twilio signs a JSON body through its hash in the URL: without it, nothing did.
            raise InvalidSignature("a JSON body needs bodySHA256 in the signed URL")
        else:
            params = decode_form(request.body) if request.body else []
        if not _signed(token, request.url, params, signature):
            # Signed for the URL this server was called at, not public_url: say so.
            url_differs = bool(request.received_url) and request.received_url != request.url
            mismatch = url_differs and _signed(token, request.received_url, params, signature)
            raise InvalidSignature(
                "X-Twilio-Signature does not match (is public_url the URL Twilio calls?)",
                "url" if mismatch else "signature",
            )
        return "signature"

    def parse(self, request: InboundRequest) -> list[InboundEvent]:
        """Turn a voice status callback, a recording or transcription callback, a Voice
        Intelligence webhook or an incoming message into one event."""
        fields = _fields(request)
        if "transcript_sid" in fields:
            return [intelligence_event(fields)]
        if fields.get("TranscriptionSid"):
            return [transcription_event(_with_customer(fields))]
        if fields.get("RecordingStatus"):
            return [recording_event(fields)]
        if fields.get("CallSid"):
            return [_call_event(fields)]
        if fields.get("MessageSid") or fields.get("SmsSid"):
            return [_message_event(fields)]
        raise MalformedPayload(
            "body: neither a voice status callback (CallSid) nor a message (MessageSid)"
        )

    def read_back(self, event: InboundEvent) -> InboundEvent | None:
        """Read a Voice Intelligence transcript: the call it was made from, and the sentences
        of its customer's channel, as call.transcribed; None when no call can be found."""
        if event.type != INTELLIGENCE_EVENT:
            return None
        if self.client is None:
            raise PermanentUpstreamError(NO_ACCOUNT_WORDS)
        sid = str(event.payload["transcript_sid"])  # checked against its format in parse
        transcript = self.client.transcript(sid)
        if str(transcript.get("status") or "").lower() != "completed":
            raise UpstreamError(f"Twilio's transcript is {transcript.get('status')!r}, not ready")
        source = source_of(transcript)
        recording = console_link(source) if source and RECORDING_SID.fullmatch(source) else None
        call_id = self._call_of(source, transcript.get("customer_key"))
        if call_id is None:
            return None
        words = customer_words(self.client.sentences(sid), customer_channel(transcript))
        payload = {**event.payload, "call_id": call_id, "recording": recording, "words": words}
        return InboundEvent(event.key, "call.transcribed", payload)

    def _call_of(self, source: str | None, customer_key: Any) -> str | None:
        """Find a transcript's call: its source (a call, or a recording of one), else a
        customer_key that is a call SID."""
        assert self.client is not None
        call_id: Any = None
        if source and CALL_SID_ANY.fullmatch(source):
            call_id = source
        elif source and RECORDING_SID.fullmatch(source):
            call_id = self.client.recording_call(source)
        if not (isinstance(call_id, str) and CALL_SID_ANY.fullmatch(call_id)):
            call_id = customer_key
        return call_id if isinstance(call_id, str) and CALL_SID_ANY.fullmatch(call_id) else None

    def acknowledgement(self) -> tuple[bytes, str]:
        """Answer with empty TwiML: Carryover never routes a call or replies to a text."""
        return EMPTY_TWIML, "text/xml"

    # -- importing history -----------------------------------------------------------------
    def api_calls(self) -> int:
        """Return the requests sent to Twilio's API (the Calls list)."""
        return self.client.sent if self.client else 0

    def history(self, since: datetime, cursor: str | None) -> Iterator[HistoryPage]:
        """Yield the account's calls that started since `since`, newest first, 1,000 a page."""
        if self.client is None:
            raise PermanentUpstreamError(NO_ACCOUNT)
        while True:
            page = self.history_page(self.client.calls_page(since.date(), cursor), since)
            if page.cursor is not None and not self.client.is_calls_page(page.cursor):
                raise PermanentUpstreamError(NOT_CALLS)  # before its cursor could be kept
            yield page
            if page.done or not page.cursor:
                return
            cursor = page.cursor

    def history_plan(self, since: datetime) -> str | None:
        """Say what the import reads: the Calls list, a page of 1,000 a request (no call made)."""
        if self.client is None:
            raise PermanentUpstreamError(NO_ACCOUNT)
        return f"reads the account's calls, {CALLS_PAGE:,} a request, newest first"

    @classmethod
    def history_page(cls, page: Mapping[str, Any], since: datetime) -> HistoryPage:
        """Turn a page of the Calls list into history.call events (agent legs left out)."""
        calls = page.get("calls")
        next_page = page.get("next_page_uri")
        if not isinstance(calls, list) or not isinstance(next_page, str | None):
            raise UpstreamError("Twilio sent a Calls page without calls or next_page_uri")
        events, skipped, refused = [], [], []
        oldest: datetime | None = None
        for call in calls:
            sid = call.get("sid") if isinstance(call, dict) else None
            if not isinstance(sid, str) or not CALL_SID.fullmatch(sid):
                refused.append(("a call", "its sid is not a Twilio call SID"))
                continue
            status = str(call.get("status") or "").lower()
            started = _twilio_time(call.get("start_time"))
            if call.get("parent_call_sid"):
                skipped.append((sid, "an agent's leg of another call"))
            elif status not in ENDED:
                skipped.append((sid, "not ended yet (its status callbacks bring it)"))
            elif started is None or not isinstance(call.get("date_updated"), str):
                refused.append((sid, "start_time or date_updated is not a time"))
            else:
                direction = str(call.get("direction") or "inbound")
                # The outside party: the caller on inbound calls, the callee on outbound ones.
                customer = call.get("from" if direction == "inbound" else "to")
                payload = dict(call, call_id=sid, customer=customer)
                key = f"history:call:{sid}@{status}"
                events.append(InboundEvent(key, "history.call", payload))
                oldest = started if oldest is None else min(oldest, started)
        return HistoryPage(
            tuple(events),
            cursor=next_page,
            done=next_page is None,
            skipped=tuple(skipped),
            refused=tuple(refused),
            progress=period_progress(since, oldest, newest_first=True) if oldest else None,
        )


def _twilio_time(value: Any) -> datetime | None:
    """Read Twilio's RFC 2822 time (Fri, 04 Dec 2026 10:00:00 +0000) as naive UTC."""
    if not isinstance(value, str) or len(value) > 40:
        return None
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment


def sign(token: str, url: str, params: list[tuple[str, str]]) -> str:
    """Return Twilio's signature: base64(HMAC-SHA1(token, url + sorted names and values))."""
    names = sorted({name for name, _ in params})
    text = url + "".join(
        name + value for name in names for value in sorted({v for n, v in params if n == name})
    )
    digest = hmac.new(token.encode(), text.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def url_variants(url: str) -> list[str]:
    """Return the URL as called, without its port, and with the scheme's default port."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    userinfo = parts.netloc.rpartition("@")[0]
    prefix = f"{userinfo}@" if userinfo else ""
    host = f"[{host}]" if ":" in host else host
    variants = [url, urlunsplit(parts._replace(netloc=prefix + host))]
    if parts.port is None and parts.scheme in DEFAULT_PORTS:
        port = DEFAULT_PORTS[parts.scheme]
        variants.append(urlunsplit(parts._replace(netloc=f"{prefix}{host}:{port}")))
    return list(dict.fromkeys(variants))


def _signed(token: str, url: str, params: list[tuple[str, str]], signature: str) -> bool:
    """Tell whether signature is Twilio's over url (a port variant of it) and params."""
    matches = [
        hmac.compare_digest(sign(token, variant, params).encode(), signature.encode())
        for variant in url_variants(url)
    ]
    return any(matches)


def _fields(request: InboundRequest) -> dict[str, Any]:
    if looks_like_json(request):
        return decode_json_object(request.body)
    fields: dict[str, Any] = {}
    for name, value in decode_form(request.body):
        fields.setdefault(name, value)  # Twilio sends each parameter once; keep the first
    return fields


def _sid(fields: dict[str, Any], name: str) -> str:
    value = fields.get(name)
    if not isinstance(value, str) or not SID.fullmatch(value):
        raise MalformedPayload(f"{name}: expected a Twilio SID (2 letters and 32 hex digits)")
    return value


def _call_event(fields: dict[str, Any]) -> InboundEvent:
    call_sid = _sid(fields, "CallSid")
    status = fields.get("CallStatus")
    if not isinstance(status, str) or not status:
        raise MalformedPayload("CallStatus: missing (Carryover takes call status callbacks)")
    status = status.lower()
    if status in STARTED:
        moment = "started"
    elif status in ANSWERED:
        moment = "answered"
    elif status in ENDED:
        moment = "ended"
    else:
        raise MalformedPayload(f"CallStatus: {status!r} is not a Twilio call status")
    payload = dict(fields)
    parent = fields.get("ParentCallSid")
    direction = str(fields.get("Direction") or "inbound")
    if parent:
        # A child leg: the <Dial> toward an agent, a queue or a transfer target.
        payload["call_id"] = _sid(fields, "ParentCallSid")
        payload["agent"] = _party(fields.get("To"))
        event_type = f"call.leg.{moment}"
    else:
        payload["call_id"] = call_sid
        # The outside party: the caller on inbound calls, the callee on outbound ones.
        payload["customer"] = fields.get("From" if direction == "inbound" else "To")
        event_type = f"call.{moment}"
    return InboundEvent(key=f"call:{call_sid}:{status}", type=event_type, payload=payload)


def _with_customer(fields: dict[str, Any]) -> dict[str, Any]:
    """Add the outside party of a call (as in _call_event) unless the leg is an agent's."""
    if fields.get("ParentCallSid"):
        return fields
    direction = str(fields.get("Direction") or "inbound")
    return dict(fields, customer=fields.get("From" if direction == "inbound" else "To"))


def _message_event(fields: dict[str, Any]) -> InboundEvent:
    sid = _sid(fields, "MessageSid" if fields.get("MessageSid") else "SmsSid")
    status = str(fields.get("SmsStatus") or fields.get("MessageStatus") or "received").lower()
    if status in RECEIVED:
        return InboundEvent(key=f"message:{sid}", type="message.received", payload=fields)
    # Delivery reports of messages the account sent: not a customer contact.
    return InboundEvent(key=f"message:{sid}:{status}", type="message.status", payload=fields)


def _party(value: Any) -> str | None:
    """Name the party of an agent leg: client:alice → alice, sip:bob@pbx → bob@pbx."""
    if not isinstance(value, str) or not value:
        return None
    for scheme in ("client:", "sip:"):
        if value.startswith(scheme):
            return value[len(scheme) :]
    return value
