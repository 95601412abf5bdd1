"""Local fake of Twilio's REST API: an account's call log, as a history import reads it, its
recordings, and Voice Intelligence transcripts with their sentences.

The phone network itself (status callbacks played into Carryover) is twilio.py beside this;
this fake answers the other direction, Carryover asking Twilio for the calls of the past and
for what was said on a call. It stands in for both api.twilio.com and
intelligence.twilio.com: set api_url and intelligence_url to its URL.
"""

from __future__ import annotations

import hashlib
import html
import json
import math
import threading
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import quote

import phonenumbers
from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from devkit.fake_server import FakeUpstream, agent_page
from devkit.simulators.twilio import API_VERSION, new_sid, twilio_time

JSON_TYPE = "application/json; charset=utf-8"
PAGE_SIZE_DEFAULT = 50
PAGE_SIZE_MAX = 1000
DIRECTIONS = ("inbound", "outbound-api", "outbound-dial")
STATUSES = ("queued", "ringing", "in-progress", "canceled", "completed", "failed", "busy",
            "no-answer")  # fmt: skip
PRICE_PER_MINUTE = 0.0085  # what an inbound US minute costs; Twilio writes prices negative
# Filters the call list takes, each a parameter name and the field of a call it matches.
EXACT_FILTERS = {"From": "from", "To": "to", "Status": "status", "ParentCallSid": "parent_call_sid"}
# StartTime and its inequalities; `StartTime>=2026-12-01` in a URL is the name "StartTime>".
START_FILTERS = {"StartTime": "=", "StartTime>": ">=", "StartTime>=": ">=", "StartTime<": "<=",
                 "StartTime<=": "<="}  # fmt: skip
PAGING = ("PageSize", "Page", "PageToken")
SUBRESOURCES = (
    "feedback", "notifications", "recordings", "streams", "payments",
    "user_defined_message_subscriptions", "transcriptions", "siprec", "events",
    "user_defined_messages",
)  # fmt: skip
AUTH_FAILED = {
    "code": 20003,
    "detail": "Your AccountSid or AuthToken was incorrect.",
    "message": "Authentication Error - invalid username",
    "more_info": "https://www.twilio.com/docs/errors/20003",
    "status": 401,
}

SENTENCES_PAGE_DEFAULT = 50
SENTENCES_PAGE_MAX = 5000

ROUTES = Map(
    [
        Rule(f"/{API_VERSION}/Accounts/<account_sid>/Calls.json", endpoint="calls",
             methods=["GET"]),
        Rule(f"/{API_VERSION}/Accounts/<account_sid>/Recordings/<sid>.json",
             endpoint="recording", methods=["GET"]),
        Rule("/v2/Transcripts/<sid>", endpoint="transcript", methods=["GET"]),
        Rule("/v2/Transcripts/<sid>/Sentences", endpoint="sentences", methods=["GET"]),
    ]
)  # fmt: skip


def _json(payload: dict[str, Any], status: int = 200) -> Response:
    return Response(json.dumps(payload), status=status, content_type=JSON_TYPE)


def _error(status: int, code: int, message: str) -> Response:
    """Return Twilio's error body: code, message, more_info and status."""
    more_info = f"https://www.twilio.com/docs/errors/{code}"
    return _json({"code": code, "message": message, "more_info": more_info, "status": status},
                 status)  # fmt: skip


def _formatted(number: str) -> str:
    """Write a number as Twilio's *_formatted fields do: (415) 555-0142 for a US number."""
    try:
        parsed = phonenumbers.parse(number)
    except phonenumbers.NumberParseException:
        return number
    if parsed.country_code == 1:
        return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.NATIONAL)
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.INTERNATIONAL)


def _start_bound(value: str) -> date | datetime:
    """Read a StartTime filter: a day (YYYY-MM-DD, UTC) or an ISO 8601 moment."""
    if len(value) == 10:
        return date.fromisoformat(value)
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _started_within(started: datetime, operator: str, bound: date | datetime) -> bool:
    """Compare a call's start with a StartTime bound: by day for a day, else by moment."""
    mine: date | datetime = started if isinstance(bound, datetime) else started.date()
    if operator == ">=":
        return mine >= bound  # type: ignore[operator]
    if operator == "<=":
        return mine <= bound  # type: ignore[operator]
    return mine == bound


