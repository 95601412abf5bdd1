"""sipgate.io pushes: sipgate's signature, the path token, the newCall reply and each call's end.

The installation here connects sipgate with a throwaway key pair in place of sipgate's (its
public half as public_key) and a path token, besides the phone integrations of the shared
fixtures.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import func, select

from devkit.simulators.sipgate import new_key, public_pem, sign
from middleware.config import Config, ConfigError
from middleware.errors import InvalidSignature
from middleware.installation import Installation, build_installation
from middleware.integrations.plugin import InboundRequest
from middleware.store.tables import customers, deliveries, identities, interactions
from plugins.sipgate import SIPGATE_PUBLIC_KEY, SipgatePlugin, load_public_key, signed_by
from tests.values import PLUGINS_DIR, PUBLIC_URL

PATH_TOKEN = "sipgate-path-token-for-tests/with+odd=chars"
TOKEN_PATH = "/hooks/sipgate/" + quote(PATH_TOKEN, safe="")
FORM = "application/x-www-form-urlencoded"
CALLBACKS = (
    f'<?xml version="1.0" encoding="UTF-8"?>\n'
    f'<Response onAnswer="{PUBLIC_URL}/hooks/sipgate" onHangup="{PUBLIC_URL}/hooks/sipgate"/>'
)
EMPTY = '<?xml version="1.0" encoding="UTF-8"?>\n<Response/>'
ANN = "+4930609854180"

# sipgate's own signature over the body of its Node SDK's test "Signed webhook server"
# (sipgate-io/sipgateio-node, lib/webhook/webhook.test.node.ts): the form qs.stringify makes
# of its newCallWebhook, and the same with one digit of fullUserId changed.
SDK_BODY = (
    b"callId=&direction=in&event=newCall&from=4912354678&fullUserId%5B%5D%5B0%5D=123456789"
    b"&originalCallId=&to=49999999&user%5B%5D%5B0%5D=TestUser&userId%5B%5D%5B0%5D=123456789"
    b"&xcid="
)
SDK_SIGNATURE = (
    "hlY7r9Vad0NP/7xJxf+vcDqjWaGWHOcIrj+rcP5aqQQcHtbSLsElp2kRNRPBL5unWbq6bExVPZB49HHM+Y/fWSVL19"
    "q7KSJhYPHfikcME0r0mCYB4S/VnJwnIvpiqz6s7Dpnk3wDCy65B3WQLwBVWA9oh6ojNM/g+87YnoMTKRx1KoFqosKN"
    "fBp1c1I8XjXusGOW/VlGnMb6wHhUVdwi9K7FfUgxj2pnV+M1Xv9rYs6RAi4V1OcUPqdT5geHsxWa09sk+AEHSUm1EF"
    "nAvx7PhIkugpNwST7yPKHf0+iyei4qUQCBZtfQVOI4mLZTRfQuyVo3YuJfvHaNPYY34/1ZCZGCKeu+HS6WHs1vGUyK"
    "xSi8v4JJqog2VOlWruf8pMGg+syuAFwuxiCnWsSXgaaUfe9JrBAFjBxUmNP9DzR1bbkwxkJnthacu7jALXjGsubjSS"
    "Sl955QgenV/ZpODHgWDPg0fe6qGILtk+kXLjyfSsoR/qgzE5W5OAyZq8W64h01KAt9Q283N7/2nogy6keiIWL3qjPo"
    "lWnrchSP7iJUatM2YiTcpkNKnJ70UE05cdw3swuNe7zqD51MdOX3rAioEOFgOIFMSrxMVX+V4XK7sa5o43smN8lHoa"
    "+0AogQMuIrC7k2axdRbulSSNfyqVAZIT4qS0cItiv3aPXsdDKkkA0="
)


@pytest.fixture(scope="module")
def sipgate_key() -> rsa.RSAPrivateKey:
    """Return a throwaway key pair that signs in place of sipgate's."""
    return new_key()


@pytest.fixture
def core(database_url: str, make_config, sipgate_key) -> Iterator[Installation]:
    """Build an installation connected to sipgate (the test key, a path token) and the phones."""
    sipgate = {"public_key": public_pem(sipgate_key), "path_token": PATH_TOKEN}
    built = build_installation(
        make_config(database_url, phone=True, integrations={"sipgate": sipgate})
    )
    yield built
    built.dispose()


