"""Placetel call notifications: signatures, path tokens, refusals, duplicates, whole calls.

The Zammad sequences below are those of zammad/zammad spec/requests/integration/
placetel_spec.rb ("does basic call", "does log call", "does log call with peer"), posted as
its request specs post them: form bodies, bare hang-ups with only call_id and type, an
answer of an outgoing call without direction. One change: the spec's customer number,
01114100300, is not a valid number (phonenumbers refuses it, so no customer could be
recognised by it); 030609854180, a Berlin number, stands in for it.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from urllib.parse import quote, quote_plus

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select
from werkzeug.test import TestResponse

from middleware.config import Config, ConfigError
from middleware.installation import Installation, build_installation
from middleware.integrations.plugin import decode_form
from middleware.process.calls import call_facts
from middleware.store.queue import DONE
from middleware.store.tables import customers, deliveries, interactions
from plugins.placetel import ACKNOWLEDGEMENT, PlacetelPlugin, sign
from tests.actions import ConfigFactory
from tests.values import PLUGINS_DIR

SECRET = "placetel-shared-secret-for-tests"
TOKEN = "placetel-path-token-for-tests-0123456789"
FIXTURES = PLUGINS_DIR / "placetel" / "fixtures"
FORM = "application/x-www-form-urlencoded"
CALL = "f4591ba315d81671d7a06c2a3b4f963dafd119de39cb26edd8a6476676b2f447"
PEER = "7777abcdefg@example.com"
CUSTOMER = "030609854180"  # for the spec's 01114100300 (see above)
LINE = "030600000000"


@pytest.fixture
def core(database_url: str, make_config: ConfigFactory) -> Iterator[Installation]:
    """Build an installation with Placetel connected (secret and token) in Germany."""
    settings = {"secret": SECRET, "token": TOKEN}
    config = make_config(database_url, integrations={"placetel": settings}, default_region="DE")
    built = build_installation(config)
    yield built
    built.dispose()


def fixture(name: str) -> bytes:
    """Return a Placetel fixture's body exactly as Placetel posts it."""
    return (FIXTURES / name).read_bytes()


def signed(client, body: bytes, secret: str = SECRET) -> TestResponse:
    """POST a body signed as Placetel signs it (X-PLACETEL-SIGNATURE)."""
    headers = {"X-PLACETEL-SIGNATURE": sign(secret, body)}
    return client.post("/hooks/placetel", data=body, headers=headers, content_type=FORM)


def by_token(client, body: bytes, token: str = TOKEN) -> TestResponse:
    """POST a body to /hooks/placetel/<token>, as Zammad's Placetel URL is set up."""
    return client.post(f"/hooks/placetel/{token}", data=body, content_type=FORM)


def count(core: Installation, table) -> int:
    with core.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar() or 0)


def calls(core: Installation) -> dict[str, dict[str, object]]:
    """Return the stored calls by call id, with the fields an agent sees."""
    with core.engine.connect() as conn:
        rows = conn.execute(select(interactions).where(interactions.c.kind == "call")).all()
    return {
        row.external_id: {
            "source": row.source, "direction": row.direction, "status": row.status,
            "agent": row.agent, "duration_s": row.duration_s, "customer_id": row.customer_id,
            "identities": json.loads(row.identities),
        }
        for row in rows
    }  # fmt: skip


def people(core: Installation) -> list[int]:
    with core.engine.connect() as conn:
        return list(conn.execute(select(customers.c.id)).scalars())


# -- the signature ---------------------------------------------------------------------------


def test_signature_vector_from_placetels_documentation():
    """Secret 12345 over the documented CallAccepted body gives the documented hex digest."""
    body = (b"call_id=4a4cbb39578170aed9a2761a7bec8c7e704a541f52291ef603d6f5f152980c3c"
            b"&event=CallAccepted&from=0123456789&to=0987654321")  # fmt: skip
    assert sign("12345", body) == "c4f823c5b8806432fe2b83b1fc2ee714422e0cdfb4b5129152a7d0bbcd7792d0"


