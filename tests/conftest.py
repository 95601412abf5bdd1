"""Shared fixtures: every store-backed test runs on SQLite and, when configured, PostgreSQL."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import text
from sqlalchemy.engine import make_url

from devkit.simulators.zendesk import FakeZendesk
from middleware.config import Config, parse_config
from middleware.installation import Installation, build_installation
from middleware.integrations.registry import PluginRegistry
from middleware.process.worker import Worker
from middleware.store.tables import make_engine, metadata, upgrade
from middleware.web.app import create_app
from plugins.zendesk import sign

PG_URL = os.environ.get("CARRYOVER_TEST_DATABASE_URL")
# One schema per test process, so runs side by side never truncate each other's tables.
PG_SCHEMA = f"carryover_test_{os.getpid()}"
FIXTURES = Path(__file__).resolve().parent.parent / "plugins" / "zendesk" / "fixtures"
ZENDESK_SECRET = "dGhpc19zZWNyZXRfaXNfZm9yX3Rlc3Rpbmdfb25seQ=="
ZENDESK_EMAIL = "bot@example.com"
ZENDESK_TOKEN = "test-token"
AGENT_KEY = "agent-key-for-tests"
TWILIO_TOKEN = "twilio-auth-token-for-tests"
CTI_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
PUBLIC_URL = "http://127.0.0.1:8080"  # the default public_url, which Twilio signs
ANN = 8447388090501
SF_ORG = "00D70000000IVNp"  # the org of the Salesforce fixtures, in its 15-character form
SF_INSTANCE = "https://acme.my.salesforce.com"
SF_SESSION = "00D70000000IVNp!AQ4AQ.session-for-tests"

BACKENDS = [
    "sqlite",
    pytest.param(
        "postgresql",
        marks=pytest.mark.skipif(not PG_URL, reason="CARRYOVER_TEST_DATABASE_URL is not set"),
    ),
]


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Migrate one SQLite file per session; each test gets a copy."""
    path = tmp_path_factory.mktemp("template") / "carryover.db"
    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine)
    engine.dispose()
    return path


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """Create a fresh schema in the test PostgreSQL and migrate it once per session."""
    assert PG_URL
    url = make_url(PG_URL).update_query_dict({"options": f"-csearch_path={PG_SCHEMA}"})
    admin = make_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f"DROP SCHEMA IF EXISTS {PG_SCHEMA} CASCADE"))
        conn.execute(text(f"CREATE SCHEMA {PG_SCHEMA}"))
    admin.dispose()
    rendered = url.render_as_string(hide_password=False)
    engine = make_engine(rendered)
    upgrade(engine)
    engine.dispose()
    yield rendered
    admin = make_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f"DROP SCHEMA IF EXISTS {PG_SCHEMA} CASCADE"))
    admin.dispose()


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path, sqlite_template: Path) -> str:
    """Return the URL of an empty, migrated store."""
    if request.param == "sqlite":
        target = tmp_path / "carryover.db"
        shutil.copy(sqlite_template, target)
        return f"sqlite:///{target}"
    url = request.getfixturevalue("postgres_url")
    engine = make_engine(url)
    with engine.begin() as conn:
        names = ", ".join(t.name for t in metadata.sorted_tables)
        conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    engine.dispose()
    return url


@pytest.fixture
def fake_zendesk() -> Iterator[FakeZendesk]:
    """Serve a fake Zendesk API with Ann Example as a known requester."""
    with FakeZendesk(email=ZENDESK_EMAIL, api_token=ZENDESK_TOKEN) as fake:
        fake.add_user(
            ANN,
            "Ann Example",
            email="ann.example@example.com",
            phone="+14155550142",
            extra_identities=[{"type": "facebook", "value": "100001234567890"}],
        )
        for ticket_id in (5141, 5149, 5158, 5160):
            fake.add_ticket(ticket_id, ANN, f"ticket {ticket_id}")
        yield fake


def make_config(
    database_url: str,
    zendesk_url: str | None = None,
    zendesk_options: dict[str, Any] | None = None,
    phone: bool = False,
    salesforce: dict[str, Any] | None = None,
    **extra: Any,
) -> Config:
    """Build a validated configuration for tests (zendesk_options override plugin settings).

    phone=True also connects Twilio and the generic CTI; salesforce (settings over the test
    org's defaults) connects Salesforce.
    """
    raw: dict[str, Any] = {
        "database_url": database_url,
        "agent_api_keys": [AGENT_KEY],
        "secret_key": "test-secret-key",
        "worker": {"backoff_base_s": 0.0, "lease_s": 30},
        # The fake upstreams listen on 127.0.0.1.
        "allow_private_upstreams": True,
        **extra,
    }
    if zendesk_url:
        raw["integrations"] = {
            "zendesk": {
                "url": zendesk_url,
                "email": ZENDESK_EMAIL,
                "api_token": ZENDESK_TOKEN,
                "webhook_secret": ZENDESK_SECRET,
                "timeout_s": 5,
                **(zendesk_options or {}),
            }
        }
    if phone:
        raw.setdefault("integrations", {})
        raw["integrations"]["twilio"] = {"auth_token": TWILIO_TOKEN}
        raw["integrations"]["cti"] = {"secret": CTI_SECRET}
    if salesforce is not None:
        raw.setdefault("integrations", {})
        raw["integrations"]["salesforce"] = {
            "organization_id": SF_ORG,
            "instance_url": SF_INSTANCE,
            "session_id": SF_SESSION,
            "timeout_s": 5,
            # The test client's address: messages are proven by their source network, as
            # behind an allow-list of Salesforce's ranges (tests of the other proofs and of
            # unproven messages set this to []).
            "allowed_networks": ["127.0.0.1/32"],
            **salesforce,
        }
    return parse_config(raw, PluginRegistry.from_entry_points().schemas())


