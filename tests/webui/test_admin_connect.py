"""Connecting an integration from the browser: settings checked, secrets sealed, live at once."""

from __future__ import annotations

import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select

from middleware.admin.accounts import create_admin
from middleware.config import Config, ConfigError
from middleware.installation import Installation, build_installation
from middleware.integrations.saved import IntegrationVersions
from middleware.process.worker import Worker
from middleware.store.sealed import SealError, SecretBox, installation_key, key_file
from middleware.store.tables import (
    customers,
    document_versions,
    make_engine,
    reading,
    upgrade,
    utcnow,
)
from middleware.web.app import create_app
from tests.actions import AdminActions, ConfigFactory
from tests.payloads import cti_body, cti_headers, fixture_bytes
from tests.values import ADMIN_PASSWORD, ZENDESK_EMAIL, ZENDESK_SECRET, ZENDESK_TOKEN


@pytest.fixture
def bare(database_url: str, fake_zendesk, make_config: ConfigFactory) -> Iterator[Installation]:
    """An installation whose configuration file connects no integration."""
    built = build_installation(make_config(database_url))
    yield built
    built.dispose()


@pytest.fixture
def browser(bare: Installation, admin_for: type[AdminActions]) -> FlaskClient:
    """A logged-in admin's client of the bare installation."""
    client = create_app(core=bare).test_client()
    create_admin(bare.engine, "ada", ADMIN_PASSWORD)
    assert admin_for(client).log_in().status_code == 302
    return client


def submit(client: FlaskClient, path: str, **form: str):
    """Post a form of an integration's page (/admin/integrations/KEY…) with its CSRF token."""
    token = AdminActions.csrf(client.get("/".join(path.split("/")[:4])).data)
    return client.post(path, data={"csrf_token": token, **form})


def zendesk_form(base_url: str, **changes: str) -> dict[str, str]:
    """The Zendesk settings an admin types in."""
    return {"url": base_url, "email": ZENDESK_EMAIL, "api_token": ZENDESK_TOKEN,
            "webhook_secret": ZENDESK_SECRET, **changes}  # fmt: skip


def stored_documents(core: Installation) -> str:
    """Every integration document in the store, as one text."""
    with reading(core.engine) as conn:
        rows = conn.execute(
            select(document_versions.c.document).where(document_versions.c.kind == "integration")
        )
        return "\n".join(row.document for row in rows)


def test_zendesk_connected_in_the_browser_takes_webhooks_and_writes_notes(
    bare, browser, fake_zendesk, hooks_for
):
    """Once saved, signed webhooks are accepted and processed, with no restart."""
    body = fixture_bytes("ticket_created__mail.json")
    assert hooks_for(browser).zendesk(body).status_code == 404  # not connected yet
    response = submit(browser, "/admin/integrations/zendesk", **zendesk_form(fake_zendesk.url))
    assert response.status_code == 302
    page = browser.get("/admin/integrations/zendesk").data.decode()
    assert "Saved: Zendesk is connected" in page and "by ada at" in page
    assert hooks_for(browser).zendesk(body).status_code == 200
    assert Worker(bare, name="t").drain() >= 1
    assert bare.inbox.listing()[0].status == "done"


def test_secrets_are_stored_sealed_and_never_shown_back(bare, browser, fake_zendesk):
    """The store holds no secret in clear, the page shows only that one is set."""
    submit(browser, "/admin/integrations/zendesk", **zendesk_form(fake_zendesk.url))
    stored = stored_documents(bare)
    assert fake_zendesk.url in stored  # plain settings stay readable
    assert ZENDESK_TOKEN not in stored and ZENDESK_SECRET not in stored
    page = browser.get("/admin/integrations/zendesk").data.decode()
    assert ZENDESK_TOKEN not in page and ZENDESK_SECRET not in page
    assert f"set ({len(ZENDESK_SECRET)} characters, ending …{ZENDESK_SECRET[-4:]})" in page