def test_signed_incoming_call_gets_empty_xml_and_becomes_a_ringing_call(client, worker, core):
    """A signed IncomingCall: 200 with an empty XML Response, then one ringing inbound call."""
    response = signed(client, fixture("IncomingCall.form"))
    assert response.status_code == 200
    assert (response.data, response.mimetype) == (ACKNOWLEDGEMENT, "application/xml")
    worker.drain()
    [customer] = people(core)
    assert calls(core) == {
        CALL: {"source": "placetel", "direction": "inbound", "status": "ringing", "agent": None,
               "duration_s": None, "customer_id": customer,
               "identities": [["phone", "+4930609854180"]]},
    }  # fmt: skip


def test_upper_case_hex_signature_is_accepted(client, core):
    """The hex digest is compared without regard to case."""
    body = fixture("IncomingCall.form")
    headers = {"X-PLACETEL-SIGNATURE": sign(SECRET, body).upper()}
    response = client.post("/hooks/placetel", data=body, headers=headers, content_type=FORM)
    assert response.status_code == 200


def test_wrong_or_missing_signature_gets_401_and_stores_nothing(client, core):
    """Another secret, a changed body or no header at all: 401, nothing stored."""
    body = fixture("IncomingCall.form")
    assert signed(client, body, secret="another-secret").status_code == 401
    headers = {"X-PLACETEL-SIGNATURE": sign(SECRET, body)}
    tampered = body.replace(b"030609854180", b"030609854181")
    response = client.post("/hooks/placetel", data=tampered, headers=headers, content_type=FORM)
    assert response.status_code == 401
    assert response.get_json() == {"error": "X-PLACETEL-SIGNATURE does not match"}
    missing = client.post("/hooks/placetel", data=body, content_type=FORM)
    assert missing.status_code == 401
    assert missing.get_json() == {
        "error": "missing X-PLACETEL-SIGNATURE (or POST to /hooks/placetel/<token>)"
    }
    assert count(core, deliveries) == 0


def test_path_token_is_accepted_and_a_wrong_one_gets_401(client, worker, core):
    """/hooks/placetel/<token> needs no signature; a wrong token is refused, nothing stored."""
    body = fixture("IncomingCall.form")
    wrong = by_token(client, body, token="not-the-token-at-all-0123")
    assert wrong.status_code == 401
    assert wrong.get_json() == {"error": "the token in the path does not match"}
    assert count(core, deliveries) == 0
    assert by_token(client, body).status_code == 200
    worker.drain()
    assert calls(core)[CALL]["status"] == "ringing"


def test_a_right_token_with_a_wrong_signature_gets_401(client, core):
    """Every proof a delivery carries must hold: a right token does not excuse a bad signature."""
    body = fixture("IncomingCall.form")
    headers = {"X-PLACETEL-SIGNATURE": sign("another-secret", body)}
    response = client.post(f"/hooks/placetel/{TOKEN}", data=body, headers=headers,
                           content_type=FORM)  # fmt: skip
    assert response.status_code == 401
    assert count(core, deliveries) == 0


def test_settings_need_a_secret_or_a_long_token():
    """Neither secret nor token, or a short token, stops the start naming the setting."""
    with pytest.raises(ConfigError, match="set secret .* or token"):
        PlacetelPlugin({}, Config())
    with pytest.raises(ConfigError, match="integrations.placetel.token: at least 16"):
        PlacetelPlugin({"token": "short"}, Config())
    assert PlacetelPlugin({"token": PlacetelPlugin.generate_secret()}, Config()).options["token"]