class FakeTwilio(FakeUpstream):
    """Serve a fake Twilio REST API on 127.0.0.1: the Calls list and Recordings of one
    account, and its Voice Intelligence transcripts."""

    def __init__(
        self,
        account_sid: str | None = None,
        auth_token: str = "test-auth-token",
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.account_sid = account_sid or new_sid("AC")
        self.auth_token = auth_token
        self.delay_seconds: float = 0.0
        self.requests_log: list[tuple[str, str, bytes, float]] = []
        self.calls: dict[str, dict[str, Any]] = {}
        self.recordings: dict[str, dict[str, Any]] = {}
        self.transcripts: dict[str, dict[str, Any]] = {}
        self.sentences: dict[str, list[dict[str, Any]]] = {}
        self._started: dict[str, datetime] = {}
        self._lock = threading.RLock()
        super().__init__(host, port)

    @property
    def api_url(self) -> str:
        """Return the base URL a client puts before /2010-04-01/… (Twilio's api.twilio.com)."""
        return self.url

    def add_call(
        self,
        from_: str,
        to: str,
        *,
        start: datetime | None = None,
        duration_s: int = 60,
        direction: str = "inbound",
        status: str = "completed",
        parent_call_sid: str | None = None,
        sid: str | None = None,
    ) -> str:
        """Add a call to the account's log, as the full Call resource, and return its SID.

        `start` is when it was answered (default now); a call never answered (busy, no-answer,
        failed, canceled) has duration 0 and no price.
        """
        if direction not in DIRECTIONS:
            raise ValueError(f"not a direction: {direction!r} (one of {', '.join(DIRECTIONS)})")
        if status not in STATUSES:
            raise ValueError(f"not a call status: {status!r} (one of {', '.join(STATUSES)})")
        started = (start or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
        call_sid = sid or new_sid("CA")
        talked = duration_s if status in ("completed", "in-progress") else 0
        with self._lock:
            self.calls[call_sid] = self._call(call_sid, from_, to, started, talked, direction,
                                              status, parent_call_sid)  # fmt: skip
            self._started[call_sid] = started
        return call_sid

    def _call(
        self,
        sid: str,
        from_: str,
        to: str,
        started: datetime,
        duration_s: int,
        direction: str,
        status: str,
        parent_call_sid: str | None,
    ) -> dict[str, Any]:
        """Return a call as Twilio's Call resource writes it (times in RFC 2822, UTC)."""
        ended = started + timedelta(seconds=duration_s)
        uri = f"/{API_VERSION}/Accounts/{self.account_sid}/Calls/{sid}"
        # Twilio's number SID of `to`: stable per number, as an account's number is.
        number_sid = "PN" + hashlib.md5(to.encode(), usedforsecurity=False).hexdigest()
        minutes = math.ceil(duration_s / 60)
        return {
            "account_sid": self.account_sid,
            "annotation": None,
            "answered_by": None,
            "api_version": API_VERSION,
            "caller_name": None,
            "date_created": twilio_time(started - timedelta(seconds=5)),
            "date_updated": twilio_time(ended),
            "direction": direction,
            "duration": str(duration_s),
            "end_time": twilio_time(ended) if status != "in-progress" else None,
            "forwarded_from": None,
            "from": from_,
            "from_formatted": _formatted(from_),
            "group_sid": None,
            "parent_call_sid": parent_call_sid,
            "phone_number_sid": number_sid if direction == "inbound" else None,
            "price": f"-{minutes * PRICE_PER_MINUTE:.5f}" if minutes else None,
            "price_unit": "USD",
            "queue_time": "0",
            "sid": sid,
            "start_time": twilio_time(started),
            "status": status,
            "subresource_uris": {name: f"{uri}/{_camel(name)}.json" for name in SUBRESOURCES},
            "to": to,
            "to_formatted": _formatted(to),
            "trunk_sid": None,
            "uri": f"{uri}.json",
        }

    def add_recording(self, call_sid: str, duration_s: int = 60, sid: str | None = None) -> str:
        """Add a completed dual-channel recording of a call, as the Recording resource."""
        recording_sid = sid or new_sid("RE")
        now = datetime.now(UTC).replace(microsecond=0)
        uri = f"/{API_VERSION}/Accounts/{self.account_sid}/Recordings/{recording_sid}"
        with self._lock:
            self.recordings[recording_sid] = {
                "account_sid": self.account_sid, "api_version": API_VERSION,
                "call_sid": call_sid, "conference_sid": None,
                "date_created": twilio_time(now), "date_updated": twilio_time(now),
                "start_time": twilio_time(now - timedelta(seconds=duration_s)),
                "duration": str(duration_s), "sid": recording_sid, "price": None,
                "price_unit": "USD", "status": "completed", "channels": 2,
                "source": "DialVerb", "error_code": None, "uri": f"{uri}.json",
                "encryption_details": None, "media_url": f"{self.url}{uri}",
                "subresource_uris": {"add_on_results": f"{uri}/AddOnResults.json",
                                     "transcriptions": f"{uri}/Transcriptions.json"},
            }  # fmt: skip
        return recording_sid

    def add_transcript(
        self,
        recording_sid: str,
        turns: Sequence[tuple[str, str]],
        *,
        roles: bool = True,
        customer_key: str | None = None,
    ) -> str:
        """Add a completed transcript of a recording and return its SID.

        `turns` are (speaker, sentence) in order, speaker "agent" (channel 1) or "customer"
        (channel 2); with `roles` false the participants are not named, as when a transcript
        is created without them.
        """
        transcript_sid = new_sid("GT")
        now = datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
        base = f"{self.url}/v2/Transcripts/{transcript_sid}"
        channel: dict[str, Any] = {"media_properties": {"source_sid": recording_sid}}
        if roles:
            channel["participants"] = [
                {"channel_participant": 1, "role": "Agent", "user_id": "agent"},
                {"channel_participant": 2, "role": "Customer", "user_id": "customer"},
            ]
        links = {"sentences": "Sentences", "encrypted_sentences": "Sentences/Encrypted",
                 "media": "Media", "operator_results": "OperatorResults",
                 "encrypted_operator_results": "OperatorResults/Encrypted"}  # fmt: skip
        with self._lock:
            self.transcripts[transcript_sid] = {
                "account_sid": self.account_sid, "service_sid": new_sid("GA"),
                "sid": transcript_sid, "date_created": now, "date_updated": now,
                "status": "completed", "channel": channel, "data_logging": False,
                "language_code": "en-US", "customer_key": customer_key,
                "media_start_time": now, "duration": 0, "url": base, "redaction": True,
                "encryption_credential_sid": None,
                "links": {name: f"{base}/{path}" for name, path in links.items()},
            }  # fmt: skip
            self.sentences[transcript_sid] = [
                {"media_channel": 2 if speaker == "customer" else 1, "sentence_index": index,
                 "start_time": None, "end_time": None, "transcript": text,
                 "sid": new_sid("GX"), "confidence": None, "words": None}
                for index, (speaker, text) in enumerate(turns)
            ]  # fmt: skip
        return transcript_sid

    def _api(self, request: Request, received: float) -> Response:
        auth = request.authorization
        given = (auth.username, auth.password) if auth and auth.type == "basic" else None
        if given != (self.account_sid, self.auth_token):
            response = _json(AUTH_FAILED, 401)
            response.headers["WWW-Authenticate"] = 'Basic realm="Twilio API"'
            return response
        try:
            endpoint, args = ROUTES.bind_to_environ(request.environ).match()
        except HTTPException:
            return _error(404, 20404, f"The requested resource {request.path} was not found")
        if args.get("account_sid", self.account_sid) != self.account_sid:
            # Credentials of one account never read another's log.
            response = _json(AUTH_FAILED, 401)
            response.headers["WWW-Authenticate"] = 'Basic realm="Twilio API"'
            return response
        with self._lock:
            result: Response = getattr(self, f"_api_{endpoint}")(request, **args)
            return result

    # Call resource, Read multiple Call resources (filters, paging, the list envelope):
    # https://www.twilio.com/docs/voice/api/call-resource
    # Paging with Page, PageSize and PageToken: https://www.twilio.com/docs/usage/twilios-response
    def _api_calls(self, request: Request, account_sid: str) -> Response:
        try:
            listed = self._filtered(request)
        except ValueError as error:
            return _error(400, 20001, str(error))
        size = min(max(request.args.get("PageSize", PAGE_SIZE_DEFAULT, type=int) or 1, 1),
                   PAGE_SIZE_MAX)  # fmt: skip
        page = max(request.args.get("Page", 0, type=int) or 0, 0)
        offset = self._offset(listed, request.args.get("PageToken"), page, size)
        if offset is None:
            return _error(400, 20001, "Invalid PageToken")
        calls = listed[offset : offset + size]
        return _json(self._envelope(request, calls, page, size, offset + size < len(listed)))

    # Fetch a Recording resource: https://www.twilio.com/docs/voice/api/recording
    def _api_recording(self, request: Request, account_sid: str, sid: str) -> Response:
        if sid not in self.recordings:
            return _error(404, 20404, f"The requested resource {request.path} was not found")
        return _json(self.recordings[sid])

    # Voice Intelligence's Transcript and its Sentences (twilio/twilio-oai,
    # spec/json/twilio_intelligence_v2.json): a page of sentences and meta.next_page_url.
    def _api_transcript(self, request: Request, sid: str) -> Response:
        if sid not in self.transcripts:
            return _error(404, 20404, f"The requested resource {request.path} was not found")
        return _json(self.transcripts[sid])

    def _api_sentences(self, request: Request, sid: str) -> Response:
        if sid not in self.sentences:
            return _error(404, 20404, f"The requested resource {request.path} was not found")
        size = min(max(request.args.get("PageSize", SENTENCES_PAGE_DEFAULT, type=int) or 1, 1),
                   SENTENCES_PAGE_MAX)  # fmt: skip
        page = max(request.args.get("Page", 0, type=int) or 0, 0)
        listed = self.sentences[sid]
        found = listed[page * size : (page + 1) * size]
        base = f"{self.url}/v2/Transcripts/{sid}/Sentences?PageSize={size}"
        more = (page + 1) * size < len(listed)
        return _json({
            "sentences": found,
            "meta": {
                "key": "sentences", "page": page, "page_size": size,
                "first_page_url": f"{base}&Page=0", "url": f"{base}&Page={page}",
                "next_page_url": f"{base}&Page={page + 1}&PageToken=PA{page + 1}" if more
                else None,
                "previous_page_url": f"{base}&Page={page - 1}" if page > 0 else None,
            },
        })  # fmt: skip

    def _filtered(self, request: Request) -> list[dict[str, Any]]:
        """Return the calls the request's filters select, newest first."""
        listed = sorted(self.calls, key=lambda sid: (self._started[sid], sid), reverse=True)
        for name, operator in START_FILTERS.items():
            if name in request.args:
                try:
                    bound = _start_bound(request.args[name])
                except ValueError:
                    raise ValueError(f"Invalid {name}: {request.args[name]}") from None
                listed = [s for s in listed if _started_within(self._started[s], operator, bound)]
        for name, field in EXACT_FILTERS.items():
            if name in request.args:
                listed = [s for s in listed if self.calls[s][field] == request.args[name]]
        return [self.calls[sid] for sid in listed]

    @staticmethod
    def _offset(
        listed: list[dict[str, Any]], token: str | None, page: int, size: int
    ) -> int | None:
        """Return where a page starts: after (PA…) or before (PB…) a call, else page × size."""
        if token is None:
            return page * size
        sids = [call["sid"] for call in listed]
        kind, sid = token[:2], token[2:]
        if kind not in ("PA", "PB") or sid not in sids:
            return None
        position = sids.index(sid)
        return position + 1 if kind == "PA" else max(position - size, 0)

    def _envelope(
        self, request: Request, calls: list[dict[str, Any]], page: int, size: int, more: bool
    ) -> dict[str, Any]:
        """Wrap a page of calls in Twilio's list envelope, its URIs keeping the filters."""
        filters = [
            f"{quote(name, safe='')}={quote(value, safe='')}"
            for name, value in request.args.items(multi=True)
            if name not in PAGING
        ]
        base = f"/{API_VERSION}/Accounts/{self.account_sid}/Calls.json?" + "".join(
            f"{part}&" for part in filters
        )
        token = request.args.get("PageToken")
        start = page * size
        return {
            "calls": calls,
            "end": start + max(len(calls) - 1, 0),
            "first_page_uri": f"{base}PageSize={size}&Page=0",
            "next_page_uri": (
                f"{base}PageSize={size}&Page={page + 1}&PageToken=PA{calls[-1]['sid']}"
                if more and calls
                else None
            ),
            "page": page,
            "page_size": size,
            "previous_page_uri": (
                f"{base}PageSize={size}&Page={page - 1}&PageToken=PB{calls[0]['sid']}"
                if page > 0 and calls
                else None
            ),
            "start": start,
            "uri": f"{base}PageSize={size}&Page={page}" + (f"&PageToken={token}" if token else ""),
        }

    def _agent_view(self) -> Response:
        """Render the call log, newest first, as the console's call logs show it (read-only)."""
        with self._lock:
            listed = sorted(self.calls, key=lambda sid: (self._started[sid], sid), reverse=True)
            sections = "\n".join(self._call_html(self.calls[sid]) for sid in listed)
        return agent_page("Twilio (fake): call logs", sections, "No calls yet.")

    @staticmethod
    def _call_html(call: dict[str, Any]) -> str:
        facts = (call["direction"], call["status"], f"{call['duration']} s", call["start_time"])
        return (
            f"<section><h2>{html.escape(call['from_formatted'])} → "
            f"{html.escape(call['to_formatted'])}</h2>"
            f'<p class="meta">{html.escape(" · ".join(facts))}</p></section>'
        )


def _camel(name: str) -> str:
    """Write a subresource's name as its URI does: user_defined_messages → UserDefinedMessages."""
    return "".join(part.capitalize() for part in name.split("_"))