@pytest.fixture
def push(client, sipgate_key):
    """Return a sender posting a form body to /hooks/sipgate as sipgate does, signed."""

    def send(body: bytes, path: str = "/hooks/sipgate", key: Any = None) -> Any:
        signature = sign(key or sipgate_key, body)
        return client.post(path, data=body, content_type=FORM,
                           headers={"X-Sipgate-Signature": signature})  # fmt: skip

    return send


def fixture(name: str) -> bytes:
    """Return a sipgate fixture's body exactly as stored."""
    return (PLUGINS_DIR / "sipgate" / "fixtures" / name).read_bytes()


def count(core: Installation, table: Any) -> int:
    with core.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar() or 0)


def calls(core: Installation) -> dict[str, Any]:
    with core.engine.connect() as conn:
        rows = conn.execute(select(interactions).where(interactions.c.kind == "call")).all()
    return {row.external_id: row for row in rows}


def people(core: Installation) -> list[int]:
    with core.engine.connect() as conn:
        return list(conn.execute(select(customers.c.id)).scalars())


# -- the signature ---------------------------------------------------------------------------


def test_sipgates_published_key_verifies_sipgates_own_signature_vector():
    """The embedded key verifies the signature of sipgate's SDK test, and not a changed body."""
    key = load_public_key(SIPGATE_PUBLIC_KEY)
    assert key.key_size == 4096
    assert signed_by(key, SDK_SIGNATURE, SDK_BODY)
    assert not signed_by(key, SDK_SIGNATURE, SDK_BODY.replace(b"123456789", b"123456779", 1))
    assert not signed_by(key, "fakeSignature", SDK_BODY)  # the SDK test's refused signature


def test_the_default_key_is_sipgates_and_a_one_line_pem_also_reads():
    """public_key empty means sipgate's key; a PEM whose line breaks a form lost still reads."""
    plugin = SipgatePlugin({}, Config())
    request = InboundRequest(path="/hooks/sipgate", url="", body=SDK_BODY,
                             headers={"x-sipgate-signature": SDK_SIGNATURE})  # fmt: skip
    assert plugin.verify(request) == "signature"
    one_line = SipgatePlugin({"public_key": SIPGATE_PUBLIC_KEY.replace("\n", "")}, Config())
    assert one_line.verify(request) == "signature"


def test_a_public_key_that_is_not_an_rsa_key_stops_the_start():
    """A mistyped key is a configuration error naming the setting."""
    with pytest.raises(ConfigError, match="integrations.sipgate.public_key"):
        SipgatePlugin({"public_key": "-----BEGIN PUBLIC KEY-----\nnot a key\n"}, Config())


def test_a_path_token_when_none_is_set_is_refused():
    """Without a configured path_token, /hooks/sipgate/<anything> gets 401 (path-token)."""
    request = InboundRequest(path="/hooks/sipgate", url="", headers={}, body=b"", path_token="")
    with pytest.raises(InvalidSignature, match="no path_token") as refused:
        SipgatePlugin({}, Config()).verify(request)
    assert refused.value.reason == "path-token"


def test_signed_new_call_is_answered_with_the_urls_of_its_later_events(push, core):
    """A signed newCall: 200 with XML naming onAnswer and onHangup on public_url; stored."""
    response = push(fixture("newCall.form"))
    assert response.status_code == 200
    assert response.mimetype == "application/xml"
    assert response.get_data(as_text=True) == CALLBACKS
    assert count(core, deliveries) == 1


def test_wrong_key_tampered_body_or_missing_signature_gets_401(client, push, core, sipgate_key):
    """Another key's signature, a changed body, or no signature at all: 401, nothing stored."""
    body = fixture("newCall.form")
    assert push(body, key=new_key()).status_code == 401
    tampered = client.post(
        "/hooks/sipgate", data=body.replace(b"4930609854180", b"4930609854181"),
        content_type=FORM, headers={"X-Sipgate-Signature": sign(sipgate_key, body)},
    )  # fmt: skip
    assert tampered.status_code == 401
    assert "does not verify" in tampered.get_json()["error"]
    missing = client.post("/hooks/sipgate", data=body, content_type=FORM)
    assert missing.status_code == 401
    assert "X-Sipgate-Signature" in missing.get_json()["error"]
    assert count(core, deliveries) == 0


