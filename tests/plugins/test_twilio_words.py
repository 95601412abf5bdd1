"""What was said on a Twilio call: recordings, <Record> transcriptions and Voice Intelligence
transcripts become the call's recording link and the caller's words."""

from __future__ import annotations

import hashlib
import json
import re
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

import pytest
import requests
import responses
from sqlalchemy import func, select, update

from middleware.config import Config
from middleware.errors import UnsupportedEvent
from middleware.installation import build_installation
from middleware.integrations.plugin import InboundRequest
from middleware.notes.outbox import MARKER_PATTERN
from middleware.process.worker import Worker
from middleware.store.tables import deliveries, interactions, utcnow, writes
from plugins.twilio import TwilioPlugin
from plugins.twilio import sign as twilio_sign
from plugins.twilio.words import console_link
from tests.payloads import cti_body, twilio_fields, zendesk_event
from tests.values import ANN, PLUGINS_DIR, PUBLIC_URL, TWILIO_TOKEN

CALL_SID = "CA5d8e2b7f4a9c41e08f3b6d2a7c9e1f40"
RECORDING_SID = "RE7c1e9a4b2d8f43a6b5e0c3d9f1a2b7e4"
TRANSCRIPT_SID = "GT8e3a1f6c9b2d47e5a0c4f7b1d3e9a6c2"
ACCOUNT_SID = "AC3f0bd5c1ab7b4e6c9e34cd7a91c4e0a1"
RECORDING_LINK = (
    "https://console.twilio.com/us1/monitor/logs/call-recordings?frameUrl="
    "%2Fconsole%2Fvoice%2Frecordings%2Frecording-logs%2FRE7c1e9a4b2d8f43a6b5e0c3d9f1a2b7e4"
    "%3Fx-target-region%3Dus1"
)
WORDS = (
    "Hi, this is Carla. I was charged twice for order 1042 and would like the second "
    "charge refunded."
)
CARD_WORDS = "My card is 4111 1111 1111 1111 and it was charged twice, please refund it."
PBX_CALL = "9f2c1e7a-4b3d-4e8f-a6c5-0d7b2e9f1a34"
INTELLIGENCE = "https://intelligence.twilio.example"
API = "https://api.twilio.example"
INTEL_DIR = PLUGINS_DIR / "twilio" / "fixtures" / "intelligence"
TRANSCRIPT_URL = f"{INTELLIGENCE}/v2/Transcripts/{TRANSCRIPT_SID}"
SENTENCES_URL = f"{TRANSCRIPT_URL}/Sentences"
HOOK_BODY = (
    PLUGINS_DIR / "twilio" / "fixtures" / "intelligence_transcript_available.json"
).read_bytes()
RECORDING_URL = f"{API}/2010-04-01/Accounts/{ACCOUNT_SID}/Recordings/{RECORDING_SID}.json"


def plugin() -> TwilioPlugin:
    return TwilioPlugin({"auth_token": "12345"}, Config())


def parse(name: str, **changes: str) -> list:
    body = urlencode(twilio_fields(name, **changes)).encode()
    request = InboundRequest(path="/hooks/twilio", url="", headers={}, body=body)
    return plugin().parse(request)


def intel(name: str) -> dict[str, Any]:
    return json.loads((INTEL_DIR / name).read_bytes())


def post_json(client, body: bytes, token: str = TWILIO_TOKEN, digest: str | None = None):
    """POST a JSON body as Twilio signs one: bodySHA256 in the URL, the URL signed."""
    digest = digest or hashlib.sha256(body).hexdigest()
    path = f"/hooks/twilio?bodySHA256={digest}"
    signature = twilio_sign(token, PUBLIC_URL + path, [])
    return client.post(path, data=body, content_type="application/json",
                       headers={"X-Twilio-Signature": signature})  # fmt: skip


def stored_call(core) -> Any:
    with core.engine.connect() as conn:
        return conn.execute(select(interactions).where(interactions.c.kind == "call")).one()


def count(core, table) -> int:
    with core.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar() or 0)


