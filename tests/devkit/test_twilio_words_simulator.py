"""The simulators play a recorded and transcribed call: the phone network's recording and
transcription callbacks and Intelligence webhook, and the REST fake's transcripts."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests
from sqlalchemy import select

from devkit.simulators.twilio import TwilioPhone
from devkit.simulators.twilio_rest import FakeTwilio
from middleware.installation import Installation, build_installation
from middleware.integrations.plugin import decode_form
from middleware.store.tables import interactions
from plugins.twilio.words import console_link
from tests.values import PLUGINS_DIR, PUBLIC_URL, TWILIO_TOKEN

ANN = "+14155550142"
SUPPORT_LINE = "+14155550100"
TURNS = [
    ("agent", "Thanks for calling, this is Emma."),
    ("customer", "I was charged twice for order 1042."),
    ("agent", "Let me look that up."),
    ("customer", "Please refund the second charge."),
]


@pytest.fixture
def fake_twilio() -> Iterator[FakeTwilio]:
    """Serve the fake Twilio REST API with the test installation's Auth Token."""
    with FakeTwilio(auth_token=TWILIO_TOKEN) as fake:
        yield fake


@pytest.fixture
def core(database_url: str, make_config: Any, fake_twilio: FakeTwilio) -> Iterator[Installation]:
    """Build an installation whose Twilio reads its API and Intelligence from the fake."""
    config = make_config(database_url, phone=True, twilio={
        "account_sid": fake_twilio.account_sid, "api_url": fake_twilio.url,
        "intelligence_url": fake_twilio.url,
    })  # fmt: skip
    built = build_installation(config)
    yield built
    built.dispose()


@pytest.fixture
def phone(carryover_url: str, fake_twilio: FakeTwilio) -> TwilioPhone:
    """Return the phone network of the fake's account, posting to the local server."""
    return TwilioPhone(carryover_url, TWILIO_TOKEN, account_sid=fake_twilio.account_sid,
                       public_url=PUBLIC_URL)  # fmt: skip


def the_call(core: Installation) -> Any:
    with core.engine.connect() as conn:
        return conn.execute(select(interactions).where(interactions.c.kind == "call")).one()


def fixture_names(name: str) -> set[str]:
    return {
        key for key, _ in decode_form((PLUGINS_DIR / "twilio" / "fixtures" / name).read_bytes())
    }


def test_the_recording_and_transcription_callbacks_carry_the_fixtures_parameters(phone):
    """The simulator sends what the fixtures (from Twilio's docs) hold, nothing less."""
    call = phone.call(ANN, SUPPORT_LINE, agent="emma", duration_s=95)
    recorded = call.record()
    transcribed = call.transcribe("I was charged twice.")
    assert {k for k, _ in recorded.params} == fixture_names("call_recorded__completed.form")
    assert {k for k, _ in transcribed.params} == fixture_names("call_transcribed__completed.form")
    assert (recorded["CallSid"], recorded["RecordingStatus"]) == (call.sid, "completed")
    assert transcribed["RecordingSid"] == call.recording_sid


def test_a_recorded_and_transcribed_call_plays_into_carryover(phone, worker, core):
    """After the hang-up, the recording and the transcription fill the ended call."""
    call = phone.call(ANN, SUPPORT_LINE, agent="emma", duration_s=95)
    call.record()
    call.transcribe("I was charged twice for order 1042.")
    worker.drain()
    row = the_call(core)
    assert (row.external_id, row.status, row.agent, row.duration_s) == (
        call.sid, "completed", "emma", 95,
    )  # fmt: skip
    assert (row.recording, row.text, row.said_by) == (
        console_link(call.recording_sid or ""), "I was charged twice for order 1042.", "customer",
    )  # fmt: skip


def test_an_intelligence_transcript_is_read_from_the_fake_api(phone, worker, core, fake_twilio):
    """The Intelligence webhook makes Carryover read the fake's transcript, its recording's
    call and its sentences page by page: only the customer's sentences become the words."""
    call = phone.call(ANN, SUPPORT_LINE, agent="emma", duration_s=95)
    recording = fake_twilio.add_recording(call.sid, duration_s=95)
    transcript = fake_twilio.add_transcript(recording, TURNS)
    phone.transcript_available(transcript)
    worker.drain()
    row = the_call(core)
    assert (row.text, row.said_by, row.recording) == (
        "I was charged twice for order 1042. Please refund the second charge.", "customer",
        console_link(recording),
    )  # fmt: skip


def test_the_rest_fake_pages_sentences_and_asks_for_the_accounts_credentials(fake_twilio):
    """Sentences come a page at a time with Twilio's meta.next_page_url; other credentials
    get 401, an unknown transcript 404."""
    recording = fake_twilio.add_recording("CA" + "1" * 32)
    transcript = fake_twilio.add_transcript(recording, TURNS)
    auth = (fake_twilio.account_sid, TWILIO_TOKEN)
    url = f"{fake_twilio.url}/v2/Transcripts/{transcript}/Sentences"
    first = requests.get(url, params={"PageSize": 3}, auth=auth, timeout=5).json()
    assert [s["transcript"] for s in first["sentences"]] == [t for _, t in TURNS[:3]]
    second = requests.get(first["meta"]["next_page_url"], auth=auth, timeout=5).json()
    assert [(s["media_channel"], s["sentence_index"]) for s in second["sentences"]] == [(2, 3)]
    assert second["meta"]["next_page_url"] is None
    assert requests.get(url, auth=(fake_twilio.account_sid, "wrong"), timeout=5).status_code == 401
    missing = f"{fake_twilio.url}/v2/Transcripts/GT{'0' * 32}"
    assert requests.get(missing, auth=auth, timeout=5).status_code == 404
    fetched = requests.get(
        f"{fake_twilio.url}/2010-04-01/Accounts/{fake_twilio.account_sid}/Recordings/{recording}.json",
        auth=auth, timeout=5,
    ).json()  # fmt: skip
    assert (fetched["call_sid"], fetched["status"]) == ("CA" + "1" * 32, "completed")
