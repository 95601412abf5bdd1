"""Agent-facing reads and health: /healthz, /readyz and GET /api/v1/context."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from urllib.parse import urlsplit

import pytest
from sqlalchemy import text

from middleware.cli import main
from middleware.installation import build_installation
from middleware.reads.context_api import sign_link
from middleware.web.app import create_app
from tests.payloads import fixture_bytes, zendesk_event
from tests.values import AGENT_KEY, ANN, ZENDESK_SECRET, ZENDESK_TOKEN

LINK_SECRET = "test-secret-key"  # make_config's secret_key
ANN_EMAIL = "ann.example@example.com"
ANN_PHONE = "+14155550142"
AUTH = {"Authorization": f"Bearer {AGENT_KEY}"}
E164 = re.compile(r"^\+[1-9]\d{6,14}$")
ITEM_FIELDS = {"source", "external_id", "kind", "channel", "status", "subject", "occurred_at"}


@pytest.fixture
def ann(client, worker, hooks, fake_zendesk):
    """Receive Ann's mail and Facebook tickets, a comment, the mail one solved, a call ticket."""
    for name in (
        "ticket_created__mail.json",
        "ticket_created__facebook_message.json",
        "ticket_comment_added.json",
        "ticket_status_changed.json",
        "trigger_ticket_created.json",
    ):
        assert hooks.zendesk(fixture_bytes(name)).status_code == 200
    worker.drain()


def context(client, headers=None, **params):
    """GET /api/v1/context with an agent key (unless other headers are given)."""
    headers = AUTH if headers is None else headers
    return client.get("/api/v1/context", query_string=params, headers=headers)


def signed_query(
    params: str, expires: int, secret: str = LINK_SECRET, path: str = "/api/v1/context"
) -> str:
    """Return the query string of a signed link to the context API."""
    return f"{params}&exp={expires}&sig={sign_link(secret, path, params, expires)}"


# -- health ---------------------------------------------------------------------------------


def secrets_of(core) -> list[str]:
    """Return every secret value of the test installation."""
    return [ZENDESK_SECRET, ZENDESK_TOKEN, AGENT_KEY, LINK_SECRET, core.config.database_url]


def test_healthz_answers_json_without_authentication(client, core):
    """GET /healthz says the process is up, as JSON, with no key."""
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.is_json
    assert response.get_json() == {"status": "ok"}


def test_readyz_reports_store_and_migrations_without_secrets(client, core):
    """GET /readyz is 200 JSON naming store and migrations state, and no secret value."""
    response = client.get("/readyz")
    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "ready"
    assert body["store"] == "ok"
    assert body["migrations"] == "applied"
    text = response.get_data(as_text=True)
    assert [s for s in secrets_of(core) if s in text] == []


def test_readyz_with_pending_migrations_is_503(tmp_path, make_config):
    """A store that was never migrated is not ready: 503 naming the pending migrations."""
    core = build_installation(make_config(f"sqlite:///{tmp_path / 'fresh.db'}"))
    try:
        client = create_app(core=core).test_client()
        response = client.get("/readyz")
        assert response.status_code == 503
        assert response.get_json()["migrations"] == "pending"
        assert client.get("/healthz").status_code == 200
    finally:
        core.dispose()


def test_readyz_with_an_unreachable_store_is_503_without_the_password(make_config):
    """An unreachable store gives 503 JSON that does not reveal the database URL or password."""
    url = "postgresql+psycopg://carryover:pw-s3cret@127.0.0.1:1/carryover?connect_timeout=2"
    core = build_installation(make_config(url))
    try:
        client = create_app(core=core).test_client()
        response = client.get("/readyz")
        assert response.status_code == 503
        assert response.get_json()["store"] == "unreachable"
        text = response.get_data(as_text=True)
        assert "pw-s3cret" not in text and "127.0.0.1" not in text
        assert client.get("/healthz").get_json() == {"status": "ok"}
    finally:
        core.dispose()


