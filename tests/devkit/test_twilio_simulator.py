"""The Twilio simulator, played over HTTP into a real Carryover served on a local port."""

from __future__ import annotations

import json
import re
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote

import pytest
from sqlalchemy import func, select

from devkit.simulators import twilio as twilio_simulator
from devkit.simulators.twilio import (
    Callback,
    RejectedCallback,
    TwilioPhone,
    agent_address,
    main,
    sms_segments,
)
from middleware.installation import Installation
from middleware.integrations.plugin import decode_form
from middleware.store.tables import deliveries, interactions
from plugins.twilio import EMPTY_TWIML
from tests.values import AGENT_KEY, PLUGINS_DIR, PUBLIC_URL, TWILIO_TOKEN

ANN = "+14155550142"
SUPPORT_LINE = "+14155550100"
CALL_SID = re.compile(r"CA[0-9a-f]{32}")
TWILIO_TIME = re.compile(r"[A-Z][a-z]{2}, \d\d [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d \+0000")


@pytest.fixture
def phone(carryover_url: str) -> TwilioPhone:
    """Return a phone network posting to the local server, signing over the public_url."""
    return TwilioPhone(carryover_url, TWILIO_TOKEN, public_url=PUBLIC_URL)


def rows(core: Installation, kind: str) -> list[Any]:
    with core.engine.connect() as conn:
        query = select(interactions).where(interactions.c.kind == kind)
        return list(conn.execute(query.order_by(interactions.c.id)))


def delivery_count(core: Installation) -> int:
    with core.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(deliveries)).scalar() or 0)


def callbacks_of(phone: TwilioPhone, call_sid: str) -> list[Callback]:
    return [c for c in phone.sent if dict(c.params).get("CallSid") == call_sid]


def legs_of(phone: TwilioPhone, parent_sid: str) -> list[Callback]:
    return [c for c in phone.sent if dict(c.params).get("ParentCallSid") == parent_sid]


def fixture_names(name: str) -> set[str]:
    form = (PLUGINS_DIR / "twilio" / "fixtures" / name).read_bytes()
    return {key for key, _ in decode_form(form)}


# -- what goes over the wire -----------------------------------------------------------------


def test_call_sends_twilios_callbacks_in_order_with_sequence_numbers(phone):
    """The call reports ringing, in-progress, completed; emma's leg initiated to completed."""
    call = phone.call(ANN, SUPPORT_LINE, agent="emma", duration_s=272)
    assert CALL_SID.fullmatch(call.sid)
    parent = callbacks_of(phone, call.sid)
    assert [(c["CallStatus"], c["SequenceNumber"]) for c in parent] == [
        ("ringing", "0"), ("in-progress", "1"), ("completed", "2"),
    ]  # fmt: skip
    assert (parent[-1]["CallDuration"], parent[-1]["Duration"]) == ("272", "5")
    legs = legs_of(phone, call.sid)
    assert [(c["CallStatus"], c["SequenceNumber"]) for c in legs] == [
        ("initiated", "0"), ("ringing", "1"), ("in-progress", "2"), ("completed", "3"),
    ]  # fmt: skip
    assert len({c["CallSid"] for c in legs}) == 1 and legs[0]["CallSid"] != call.sid
    assert all(CALL_SID.fullmatch(c["CallSid"]) for c in legs)
    assert {(c["Direction"], c["To"], c["From"]) for c in legs} == {
        ("outbound-dial", "client:emma", ANN)
    }
    # The leg answers before the call reports in-progress (answerOnBridge), and ends first.
    order = [(c["CallSid"] == call.sid, c["CallStatus"]) for c in phone.sent]
    assert order.index((False, "in-progress")) < order.index((True, "in-progress"))
    assert order.index((False, "completed")) < order.index((True, "completed"))


def test_every_callback_carries_twilios_common_parameters(phone):
    """AccountSid AC…, ApiVersion 2010-04-01, CallbackSource and an RFC 2822 Timestamp."""
    phone.call(ANN, SUPPORT_LINE, agent="emma")
    phone.sms(ANN, SUPPORT_LINE, "Hello")
    assert re.fullmatch(r"AC[0-9a-f]{32}", phone.account_sid)
    for callback in phone.sent:
        assert callback["AccountSid"] == phone.account_sid
        assert callback["ApiVersion"] == "2010-04-01"
    for callback in phone.sent[:-1]:
        assert callback["CallbackSource"] == "call-progress-events"
        assert TWILIO_TIME.fullmatch(callback["Timestamp"])
        assert parsedate_to_datetime(callback["Timestamp"]).utcoffset().total_seconds() == 0


