"""Local simulator of Twilio's phone network: calls and texts played into Carryover.

Twilio tells Carryover about a call with status callbacks: one form-encoded POST to
/hooks/twilio per change of a call's CallStatus, signed with X-Twilio-Signature over the
public URL it called. The simulator sends what Twilio sends to an account set up as
Carryover's setup asks (statusCallbackEvent "initiated ringing answered completed"):

- an inbound call (Direction inbound) reports ringing, in-progress and completed; it arrives
  ringing, so it never reports initiated;
- each agent the call is put through to is a child leg with a CallSid of its own
  (Direction outbound-dial, ParentCallSid the call, To client:<agent>) reporting initiated,
  ringing, in-progress and completed; legs to agents one after the other are transfers;
- an incoming SMS is one POST of the "A message comes in" webhook;
- after the call, a recorded call reports its recording (recordingStatusCallback, the
  parent call's CallSid), a <Record transcribe> its transcription (transcribeCallback, with
  the standard voice parameters), and a Voice Intelligence Service that the transcript is
  available (a JSON webhook signed over the URL with bodySHA256; its sentences are read from
  the REST API, twilio_rest.py).

Legs are dialled with answerOnBridge: the call reports in-progress when the first agent
answers. Twilio cannot place the simulated numbers, so the geo fields are sent empty.

    python -m devkit.simulators.twilio --carryover http://127.0.0.1:8080 --auth-token T \\
        call --from +14155550142 --to +14155550100 --agent emma
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import re
import secrets
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from time import monotonic, sleep

import requests

from plugins.twilio import sign

HOOK_PATH = "/hooks/twilio"
API_VERSION = "2010-04-01"
CALLBACK_SOURCE = "call-progress-events"
# How Twilio writes a caller who withholds the number; anything else must be E.164.
ANONYMOUS = frozenset({"anonymous", "restricted", "+266696687"})
E164 = re.compile(r"\+[1-9][0-9]{1,14}")
GEO_FIELDS = ("City", "Country", "State", "Zip")
ENDED = ("completed", "busy", "no-answer", "failed", "canceled")
TRANSCRIPT_AVAILABLE = "voice_intelligence_transcript_available"
# GSM 03.38: a text of these fits 160 characters a segment (153 when split); the extension
# characters take two. Any other character makes the text UCS-2: 70 (67 when split).
GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENSION = frozenset("\f^{}\\[~]|€")

Params = tuple[tuple[str, str], ...]


class RejectedCallback(Exception):
    """Carryover answered a webhook with another status than 200."""

    def __init__(self, status_code: int, reply: str) -> None:
        super().__init__(f"Carryover answered {status_code}: {reply[:300]}")
        self.status_code = status_code
        self.reply = reply


@dataclass(frozen=True)
class Callback:
    """One webhook as sent (its parameters, in order) and Carryover's 200 reply."""

    params: Params
    reply: str

    def __getitem__(self, name: str) -> str:
        """Return the value of one parameter."""
        return dict(self.params)[name]


def new_sid(prefix: str) -> str:
    """Return a fresh Twilio SID: its two-letter prefix and 32 hex digits (CA…, SM…, AC…)."""
    return prefix + secrets.token_hex(16)


def twilio_time(moment: datetime) -> str:
    """Write a moment as Twilio's Timestamp does: 'Mon, 23 Nov 2026 10:01:09 +0000'."""
    return format_datetime(moment.astimezone(UTC).replace(microsecond=0))


def sms_segments(body: str) -> int:
    """Count the segments a text is sent in."""
    if set(body) <= GSM7_BASIC | GSM7_EXTENSION:
        units, single, split = len(body) + sum(c in GSM7_EXTENSION for c in body), 160, 153
    else:
        units, single, split = len(body.encode("utf-16-le")) // 2, 70, 67
    return 1 if units <= single else math.ceil(units / split)