@pytest.mark.parametrize("signature", ["not base64!", "A" * 3000, "", "   "])
def test_a_signature_that_cannot_be_one_gets_401(client, core, signature):
    """Garbage, an overlong value or a blank header is refused like a wrong signature."""
    response = client.post("/hooks/sipgate", data=fixture("newCall.form"), content_type=FORM,
                           headers={"X-Sipgate-Signature": signature})  # fmt: skip
    assert response.status_code == 401
    assert count(core, deliveries) == 0


def test_allowed_networks_refuse_other_addresses_before_any_other_check():
    """With allowed_networks, a signed push from elsewhere is 401; sipgate's address passes."""
    plugin = SipgatePlugin({"allowed_networks": ["217.116.118.254/32", "212.9.46.32/32"]},
                           Config())  # fmt: skip
    signed = {"x-sipgate-signature": SDK_SIGNATURE}
    ours = InboundRequest(path="/hooks/sipgate", url="", headers=signed, body=SDK_BODY,
                          remote_addr="212.9.46.32")  # fmt: skip
    assert plugin.verify(ours) == "signature"
    other = InboundRequest(path="/hooks/sipgate", url="", headers=signed, body=SDK_BODY,
                           remote_addr="203.0.113.7")  # fmt: skip
    with pytest.raises(InvalidSignature, match="203.0.113.7 is not in allowed_networks") as no:
        plugin.verify(other)
    assert no.value.reason == "source-network"
    with pytest.raises(ConfigError, match="integrations.sipgate.allowed_networks"):
        SipgatePlugin({"allowed_networks": ["not-a-network"]}, Config())


# -- the path token --------------------------------------------------------------------------


def test_path_token_accepts_unsigned_pushes_and_names_itself_in_the_callbacks(client, core):
    """POST /hooks/sipgate/<token>: 200, and onAnswer/onHangup carry the token; a wrong one 401."""
    response = client.post(TOKEN_PATH, data=fixture("newCall.form"), content_type=FORM)
    assert response.status_code == 200
    url = f"{PUBLIC_URL}{TOKEN_PATH}"
    assert response.get_data(as_text=True) == (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<Response onAnswer="{url}" onHangup="{url}"/>'
    )
    wrong = client.post(TOKEN_PATH + "x", data=fixture("answer.form"), content_type=FORM)
    assert wrong.status_code == 401
    assert count(core, deliveries) == 1


def test_the_stored_delivery_never_holds_the_path_token(client, core):
    """The token is a secret: the stored URL names its place, not its value."""
    client.post(TOKEN_PATH, data=fixture("newCall.form"), content_type=FORM)
    with core.engine.connect() as conn:
        stored = conn.execute(select(deliveries)).one()._mapping
    assert all(PATH_TOKEN not in str(value) for value in stored.values())


# -- what the pushes become ------------------------------------------------------------------


def test_incoming_call_newcall_answer_hangup_is_one_completed_call(push, worker, core):
    """The three pushes of an answered call make one call of the caller, answered by Emma."""
    replies = [push(fixture(name)).get_data(as_text=True)
               for name in ("newCall.form", "answer.form", "hangup.form")]  # fmt: skip
    assert replies == [CALLBACKS, EMPTY, EMPTY]
    worker.drain()
    [call] = calls(core).values()
    assert (call.source, call.external_id, call.kind, call.channel, call.direction) == (
        "sipgate", "54566B150B0C0D3A5D544C", "call", "phone", "inbound",
    )  # fmt: skip
    assert (call.status, call.agent) == ("completed", "Emma Taylor")
    assert json.loads(call.identities) == [["phone", ANN]]
    assert call.customer_id == people(core)[0]


def test_ringing_call_names_every_user_it_rings_for(push, worker, core):
    """user[] on a group call: the ringing call names all the users."""
    push(fixture("newCall.form"))
    worker.drain()
    [call] = calls(core).values()
    assert (call.status, call.agent) == ("ringing", "Emma Taylor, Bob Billing")


def test_outgoing_call_is_about_the_number_called_and_keeps_the_caller(push, worker, core):
    """direction out: the customer is `to`; an answer without user keeps the calling user."""
    for name in ("newCall__outbound.form", "answer__outbound.form", "hangup__bare_cancel.form"):
        assert push(fixture(name)).status_code == 200
    worker.drain()
    [call] = calls(core).values()
    assert (call.direction, call.status, call.agent) == ("outbound", "canceled", "Emma Taylor")
    assert json.loads(call.identities) == [["phone", ANN]]  # never answeringNumber