# -- refusals and ignored events ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"call_id=" + CALL.encode() + b"&from=030609854180",
         "event: missing (IncomingCall, OutgoingCall, CallAccepted or HungUp)"),
        (b"event=IncomingCall&from=030609854180",
         "call_id: expected the call's id (64 hex digits, or at most 128 letters, digits, '.', "
         "'_' or '-')"),
        (b"event=IncomingCall&call_id=..%2F..%2Fadmin",
         "call_id: expected the call's id (64 hex digits, or at most 128 letters, digits, '.', "
         "'_' or '-')"),
        (b"event=HungUp&call_id=abc&direction=sideways", "direction: expected 'in' or 'out'"),
        (b"event=HungUp&call_id=abc&duration=-5", "duration: expected whole seconds"),
        (b"event=HungUp&call_id=abc&peer=" + b"x" * 201,
         "peer: expected at most 200 printable characters"),
        (b"event=IncomingCall&call_id=abc&from=0306%0A09854180",
         "from: expected at most 200 printable characters"),
        (b"\xff\xfe", "body is not UTF-8"),
    ],
)  # fmt: skip
def test_malformed_notification_gets_400_naming_the_field(client, core, body, error):
    """Signed but unusable: 400 with what is wrong and where, nothing stored."""
    response = signed(client, body)
    assert response.status_code == 400
    assert response.get_json() == {"error": error}
    assert count(core, deliveries) == 0


def test_unused_event_gets_200_ignored_and_stores_nothing(client, core):
    """An event Placetel may add later is acknowledged as ignored, not retried, not stored."""
    response = signed(client, b"event=CallTransferred&call_id=" + CALL.encode())
    assert response.status_code == 200
    assert response.get_json() == {"ignored": "CallTransferred"}
    assert count(core, deliveries) == 0


# -- whole calls ---------------------------------------------------------------------------


def test_incoming_call_accepted_and_hung_up_is_one_completed_call(client, worker, core):
    """IncomingCall, CallAccepted and HungUp make one call: answered by the peer, 272 s."""
    for name in ("IncomingCall.form", "CallAccepted.form", "HungUp.form"):
        assert signed(client, fixture(name)).status_code == 200
        worker.drain()
    [customer] = people(core)
    assert calls(core) == {
        CALL: {"source": "placetel", "direction": "inbound", "status": "completed",
               "agent": PEER, "duration_s": 272, "customer_id": customer,
               "identities": [["phone", "+4930609854180"]]},
    }  # fmt: skip


@pytest.mark.parametrize(
    ("name", "direction", "status"),
    [
        ("HungUp__missed.form", "inbound", "no-answer"),
        ("HungUp__voicemail.form", "inbound", "voicemail"),
        ("HungUp__outbound_busy.form", "outbound", "busy"),
    ],
)
def test_hang_up_type_becomes_the_calls_final_status(client, worker, core, name, direction, status):
    """Each hang-up type ends the call with its status, on the caller or the called number."""
    assert signed(client, fixture(name)).status_code == 200
    worker.drain()
    [call] = calls(core).values()
    assert (call["direction"], call["status"], call["duration_s"]) == (direction, status, 0)
    assert call["identities"] == [["phone", "+4930609854180"]]
    with core.engine.connect() as conn:
        [row] = conn.execute(select(interactions)).all()
        assert call_facts(conn, row)["ended"] is True  # a voicemail too: the call is over


def test_outgoing_call_names_the_called_number_and_the_calling_sip_user(client, worker, core):
    """OutgoingCall: the customer is `to`, the agent the calling SIP user (peer)."""
    assert signed(client, fixture("OutgoingCall.form")).status_code == 200
    worker.drain()
    [call] = calls(core).values()
    assert (call["direction"], call["status"], call["agent"]) == ("outbound", "ringing", PEER)
    assert call["identities"] == [["phone", "+4930609854180"]]