def agent_address(agent: str) -> str:
    """Address an agent as <Dial> does: a name is a Twilio Client (client:emma)."""
    if agent.startswith(("client:", "sip:")) or E164.fullmatch(agent):
        return agent
    if not agent or not agent.isprintable() or " " in agent:
        raise ValueError(f"not an agent name, client:, sip: or E.164 address: {agent!r}")
    return f"client:{agent}"


def describe(callback: Callback) -> str:
    """Say in one line what a webhook was about, for logs and the demo."""
    fields = dict(callback.params)
    if "transcript_sid" in fields:
        return f"transcript {fields['transcript_sid']} available"
    if "TranscriptionSid" in fields:
        return f"call {fields['CallSid']} transcribed: {fields['TranscriptionText']!r}"
    if "RecordingStatus" in fields:
        return f"call {fields['CallSid']} recording {fields['RecordingSid']} completed"
    if "CallSid" not in fields:
        return f"sms {fields['MessageSid']} from {fields['From']}: {fields['Body']!r}"
    line = f"call {fields['CallSid']} {fields['CallStatus']}"
    if "ParentCallSid" in fields:
        line = f"leg {fields['CallSid']} to {fields['To']} {fields['CallStatus']}"
    if "CallDuration" in fields:
        line += f" after {fields['CallDuration']} s"
    return line


def _number(value: str, role: str, anonymous: bool = False) -> str:
    if E164.fullmatch(value) or (anonymous and value in ANONYMOUS):
        return value
    raise ValueError(f"{role}: {value!r} is not an E.164 number like +14155550142")


def _party(name: str, value: str) -> list[tuple[str, str]]:
    """Return a party's parameter and its (empty) geo fields: From, FromCity, …"""
    return [(name, value)] + [(name + geo, "") for geo in GEO_FIELDS]


@dataclass
class _Progress:
    """The status callbacks of one CallSid: what they all carry, and how many were sent."""

    params: list[tuple[str, str]]
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    sent: int = 0
    answered_at: float | None = None
    status: str = ""

    def callback(self, status: str, duration_s: int | None = None) -> Params:
        """Return the next callback's parameters, numbered in the order Twilio fires them."""
        fields = sorted([*self.params, ("CallStatus", status)])
        fields += [
            ("CallbackSource", CALLBACK_SOURCE),
            ("SequenceNumber", str(self.sent)),
            ("Timestamp", twilio_time(self.clock())),
        ]
        if duration_s is not None:
            # Duration is the billed minutes, rounded up.
            fields += [
                ("CallDuration", str(duration_s)),
                ("Duration", str(math.ceil(duration_s / 60))),
            ]
        self.sent += 1
        self.status = status
        if status == "in-progress":
            self.answered_at = monotonic()
        return tuple(fields)

    def elapsed_s(self) -> int:
        """Return the whole seconds since the answer (0 for a call never answered)."""
        return 0 if self.answered_at is None else round(monotonic() - self.answered_at)