@pytest.fixture
def core(database_url: str, fake_zendesk: FakeZendesk) -> Iterator[Installation]:
    """Build a Carryover installation connected to the fake Zendesk, Twilio and a PBX."""
    built = build_installation(make_config(database_url, fake_zendesk.url, phone=True))
    yield built
    built.dispose()


@pytest.fixture
def app(core: Installation) -> Flask:
    """Build the web app around the test installation."""
    return create_app(core=core)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    """Return a test client of the web app."""
    return app.test_client()


@pytest.fixture
def carryover_url(app: Flask) -> Iterator[str]:
    """Serve the web app on a local port, for senders that POST over HTTP (simulators)."""
    from devkit.fake_server import AppServer

    with AppServer(app) as server:
        yield server.url


@pytest.fixture
def worker(core: Installation) -> Worker:
    """Return a worker that tests drive by hand (run_once / drain)."""
    return Worker(core, name="test-worker")


def fixture_bytes(name: str) -> bytes:
    """Return a Zendesk fixture file exactly as stored."""
    return (FIXTURES / name).read_bytes()


def zendesk_event(name: str, **detail: Any) -> bytes:
    """Return a fixture with some ticket fields changed (and a fresh event id if given)."""
    payload = json.loads(fixture_bytes(name))
    event_id = detail.pop("event_id", None)
    if event_id:
        payload["id"] = event_id
    payload["detail"].update(detail)
    return json.dumps(payload).encode()


def zendesk_headers(
    body: bytes, secret: str = ZENDESK_SECRET, timestamp: str | None = None
) -> dict:
    """Sign a body as Zendesk does."""
    timestamp = timestamp or datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "Content-Type": "application/json",
        "X-Zendesk-Webhook-Signature": sign(secret, timestamp, body),
        "X-Zendesk-Webhook-Signature-Timestamp": timestamp,
        "X-Zendesk-Webhook-Id": "01GTXYZ0000000000000000000",
    }


def post_zendesk(client: FlaskClient, body: bytes, **kwargs: Any) -> Any:
    """POST a signed delivery to /hooks/zendesk."""
    return client.post("/hooks/zendesk", data=body, headers=zendesk_headers(body, **kwargs))


# -- the phone: Twilio and generic-CTI deliveries, signed as their senders sign -------------
PLUGINS_DIR = Path(__file__).resolve().parent.parent / "plugins"


def twilio_fields(name: str, **changes: str) -> list[tuple[str, str]]:
    """Return a Twilio fixture's parameters, with some changed (Timestamp=now by default)."""
    from middleware.integrations.plugin import decode_form

    fields = dict(decode_form((PLUGINS_DIR / "twilio" / "fixtures" / name).read_bytes()))
    if "Timestamp" in fields:
        fields["Timestamp"] = datetime.now(UTC).strftime("%a, %d %b %Y %H:%M:%S +0000")
    fields.update(changes)
    return list(fields.items())


def post_twilio(
    client: FlaskClient, fields: list[tuple[str, str]], token: str = TWILIO_TOKEN, **kw: Any
) -> Any:
    """POST form parameters to /hooks/twilio, signed over public_url + path as Twilio signs."""
    from urllib.parse import urlencode

    from plugins.twilio import sign as twilio_sign

    signature = twilio_sign(token, PUBLIC_URL + "/hooks/twilio", fields)
    headers = {"X-Twilio-Signature": signature, **kw.pop("headers", {})}
    return client.post(
        "/hooks/twilio", data=urlencode(fields), headers=headers,
        content_type="application/x-www-form-urlencoded",
    )  # fmt: skip


def cti_body(name: str, **changes: Any) -> bytes:
    """Return a CTI fixture as JSON bytes, with some fields changed."""
    payload = json.loads((PLUGINS_DIR / "cti" / "fixtures" / name).read_bytes())
    payload.update(changes)
    return json.dumps(payload).encode()


