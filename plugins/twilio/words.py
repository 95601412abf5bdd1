"""What was said on a Twilio call: recordings, <Record> transcriptions, Voice Intelligence.

Three senders, one result: the call (its parent leg's CallSid) gets a link to its recording
in the Twilio Console and the caller's own words. A recording status callback brings the
link; a <Record transcribe> callback brings the text as well (a <Record> captures the
caller); a Voice Intelligence webhook only names a transcript, whose sentences the worker
reads through the API (read_back), keeping the customer's channel only.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from middleware.errors import MalformedPayload, UnsupportedEvent
from middleware.integrations.plugin import InboundEvent

RECORDING_SID = re.compile(r"RE[0-9a-fA-F]{32}")
TRANSCRIPTION_SID = re.compile(r"TR[0-9a-fA-F]{32}")
TRANSCRIPT_SID = re.compile(r"GT[0-9a-fA-F]{32}")
CALL_SID_ANY = re.compile(r"CA[0-9a-fA-F]{32}")
# The Console page of one recording (Monitor → Logs → Call recordings), where agents who
# log into the Console listen to it: no media URL, no account SID in the link.
CONSOLE_RECORDING = (
    "https://console.twilio.com/us1/monitor/logs/call-recordings?frameUrl="
    "%2Fconsole%2Fvoice%2Frecordings%2Frecording-logs%2F{sid}%3Fx-target-region%3Dus1"
)
TRANSCRIPT_AVAILABLE = "voice_intelligence_transcript_available"
CUSTOMER_ROLE = "customer"
MAX_WORDS_CHARS = 20_000  # of one call's words kept: the notes show an excerpt


def console_link(recording_sid: str) -> str:
    """Return the Console page of a recording (a SID checked against RECORDING_SID)."""
    return CONSOLE_RECORDING.format(sid=quote(recording_sid, safe=""))


def checked(fields: Mapping[str, Any], name: str, pattern: re.Pattern[str], what: str) -> str:
    """Return a SID field that matches its format; raise MalformedPayload naming it."""
    value = fields.get(name)
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise MalformedPayload(f"{name}: expected {what}")
    return value


def call_of(fields: Mapping[str, Any]) -> str:
    """Return the call a callback belongs to: the parent leg when it names one."""
    if fields.get("ParentCallSid"):
        return checked(fields, "ParentCallSid", CALL_SID_ANY, "a call SID (CA and 32 hex digits)")
    return checked(fields, "CallSid", CALL_SID_ANY, "a call SID (CA and 32 hex digits)")


def recording_event(fields: Mapping[str, Any]) -> InboundEvent:
    """Turn a recording status callback into call.recorded (only completed recordings)."""
    sid = checked(fields, "RecordingSid", RECORDING_SID, "a recording SID (RE and 32 hex digits)")
    call_id = call_of(fields)
    status = str(fields.get("RecordingStatus") or "").lower()
    if status != "completed":
        # in-progress, absent (silence), failed: nothing to listen to.
        raise UnsupportedEvent(f"call.recording.{status or 'unknown'}"[:64])
    payload = dict(fields, call_id=call_id, recording=console_link(sid))
    return InboundEvent(key=f"recording:{sid}", type="call.recorded", payload=payload)


def transcription_event(fields: Mapping[str, Any]) -> InboundEvent:
    """Turn a <Record transcribe> callback into call.transcribed, or call.recorded when the
    transcription failed (the recording is still worth a link)."""
    sid = checked(fields, "TranscriptionSid", TRANSCRIPTION_SID,
                  "a transcription SID (TR and 32 hex digits)")  # fmt: skip
    call_id = call_of(fields)
    payload: dict[str, Any] = dict(fields, call_id=call_id)
    if fields.get("RecordingSid"):
        recording = checked(fields, "RecordingSid", RECORDING_SID,
                            "a recording SID (RE and 32 hex digits)")  # fmt: skip
        payload["recording"] = console_link(recording)
    status = str(fields.get("TranscriptionStatus") or "").lower()
    text = fields.get("TranscriptionText")
    if status == "completed" and isinstance(text, str) and text.strip():
        payload["words"] = text.strip()[:MAX_WORDS_CHARS]
        return InboundEvent(key=f"transcription:{sid}", type="call.transcribed", payload=payload)
    if "recording" not in payload:
        raise UnsupportedEvent(f"call.transcription.{status or 'unknown'}"[:64])
    return InboundEvent(key=f"transcription:{sid}", type="call.recorded", payload=payload)


def intelligence_event(fields: Mapping[str, Any]) -> InboundEvent:
    """Turn a Voice Intelligence webhook into an event naming its transcript."""
    sid = checked(fields, "transcript_sid", TRANSCRIPT_SID,
                  "a transcript SID (GT and 32 hex digits)")  # fmt: skip
    event_type = fields.get("event_type")
    if event_type != TRANSCRIPT_AVAILABLE:
        raise UnsupportedEvent(f"intelligence.{str(event_type)[:40]}")
    key = f"transcript:{sid}"
    return InboundEvent(key=key, type="intelligence.transcript.available", payload=dict(fields))


def source_of(transcript: Mapping[str, Any]) -> str | None:
    """Return the SID the transcript was made from (a recording RE… or a call CA…), if any."""
    channel = transcript.get("channel")
    media = channel.get("media_properties") if isinstance(channel, dict) else None
    source = media.get("source_sid") if isinstance(media, dict) else None
    return source if isinstance(source, str) else None


def customer_channel(transcript: Mapping[str, Any]) -> int | None:
    """Return the media channel of the participant whose role is the customer, if named."""
    channel = transcript.get("channel")
    participants = channel.get("participants") if isinstance(channel, dict) else None
    for person in participants if isinstance(participants, list) else []:
        if not isinstance(person, dict):
            continue
        role = person.get("role")
        number = person.get("channel_participant")
        if isinstance(role, str) and role.lower() == CUSTOMER_ROLE and isinstance(number, int):
            return number
    return None


def customer_words(sentences: list[dict[str, Any]], channel: int | None) -> str | None:
    """Join the customer's sentences in order; None when the customer's channel is unknown.

    Without a customer role the sentences mix the agent's words with the caller's, and an
    agent's words must never show as what the customer already said.
    """
    if channel is None:
        return None
    ordered = sorted(sentences, key=lambda s: _index(s.get("sentence_index")))
    said = [
        s["transcript"].strip()
        for s in ordered
        if s.get("media_channel") == channel and isinstance(s.get("transcript"), str)
    ]
    text = " ".join(t for t in said if t)
    return text[:MAX_WORDS_CHARS] or None


def _index(value: Any) -> int:
    return value if isinstance(value, int) else 0