class PhoneCall:
    """One inbound call on the simulated network, driven step by step."""

    def __init__(self, phone: TwilioPhone, from_: str, to: str) -> None:
        self.phone = phone
        self.caller = _number(from_, "from", anonymous=True)
        self.number = _number(to, "to")
        self.sid = new_sid("CA")
        self._call = _Progress(
            [
                ("AccountSid", phone.account_sid),
                ("ApiVersion", API_VERSION),
                ("CallSid", self.sid),
                ("Direction", "inbound"),
                *_party("From", self.caller),
                *_party("Caller", self.caller),
                *_party("To", self.number),
                *_party("Called", self.number),
            ],
            phone.clock,
        )
        self._leg: _Progress | None = None
        self.recording_sid: str | None = None  # set once the recording is reported

    @property
    def status(self) -> str:
        """Return the CallStatus last reported for the call itself."""
        return self._call.status

    def ring(self) -> None:
        """Report the call ringing: the caller has dialled the number."""
        self._expect("ring", "")
        self._report(self._call, "ringing")

    def answer(self, agent: str | None = None) -> None:
        """Answer the call: by the agent's leg when one is given, else by Twilio itself."""
        self._expect("answer", "ringing")
        if agent is not None:
            self._dial(agent)
        self._report(self._call, "in-progress")

    def transfer_to(self, agent: str) -> None:
        """End the connected agent's leg and put the call through to another agent."""
        self._expect("transfer", "in-progress")
        self._end_leg()
        self._dial(agent)

    def hang_up(self, duration_s: int | None = None) -> None:
        """End the call: completed after duration_s (else as measured), or no-answer."""
        self._expect("hang up", "ringing", "in-progress")
        self._end_leg()
        if self._call.status == "ringing":
            self._report(self._call, "no-answer", 0)
        else:
            seconds = self._call.elapsed_s() if duration_s is None else duration_s
            self._report(self._call, "completed", seconds)

    def record(self, duration_s: int | None = None, sid: str | None = None) -> Callback:
        """Report the call's recording completed, as recordingStatusCallback does once the
        recording is processed (after the call); return the callback."""
        self._expect("report a recording", *ENDED)
        self.recording_sid = sid or new_sid("RE")
        seconds = self._call.elapsed_s() if duration_s is None else duration_s
        account = self.phone.account_sid
        return self.phone.send([
            ("AccountSid", account), ("CallSid", self.sid), ("ErrorCode", "0"),
            ("RecordingChannels", "2"), ("RecordingDuration", str(seconds)),
            ("RecordingSid", self.recording_sid), ("RecordingSource", "DialVerb"),
            ("RecordingStartTime", twilio_time(self.phone.clock())),
            ("RecordingStatus", "completed"), ("RecordingTrack", "both"),
            ("RecordingUrl", f"https://api.twilio.com/{API_VERSION}/Accounts/{account}"
                             f"/Recordings/{self.recording_sid}"),
        ])  # fmt: skip

    def transcribe(self, text: str, status: str = "completed") -> Callback:
        """Report the <Record transcribe> transcription of what the caller said."""
        self._expect("report a transcription", *ENDED)
        recording = self.recording_sid or new_sid("RE")
        account, transcription = self.phone.account_sid, new_sid("TR")
        recording_url = (
            f"https://api.twilio.com/{API_VERSION}/Accounts/{account}/Recordings/{recording}"
        )
        return self.phone.send([
            ("AccountSid", account), ("ApiVersion", API_VERSION), ("CallSid", self.sid),
            ("CallStatus", self.status), ("Called", self.number), ("Caller", self.caller),
            ("Direction", "inbound"), ("From", self.caller), ("RecordingSid", recording),
            ("RecordingUrl", recording_url), ("To", self.number),
            ("TranscriptionSid", transcription), ("TranscriptionStatus", status),
            ("TranscriptionText", text if status == "completed" else ""),
            ("TranscriptionType", "fast"),
            ("TranscriptionUrl", f"{recording_url}/Transcriptions/{transcription}"),
        ])  # fmt: skip

    def _dial(self, agent: str) -> None:
        """Dial a child leg toward the agent, which rings and answers."""
        address = agent_address(agent)
        self._leg = _Progress(
            [
                ("AccountSid", self.phone.account_sid),
                ("ApiVersion", API_VERSION),
                ("CallSid", new_sid("CA")),
                ("Called", address),
                ("Caller", self.caller),
                ("Direction", "outbound-dial"),
                ("From", self.caller),
                ("ParentCallSid", self.sid),
                ("To", address),
            ],
            self.phone.clock,
        )
        for status in ("initiated", "ringing", "in-progress"):
            self._report(self._leg, status)

    def _end_leg(self) -> None:
        if self._leg is not None:
            self._report(self._leg, "completed", self._leg.elapsed_s())
            self._leg = None

    def _expect(self, action: str, *statuses: str) -> None:
        if self._call.status not in statuses:
            raise RuntimeError(f"call {self.sid} cannot {action}: it is {self.status or 'new'}")

    def _report(self, progress: _Progress, status: str, duration_s: int | None = None) -> None:
        self.phone.send(progress.callback(status, duration_s))