def test_a_repeated_notification_is_acknowledged_and_causes_nothing_new(client, worker, core):
    """Placetel retries: the same event of the same call is stored once, the call unchanged."""
    for _ in range(2):
        response = signed(client, fixture("IncomingCall.form"))
        assert (response.status_code, response.data) == (200, ACKNOWLEDGEMENT)
    assert by_token(client, fixture("IncomingCall.form")).status_code == 200
    assert count(core, deliveries) == 1
    worker.drain()
    assert list(calls(core)) == [CALL]
    assert len(people(core)) == 1


def test_a_number_that_passes_the_luhn_check_is_stored_and_linked_as_sent(client, worker, core):
    """A caller in international form (00…) whose digits look like a card stays a number."""
    caller = "004930609854181"  # 15 digits that pass the Luhn check
    body = fixture("IncomingCall.form").replace(b"from=030609854180", f"from={caller}".encode())
    assert signed(client, body).status_code == 200
    with core.engine.connect() as conn:
        stored = bytes(conn.execute(select(deliveries.c.body)).scalar_one())
    assert stored == body
    worker.drain()
    assert calls(core)[CALL]["identities"] == [["phone", "+4930609854181"]]


def test_anonymous_caller_is_nobody(client, worker, core):
    """A caller who withholds the number rings as a call of no customer."""
    assert signed(client, fixture("IncomingCall__anonymous.form")).status_code == 200
    worker.drain()
    [call] = calls(core).values()
    assert (call["status"], call["customer_id"], call["identities"]) == ("ringing", None, [])
    assert people(core) == []


# -- Zammad's own spec, replayed -----------------------------------------------------------------

BASIC_CALL = [
    f"event=IncomingCall&from={CUSTOMER}&to={LINE}&call_id=4991155921769858278-1",
    f"event=IncomingCall&from=491715000000&to={LINE}&call_id=4991155921769858278-2",
    f"event=OutgoingCall&direction=out&from={LINE}&to={CUSTOMER}&call_id=8621106404543334274-3",
    f"event=OutgoingCall&direction=out&from={LINE}&to=491714000000&call_id=8621106404543334274-4",
    f"event=OutgoingCall&direction=out&from={LINE}&to=4147110000000&call_id=8621106404543334274-5",
    f"event=IncomingCall&from={CUSTOMER}&to={LINE}&call_id=4991155921769858278-6",
]
LOG_CALL = [
    f"event=OutgoingCall&direction=out&from={LINE}&to={CUSTOMER}&call_id=1234567890-1",
    "event=HungUp&call_id=1234567890-1&type=missed",
    f"event=OutgoingCall&direction=out&from={LINE}&to={CUSTOMER}&call_id=1234567890-2",
    f"event=CallAccepted&call_id=1234567890-2&from={LINE}&to={CUSTOMER}",
    f"event=HungUp&call_id=1234567890-2&type=accepted&from={LINE}&to={CUSTOMER}",
    f"event=IncomingCall&to={LINE}&from={CUSTOMER}&call_id=1234567890-3",
    f"event=CallAccepted&call_id=1234567890-3&to={LINE}&from={CUSTOMER}",
    f"event=HungUp&call_id=1234567890-3&type=accepted&to={LINE}&from={CUSTOMER}",
    f"event=IncomingCall&to={LINE}&from={CUSTOMER}&call_id=1234567890-4",
    f"event=CallAccepted&call_id=1234567890-4&to={LINE}&from={CUSTOMER}&user=voicemail",
    f"event=HungUp&call_id=1234567890-4&type=accepted&to={LINE}&from={CUSTOMER}",
    f"event=IncomingCall&to={LINE}&from={CUSTOMER}&call_id=1234567890-5",
    f"event=HungUp&call_id=1234567890-5&type=accepted&to={LINE}&from={CUSTOMER}",
    f"event=IncomingCall&to={LINE}&from=49999992222222&call_id=1234567890-6",
    f"event=IncomingCall&to={LINE}&from=anonymous&call_id=1234567890-7",
]
LOG_CALL_WITH_PEER = [
    f"event=OutgoingCall&direction=out&from={LINE}&to={CUSTOMER}&call_id=1234567890-1"
    "&peer=something@example.com",
    "event=OutgoingCall&direction=out&to=099999222222&call_id=1234567890-2"
    "&from=777008478072@example.com",
    f"event=IncomingCall&direction=in&to={LINE}&from=012345&call_id=1234567890-3"
    "&peer=777008478072@example.com",
]