# -- parsing ---------------------------------------------------------------------------------


def test_a_completed_recording_links_its_console_page_to_the_call():
    """A recording status callback becomes call.recorded on its call, with the Console link."""
    [event] = parse("call_recorded__completed.form")
    assert (event.key, event.type) == (f"recording:{RECORDING_SID}", "call.recorded")
    assert (event.payload["call_id"], event.payload["recording"]) == (CALL_SID, RECORDING_LINK)
    assert console_link(RECORDING_SID) == RECORDING_LINK
    assert ACCOUNT_SID not in RECORDING_LINK


def test_a_recording_of_an_agent_leg_belongs_to_the_parent_call():
    """A ParentCallSid names the call the recording belongs to."""
    child = "CA" + "7" * 32
    [event] = parse("call_recorded__completed.form", CallSid=child, ParentCallSid=CALL_SID)
    assert event.payload["call_id"] == CALL_SID


@pytest.mark.parametrize("status", ["in-progress", "absent", "failed"])
def test_a_recording_that_did_not_complete_is_ignored(status):
    """Only completed recordings have something to listen to."""
    with pytest.raises(UnsupportedEvent) as raised:
        parse("call_recorded__completed.form", RecordingStatus=status)
    assert raised.value.event_type == f"call.recording.{status}"


def test_a_record_transcription_is_the_callers_words():
    """A <Record transcribe> callback carries the text, the recording and the caller."""
    [event] = parse("call_transcribed__completed.form")
    assert (event.key, event.type) == ("transcription:TR2b9d4e7a1c6f48b3a0d5e8c2f7b1a9d6",
                                       "call.transcribed")  # fmt: skip
    payload = event.payload
    assert (payload["call_id"], payload["words"], payload["recording"], payload["customer"]) == (
        CALL_SID, WORDS, RECORDING_LINK, "+14155550142",
    )  # fmt: skip


def test_a_failed_transcription_leaves_only_the_recording_link():
    """A failed transcription is call.recorded: the recording, no words."""
    [event] = parse("call_recorded__transcription_failed.form")
    assert event.type == "call.recorded"
    assert "words" not in event.payload and event.payload["recording"] == RECORDING_LINK


def test_the_intelligence_webhook_names_its_transcript():
    """The Voice Intelligence webhook is an event keyed by its transcript, read back later."""
    body = HOOK_BODY
    request = InboundRequest(path="/hooks/twilio", url="", headers={}, body=body)
    [event] = plugin().parse(request)
    assert (event.key, event.type) == (f"transcript:{TRANSCRIPT_SID}",
                                       "intelligence.transcript.available")  # fmt: skip
    assert "intelligence.transcript.available" in TwilioPlugin.read_back_types


# -- the endpoint's rules ----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["call_recorded__completed.form",
                                  "call_transcribed__completed.form"])  # fmt: skip
def test_recording_and_transcription_posts_need_twilios_signature(core, hooks, name):
    """A wrong signature gets 401 and nothing is stored; the signed post is stored once."""
    fields = twilio_fields(name)
    assert hooks.twilio(fields, token="not-the-token").status_code == 401
    assert count(core, deliveries) == 0
    assert hooks.twilio(fields).status_code == 200
    assert hooks.twilio(fields).status_code == 200  # Twilio's retry: nothing new
    assert count(core, deliveries) == 1


def test_the_intelligence_webhook_is_checked_with_its_body_hash(core, client):
    """JSON is signed over the URL with bodySHA256: a wrong hash, token or none get 401."""
    body = HOOK_BODY
    assert post_json(client, body, digest="0" * 64).status_code == 401
    assert post_json(client, body, token="not-the-token").status_code == 401
    unsigned = client.post("/hooks/twilio", data=body, content_type="application/json")
    assert unsigned.status_code == 401
    no_hash = client.post("/hooks/twilio", data=body, content_type="application/json",
                          headers={"X-Twilio-Signature": twilio_sign(TWILIO_TOKEN,
                                   PUBLIC_URL + "/hooks/twilio", [])})  # fmt: skip
    assert no_hash.status_code == 401
    assert count(core, deliveries) == 0
    assert post_json(client, body).status_code == 200
    assert count(core, deliveries) == 1


