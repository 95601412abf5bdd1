"""Twilio and generic-CTI webhooks: signatures, formats, duplicates and clear refusals."""

from __future__ import annotations

import hashlib
import json
import time
from urllib.parse import quote, urlencode

import pytest
from sqlalchemy import func, select

from middleware.config import Config
from middleware.errors import InvalidSignature
from middleware.ingest.standard_webhooks import sign as cti_sign
from middleware.integrations.plugin import InboundRequest
from middleware.store.tables import deliveries, identities, interactions
from plugins.cti import CtiPlugin
from plugins.twilio import EMPTY_TWIML, TwilioPlugin, url_variants
from plugins.twilio import sign as twilio_sign
from tests.payloads import cti_body, cti_headers, twilio_fields
from tests.values import CTI_SECRET, PUBLIC_URL, TWILIO_TOKEN

VECTOR_URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
CALL_SID = "CA5d8e2b7f4a9c41e08f3b6d2a7c9e1f40"
VECTOR_PARAMS = [
    ("CallSid", "CA1234567890ABCDE"), ("Digits", "1234"), ("From", "+14158675309"),
    ("To", "+18005551212"), ("Caller", "+14158675309"),
]  # fmt: skip


def count(core, table) -> int:
    with core.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar() or 0)


def calls(core) -> list:
    with core.engine.connect() as conn:
        return conn.execute(select(interactions).where(interactions.c.kind == "call")).all()


# -- Twilio: the signature -------------------------------------------------------------------


def test_twilio_signature_vectors_from_twilios_own_tests():
    """The vectors of twilio-python: plain, with :443, and repeated values."""
    assert twilio_sign("12345", VECTOR_URL, VECTOR_PARAMS) == "RSOYDt4T1cUTdK1PDd93/VVr8B8="
    with_port = "https://mycompany.com:443/myapp.php?foo=1&bar=2"
    assert twilio_sign("12345", with_port, VECTOR_PARAMS) == "kvajT1Ptam85bY51eRf/AJRuM3w="
    repeated = [("Sid", "CA123"), ("SidAccount", "AC123"), ("Digits", "5678"),
                ("Digits", "1234"), ("Digits", "1234")]  # fmt: skip
    assert twilio_sign("12345", VECTOR_URL, repeated) == "IK+Dwps556ElfBT0I3Rgjkr1wJU="


def twilio_plugin() -> TwilioPlugin:
    return TwilioPlugin({"auth_token": "12345"}, Config())


@pytest.mark.parametrize(
    ("called", "signature"),
    [
        (VECTOR_URL, "RSOYDt4T1cUTdK1PDd93/VVr8B8="),  # as signed
        (VECTOR_URL, "kvajT1Ptam85bY51eRf/AJRuM3w="),  # Twilio signed with :443, we see none
        ("https://mycompany.com:443/myapp.php?foo=1&bar=2", "RSOYDt4T1cUTdK1PDd93/VVr8B8="),
    ],
)
def test_twilio_port_variants_are_accepted_like_twilios_validator(called, signature):
    """The URL with the default port added or removed verifies, as Twilio's validator does."""
    request = InboundRequest(
        path="/myapp.php", url=called, headers={"x-twilio-signature": signature},
        body=urlencode(VECTOR_PARAMS).encode(),
    )  # fmt: skip
    assert twilio_plugin().verify(request) == "signature"


def test_twilio_url_variants_never_change_path_or_query():
    """Only the port varies; another path or query never verifies."""
    assert url_variants("http://a.example/hooks/twilio") == [
        "http://a.example/hooks/twilio", "http://a.example:80/hooks/twilio",
    ]  # fmt: skip
    request = InboundRequest(
        path="/x", url=VECTOR_URL + "&extra=1",
        headers={"x-twilio-signature": "RSOYDt4T1cUTdK1PDd93/VVr8B8="},
        body=urlencode(VECTOR_PARAMS).encode(),
    )  # fmt: skip
    with pytest.raises(InvalidSignature):
        twilio_plugin().verify(request)