# -- authorisation ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-key"},
        {"Authorization": f"Bearer {AGENT_KEY}x"},
        {"Authorization": f"Basic {AGENT_KEY}"},
        {"Authorization": AGENT_KEY},
        {"Authorization": "Bearer "},
        {"X-Api-Key": AGENT_KEY},
    ],
    ids=["none", "wrong", "longer", "basic", "no-scheme", "empty", "other-header"],
)
def test_context_without_a_valid_key_is_401_revealing_nothing(client, ann, headers):
    """Without a valid key, known and unknown identifiers get the same 401 and no customer data."""
    known = context(client, headers=headers, email=ANN_EMAIL)
    unknown = context(client, headers=headers, email="nobody@example.com")
    assert known.status_code == unknown.status_code == 401
    assert known.get_data() == unknown.get_data()
    assert set(known.get_json()) == {"error"}
    assert "Bearer" in known.headers["WWW-Authenticate"]
    text = known.get_data(as_text=True).lower()
    assert "ann" not in text and "example" not in text


def test_context_accepts_the_bearer_scheme_in_any_case(client, ann):
    """'bearer <key>' is as good as 'Bearer <key>'."""
    headers = {"Authorization": f"bearer {AGENT_KEY}"}
    assert context(client, headers=headers, email=ANN_EMAIL).status_code == 200


def test_no_configured_keys_lets_no_bearer_in(database_url, fake_zendesk, make_config):
    """With agent_api_keys empty and no secret_key, every read is 401."""
    config = make_config(database_url, fake_zendesk.url, agent_api_keys=[], secret_key=None)
    core = build_installation(config)
    try:
        client = create_app(core=core).test_client()
        for header in ("Bearer ", "Bearer  ", f"Bearer {AGENT_KEY}"):
            response = context(client, headers={"Authorization": header}, email=ANN_EMAIL)
            assert response.status_code == 401
        expires = int(time.time()) + 60
        unsigned = f"/api/v1/context?email={ANN_EMAIL}&exp={expires}&sig=x"
        assert client.get(unsigned).status_code == 401
    finally:
        core.dispose()


# -- the context -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "address",
    [ANN_EMAIL, "ANN.EXAMPLE@EXAMPLE.COM", "Ann.Example@example.com", f"  {ANN_EMAIL} "],
)
def test_context_by_email_in_any_case(client, ann, address):
    """An email finds the customer whatever its case and surrounding spaces."""
    response = context(client, email=address)
    assert response.status_code == 200
    assert response.get_json()["customer"]["name"] == "Ann Example"


@pytest.mark.parametrize(
    "number",
    [
        "+14155550142", "+1 415 555 0142", "+1 (415) 555-0142", "(415) 555-0142",
        "415.555.0142", "415-555-0142", "4155550142", "1-415-555-0142", "14155550142",
        "011 1 415 555 0142",
    ],
)  # fmt: skip
def test_context_by_phone_written_several_ways(client, ann, number):
    """A phone number finds the customer in E.164, national, dotted or international-prefix form."""
    response = context(client, phone=number)
    assert response.status_code == 200
    assert response.get_json()["customer"]["name"] == "Ann Example"


def test_context_by_phone_with_an_unencoded_plus_in_the_url(client, ann):
    """A softphone that puts '+1415…' in the URL unencoded (read as a space) still finds Ann."""
    response = client.get(f"/api/v1/context?phone={ANN_PHONE}", headers=AUTH)
    assert response.status_code == 200
    assert response.get_json()["customer"]["name"] == "Ann Example"


@pytest.mark.parametrize("lookup", ["zendesk_user", "customer"])
def test_context_by_system_id_and_customer_id(client, ann, lookup):
    """A Zendesk user id and Carryover's own customer id find the same customer."""
    customer_id = context(client, email=ANN_EMAIL).get_json()["customer"]["id"]
    value = str(ANN) if lookup == "zendesk_user" else str(customer_id)
    response = context(client, **{lookup: value})
    assert response.status_code == 200
    assert response.get_json()["customer"]["id"] == customer_id


