"""Shared fixtures: every store-backed test runs on SQLite and, when configured, PostgreSQL.

Only fixtures live here: constants are in values.py, payloads in payloads.py, and what the
fixtures hand out (senders, an admin) in actions.py.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select, text
from sqlalchemy.engine import make_url

from devkit.simulators.zendesk import FakeZendesk
from middleware.config import Config, parse_config
from middleware.installation import Installation, build_installation
from middleware.integrations.registry import PluginRegistry
from middleware.notes.outbox import Outbox
from middleware.process.worker import Worker
from middleware.store.tables import interactions, make_engine, metadata, upgrade, utcnow, writes
from middleware.web.app import create_app
from tests.actions import AdminActions, ConfigFactory, Hooks, NoteRecorder
from tests.values import (
    ADMIN_PASSWORD,
    AGENT_KEY,
    ANN,
    CTI_SECRET,
    GENERIC_SECRET,
    PG_URL,
    SF_INSTANCE,
    SF_ORG,
    SF_SESSION,
    SHOPIFY_SECRET,
    SHOPIFY_SHOP,
    TWILIO_TOKEN,
    UNREACHABLE_URL,
    ZENDESK_EMAIL,
    ZENDESK_SECRET,
    ZENDESK_TOKEN,
)

# One schema per test process, so runs side by side never truncate each other's tables.
PG_SCHEMA = f"carryover_test_{os.getpid()}"

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


def build_config(database_url: str, *args: Any, **kwargs: Any) -> Config:
    """Build a validated configuration for tests (the arguments of raw_config)."""
    return parse_config(
        raw_config(database_url, *args, **kwargs), PluginRegistry.from_entry_points().schemas()
    )


def raw_config(
    database_url: str,
    zendesk_url: str | None = None,
    zendesk_options: dict[str, Any] | None = None,
    phone: bool = False,
    salesforce: dict[str, Any] | None = None,
    twilio: dict[str, Any] | None = None,
    shopify: dict[str, Any] | None = None,
    generic: bool = False,
    **extra: Any,
) -> dict[str, Any]:
    """Return a test configuration as written in YAML (zendesk_options override its settings).

    phone=True also connects Twilio (twilio: more of its settings) and the generic CTI;
    salesforce (settings over the test org's defaults) connects Salesforce; shopify
    (settings over the test shop's) connects Shopify; generic=True
    connects the generic inbound integration (Standard Webhooks, GENERIC_SECRET).
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
        # Kept beside integrations given in extra (a PBX's settings, say).
        raw.setdefault("integrations", {})
        raw["integrations"]["zendesk"] = {
            "url": zendesk_url,
            "email": ZENDESK_EMAIL,
            "api_token": ZENDESK_TOKEN,
            "webhook_secret": ZENDESK_SECRET,
            "timeout_s": 5,
            **(zendesk_options or {}),
        }
    if phone:
        raw.setdefault("integrations", {})
        raw["integrations"]["twilio"] = {"auth_token": TWILIO_TOKEN, **(twilio or {})}
        raw["integrations"]["cti"] = {"secret": CTI_SECRET}
    if generic:
        raw.setdefault("integrations", {})
        raw["integrations"]["generic"] = {"secret": GENERIC_SECRET}
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
    if shopify is not None:
        raw.setdefault("integrations", {})
        raw["integrations"]["shopify"] = {
            "shop_url": f"https://{SHOPIFY_SHOP}",
            "webhook_secret": SHOPIFY_SECRET,
            **shopify,
        }
    return raw


@pytest.fixture
def zendesk_api_url(request: pytest.FixtureRequest) -> str:
    """Return the fake Zendesk's URL if the test asks for fake_zendesk, else an unreachable one.

    The fake is a threaded server: only the tests that talk to Zendesk's API start it.
    """
    if "fake_zendesk" in request.fixturenames:
        return request.getfixturevalue("fake_zendesk").url
    return UNREACHABLE_URL


@pytest.fixture
def make_config() -> ConfigFactory:
    """Return the factory of validated test configurations (see build_config)."""
    return build_config


@pytest.fixture
def core(database_url: str, zendesk_api_url: str) -> Iterator[Installation]:
    """Build a Carryover installation connected to Zendesk, Twilio and a PBX."""
    built = build_installation(build_config(database_url, zendesk_api_url, phone=True))
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


@pytest.fixture
def hooks(client: FlaskClient) -> Hooks:
    """Return senders that post signed deliveries through the test client."""
    return Hooks(client)


@pytest.fixture
def hooks_for() -> type[Hooks]:
    """Return the factory of senders for a client a test builds itself: hooks_for(client)."""
    return Hooks


@pytest.fixture
def admin(client: FlaskClient) -> AdminActions:
    """Return an admin acting through the test client (log_in, csrf)."""
    return AdminActions(client)


@pytest.fixture
def admin_for() -> type[AdminActions]:
    """Return the factory of admins for a client a test builds itself: admin_for(client)."""
    return AdminActions


@pytest.fixture
def admin_client(core: Installation, client: FlaskClient) -> FlaskClient:
    """Return a test client with the admin Ada logged in."""
    from middleware.admin.accounts import create_admin

    create_admin(core.engine, "ada", ADMIN_PASSWORD)
    assert AdminActions(client).log_in().status_code == 302
    return client


@pytest.fixture
def written_before(core: Installation) -> NoteRecorder:
    """Return a recorder of notes Carryover wrote earlier (done), as the outbox keeps them."""
    from middleware.store.tables import interactions, utcnow, writes

    def record(target: str, target_ref: str, marker: str) -> None:
        with core.engine.begin() as conn:
            interaction = conn.execute(interactions.insert().values(
                source=target, external_id=target_ref, kind="ticket", channel="email",
                occurred_at=utcnow(), updated_at=utcnow(), identities="[]",
            )).inserted_primary_key[0]  # fmt: skip
            conn.execute(writes.insert().values(
                target=target, target_ref=target_ref, interaction_id=interaction,
                purpose="summary", marker=marker, body=f"note\n\n[Carryover ref {marker}]",
                status="done", attempts=1, next_attempt_at=utcnow(), created_at=utcnow(),
                done_at=utcnow(),
            ))  # fmt: skip

    return record


@pytest.fixture
def queue_note() -> Callable[..., int]:
    """Return a function that queues one note to a ticket or case, as the pipeline does."""

    def queue(core: Installation, target: str, target_ref: str, text: str = "note") -> int:
        """Queue the note and return the write's id."""
        with core.engine.begin() as conn:
            interaction = conn.execute(interactions.insert().values(
                source=target, external_id=f"{target_ref}-{text}", kind="ticket", channel="email",
                occurred_at=utcnow(), updated_at=utcnow(), identities="[]",
            )).inserted_primary_key[0]  # fmt: skip
            Outbox.enqueue(conn, core.markers, target, target_ref, interaction, "summary", text)
            return int(conn.execute(select(func.max(writes.c.id))).scalar_one())

    return queue