def test_twilio_json_body_with_bodysha256_verifies_and_a_changed_body_does_not():
    """The JSON variant: the URL carries bodySHA256 and no parameters are appended."""
    body = b'{"property": "value", "boolean": true}'
    digest = hashlib.sha256(body).hexdigest()
    assert digest == "0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620"
    url = VECTOR_URL + "&bodySHA256=" + digest
    headers = {"x-twilio-signature": "a9nBmqA0ju/hNViExpshrM61xv4=",
               "content-type": "application/json"}  # fmt: skip
    twilio_plugin().verify(InboundRequest(path="/myapp.php", url=url, headers=headers, body=body))
    with pytest.raises(InvalidSignature, match="bodySHA256"):
        twilio_plugin().verify(
            InboundRequest(path="/myapp.php", url=url, headers=headers, body=body + b" ")
        )


# -- Twilio: deliveries ----------------------------------------------------------------------


def test_twilio_ringing_gets_empty_twiml_and_becomes_one_call(client, worker, core, hooks):
    """A signed ringing callback: 200 with empty TwiML, then one call of the caller."""
    response = hooks.twilio(twilio_fields("call_started__ringing.form"))
    assert response.status_code == 200
    assert response.data == EMPTY_TWIML
    assert response.mimetype == "text/xml"
    worker.drain()
    [call] = calls(core)
    assert (call.source, call.external_id, call.status) == (
        "twilio", "CA5d8e2b7f4a9c41e08f3b6d2a7c9e1f40", "ringing",
    )  # fmt: skip
    assert (call.channel, call.direction) == ("phone", "inbound")
    assert json.loads(call.identities) == [["phone", "+14155550142"]]


def test_twilio_status_callbacks_update_one_call_per_callsid(client, worker, core, hooks):
    """ringing, in-progress and completed make one call, completed with its duration."""
    for name in ("call_started__ringing.form", "call_answered__in_progress.form",
                 "call_ended__completed.form"):  # fmt: skip
        assert hooks.twilio(twilio_fields(name)).status_code == 200
    worker.drain()
    [call] = calls(core)
    assert call.status == "completed"
    assert call.duration_s == 272


def test_twilio_duplicate_callsid_and_status_is_stored_once(client, core, hooks):
    """Twilio retries: the same CallSid + CallStatus is acknowledged and stored once."""
    fields = twilio_fields("call_started__ringing.form")
    assert hooks.twilio(fields).status_code == 200
    again = hooks.twilio(fields)
    assert again.status_code == 200
    assert again.data == EMPTY_TWIML
    assert count(core, deliveries) == 1


def test_twilio_bad_or_missing_signature_gets_401_and_stores_nothing(client, core, hooks):
    """A wrong token, a tampered parameter or no header: 401, nothing stored."""
    fields = twilio_fields("call_started__ringing.form")
    assert hooks.twilio(fields, token="wrong-token").status_code == 401
    signature = twilio_sign(TWILIO_TOKEN, PUBLIC_URL + "/hooks/twilio", fields)
    tampered = [(k, "+14155550199" if k == "From" else v) for k, v in fields]
    response = client.post(
        "/hooks/twilio", data=urlencode(tampered), headers={"X-Twilio-Signature": signature},
        content_type="application/x-www-form-urlencoded",
    )  # fmt: skip
    assert response.status_code == 401
    response = client.post(
        "/hooks/twilio", data=urlencode(fields), content_type="application/x-www-form-urlencoded"
    )
    assert response.status_code == 401
    assert "X-Twilio-Signature" in response.get_json()["error"]
    assert count(core, deliveries) == 0