def test_context_shape_identities_and_items(client, ann):
    """The context carries the customer, identities normalised, and items with their fields."""
    body = context(client, email=ANN_EMAIL).get_json()
    customer = body["customer"]
    assert set(customer) >= {"id", "name", "identities", "preferred_channels"}
    assert isinstance(customer["id"], int)
    assert customer["name"] == "Ann Example"
    pairs = {(i["type"], i["value"]) for i in customer["identities"]}
    assert pairs >= {
        ("email", ANN_EMAIL),
        ("phone", ANN_PHONE),
        ("zendesk_user", str(ANN)),
        ("facebook", "100001234567890"),
    }
    for identity in customer["identities"]:
        assert {"type", "value"} <= set(identity)
        if identity["type"] == "email":
            assert identity["value"] == identity["value"].lower().strip()
        if identity["type"] == "phone":
            assert E164.match(identity["value"]), identity
    assert customer["preferred_channels"] and set(customer["preferred_channels"]) <= {
        "email", "facebook", "phone",
    }  # fmt: skip
    for item in body["interactions"] + body["open_items"]:
        assert set(item) >= ITEM_FIELDS
        assert item["source"] == "zendesk"
        assert isinstance(item["external_id"], str)
        datetime.fromisoformat(item["occurred_at"].replace("Z", "+00:00"))
    assert isinstance(body["summary"], str) and "Ann Example" in body["summary"]
    assert body["mood"] == "negative"  # "really frustrating", "charged twice"
    assert isinstance(body["repeat_contacts_7d"], int)


def test_context_lists_interactions_newest_first(client, ann):
    """Interactions come newest first, across channels."""
    items = context(client, email=ANN_EMAIL).get_json()["interactions"]
    assert [(i["external_id"], i["channel"]) for i in items] == [
        ("5160", "phone"),
        ("5149", "facebook"),
        ("5141#39016743929486", "email"),
        ("5141", "email"),
    ]
    times = [i["occurred_at"] for i in items]
    assert times == sorted(times, reverse=True)


def test_items_carry_their_number_and_whose_words_they_are(client, ann):
    """Each item names its record's number; the requester's texts are hers, the call ticket's
    description (from a trigger, which does not say who wrote it) is of unknown author."""
    items = context(client, email=ANN_EMAIL).get_json()["interactions"]
    found = {i["external_id"]: (i["number"], i["said_by"]) for i in items}
    assert found == {
        "5160": ("5160", None),
        "5149": ("5149", "customer"),
        "5141#39016743929486": ("5141", "customer"),
        "5141": ("5141", "customer"),
    }


def test_solved_ticket_leaves_open_items(client, ann):
    """The mail ticket, solved by a status change, is in interactions but not in open_items."""
    body = context(client, email=ANN_EMAIL).get_json()
    assert [i["external_id"] for i in body["open_items"]] == ["5160", "5149"]
    solved = next(i for i in body["interactions"] if i["external_id"] == "5141")
    assert solved["status"] == "solved"


def test_solving_the_last_tickets_empties_open_items(client, worker, ann, hooks):
    """Once every ticket is solved, open_items is empty."""
    hooks.zendesk(fixture_bytes("trigger_ticket_updated.json"))
    hooks.zendesk(
        zendesk_event("ticket_status_changed.json", id="5149", event_id="solve-5149"),
    )
    worker.drain()
    assert context(client, email=ANN_EMAIL).get_json()["open_items"] == []


def test_repeat_contacts_count_the_last_seven_days(client, worker, hooks, fake_zendesk):
    """Two tickets created today count as two contacts in the last 7 days."""
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    hooks.zendesk(zendesk_event("ticket_created__mail.json", created_at=now))
    hooks.zendesk(zendesk_event("ticket_created__facebook_message.json", created_at=now))
    worker.drain()
    body = context(client, email=ANN_EMAIL).get_json()
    assert body["repeat_contacts_7d"] == 2
    assert body["summary"].splitlines()[0] == "Ann Example — 2 contacts in 30 days: email, facebook"


@pytest.mark.parametrize(
    "params",
    [
        {"phone": "not a number"},
        {"phone": "anonymous"},
        {"phone": "0000000000"},
        {"phone": "+266696687"},
        {"email": "not-an-email"},
        {"email": "ann@"},
        {"email": "ann.example\x00@example.com"},
        {"customer": "ann"},
        {"customer": "²"},
        {"customer": "99999999999999999999999999"},
        {},
        {"email": ANN_EMAIL, "phone": ANN_PHONE},
        {"nickname": "ann"},
    ],
    ids=["words", "anonymous", "zeros", "twilio-junk", "email", "email-no-domain", "email-nul",
         "customer", "superscript", "customer-huge", "nothing", "two", "unknown-param"],
)  # fmt: skip
def test_identifier_that_cannot_be_valid_is_400(client, ann, params):
    """An identifier that cannot be a phone, email or id gets 400 with an error."""
    response = context(client, **params)
    assert response.status_code == 400
    assert set(response.get_json()) == {"error"}