def test_anonymous_caller_links_to_nobody(push, worker, core):
    """from=anonymous: a call with no customer, and no identity made."""
    push(fixture("newCall__anonymous.form"))
    worker.drain()
    [call] = calls(core).values()
    assert call.customer_id is None
    assert count(core, identities) == 0


def test_a_transfer_is_a_second_call_of_the_same_customer(push, worker, core):
    """sipgate gives the transferred call a new callId: two calls, one customer."""
    for name in ("newCall.form", "answer.form", "newCall__transfer_to_billing.form",
                 "hangup__forwarded.form"):  # fmt: skip
        assert push(fixture(name)).status_code == 200
    worker.drain()
    found = calls(core)
    assert {k: (v.status, v.agent) for k, v in found.items()} == {
        "54566B150B0C0D3A5D544C": ("forwarded", "Emma Taylor"),
        "21102015AB3C4D5E6F7081": ("ringing", "Bob Billing"),
    }
    assert {row.customer_id for row in found.values()} == set(people(core))
    assert len(people(core)) == 1


def test_duplicate_push_is_acknowledged_the_same_and_stored_once(push, worker, core):
    """sipgate retries: the same callId and event gets the same reply and nothing new."""
    first = push(fixture("newCall.form"))
    again = push(fixture("newCall.form"))
    assert (again.status_code, again.get_data()) == (200, first.get_data())
    assert count(core, deliveries) == 1
    worker.drain()
    assert len(calls(core)) == 1


def test_answer_after_the_hangup_leaves_the_call_ended(push, worker, core):
    """Pushes can arrive out of order: an answer after the hang-up does not reopen the call."""
    for name in ("newCall.form", "hangup.form", "answer.form"):
        assert push(fixture(name)).status_code == 200
        worker.drain()
    [call] = calls(core).values()
    assert call.status == "completed"


def test_dtmf_push_is_ignored(push, core):
    """A gathered DTMF push is authentic but unused: 200 ignored, nothing stored."""
    response = push(fixture("dtmf.form"))
    assert response.status_code == 200
    assert response.get_json() == {"ignored": "dtmf"}
    assert count(core, deliveries) == 0


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"from=4930609854180&direction=in&callId=A1", "event: missing"),
        (b"event=newCall&from=4930609854180&direction=in", "callId: missing"),
        (b"event=newCall&direction=in&callId=A1%2F..%2Fx", "callId: expected"),
        (b"event=newCall&direction=in&callId=" + b"A" * 101, "callId: expected"),
        (b"event=answer&direction=in&callId=A1&origCallId=%3Cscript%3E", "origCallId: expected"),
        (b"event=hangup&direction=sideways&callId=A1", "direction"),
        (b"event=hangup&callId=A1", "direction"),
        (b"event=newCall&direction=in&callId=A1&user%5B%5D=Emma%00", "user: holds a NUL"),
        (b"event=newCall&direction=in&callId=A1&diversion=" + b"4" * 501, "diversion: longer"),
        (b"event=newCall&direction=in&callId=A1&user=Emma&user%5B%5D=Bob", "user: sent both"),
        (b'{"event": "newCall"}', "body is not a form"),
        (b"event=newCall&direction=in&callId=\xff", "body is not UTF-8"),
    ],
)
def test_malformed_push_gets_400_naming_the_field(push, core, body, reason):
    """Signed but unusable: 400 naming the field, nothing stored."""
    response = push(body)
    assert response.status_code == 400
    assert reason in response.get_json()["error"]
    assert count(core, deliveries) == 0


# -- Zammad's request spec for its sipgate endpoint, replayed ---------------------------------
# zammad/zammad spec/requests/integration/sipgate_spec.rb posts these forms, exactly, to
# /api/v1/sipgate/<token>/<direction>; they go to /hooks/sipgate/<path token> here. As in
# the generic-CTI replay, the spec's customer number 4912347114711 (invalid everywhere, so no
# customer could be recognised by it) is replaced by 4930609854180. Zammad's own call
# routing (blocked callers, outbound caller ids) has no counterpart: only its onAnswer and
# onHangup attributes are checked.