def test_twilio_incoming_sms_is_a_message_with_its_text_and_cards_redacted(
    client, worker, core, hooks
):
    """An SMS becomes a message interaction; a card number never reaches the store."""
    body = "My card 4111 1111 1111 1111 was charged twice"
    assert hooks.twilio(twilio_fields("message_received.form", Body=body)).status_code == 200
    with core.engine.connect() as conn:
        stored = bytes(conn.execute(select(deliveries.c.body)).scalar_one())
    assert b"4111" not in stored and b"1111+1111" not in stored
    assert b"SM8f2c6e1a9b4d47e3a5c0f7b2d9e6a148" in stored  # the SIDs stay as sent
    worker.drain()
    with core.engine.connect() as conn:
        [message] = conn.execute(select(interactions)).all()
    assert (message.kind, message.channel, message.direction) == ("message", "sms", "inbound")
    assert message.text == "My card [card ending 1111] was charged twice"


def test_twilio_delivery_report_of_an_outgoing_message_is_ignored(client, core, hooks):
    """A MessageStatus callback is authentic but not a contact: 200 ignored, nothing stored."""
    response = hooks.twilio(twilio_fields("message_status__delivered.form"))
    assert response.status_code == 200
    assert response.get_json() == {"ignored": "message.status"}
    assert count(core, deliveries) == 0


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ([("AccountSid", "AC1"), ("From", "+14155550142")], "CallSid"),
        ([("CallSid", CALL_SID), ("From", "+14155550142")], "CallStatus"),
        ([("CallSid", CALL_SID), ("CallStatus", "exploded")], "CallStatus"),
        ([("CallSid", "CA1"), ("CallStatus", "ringing")], "CallSid"),
        ([("CallSid", "CA١٢٣٤٥٦٧٨٩٠١٢٣٤٥٦٧٨٩٠١٢٣٤٥٦٧٨٩٠١٢"), ("CallStatus", "ringing")], "CallSid"),
        ([("CallSid", "CA 1; drop"), ("CallStatus", "ringing")], "CallSid"),
    ],
)
def test_twilio_malformed_callback_gets_400_with_the_reason(client, core, fields, reason, hooks):
    """Signed but unusable: 400 naming the parameter, nothing stored."""
    response = hooks.twilio(fields)
    assert response.status_code == 400
    assert reason in response.get_json()["error"]
    assert count(core, deliveries) == 0


def test_twilio_anonymous_caller_links_to_nobody(client, worker, core, hooks):
    """From=anonymous (and Twilio's +266696687) never makes or joins a customer."""
    hooks.twilio(twilio_fields("call_started__anonymous.form"))
    hooks.twilio(twilio_fields("call_started__anonymous.form", From="+266696687",
                                      CallSid="CA00000000000000000000000000000266"))  # fmt: skip
    worker.drain()
    assert [c.customer_id for c in calls(core)] == [None, None]
    assert count(core, identities) == 0


# -- CTI: the signature ----------------------------------------------------------------------


def test_standard_webhooks_vector():
    """The Standard Webhooks specification's own vector."""
    assert cti_sign(
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330",
        b'{"test": 2432232314}',
    ) == "g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="  # fmt: skip


def test_standard_webhooks_vector_verifies_within_its_tolerance(monkeypatch):
    """The vector verifies at its own time, and one of several signatures is enough."""
    plugin = CtiPlugin({"secret": CTI_SECRET, "tolerance_s": 300}, Config())
    monkeypatch.setattr(time, "time", lambda: 1614265330 + 299)
    rotated = "v1,bm90IHRoZSBvbGQga2V5 v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    headers = {
        "webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek", "webhook-timestamp": "1614265330",
        "webhook-signature": rotated,
    }  # fmt: skip
    request = InboundRequest(path="/hooks/cti", url="", headers=headers,
                             body=b'{"test": 2432232314}')  # fmt: skip
    plugin.verify(request)
    monkeypatch.setattr(time, "time", lambda: 1614265330 + 301)
    with pytest.raises(InvalidSignature, match="300s off"):
        plugin.verify(request)


def test_cti_signed_event_is_accepted_with_an_empty_json_object(client, core, hooks):
    """A signed newCall: 200 {} and stored."""
    response = hooks.cti(cti_body("newCall.json"))
    assert response.status_code == 200
    assert response.get_json() == {}
    assert count(core, deliveries) == 1