@pytest.mark.parametrize(
    ("name", "changes", "error"),
    [
        ("call_recorded__completed.form", {"RecordingSid": "RE../../x"},
         "RecordingSid: expected a recording SID (RE and 32 hex digits)"),
        ("call_recorded__completed.form", {"CallSid": "CA123"},
         "CallSid: expected a call SID (CA and 32 hex digits)"),
        ("call_transcribed__completed.form", {"TranscriptionSid": "TR?x=1"},
         "TranscriptionSid: expected a transcription SID (TR and 32 hex digits)"),
        ("call_transcribed__completed.form", {"RecordingSid": "REnope"},
         "RecordingSid: expected a recording SID (RE and 32 hex digits)"),
    ],
)  # fmt: skip
def test_malformed_sids_are_refused_with_400(core, hooks, name, changes, error):
    """A SID not in its format never goes near a URL: 400 naming the field."""
    response = hooks.twilio(twilio_fields(name, **changes))
    assert (response.status_code, response.get_json()) == (400, {"error": error})
    assert count(core, deliveries) == 0


def test_a_malformed_transcript_sid_is_refused_with_400(core, client):
    """The Intelligence webhook's transcript_sid is checked before anything is stored."""
    payload = json.loads(HOOK_BODY)
    body = json.dumps({**payload, "transcript_sid": "GT/../Calls"}).encode()
    response = post_json(client, body)
    assert (response.status_code, response.get_json()) == (
        400, {"error": "transcript_sid: expected a transcript SID (GT and 32 hex digits)"},
    )  # fmt: skip
    assert count(core, deliveries) == 0


def test_an_unfinished_recording_gets_200_ignored(core, hooks):
    """An in-progress recording is an authentic event Carryover does not use."""
    response = hooks.twilio(twilio_fields("call_recorded__completed.form",
                                          RecordingStatus="in-progress"))  # fmt: skip
    assert (response.status_code, response.get_json()) == (
        200, {"ignored": "call.recording.in-progress"},
    )  # fmt: skip
    assert count(core, deliveries) == 0


# -- the call gets its words -------------------------------------------------------------------


def play_call(hooks, worker) -> None:
    """Play a whole answered call from the fixtures, then its transcription and recording."""
    for name in ("call_started__ringing.form", "call_answered__in_progress.form",
                 "call_ended__completed.form"):  # fmt: skip
        assert hooks.twilio(twilio_fields(name)).status_code == 200
    worker.drain()


def test_a_late_transcription_fills_the_ended_call_and_it_stays_ended(core, hooks, worker):
    """The words and the recording arrive after the hang-up: the call keeps completed."""
    play_call(hooks, worker)
    fields = twilio_fields("call_transcribed__completed.form", TranscriptionText=CARD_WORDS)
    assert hooks.twilio(fields).status_code == 200
    worker.drain()
    call = stored_call(core)
    assert (call.status, call.duration_s, call.said_by, call.recording) == (
        "completed", 272, "customer", RECORDING_LINK,
    )  # fmt: skip
    assert call.text == (
        "My card is [card ending 1111] and it was charged twice, please refund it."
    )
    with core.engine.connect() as conn:
        stored = conn.execute(select(deliveries.c.body)).all()
    assert not any(b"4111" in row.body for row in stored)


def test_a_transcribed_call_puts_the_callers_words_into_the_next_tickets_note(
    core, hooks, worker, fake_zendesk
):
    """The next Zendesk ticket's summary note holds the caller's words, card number cut to
    its last 4, and the link to the recording."""
    play_call(hooks, worker)
    fields = twilio_fields("call_transcribed__completed.form", TranscriptionText=CARD_WORDS)
    assert hooks.twilio(fields).status_code == 200
    worker.drain()
    body = zendesk_event("ticket_created.json", id="5158", requester_id=str(ANN))
    assert hooks.zendesk(body).status_code == 200
    worker.drain()
    [note] = fake_zendesk.notes(5158)
    text = note["body"]
    assert '"My card is [card ending 1111] and it was charged twice, please refund it."' in text
    assert f"recording: {RECORDING_LINK}" in text
    assert "4111 1111" not in text and RECORDING_SID in text and ACCOUNT_SID not in text