SPEC_CUSTOMER = "4930609854180"
BASIC_CALL = [
    "event=newCall&direction=in&from=4912347114711&to=4930600000000&callId=4991155921769858278-1&user%5B%5D=user+1&user%5B%5D=user+2",
    "event=newCall&direction=in&from=491715000000&to=4930600000000&callId=4991155921769858278-2&user%5B%5D=user+1&user%5B%5D=user+2",
    "event=newCall&direction=out&from=4930600000000&to=4912347114711&callId=8621106404543334274-3&user%5B%5D=user+1",
    "event=newCall&direction=out&from=4930600000000&to=491714000000&callId=8621106404543334274-4&user%5B%5D=user+1",
    "event=newCall&direction=out&from=4930600000000&to=4147110000000&callId=8621106404543334274-5&user%5B%5D=user+1",
]  # fmt: skip
LOG_CALL = [
    "event=newCall&direction=out&from=4930600000000&to=4912347114711&callId=1234567890-1&user%5B%5D=user+1",
    "event=hangup&direction=out&callId=1234567890-1&cause=cancel",
    "event=newCall&direction=out&from=4930600000000&to=4912347114711&callId=1234567890-2&user%5B%5D=user+1",
    "event=answer&direction=out&callId=1234567890-2&from=4930600000000&to=4912347114711",
    "event=hangup&direction=out&callId=1234567890-2&cause=normalClearing&from=4930600000000&to=4912347114711",
    "event=newCall&direction=in&to=4930600000000&from=4912347114711&callId=1234567890-3&user%5B%5D=user+1",
    "event=answer&direction=in&callId=1234567890-3&to=4930600000000&from=4912347114711",
    "event=hangup&direction=in&callId=1234567890-3&cause=normalClearing&to=4930600000000&from=4912347114711",
    "event=newCall&direction=in&to=4930600000000&from=4912347114711&callId=1234567890-4&user%5B%5D=user+1,user+2",
    "event=answer&direction=in&callId=1234567890-4&to=4930600000000&from=4912347114711&user=voicemail",
    "event=hangup&direction=in&callId=1234567890-4&cause=normalClearing&to=4930600000000&from=4912347114711",
    "event=newCall&direction=in&to=4930600000000&from=4912347114711&callId=1234567890-5&user%5B%5D=user+1,user+2",
    "event=hangup&direction=in&callId=1234567890-5&cause=normalClearing&to=4930600000000&from=4912347114711",
    "event=newCall&direction=in&to=4930600000000&from=49999992222222&callId=1234567890-6&user%5B%5D=user+1,user+2",
]  # fmt: skip


def spec_post(client, params: str) -> Any:
    """Post one of the spec's forms to the path-token URL, its customer number replaced."""
    body = params.replace("4912347114711", SPEC_CUSTOMER).encode()
    return client.post(TOKEN_PATH, data=body, content_type=FORM)


def test_zammads_basic_call_gets_onanswer_and_onhangup_for_every_new_call(client, core):
    """Each newCall of the spec's "does basic call" is answered naming the token URL twice."""
    url = f"{PUBLIC_URL}{TOKEN_PATH}"
    for params in BASIC_CALL:
        response = spec_post(client, params)
        assert response.status_code == 200, params
        assert response.get_data(as_text=True) == (
            f'<?xml version="1.0" encoding="UTF-8"?>\n<Response onAnswer="{url}" onHangup="{url}"/>'
        )
    assert count(core, deliveries) == len(BASIC_CALL)


def test_zammads_log_call_sequence_gets_200_and_lands_on_the_right_customer(client, worker, core):
    """Every post of "does log call" gets 200; each call ends as the spec says, on its customer."""
    for params in LOG_CALL:
        response = spec_post(client, params)
        assert response.status_code == 200, (params, response.get_data())
        worker.drain()
    found = calls(core)
    assert sorted(found) == [f"1234567890-{n}" for n in range(1, 7)]
    assert {call_id[-1]: row.status for call_id, row in found.items()} == {
        "1": "canceled", "2": "completed", "3": "completed", "4": "completed", "5": "completed",
        "6": "ringing",
    }  # fmt: skip
    assert [found[f"1234567890-{n}"].direction for n in range(1, 6)] == [
        "outbound", "outbound", "inbound", "inbound", "inbound"]  # fmt: skip
    # The customer's number, dialled or calling, is one customer; the invalid number nobody.
    [customer] = people(core)
    assert {found[f"1234567890-{n}"].customer_id for n in range(1, 6)} == {customer}
    assert found["1234567890-6"].customer_id is None
    assert found["1234567890-2"].agent == "user 1"
    assert found["1234567890-4"].agent == "voicemail"  # the answer names who took it
    assert found["1234567890-5"].agent == "user 1,user 2"