# A few seconds past the window: the timestamp is whole seconds and the request takes time,
# so 301 could land inside the window on a slow run.
@pytest.mark.parametrize("offset", [-305, 305])
def test_cti_stale_or_future_timestamp_gets_401(client, core, offset):
    """More than 5 minutes off either way: 401, nothing stored."""
    body = cti_body("newCall.json")
    response = client.post(
        "/hooks/cti", data=body, headers=cti_headers(body, timestamp=int(time.time()) + offset)
    )
    assert response.status_code == 401
    assert count(core, deliveries) == 0


def test_cti_bad_signature_or_no_headers_gets_401(client, core):
    """Another secret's signature, or no Standard Webhooks headers at all: 401."""
    body = cti_body("newCall.json")
    other = "whsec_" + "b3RoZXItc2VjcmV0LW90aGVyLXNlY3JldA=="
    assert (
        client.post("/hooks/cti", data=body, headers=cti_headers(body, secret=other)).status_code
        == 401
    )
    response = client.post("/hooks/cti", data=body, content_type="application/json")
    assert response.status_code == 401
    assert "/hooks/cti/<secret>" in response.get_json()["error"]
    assert count(core, deliveries) == 0


def test_cti_secret_path_for_pbxs_that_cannot_sign(client, core):
    """POST /hooks/cti/<secret, percent-encoded> is accepted; a wrong secret is 401."""
    body = cti_body("newCall.json")
    path = "/hooks/cti/" + quote(CTI_SECRET, safe="")
    assert client.post(path, data=body, content_type="application/json").status_code == 200
    wrong = client.post("/hooks/cti/" + quote(CTI_SECRET + "x", safe=""), data=body,
                        content_type="application/json")  # fmt: skip
    assert wrong.status_code == 401
    assert count(core, deliveries) == 1


def test_cti_secret_with_a_slash_works_percent_encoded(database_url, fake_zendesk, make_config):
    """A base64 secret may hold '/': percent-encoded in the path, it still matches."""
    from middleware.installation import build_installation
    from middleware.web.app import create_app

    pass

    config = make_config(database_url, phone=True)
    config.integrations["cti"]["secret"] = "pa/ss+word=="
    built = build_installation(config)
    try:
        client = create_app(core=built).test_client()
        body = cti_body("newCall.json")
        path = "/hooks/cti/" + quote("pa/ss+word==", safe="")
        assert client.post(path, data=body, content_type="application/json").status_code == 200
    finally:
        built.dispose()


def test_cti_form_body_with_a_list_of_users(client, worker, core):
    """The form variant (user[]=…&user[]=…) is read, and the users become the agent."""
    body = (core.registry.get("cti").folder() / "fixtures" / "newCall__form.form").read_bytes()
    path = "/hooks/cti/" + quote(CTI_SECRET, safe="")
    response = client.post(path, data=body, content_type="application/x-www-form-urlencoded")
    assert response.status_code == 200
    worker.drain()
    [call] = calls(core)
    assert call.agent == "Emma Taylor, Bob Billing"
    assert json.loads(call.identities) == [["phone", "+14155550142"]]


def test_cti_form_naming_a_field_as_a_value_and_a_list_gets_400(client, core, caplog):
    """user=…&user[]=… is refused with 400 naming the field, not read by the catch-all."""
    body = (
        b"event=newCall&from=14155550142&to=14155550100&direction=in&callId=c1&user=Emma&user[]=Bob"
    )
    path = "/hooks/cti/" + quote(CTI_SECRET, safe="")
    response = client.post(path, data=body, content_type="application/x-www-form-urlencoded")
    assert response.status_code == 400
    assert "user: sent both as user and as user[]" in response.get_json()["error"]
    assert count(core, deliveries) == 0
    assert "unexpected failure" not in caplog.text