def test_words_after_the_call_note_queue_it_once_more_and_retries_change_nothing(
    core, hooks, worker
):
    """An ended call's note went out without them: the late recording queues the note with
    its link, the late transcription with the words, each once; retries queue nothing."""
    assert hooks.twilio(twilio_fields("call_started__ringing.form")).status_code == 200
    worker.drain()
    customer = stored_call(core).customer_id
    with core.engine.begin() as conn:  # the caller's open Zendesk ticket
        conn.execute(interactions.insert().values(
            source="zendesk", external_id="5158", kind="ticket", channel="email",
            occurred_at=utcnow(), updated_at=utcnow(), status="open", identities="[]",
            customer_id=customer,
        ))  # fmt: skip
    for name in ("call_answered__in_progress.form", "call_ended__completed.form"):
        assert hooks.twilio(twilio_fields(name)).status_code == 200
    worker.drain()
    recorded = twilio_fields("call_recorded__completed.form")
    transcribed = twilio_fields("call_transcribed__completed.form")
    for fields in (recorded, transcribed, transcribed, recorded):
        assert hooks.twilio(fields).status_code == 200
        worker.drain()
    with core.engine.connect() as conn:
        queued = conn.execute(select(writes.c.purpose, writes.c.body).order_by(writes.c.id)).all()
    assert [w.purpose for w in queued] == ["call", "recording", "words"]
    assert "Caller said" not in queued[0].body and "Recording:" not in queued[0].body
    # The late notes say only what is new: the call's note told the rest.
    recording, words = (MARKER_PATTERN.sub("", w.body).strip() for w in queued[1:])
    call = r"Phone call [A-Z][a-z]{2} \d+ [A-Z][a-z]{2} \d\d:\d\d with \+14155550142"
    link = f"Recording: {RECORDING_LINK}"
    assert re.fullmatch(f"{call}: its recording", recording.split("\n")[0])
    assert recording.split("\n")[1:] == [link]
    assert re.fullmatch(f"{call}: what the caller said, transcribed after the call",
                        words.split("\n")[0])  # fmt: skip
    assert words.split("\n")[1:] == [f'"{WORDS}"', link]


# -- Voice Intelligence ------------------------------------------------------------------------


@pytest.fixture
def intel_core(database_url, make_config):
    """Build an installation whose Twilio reads transcripts from a mocked Intelligence API."""
    config = make_config(database_url, phone=True, twilio={
        "account_sid": ACCOUNT_SID, "api_url": API, "intelligence_url": INTELLIGENCE,
    })  # fmt: skip
    built = build_installation(config)
    yield built
    built.dispose()


def mock_transcript(api: responses.RequestsMock, transcript: dict[str, Any] | None = None) -> None:
    """Answer the transcript, its two pages of sentences and its recording as Twilio does."""
    api.get(TRANSCRIPT_URL, json=transcript or intel("transcript.json"))
    page_0, page_1 = intel("sentences_page_0.json"), intel("sentences_page_1.json")
    # The second page's URL is the one the first names (Twilio's own next_page_url).
    api.get(page_0["meta"]["next_page_url"].replace("https://intelligence.twilio.com",
                                                    INTELLIGENCE), json=page_1)  # fmt: skip
    api.get(f"{SENTENCES_URL}?PageSize=1000", json=page_0)
    api.get(RECORDING_URL, json=intel("recording.json"))


def deliver_transcript(core) -> None:
    client = core_client(core)
    assert post_json(client, HOOK_BODY).status_code == 200


def core_client(core):
    from middleware.web.app import create_app

    return create_app(core=core).test_client()