def test_a_blank_secret_keeps_the_saved_one_and_clear_removes_it(bare, browser, fake_zendesk):
    """Saving other changes does not need the secrets typed again."""
    submit(browser, "/admin/integrations/zendesk", **zendesk_form(fake_zendesk.url))
    form = zendesk_form(fake_zendesk.url, api_token="", webhook_secret="", timeout_s="7")
    assert submit(browser, "/admin/integrations/zendesk", **form).status_code == 302
    plugin = bare.registry.get("zendesk")
    assert plugin.options["api_token"] == ZENDESK_TOKEN and plugin.options["timeout_s"] == 7.0
    cleared = submit(browser, "/admin/integrations/zendesk", **form, **{"clear-api_token": "1"})
    assert cleared.status_code == 400
    assert "integrations.zendesk.api_token: required" in cleared.data.decode()
    assert bare.registry.get("zendesk").options["api_token"] == ZENDESK_TOKEN  # unchanged


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"url": ""}, "integrations.zendesk.url: required"),
        ({"timeout_s": "ten"}, "zendesk.timeout_s: expected a number, got &#39;ten&#39;"),
        ({"user_cache_ttl_s": "-5"}, "zendesk.user_cache_ttl_s: must not be negative"),
        ({"timeout_s": "nan"}, "zendesk.timeout_s: expected a finite number, got nan"),
        ({"timeout_s": "1e400"}, "zendesk.timeout_s: expected a finite number, got inf"),
    ],
)
def test_bad_settings_are_refused_naming_the_key_and_nothing_is_saved(
    bare, browser, fake_zendesk, changes, message
):
    """The form comes back with the error and what was typed; the store is unchanged."""
    response = submit(browser, "/admin/integrations/zendesk",
                      **zendesk_form(fake_zendesk.url, **changes))  # fmt: skip
    assert response.status_code == 400
    page = response.data.decode()
    assert message in page
    assert ZENDESK_EMAIL in page  # the typed values are kept
    assert stored_documents(bare) == "" and bare.registry.get("zendesk") is None


def test_a_bad_combination_is_refused_by_the_plugin_itself(bare, browser):
    """Salesforce needs one complete login; its own check names what is missing."""
    response = submit(browser, "/admin/integrations/salesforce", organization_id="00D70000000IVNp")
    assert response.status_code == 400
    assert "configure a login" in response.data.decode()


def test_other_processes_pick_the_change_up(bare, browser, fake_zendesk, database_url, make_config):
    """A second installation on the same store (a worker process) follows the save."""
    other = build_installation(make_config(database_url))
    try:
        assert other.registry.get("zendesk") is None
        submit(browser, "/admin/integrations/zendesk", **zendesk_form(fake_zendesk.url))
        other.integrations.refresh()  # what the next look, within 5 s, does
        assert other.registry.get("zendesk").options["api_token"] == ZENDESK_TOKEN
    finally:
        other.dispose()


def test_disconnect_turns_the_webhooks_off_and_forgets_the_secrets(
    bare, browser, fake_zendesk, hooks_for
):
    """After a disconnect the endpoint answers 404 and no sealed secret is left."""
    submit(browser, "/admin/integrations/zendesk", **zendesk_form(fake_zendesk.url))
    assert submit(browser, "/admin/integrations/zendesk/disconnect").status_code == 302
    body = fixture_bytes("ticket_created__mail.json")
    assert hooks_for(browser).zendesk(body).status_code == 404
    assert stored_documents(bare) == '{"off": true}'
    assert "not connected" in browser.get("/admin/integrations/zendesk").data.decode()


def test_an_integration_of_the_configuration_file_is_read_only(admin_client):
    """Its settings show as the file's; saving or disconnecting it is refused."""
    page = admin_client.get("/admin/integrations/zendesk").data.decode()
    assert "from the configuration file" in page and "Save and connect" not in page
    refused = submit(admin_client, "/admin/integrations/zendesk", url="http://elsewhere")
    assert refused.status_code == 400
    assert "configured in the configuration file; change it there" in refused.data.decode()
    gone = submit(admin_client, "/admin/integrations/zendesk/disconnect")
    assert gone.status_code == 409