def replay(client, worker, sequence: list[str]) -> None:
    """POST each of the spec's bodies to the token URL as Zammad's spec does; each gets 200."""
    for params in sequence:
        response = by_token(client, params.encode())
        assert response.status_code == 200, (params, response.get_json())
        assert response.data == ACKNOWLEDGEMENT
        worker.drain()


def test_zammads_log_call_sequence_ends_each_call_right_on_one_customer(client, worker, core):
    """Every post is accepted; each call ends as the spec says, and the line is nobody."""
    replay(client, worker, LOG_CALL)
    found = calls(core)
    assert sorted(found) == [f"1234567890-{n}" for n in range(1, 8)]
    status = {call_id[-1]: call["status"] for call_id, call in found.items()}
    assert status == {"1": "no-answer", "2": "completed", "3": "completed", "4": "completed",
                      "5": "completed", "6": "ringing", "7": "ringing"}  # fmt: skip
    assert [found[f"1234567890-{n}"]["direction"] for n in range(1, 8)] == [
        "outbound", "outbound", "inbound", "inbound", "inbound", "inbound", "inbound"]  # fmt: skip
    # The customer's number, dialled or calling, is one customer; the company's own line
    # (from on the bare answer of an outgoing call) never becomes one.
    [customer] = people(core)
    assert {found[f"1234567890-{n}"]["customer_id"] for n in range(1, 6)} == {customer}
    assert {found[f"1234567890-{n}"]["customer_id"] for n in (6, 7)} == {None}
    assert found["1234567890-4"]["agent"] == "voicemail"  # the answer names who took it


def test_zammads_basic_call_sequence_is_accepted_and_each_call_rings(client, worker, core):
    """Incoming and outgoing calls, a caller Zammad blocks: each one ringing, in its direction."""
    replay(client, worker, BASIC_CALL)
    found = calls(core)
    assert {call_id: (c["direction"], c["status"]) for call_id, c in found.items()} == {
        "4991155921769858278-1": ("inbound", "ringing"),
        "4991155921769858278-2": ("inbound", "ringing"),
        "8621106404543334274-3": ("outbound", "ringing"),
        "8621106404543334274-4": ("outbound", "ringing"),
        "8621106404543334274-5": ("outbound", "ringing"),
        "4991155921769858278-6": ("inbound", "ringing"),
    }
    customer = found["4991155921769858278-1"]["customer_id"]
    assert customer is not None
    assert found["8621106404543334274-3"]["customer_id"] == customer
    assert found["4991155921769858278-6"]["customer_id"] == customer


def test_zammads_log_call_with_peer_names_the_sip_user_as_agent(client, worker, core):
    """The peer, or the SIP user an outgoing call comes from, is the call's agent."""
    replay(client, worker, LOG_CALL_WITH_PEER)
    agents = {call_id: c["agent"] for call_id, c in calls(core).items()}
    assert agents == {
        "1234567890-1": "something@example.com",
        "1234567890-2": "777008478072@example.com",
        "1234567890-3": "777008478072@example.com",
    }


# -- hostile input -------------------------------------------------------------------------------

ODD_VALUES = [
    "", " ", "anonymous", "0", "\x00", "a\x00b", "\ud800", "\u202eevil", "💥", "\r\n",
    "../../admin", "%00", "x" * 300, "7" * 40, "4111 1111 1111 1111", "+266696687",
    "<Response/>", "javascript:alert(1)", "IncomingCall", "in", "out", "-1", "1e400",
]  # fmt: skip
FIELD_NAMES = ["event", "call_id", "from", "to", "peer", "user", "type", "duration",
               "direction", "event[]", ""]  # fmt: skip