@dataclass
class TwilioPhone:
    """Play calls and texts into a Carryover instance as Twilio's network delivers them.

    Webhooks go to carryover_url; they are signed over public_url (Carryover's public_url,
    the URL Twilio would call), which defaults to carryover_url. pause is the seconds
    between the moments of a journey (ringing, answered, each transfer, ended), for a human
    to watch. on_sent is told of each webhook once Carryover has answered 200. clock gives
    the callbacks' Timestamp (a demo can tell of a call "on Monday").
    """

    carryover_url: str
    auth_token: str
    account_sid: str = field(default_factory=lambda: new_sid("AC"))
    public_url: str | None = None
    pause: float = 0.0
    timeout_s: float = 10.0
    on_sent: Callable[[Callback], None] | None = None
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    sent: list[Callback] = field(default_factory=list, init=False)

    @property
    def hook_url(self) -> str:
        """Return the URL the webhooks are posted to."""
        return self.carryover_url.rstrip("/") + HOOK_PATH

    @property
    def signed_url(self) -> str:
        """Return the URL the webhooks are signed over, as Twilio signs the URL it called."""
        return (self.public_url or self.carryover_url).rstrip("/") + HOOK_PATH

    def send(self, params: Sequence[tuple[str, str]]) -> Callback:
        """POST form parameters, signed; return the reply, or raise RejectedCallback."""
        signature = sign(self.auth_token, self.signed_url, list(params))
        response = requests.post(
            self.hook_url,
            data=list(params),
            headers={"X-Twilio-Signature": signature},
            timeout=self.timeout_s,
        )
        if response.status_code != 200:
            raise RejectedCallback(response.status_code, response.text)
        callback = Callback(tuple(params), response.text)
        self.sent.append(callback)
        if self.on_sent is not None:
            self.on_sent(callback)
        return callback

    def send_json(self, payload: dict[str, str]) -> Callback:
        """POST a JSON body as Twilio signs one: its SHA-256 in the URL, the URL signed."""
        body = json.dumps(payload).encode()
        query = f"?bodySHA256={hashlib.sha256(body).hexdigest()}"
        signature = sign(self.auth_token, self.signed_url + query, [])
        response = requests.post(
            self.hook_url + query,
            data=body,
            headers={"X-Twilio-Signature": signature, "Content-Type": "application/json"},
            timeout=self.timeout_s,
        )
        if response.status_code != 200:
            raise RejectedCallback(response.status_code, response.text)
        callback = Callback(tuple(payload.items()), response.text)
        self.sent.append(callback)
        if self.on_sent is not None:
            self.on_sent(callback)
        return callback

    def transcript_available(
        self, transcript_sid: str, customer_key: str | None = None
    ) -> Callback:
        """Tell Carryover that a Voice Intelligence transcript is ready, as the Service's
        webhook does; Carryover then reads it from the REST API (twilio_rest.py)."""
        payload = {
            "account_sid": self.account_sid, "service_sid": new_sid("GA"),
            "transcript_sid": transcript_sid, "customer_key": customer_key or "",
            "event_type": TRANSCRIPT_AVAILABLE,
        }  # fmt: skip
        return self.send_json(payload)

    def ring(self, from_: str, to: str) -> PhoneCall:
        """Start an inbound call that rings; return it to answer and end later."""
        call = PhoneCall(self, from_, to)
        call.ring()
        return call

    def call(
        self, from_: str, to: str, agent: str | None = None, duration_s: int | None = None
    ) -> PhoneCall:
        """Play an inbound call that rings, is answered (by agent if given) and completes."""
        return self.transfer(from_, to, [agent] if agent else [], duration_s)

    def transfer(
        self, from_: str, to: str, agents: Sequence[str], duration_s: int | None = None
    ) -> PhoneCall:
        """Play an inbound call answered by the first agent and transferred to each next one."""
        call = self.ring(from_, to)
        self._wait()
        call.answer(agents[0] if agents else None)
        for agent in agents[1:]:
            self._wait()
            call.transfer_to(agent)
        self._wait()
        call.hang_up(duration_s)
        return call

    def missed_call(self, from_: str, to: str) -> PhoneCall:
        """Play an inbound call that rings and ends unanswered (no-answer)."""
        call = self.ring(from_, to)
        self._wait()
        call.hang_up()
        return call

    def sms(self, from_: str, to: str, body: str) -> Callback:
        """Deliver an incoming SMS as Twilio's "A message comes in" webhook."""
        sid = new_sid("SM")
        params = [
            ("AccountSid", self.account_sid),
            ("ApiVersion", API_VERSION),
            ("Body", body),
            *_party("From", _number(from_, "from")),
            ("MessageSid", sid),
            ("NumMedia", "0"),
            ("NumSegments", str(sms_segments(body))),
            ("SmsMessageSid", sid),
            ("SmsSid", sid),
            ("SmsStatus", "received"),
            *_party("To", _number(to, "to")),
        ]
        return self.send(params)

    def _wait(self) -> None:
        if self.pause > 0:
            sleep(self.pause)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m devkit.simulators.twilio",
        description="Play calls and texts into Carryover as Twilio's network sends them.",
    )
    parser.add_argument("--carryover", required=True, help="Carryover's base URL")
    parser.add_argument(
        "--public-url", help="the public_url Carryover is configured with (default --carryover)"
    )
    parser.add_argument(
        "--auth-token",
        default=os.environ.get("TWILIO_AUTH_TOKEN"),
        help="integrations.twilio.auth_token (default $TWILIO_AUTH_TOKEN)",
    )
    parser.add_argument("--account-sid", help="AC… (default: a new one)")
    parser.add_argument("--pause", type=float, default=0.0, help="seconds between moments")
    journeys = parser.add_subparsers(dest="journey", required=True)
    for name, doc in (
        ("call", "an inbound call that rings, is answered and completes"),
        ("transfer", "an inbound call answered by one agent and transferred to the next"),
        ("missed", "an inbound call that rings and is not answered"),
        ("sms", "an incoming text message"),
    ):
        journey = journeys.add_parser(name, help=doc, description=doc)
        journey.add_argument(
            "--from", dest="from_", required=True, metavar="NUMBER", help="E.164, or anonymous"
        )
        journey.add_argument(
            "--to", required=True, metavar="NUMBER", help="your Twilio number, E.164"
        )
        if name == "sms":
            journey.add_argument("--body", required=True)
        if name in ("call", "transfer"):
            journey.add_argument(
                "--agent",
                action="append",
                default=[],
                required=name == "transfer",
                help="who answers (a Client name, sip: or E.164); repeat to transfer",
            )
            journey.add_argument("--duration", type=int, help="CallDuration in seconds")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """Play one journey into Carryover, printing each webhook as it is accepted."""
    parser = _parser()
    options = parser.parse_args(argv)
    if not options.auth_token:
        parser.error("--auth-token (or $TWILIO_AUTH_TOKEN) is required")
    phone = TwilioPhone(
        options.carryover,
        options.auth_token,
        account_sid=options.account_sid or new_sid("AC"),
        public_url=options.public_url,
        pause=options.pause,
        on_sent=lambda callback: print(describe(callback), flush=True),
    )
    try:
        if options.journey == "sms":
            phone.sms(options.from_, options.to, options.body)
        elif options.journey == "missed":
            phone.missed_call(options.from_, options.to)
        else:
            phone.transfer(options.from_, options.to, options.agent, options.duration)
    except requests.RequestException as error:
        print(f"simulator: cannot reach {phone.hook_url}: {error}", file=sys.stderr)
        raise SystemExit(1) from None
    except (RejectedCallback, ValueError) as error:
        print(f"simulator: {error}", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