@pytest.mark.parametrize(
    ("leg", "status", "fixture"),
    [
        (False, "ringing", "call_started__ringing.form"),
        (False, "in-progress", "call_answered__in_progress.form"),
        (False, "completed", "call_ended__completed.form"),
        (True, "ringing", "call_leg_started__ringing.form"),
        (True, "in-progress", "call_leg_answered__emma.form"),
        (True, "completed", "call_leg_ended__emma.form"),
    ],
)
def test_callbacks_carry_the_same_parameters_as_the_fixtures(phone, leg, status, fixture):
    """Each simulated callback has exactly the parameter names of its captured fixture."""
    call = phone.call(ANN, SUPPORT_LINE, agent="emma")
    [callback] = [
        c
        for c in (legs_of(phone, call.sid) if leg else callbacks_of(phone, call.sid))
        if c["CallStatus"] == status
    ]
    assert {name for name, _ in callback.params} == fixture_names(fixture)


def test_sms_carries_the_parameters_of_the_fixture(phone):
    """An incoming SMS: the fixture's parameters (no Messaging Service), one SM… SID thrice."""
    callback = phone.sms(ANN, SUPPORT_LINE, "Any news on my refund?")
    assert {name for name, _ in callback.params} == fixture_names("message_received.form") - {
        "MessagingServiceSid"
    }
    assert re.fullmatch(r"SM[0-9a-f]{32}", callback["MessageSid"])
    assert callback["SmsSid"] == callback["SmsMessageSid"] == callback["MessageSid"]
    assert (callback["SmsStatus"], callback["NumMedia"], callback["NumSegments"]) == (
        "received", "0", "1",
    )  # fmt: skip
    assert callback.reply.encode() == EMPTY_TWIML


@pytest.mark.parametrize(
    ("body", "segments"),
    [
        ("", 1),
        ("a" * 160, 1),
        ("a" * 161, 2),
        ("a" * 306, 2),
        ("a" * 307, 3),
        ("€" * 80, 1),  # an extension character takes two of the 160
        ("€" * 81, 2),
        ("ç" * 70, 1),  # not GSM-7: the text is UCS-2
        ("ç" * 71, 2),
        ("😀" * 35, 1),  # two UTF-16 units each
        ("😀" * 36, 2),
    ],
)
def test_sms_segments_count_like_the_network(body, segments):
    """GSM-7 fits 160 (153 when split), UCS-2 fits 70 (67 when split)."""
    assert sms_segments(body) == segments


def test_agents_are_addressed_as_dial_addresses_them():
    """A name is a Twilio Client; client:, sip: and E.164 addresses are kept."""
    assert agent_address("emma") == "client:emma"
    for kept in ("client:bob", "sip:bob@pbx.example.com", "+14155550123"):
        assert agent_address(kept) == kept
    with pytest.raises(ValueError, match="agent"):
        agent_address("Emma Taylor")


def test_numbers_must_be_e164_and_nothing_is_sent_otherwise():
    """A number Twilio would never send is refused before any request (no server needed)."""
    phone = TwilioPhone("http://127.0.0.1:9", TWILIO_TOKEN)
    for from_, to in (("4155550142", SUPPORT_LINE), (ANN, "(415) 555-0100")):
        with pytest.raises(ValueError, match="E.164"):
            phone.call(from_, to)
    with pytest.raises(ValueError, match="E.164"):
        phone.sms("anonymous", SUPPORT_LINE, "hi")
    assert phone.sent == []


def test_pause_separates_the_moments_of_a_journey(phone, monkeypatch):
    """pause: one wait after ringing, one per transfer, one before hanging up."""
    waits: list[float] = []
    monkeypatch.setattr(twilio_simulator, "sleep", waits.append)
    phone.pause = 1.5
    phone.transfer(ANN, SUPPORT_LINE, ["emma", "bob"])
    assert waits == [1.5, 1.5, 1.5]