odd = st.sampled_from(ODD_VALUES) | st.text(max_size=20)
FIXTURE_FIELDS = [decode_form(p.read_bytes()) for p in sorted(FIXTURES.glob("*.form"))]
HOSTILE = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                   suppress_health_check=[HealthCheck.function_scoped_fixture,
                                          HealthCheck.too_slow])  # fmt: skip


@st.composite
def mutated_forms(draw: st.DrawFn) -> bytes:
    """Draw a fixture with fields dropped, replaced or added, a fresh call id most times."""
    fields = list(draw(st.sampled_from(FIXTURE_FIELDS)))
    if draw(st.integers(0, 3)):
        fields = [(n, uuid.uuid4().hex if n == "call_id" else v) for n, v in fields]
    for _ in range(draw(st.integers(0, 3))):
        index = draw(st.integers(0, len(fields) - 1)) if fields else 0
        operation = draw(st.sampled_from(["drop", "replace", "add"]))
        if operation == "drop" and fields:
            del fields[index]
        elif operation == "replace" and fields:
            fields[index] = (fields[index][0], draw(odd))
        else:
            fields.append((draw(st.sampled_from(FIELD_NAMES) | st.text(max_size=5)), draw(odd)))
    return "&".join(
        f"{quote_plus(n.encode('utf-8', 'surrogatepass'))}="
        f"{quote_plus(v.encode('utf-8', 'surrogatepass'))}"
        for n, v in fields
    ).encode()


def settled(core: Installation, worker, before: int) -> list[str]:
    """Drain the worker; return the status of each delivery stored since `before`."""
    worker.drain()
    with core.engine.connect() as conn:
        return list(conn.execute(
            select(deliveries.c.status).where(deliveries.c.id > before)).scalars())  # fmt: skip


def top_delivery(core: Installation) -> int:
    with core.engine.connect() as conn:
        return int(conn.execute(select(func.max(deliveries.c.id))).scalar() or 0)


@HOSTILE
@given(body=mutated_forms() | st.binary(max_size=60), by_path=st.booleans())
def test_any_signed_notification_gets_xml_or_a_clear_400_and_never_fails_the_worker(
    client, worker, core, body, by_path
):
    """Signed (or sent to the token URL), any form is acknowledged, ignored or refused as 400;
    what is stored is processed without error."""
    before = top_delivery(core)
    response = by_token(client, body) if by_path else signed(client, body)
    assert response.status_code in (200, 400), (body, response.data[:300])
    if response.status_code == 400:
        assert response.get_json()["error"]
        assert top_delivery(core) == before
    else:
        assert response.data == ACKNOWLEDGEMENT or response.get_json()["ignored"] is not None
    assert set(settled(core, worker, before)) <= {DONE}


@HOSTILE
@given(body=mutated_forms(), signature=st.text(st.characters(min_codepoint=0x20,
       max_codepoint=0xFF, exclude_characters="\x7f"), max_size=70), token=odd)  # fmt: skip
def test_any_unsigned_or_badly_signed_notification_gets_401(client, core, body, signature, token):
    """A wrong signature or a wrong token is refused with 401 and stores nothing."""
    before = top_delivery(core)
    headers = {"X-PLACETEL-SIGNATURE": signature}
    refused = client.post("/hooks/placetel", data=body, headers=headers, content_type=FORM)
    assert refused.status_code == 401, refused.data[:300]
    if token and token != TOKEN and "\n" not in token and not token.startswith("/"):
        path = "/hooks/placetel/" + quote(token.encode("utf-8", "surrogatepass"), safe="")
        wrong = client.post(path, data=body, content_type=FORM)
        assert wrong.status_code in (308, 401, 404), wrong.data[:300]  # no route for odd paths
    assert top_delivery(core) == before