def test_an_intelligence_transcript_becomes_the_customers_words_on_the_call(intel_core):
    """The worker reads the transcript and its pages of sentences: the Customer channel's
    sentences are the call's words, and its recording is linked."""
    deliver_transcript(intel_core)
    with responses.RequestsMock() as api:
        mock_transcript(api)
        Worker(intel_core).drain()
        sent = [(c.request.method, c.request.url) for c in api.calls]
        auth = {c.request.headers["Authorization"] for c in api.calls}
    assert sent == [
        ("GET", TRANSCRIPT_URL), ("GET", RECORDING_URL), ("GET", f"{SENTENCES_URL}?PageSize=1000"),
        ("GET", f"{SENTENCES_URL}?PageSize=2&Page=1&PageToken=PASMxXJA"),
    ]  # fmt: skip
    assert len(auth) == 1 and auth.pop().startswith("Basic ")
    call = stored_call(intel_core)
    assert (call.external_id, call.text, call.said_by, call.recording) == (
        CALL_SID, "Hi, I was charged twice for order 1042. Please refund the second charge.",
        "customer", RECORDING_LINK,
    )  # fmt: skip


def test_a_transcript_without_roles_never_puts_agent_words_under_already_said(intel_core):
    """Without a Customer participant nothing counts as the caller's: only the recording."""
    transcript = intel("transcript.json")
    transcript["channel"].pop("participants")
    deliver_transcript(intel_core)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as api:
        mock_transcript(api, transcript)
        Worker(intel_core).drain()
    call = stored_call(intel_core)
    assert (call.text, call.said_by, call.recording) == (None, None, RECORDING_LINK)


def test_an_unreachable_intelligence_api_retries_and_loses_nothing(intel_core):
    """While the API cannot be reached the delivery waits; once it answers, the words land."""
    deliver_transcript(intel_core)
    with responses.RequestsMock() as api:
        api.get(TRANSCRIPT_URL, body=requests.ConnectionError("connection refused"))
        Worker(intel_core).drain(rounds=1)
    with intel_core.engine.connect() as conn:
        waiting = conn.execute(select(deliveries.c.status, deliveries.c.last_error)).one()
    assert waiting.status == "pending" and "Twilio" in (waiting.last_error or "")
    assert count(intel_core, interactions) == 0
    with intel_core.engine.begin() as conn:  # the retry is due (its backoff has passed)
        conn.execute(update(deliveries).values(next_attempt_at=utcnow() - timedelta(seconds=1)))
    intel_core.health.resume("twilio")  # as an admin would, or its short pause running out
    with responses.RequestsMock() as api:
        mock_transcript(api)
        Worker(intel_core).drain()
    with intel_core.engine.connect() as conn:
        assert conn.execute(select(deliveries.c.status)).scalar() == "done"
    assert stored_call(intel_core).said_by == "customer"


# -- calls from other PBXs ---------------------------------------------------------------------


def test_a_pbx_hangup_can_carry_the_recording_and_the_callers_words(core, hooks, worker):
    """The generic CTI's recordingUrl and transcript become the call's recording and words."""
    assert hooks.cti(cti_body("newCall.json", callId=PBX_CALL)).status_code == 200
    assert hooks.cti(cti_body("hangup__recorded.json", callId=PBX_CALL)).status_code == 200
    worker.drain()
    call = stored_call(core)
    assert (call.status, call.recording, call.text, call.said_by) == (
        "completed",
        "https://pbx.example.com/recordings/9f2c1e7a-4b3d-4e8f-a6c5-0d7b2e9f1a34.mp3",
        "Hi, I am calling about the refund for order 1042, it has not arrived yet.",
        "customer",
    )


def test_a_recording_link_that_is_not_http_is_dropped(core, hooks, worker):
    """A javascript: recording link never becomes an href; the words still count."""
    body = cti_body("hangup__recorded.json", recordingUrl="javascript:alert(1)")
    assert hooks.cti(body).status_code == 200
    worker.drain()
    call = stored_call(core)
    assert (call.recording, call.said_by) == (None, "customer")