def test_cti_duplicate_call_id_and_event_is_stored_once(client, core, hooks):
    """A PBX retry (same callId + event, even under a new webhook-id) is stored once."""
    body = cti_body("newCall.json")
    assert hooks.cti(body).status_code == 200
    assert hooks.cti(body).status_code == 200
    assert count(core, deliveries) == 1


def test_cti_numbers_without_plus_are_read_in_e164(client, worker, core, hooks):
    """from 14155550142 is +14155550142; the Zammad example's German numbers too."""
    hooks.cti(cti_body("newCall.json"))
    hooks.cti(cti_body("hangup__zammad_example.json"))
    worker.drain()
    phones = sorted(json.loads(c.identities)[0][1] for c in calls(core))
    assert phones == ["+14155550142", "+493023125741"]


def test_cti_outbound_call_is_about_the_number_called(client, worker, core, hooks):
    """direction out: the customer is `to`, the agent is the user who dialled."""
    hooks.cti(cti_body("newCall__outbound.json"))
    worker.drain()
    [call] = calls(core)
    assert call.direction == "outbound"
    assert json.loads(call.identities) == [["phone", "+14155550142"]]
    assert call.agent == "Emma Taylor"


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"callId": ""}, "callId"),
        ({"callId": None}, "callId"),
        ({"direction": "sideways"}, "direction"),
        ({"event": None}, "event"),
        ({"callId": "x" * 300}, "callId"),
    ],
)
def test_cti_malformed_event_gets_400_with_the_reason(client, core, changes, reason, hooks):
    """Signed but unusable: 400 naming the field, nothing stored."""
    response = hooks.cti(cti_body("newCall.json", **changes))
    assert response.status_code == 400
    assert reason in response.get_json()["error"]
    assert count(core, deliveries) == 0


@pytest.mark.parametrize(
    ("user", "reason"), [("Emma\x00", "NUL"), ("Emma\ud800", "unpaired surrogate")]
)
def test_cti_answer_whose_key_cannot_be_stored_gets_400(client, core, user, reason, hooks):
    """The agent's name is part of an answer's key: a NUL or a lone surrogate gets 400."""
    response = hooks.cti(cti_body("answer.json", user=user))
    assert response.status_code == 400
    assert reason in response.get_json()["error"]
    assert count(core, deliveries) == 0


def test_cti_unused_event_is_ignored(client, core, hooks):
    """An event outside newCall/answer/hangup is 200 ignored."""
    response = hooks.cti(cti_body("ping.json"))
    assert response.status_code == 200
    assert response.get_json() == {"ignored": "ping"}
    assert count(core, deliveries) == 0


def test_cti_anonymous_caller_links_to_nobody(client, worker, core, hooks):
    """from=anonymous: a call with no customer, and no identity is made."""
    hooks.cti(cti_body("newCall__anonymous.json"))
    worker.drain()
    [call] = calls(core)
    assert call.customer_id is None
    assert count(core, identities) == 0


def test_cti_call_id_spelling_and_a_bare_hangup_end_the_same_call(client, worker, core, hooks):
    """call_id is read as callId; a hang-up with only direction, call id and cause ends it."""
    ringing = json.loads(cti_body("newCall.json"))
    call_id = ringing.pop("callId")
    assert hooks.cti(json.dumps({**ringing, "call_id": call_id}).encode()).status_code == 200
    bare = {"event": "hangup", "direction": "in", "call_id": call_id, "cause": "noAnswer"}
    assert hooks.cti(json.dumps(bare).encode()).status_code == 200
    worker.drain()
    [call] = calls(core)
    assert (call.external_id, call.status) == (call_id, "no-answer")
    assert json.loads(call.identities) == [["phone", "+14155550142"]]  # kept from newCall


def test_cti_answer_after_the_hangup_leaves_the_call_ended(client, worker, core, hooks):
    """Events can arrive out of order: an answer after the hang-up does not reopen the call."""
    for name in ("newCall.json", "hangup.json", "answer.json"):
        assert hooks.cti(cti_body(name)).status_code == 200
        worker.drain()
    [call] = calls(core)
    assert call.status == "completed"