def cti_headers(body: bytes, secret: str = CTI_SECRET, timestamp: int | None = None,
                webhook_id: str | None = None) -> dict[str, str]:  # fmt: skip
    """Sign a body as a Standard Webhooks sender does."""
    import uuid

    from plugins.cti import sign as cti_sign

    stamp = str(int(datetime.now(UTC).timestamp()) if timestamp is None else timestamp)
    webhook_id = webhook_id or f"msg_{uuid.uuid4().hex}"
    return {
        "Content-Type": "application/json",
        "webhook-id": webhook_id,
        "webhook-timestamp": stamp,
        "webhook-signature": "v1," + cti_sign(secret, webhook_id, stamp, body),
    }


def post_cti(client: FlaskClient, body: bytes, **kwargs: Any) -> Any:
    """POST a signed generic-CTI event to /hooks/cti."""
    return client.post("/hooks/cti", data=body, headers=cti_headers(body, **kwargs))


# -- Salesforce: Outbound Messages as Salesforce sends them ---------------------------------
SOAP_HEADERS = {"Content-Type": "text/xml; charset=utf-8", "SOAPAction": '""'}


def salesforce_fixture(name: str) -> bytes:
    """Return a Salesforce fixture (an Outbound Message) exactly as stored."""
    return (PLUGINS_DIR / "salesforce" / "fixtures" / name).read_bytes()


def post_salesforce(client: FlaskClient, body: bytes) -> Any:
    """POST an Outbound Message to /hooks/salesforce as Salesforce does."""
    return client.post("/hooks/salesforce", data=body, headers=SOAP_HEADERS)


def outbound_message(name: str, notifications: int = 1, **fields: str) -> bytes:
    """Return a fixture with its one notification repeated, each copy with fresh ids.

    Fields given replace (or add) sObject values in every copy, e.g. Subject="…"; copy i
    gets notification id 04l…{i} and, after the first, record id …{i}.
    """
    import re

    text = salesforce_fixture(name).decode()
    start, end = text.index("   <Notification>"), text.index("</Notification>") + 16
    block = text[start:end]
    for field, value in fields.items():
        element = f"<sf:{field}>{value}</sf:{field}>"
        block, found = re.subn(rf"<sf:{field}>[^<]*</sf:{field}>", element, block)
        if not found:
            block = block.replace("</sObject>", f" {element}\n    </sObject>")
    notification_id = re.search(r"<Id>(\w+)</Id>", block)[1]  # type: ignore[index]
    record_id = re.search(r"<sf:Id>(\w+)</sf:Id>", block)[1]  # type: ignore[index]
    copies = []
    for i in range(notifications):
        copy = block.replace(f"<Id>{notification_id}</Id>",
                             f"<Id>{notification_id[:-8]}{i:08d}</Id>")  # fmt: skip
        if i:
            copy = copy.replace(f"<sf:Id>{record_id}</sf:Id>",
                                f"<sf:Id>{record_id[:-8]}{i:08d}</sf:Id>")  # fmt: skip
        copies.append(copy)
    return (text[:start] + "".join(copies) + text[end:]).encode()


# -- the admin UI: an admin logged in through the form, as a browser does -------------------
ADMIN_PASSWORD = "correct horse battery"


def csrf_of(page: bytes) -> str:
    """Return the CSRF token a page's form carries."""
    import re

    match = re.search(rb'name="csrf_token" value="([^"]+)"', page)
    assert match, "the page has no CSRF token"
    return match.group(1).decode()


def admin_log_in(client: FlaskClient, username: str = "ada", password: str = ADMIN_PASSWORD,
                 **extra: str) -> Any:  # fmt: skip
    """Log in through the admin login form."""
    token = csrf_of(client.get("/admin/login").data)
    form = {"username": username, "password": password, "csrf_token": token, **extra}
    return client.post("/admin/login", data=form)


@pytest.fixture
def admin_client(core: Installation, client: FlaskClient) -> FlaskClient:
    """Return a test client with the admin Ada logged in."""
    from middleware.admin.accounts import create_admin

    create_admin(core.engine, "ada", ADMIN_PASSWORD)
    assert admin_log_in(client).status_code == 302
    return client


def written_before(core: Installation, target: str, target_ref: str, marker: str) -> None:
    """Record a note Carryover wrote earlier (done), as the outbox keeps it."""
    from middleware.store.tables import interactions, utcnow, writes

    with core.engine.begin() as conn:
        interaction = conn.execute(interactions.insert().values(
            source=target, external_id=target_ref, kind="ticket", channel="email",
            occurred_at=utcnow(), updated_at=utcnow(), identities="[]",
        )).inserted_primary_key[0]  # fmt: skip
        conn.execute(writes.insert().values(
            target=target, target_ref=target_ref, interaction_id=interaction, purpose="summary",
            marker=marker, body=f"note\n\n[Carryover ref {marker}]", status="done", attempts=1,
            next_attempt_at=utcnow(), created_at=utcnow(), done_at=utcnow(),
        ))  # fmt: skip