def test_duration_is_measured_from_the_answer_when_not_given(phone, monkeypatch):
    """Without duration_s, CallDuration is the whole seconds from answer to hang-up."""
    now = [1000.0]
    monkeypatch.setattr(twilio_simulator, "monotonic", lambda: now[0])
    call = phone.ring(ANN, SUPPORT_LINE)
    now[0] += 5
    call.answer("emma")
    now[0] += 42.4
    call.hang_up()
    durations = [dict(c.params).get("CallDuration") for c in phone.sent]
    assert [d for d in durations if d is not None] == ["42", "42"]  # the leg, then the call


# -- what Carryover makes of it --------------------------------------------------------------


def test_call_becomes_one_completed_phone_call_with_its_duration(phone, worker, core):
    """One call: kind call, channel phone, inbound, completed, 272 s, answered by emma."""
    call = phone.call(ANN, SUPPORT_LINE, agent="emma", duration_s=272)
    assert {c.reply.encode() for c in callbacks_of(phone, call.sid)} == {EMPTY_TWIML}
    worker.drain()
    [stored] = rows(core, "call")
    assert (stored.source, stored.external_id) == ("twilio", call.sid)
    assert (stored.channel, stored.direction, stored.status) == ("phone", "inbound", "completed")
    assert (stored.duration_s, stored.agent) == (272, "emma")
    assert json.loads(stored.identities) == [["phone", ANN]]
    assert stored.customer_id is not None
    assert rows(core, "transfer") == []


def test_transfer_records_each_handover_with_its_agents(phone, worker, core):
    """emma → bob → carol: two transfers in the call, which ends with carol."""
    call = phone.transfer(ANN, SUPPORT_LINE, ["emma", "bob", "carol"], duration_s=300)
    legs = legs_of(phone, call.sid)
    assert len({c["CallSid"] for c in legs}) == 3
    assert [c["To"] for c in legs if c["CallStatus"] == "in-progress"] == [
        "client:emma", "client:bob", "client:carol",
    ]  # fmt: skip
    # Each agent's leg ends before the next one is dialled.
    steps = [(c["To"], c["CallStatus"]) for c in legs]
    assert steps.index(("client:emma", "completed")) < steps.index(("client:bob", "initiated"))
    assert steps.index(("client:bob", "completed")) < steps.index(("client:carol", "initiated"))
    assert steps[-1] == ("client:carol", "completed")
    worker.drain()
    [stored] = rows(core, "call")
    assert (stored.status, stored.agent, stored.duration_s) == ("completed", "carol", 300)
    transfers = rows(core, "transfer")
    assert [(t.external_id, t.text) for t in transfers] == [
        (f"{call.sid}#to:bob", "Transferred from emma to bob"),
        (f"{call.sid}#to:carol", "Transferred from bob to carol"),
    ]
    assert {t.customer_id for t in transfers} == {stored.customer_id}


def test_stepped_call_pops_while_it_rings_and_is_answered(phone, worker, core, client):
    """ring → the pop shows the ringing call; answer → in-progress with emma; hang_up → ends."""
    bearer = {"Authorization": f"Bearer {AGENT_KEY}"}
    call = phone.ring(ANN, SUPPORT_LINE)
    worker.drain()
    pop = client.get(f"/pop?phone={quote(ANN)}", headers=bearer).get_data(as_text=True)
    assert "This call" in pop and "ringing" in pop
    call.answer("emma")
    worker.drain()
    [stored] = rows(core, "call")
    assert (stored.status, stored.agent) == ("in-progress", "emma")
    call.hang_up(duration_s=61)
    worker.drain()
    [stored] = rows(core, "call")
    assert (stored.status, stored.duration_s) == ("completed", 61)
    with pytest.raises(RuntimeError, match="completed"):
        call.answer("bob")


def test_missed_call_ends_no_answer_without_duration(phone, worker, core):
    """Rings, nobody answers: no-answer with CallDuration 0, and no agent leg."""
    call = phone.missed_call(ANN, SUPPORT_LINE)
    assert legs_of(phone, call.sid) == []
    worker.drain()
    [stored] = rows(core, "call")
    assert (stored.status, stored.duration_s, stored.agent) == ("no-answer", 0, None)