def test_secrets_sealed_under_another_key_keep_the_integration_off_and_say_why(
    bare, browser, fake_zendesk, database_url, make_config
):
    """A changed secret_key makes saved secrets unreadable: the page asks for them again."""
    submit(browser, "/admin/integrations/zendesk", **zendesk_form(fake_zendesk.url))
    rekeyed = build_installation(make_config(database_url, secret_key="another-secret-key"))
    try:
        assert rekeyed.registry.get("zendesk") is None
        assert "sealed under another secret_key" in rekeyed.registry.problems["zendesk"]
    finally:
        rekeyed.dispose()


def test_a_generated_cti_secret_is_shown_once_and_verifies_signed_events(bare, browser):
    """The PBX gets a whsec_ secret to paste; the next page view no longer shows it."""
    response = submit(browser, "/admin/integrations/cti/generate-secret")
    assert response.status_code == 200
    page = response.data.decode()
    secret = page.split('<code id="revealed-secret">')[1].split("</code>")[0]
    assert secret.startswith("whsec_") and len(secret) > 40
    body = cti_body("newCall.json")
    accepted = browser.post("/hooks/cti", data=body, headers=cti_headers(body, secret=secret))
    assert accepted.status_code == 200
    assert secret not in browser.get("/admin/integrations/cti").data.decode()
    forged = browser.post("/hooks/cti", data=body, headers=cti_headers(body))  # another secret
    assert forged.status_code == 401


def test_plugins_that_take_their_secret_from_the_sender_generate_none(browser):
    """Zendesk makes its own signing secret; there is nothing for Carryover to generate."""
    assert submit(browser, "/admin/integrations/zendesk/generate-secret").status_code == 404


# -- the installation's key and sealing -------------------------------------------------------
def test_a_sealed_secret_opens_only_under_its_own_key():
    """Sealing is authenticated: another key cannot open, nor forge, a sealed value."""
    box = SecretBox("one key")
    sealed = box.seal("api-token-123")
    assert "api-token-123" not in sealed
    assert box.open(sealed) == "api-token-123"
    with pytest.raises(SealError):
        SecretBox("another key").open(sealed)


def test_an_sqlite_installation_without_secret_key_makes_its_own(tmp_path: Path):
    """The key is made once, readable by its owner only, and the same on the next start."""
    config = Config(database_url=f"sqlite:///{tmp_path}/var/carryover.db")
    first = installation_key(config)
    path = tmp_path / "var" / "secret.key"
    assert first and path.exists()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert installation_key(config) == first
    assert installation_key(Config(database_url=config.database_url, secret_key="set")) == "set"


def test_postgresql_without_secret_key_cannot_seal_and_says_so(bare, fake_zendesk):
    """Hosts sharing PostgreSQL need one key in their configuration, not a file each."""
    assert key_file("postgresql+psycopg://carryover@db/carryover") is None
    assert installation_key(Config(database_url="postgresql+psycopg://c@db/c")) is None
    unsealed = IntegrationVersions(bare.engine, bare.registry.classes, bare.config, None)
    with pytest.raises(ConfigError, match="secret_key: required to store secrets"):
        unsealed.connect("zendesk", zendesk_form(fake_zendesk.url), "ada")


def test_a_new_sqlite_store_is_readable_by_its_owner_only_and_an_existing_one_kept(tmp_path):
    """The store holds customers' words: created 0600 like its key, WAL files alike; a file
    whose permissions its admin chose keeps them."""
    database = tmp_path / "var" / "carryover.db"
    engine = make_engine(f"sqlite:///{database}")
    try:
        upgrade(engine)
        with engine.begin() as conn:  # a write, so that the WAL file exists
            conn.execute(customers.insert().values(name="Ann", created_at=utcnow()))
        for path in (database, database.with_name("carryover.db-wal")):
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    finally:
        engine.dispose()
    shared = tmp_path / "shared.db"
    shared.touch(mode=0o640)
    shared.chmod(0o640)
    make_engine(f"sqlite:///{shared}").dispose()
    assert stat.S_IMODE(shared.stat().st_mode) == 0o640