@pytest.mark.parametrize(
    "params",
    [
        {"email": "nobody@example.com"},
        {"phone": "+14155550199"},
        {"zendesk_user": "8447388099999"},
        {"salesforce_contact": "0037000000xicp7"},
        {"customer": "999999"},
    ],
)
def test_unknown_identifier_is_404(client, ann, params):
    """A well-formed identifier nobody holds gets 404 with an error."""
    response = context(client, **params)
    assert response.status_code == 404
    assert set(response.get_json()) == {"error"}


# -- signed links -----------------------------------------------------------------------------


def test_signed_link_works_without_a_key(client, ann):
    """A link signed with secret_key and an expiry in the future opens the context."""
    query = signed_query(f"email={ANN_EMAIL}", int(time.time()) + 300)
    response = client.get(f"/api/v1/context?{query}")
    assert response.status_code == 200
    assert response.get_json()["customer"]["name"] == "Ann Example"


def test_link_made_by_the_cli_works(client, ann, database_url, tmp_path, capsys):
    """`carryover link /api/v1/context phone=+1…` prints a URL that opens the context."""
    config = tmp_path / "config.yaml"
    config.write_text(f"database_url: {database_url}\nsecret_key: {LINK_SECRET}\n")
    code = main(["link", "/api/v1/context", f"phone={ANN_PHONE}", "--config", str(config)])
    assert code == 0
    url = urlsplit(capsys.readouterr().out.strip())
    assert "%2B1415" in url.query
    response = client.get(f"{url.path}?{url.query}")
    assert response.status_code == 200
    assert response.get_json()["customer"]["name"] == "Ann Example"


@pytest.mark.parametrize(
    "mangle",
    [
        lambda q: q,  # expired: see the expiry below
        lambda q: q.replace(f"email={ANN_EMAIL}", "email=other@example.com"),
        lambda q: q.replace("&exp=", "&exp=9"),
        lambda q: q + "&phone=%2B14155550142",
        lambda q: re.sub(r"sig=[^&]+", "sig=AAAA", q),
        lambda q: re.sub(r"sig=[^&]+", "sig=%C3%A9t%C3%A9", q),
        lambda q: re.sub(r"&sig=[^&]+", "", q),
        lambda q: re.sub(r"exp=\d+", "exp=%C2%B2", q),
    ],
    ids=["expired", "other-email", "other-expiry", "extra-param", "wrong-sig", "non-ascii-sig",
         "no-sig", "non-ascii-exp"],
)  # fmt: skip
def test_expired_or_tampered_link_is_401(client, ann, mangle, request):
    """A link past its expiry, or with any part changed, is refused with 401."""
    expired = request.node.callspec.id.endswith("expired")
    expires = int(time.time()) + (-5 if expired else 300)
    query = mangle(signed_query(f"email={ANN_EMAIL}", expires))
    response = client.get(f"/api/v1/context?{query}")
    assert response.status_code == 401
    assert set(response.get_json()) == {"error"}


def test_link_signed_for_another_path_is_401(client, ann):
    """A signature covers its path: a link signed for another page does not open this one."""
    query = signed_query(f"email={ANN_EMAIL}", int(time.time()) + 300, path="/pop")
    assert client.get(f"/api/v1/context?{query}").status_code == 401


def test_link_signed_with_another_secret_is_401(client, ann):
    """A link signed with a secret other than secret_key is refused."""
    query = signed_query(f"email={ANN_EMAIL}", int(time.time()) + 300, secret="guess")
    assert client.get(f"/api/v1/context?{query}").status_code == 401


def test_readyz_on_a_store_a_newer_release_migrated_stays_ready(client, core):
    """A rolling upgrade migrated the store past this process: it keeps serving, 200."""
    with core.engine.begin() as conn:
        ours = conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one()
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    try:
        response = client.get("/readyz")
    finally:  # the PostgreSQL schema is the session's: put its revision back
        with core.engine.begin() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = :v"), {"v": ours})
    assert response.status_code == 200
    assert response.get_json()["migrations"] == "newer"