def test_anonymous_caller_is_a_call_of_nobody(phone, worker, core):
    """From=anonymous is sent as Twilio sends it and links to no customer."""
    phone.call("anonymous", SUPPORT_LINE, agent="emma")
    worker.drain()
    [stored] = rows(core, "call")
    assert (stored.status, stored.customer_id) == ("completed", None)


def test_sms_becomes_an_inbound_sms_message(phone, worker, core):
    """An incoming SMS: one message, channel sms, with its text, of the sender."""
    callback = phone.sms(ANN, SUPPORT_LINE, "Hi, it's Ann - any news on my refund?")
    worker.drain()
    [message] = rows(core, "message")
    assert (message.external_id, message.channel, message.direction, message.status) == (
        callback["MessageSid"], "sms", "inbound", "received",
    )  # fmt: skip
    assert message.text == "Hi, it's Ann - any news on my refund?"
    assert json.loads(message.identities) == [["phone", ANN]]


def test_replayed_callbacks_are_deduplicated(phone, worker, core):
    """Twilio retrying a callback or an SMS: 200 again, nothing stored twice."""
    call = phone.call(ANN, SUPPORT_LINE, agent="emma", duration_s=30)
    text = phone.sms(ANN, SUPPORT_LINE, "Hello again")
    stored = delivery_count(core)
    for callback in (*callbacks_of(phone, call.sid), text):
        assert phone.send(callback.params).reply.encode() == EMPTY_TWIML
    assert delivery_count(core) == stored
    worker.drain()
    assert len(rows(core, "call")) == 1 and len(rows(core, "message")) == 1


def test_wrong_auth_token_or_public_url_is_refused_with_401(carryover_url, core):
    """Signed with another token, or over another URL than public_url: 401, nothing stored."""
    wrong_token = TwilioPhone(carryover_url, "not-the-token", public_url=PUBLIC_URL)
    with pytest.raises(RejectedCallback) as refused:
        wrong_token.ring(ANN, SUPPORT_LINE)
    assert refused.value.status_code == 401
    assert "X-Twilio-Signature" in refused.value.reply
    unsigned_public_url = TwilioPhone(carryover_url, TWILIO_TOKEN)  # signs over the URL it posts to
    with pytest.raises(RejectedCallback) as refused:
        unsigned_public_url.sms(ANN, SUPPORT_LINE, "hi")
    assert refused.value.status_code == 401
    assert wrong_token.sent == unsigned_public_url.sent == []
    assert delivery_count(core) == 0


# -- the command line ------------------------------------------------------------------------


def test_cli_plays_a_call_and_prints_each_callback(carryover_url, worker, core, capsys):
    """`call --from --to --agent` plays the call; each accepted webhook is one printed line."""
    main(["--carryover", carryover_url, "--public-url", PUBLIC_URL, "--auth-token", TWILIO_TOKEN,
          "call", "--from", ANN, "--to", SUPPORT_LINE, "--agent", "emma",
          "--duration", "90"])  # fmt: skip
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 7
    assert lines[0].startswith("call CA") and lines[0].endswith(" ringing")
    assert lines[-1].endswith(" completed after 90 s")
    worker.drain()
    [stored] = rows(core, "call")
    assert (stored.status, stored.duration_s, stored.agent) == ("completed", 90, "emma")


def test_cli_sms_and_a_refusal_exit_code(carryover_url, worker, core, capsys):
    """`sms` delivers a text; a wrong token exits 1 with Carryover's answer on stderr."""
    common = ["--carryover", carryover_url, "--public-url", PUBLIC_URL]
    main([*common, "--auth-token", TWILIO_TOKEN, "sms", "--from", ANN, "--to", SUPPORT_LINE,
          "--body", "Call me back please"])  # fmt: skip
    assert capsys.readouterr().out.startswith("sms SM")
    with pytest.raises(SystemExit) as exited:
        main([*common, "--auth-token", "wrong", "sms", "--from", ANN, "--to", SUPPORT_LINE,
              "--body", "x"])  # fmt: skip
    assert exited.value.code == 1
    assert "401" in capsys.readouterr().err
    worker.drain()
    [message] = rows(core, "message")
    assert message.text == "Call me back please"
