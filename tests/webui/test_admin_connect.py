"""Connecting an integration from the browser: settings checked, secrets sealed, live at once."""

from __future__ import annotations

import html
import stat
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from urllib.parse import quote

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select

from middleware.admin.accounts import create_admin
from middleware.config import Config, ConfigError
from middleware.installation import Installation, build_installation
from middleware.integrations.faults import UpstreamFaults
from middleware.integrations.saved import IntegrationVersions
from middleware.integrations.upstreams import UpstreamStatus
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
from webui.integrations import connection_state as connection_state_of


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


def connection_state(page: str) -> str:
    """Return what the integration page's heading says of the connection."""
    return page.split('id="connection-state">')[1].split("</span>")[0]


def test_saving_a_refused_token_is_not_connected_until_a_test_passes(bare, browser, fake_zendesk):
    """Saving tests at once: a 401 shows "not working" with the error; a later pass clears it."""
    fake_zendesk.fail_next(401, body={"error": "Couldn't authenticate you"})
    saved = submit(browser, "/admin/integrations/zendesk", **zendesk_form(fake_zendesk.url))
    assert saved.status_code == 302
    page = browser.get("/admin/integrations/zendesk").data.decode()
    assert (
        "Saved, but Zendesk is not working: the connection test failed: Zendesk answered 401"
        in (page)
    )
    assert connection_state(page) == "not working"
    assert "<strong>Zendesk is not working</strong>" in page
    latest = page.split("<th>Latest error</th>")[1].split("</tr>")[0]
    assert "Zendesk answered 401" in latest
    assert (
        '<span class="error">not working</span>'
        in browser.get("/admin/integrations/").data.decode()
    )

    passed = submit(browser, "/admin/integrations/zendesk/test")
    assert passed.status_code == 302
    page = browser.get("/admin/integrations/zendesk").data.decode()
    assert "Zendesk answered as" in page
    assert connection_state(page) == "connected" and "Zendesk is not working" not in page


def test_saving_settings_that_work_says_so(bare, browser, fake_zendesk):
    """The save's own test passes: connected, and who answered."""
    submit(browser, "/admin/integrations/zendesk", **zendesk_form(fake_zendesk.url))
    page = browser.get("/admin/integrations/zendesk").data.decode()
    assert "Saved: Zendesk is connected, and the connection test passed: Zendesk answered as" in (
        page
    )
    assert connection_state(page) == "connected"


def test_settings_saved_without_a_test_are_connected_once_a_real_call_succeeds(
    bare, browser, fake_zendesk, hooks_for
):
    """Saved with the test unsent (Zendesk paused then), the first note written proves them."""
    bare.integrations.connect("zendesk", {"url": fake_zendesk.url, "email": ZENDESK_EMAIL,
                                          "api_token": ZENDESK_TOKEN,
                                          "webhook_secret": ZENDESK_SECRET}, "ada")  # fmt: skip
    page = browser.get("/admin/integrations/zendesk").data.decode()
    assert connection_state(page) == "not checked yet"
    hooks_for(browser).zendesk(fixture_bytes("ticket_created__mail.json"))
    Worker(bare, name="t").drain()  # looks the requester up: a good answer from Zendesk
    bare.health._forget()
    page = browser.get("/admin/integrations/zendesk").data.decode()
    assert connection_state(page) == "connected"


def test_settings_saved_after_the_last_answer_are_not_checked_yet(bare, fake_zendesk):
    """Until the upstream answers after a save, the state says so rather than "connected"."""
    cls = bare.registry.classes["zendesk"]
    now = utcnow()
    answered = UpstreamFaults("zendesk", "ok", UpstreamStatus("zendesk", None, 0, None, None,
                                                              None, now))  # fmt: skip
    assert connection_state_of(cls, True, answered, now + timedelta(seconds=1)) == (
        "caution", "not checked yet")  # fmt: skip
    assert connection_state_of(cls, True, None, now) == ("caution", "not checked yet")
    assert connection_state_of(cls, True, answered, now - timedelta(seconds=1)) == (
        "ok", "connected")  # fmt: skip
    assert connection_state_of(cls, True, None, None) == ("ok", "connected")  # the file's
    assert connection_state_of(cls, False, answered, None) == ("muted", "not connected")
    pbx = bare.registry.classes["cti"]  # no API to call: connected once configured
    assert connection_state_of(pbx, True, None, now) == ("ok", "connected")
    twilio = bare.registry.classes["twilio"]  # an API (history), but no connection test
    assert connection_state_of(twilio, True, None, now) == ("ok", "connected")


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
    assert field_error(cleared.data.decode(), "api_token") == "Required: fill this in."
    assert bare.registry.get("zendesk").options["api_token"] == ZENDESK_TOKEN  # unchanged


def field_error(page: str, name: str) -> str | None:
    """Return the error shown next to a setting's field, None when it has none."""
    marker = f'<p class="field-error" id="error-{name}">'
    if marker not in page:
        return None
    return html.unescape(page.split(marker)[1].split("</p>")[0])


@pytest.mark.parametrize(
    ("changes", "name", "message"),
    [
        ({"url": ""}, "url", "Required: fill this in."),
        ({"timeout_s": "ten"}, "timeout_s", "Enter a number, such as 7.5; “ten” is not one."),
        ({"ticket_updates_per_minute": "1.5"}, "ticket_updates_per_minute",
         "Enter a whole number, such as 30; “1.5” is not one."),
        ({"user_cache_ttl_s": "-5"}, "user_cache_ttl_s", "Must not be negative"),
        ({"timeout_s": "nan"}, "timeout_s", "Expected a finite number, got nan"),
        ({"timeout_s": "1e400"}, "timeout_s", "Expected a finite number, got inf"),
        ({"url": "acme.zendesk.com"}, "url",
         "'acme.zendesk.com' lacks its scheme: write https://acme.zendesk.com"),
        ({"url": "ftp://x"}, "url",
         "'ftp://x' is not a web address: only http:// and https:// URLs can be called"),
    ],
)  # fmt: skip
def test_bad_settings_are_refused_next_to_their_field_and_nothing_is_saved(
    bare, browser, fake_zendesk, changes, name, message
):
    """The form comes back with the error beside the field, in words, and what was typed."""
    response = submit(browser, "/admin/integrations/zendesk",
                      **zendesk_form(fake_zendesk.url, **changes))  # fmt: skip
    assert response.status_code == 400
    page = response.data.decode()
    assert field_error(page, name) == message
    alert = page.split('role="alert">')[1].split("</div>")[0]
    assert "integrations.zendesk." not in alert  # the file's key path is not the message
    assert ZENDESK_EMAIL in page  # the typed values are kept
    assert stored_documents(bare) == "" and bare.registry.get("zendesk") is None


def test_every_field_error_is_shown_at_once_with_its_label(bare, browser, fake_zendesk):
    """Three wrong fields get three errors in one answer, listed by label at the top."""
    form = zendesk_form(fake_zendesk.url, url="acme.zendesk.com", email="", timeout_s="ten")
    response = submit(browser, "/admin/integrations/zendesk", **form)
    assert response.status_code == 400
    page = response.data.decode()
    assert "Not saved: 3 settings need a change." in page
    assert {n for n in ("url", "email", "timeout_s", "api_token") if field_error(page, n)} == {
        "url", "email", "timeout_s"}  # fmt: skip
    assert '<a href="#setting-url">URL</a>' in page
    assert '<a href="#setting-timeout_s">Timeout (seconds)</a>' in page
    assert 'value="acme.zendesk.com"' in page and 'value="ten"' in page
    assert stored_documents(bare) == ""


def test_a_secret_typed_into_a_refused_form_is_not_sent_back(bare, browser, fake_zendesk):
    """The page asks for the secret again instead of echoing it into the HTML."""
    form = zendesk_form(fake_zendesk.url, url="ftp://x")
    page = submit(browser, "/admin/integrations/zendesk", **form).data.decode()
    assert ZENDESK_TOKEN not in page and ZENDESK_SECRET not in page
    assert page.count("type it again") == 2  # api_token and webhook_secret


def test_the_configuration_file_refuses_the_same_urls(database_url, make_config):
    """A URL without its scheme stops the start with the message the admin UI shows."""
    with pytest.raises(ConfigError, match="lacks its scheme: write https://acme.zendesk.com"):
        build_installation(make_config(database_url, "acme.zendesk.com"))


def test_a_bad_combination_is_refused_by_the_plugin_itself(bare, browser):
    """Salesforce needs one complete login; its own check names what is missing."""
    response = submit(browser, "/admin/integrations/salesforce", organization_id="00D70000000IVNp")
    assert response.status_code == 400
    assert "Not saved: Configure a login" in response.data.decode()


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


def test_disconnect_asks_first_then_turns_the_webhooks_off_and_forgets_the_secrets(
    bare, browser, fake_zendesk, hooks_for
):
    """The button leads to a question; only its confirmation disconnects, then 404 and no secret."""
    submit(browser, "/admin/integrations/zendesk", **zendesk_form(fake_zendesk.url))
    page = browser.get("/admin/integrations/zendesk").data.decode()
    assert 'href="/admin/integrations/zendesk/disconnect"' in page  # a link to the question
    question = browser.get("/admin/integrations/zendesk/disconnect").data.decode()
    assert "Disconnect Zendesk?" in question and "webhooks get 404" in question
    assert (
        'name="confirmed" value="yes"' in question
        and 'href="/admin/integrations/zendesk"' in question
    )

    unasked = submit(browser, "/admin/integrations/zendesk/disconnect")  # not from the question
    assert unasked.status_code == 302
    assert unasked.headers["Location"].endswith("/admin/integrations/zendesk/disconnect")
    assert bare.registry.get("zendesk") is not None

    done = submit(browser, "/admin/integrations/zendesk/disconnect", confirmed="yes")
    assert done.status_code == 302 and done.headers["Location"].endswith("/integrations/zendesk")
    body = fixture_bytes("ticket_created__mail.json")
    assert hooks_for(browser).zendesk(body).status_code == 404
    assert stored_documents(bare) == '{"off": true}'
    after = browser.get("/admin/integrations/zendesk").data.decode()
    assert "Zendesk is disconnected" in after and "not connected" in after


def test_an_integration_of_the_configuration_file_is_read_only(admin_client):
    """Its settings show as the file's; saving or disconnecting goes back saying why."""
    page = admin_client.get("/admin/integrations/zendesk").data.decode()
    assert "from the configuration file" in page and "Save and connect" not in page
    assert "Disconnect" not in page
    for gone in (submit(admin_client, "/admin/integrations/zendesk", url="http://elsewhere"),
                 submit(admin_client, "/admin/integrations/zendesk/disconnect", confirmed="yes"),
                 admin_client.get("/admin/integrations/zendesk/disconnect")):  # fmt: skip
        assert gone.status_code == 302 and gone.headers["Location"].endswith("/zendesk")
    after = admin_client.get("/admin/integrations/zendesk").data.decode()
    assert "configured in the configuration file; change it there." in after
    core = admin_client.application.extensions["carryover"]
    assert core.registry.get("zendesk").options["url"] != "http://elsewhere"


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


def revealed_secret(page: str) -> str | None:
    """Return the new secret a page shows, None when it shows none."""
    if '<code id="revealed-secret">' not in page:
        return None
    return page.split('<code id="revealed-secret">')[1].split("</code>")[0]


def test_a_generated_cti_secret_is_asked_for_shown_once_and_verifies_signed_events(bare, browser):
    """Asked first; made by the confirmed POST, shown on the page it redirects to, once."""
    question = browser.get("/admin/integrations/cti/generate-secret").data.decode()
    assert "Generate a new Generic CTI (any PBX) secret?" in question
    assert 'name="confirmed" value="yes"' in question
    unasked = submit(browser, "/admin/integrations/cti/generate-secret")
    assert unasked.status_code == 302 and unasked.headers["Location"].endswith("/generate-secret")
    assert stored_documents(bare) == ""  # nothing made without the confirmation

    response = submit(browser, "/admin/integrations/cti/generate-secret", confirmed="yes")
    assert response.status_code == 302
    assert response.headers["Location"].endswith("/admin/integrations/cti")
    secret = revealed_secret(browser.get(response.headers["Location"]).data.decode())
    assert secret is not None and secret.startswith("whsec_") and len(secret) > 40
    assert secret not in response.headers["Location"]
    cookie = browser.get_cookie("session")
    assert cookie is None or secret not in cookie.value  # sealed while it travels
    body = cti_body("newCall.json")
    accepted = browser.post("/hooks/cti", data=body, headers=cti_headers(body, secret=secret))
    assert accepted.status_code == 200
    reloaded = browser.get("/admin/integrations/cti").data.decode()
    assert revealed_secret(reloaded) is None and secret not in reloaded
    forged = browser.post("/hooks/cti", data=body, headers=cti_headers(body))  # another secret
    assert forged.status_code == 401
    assert bare.registry.get("cti").options["secret"] == secret  # the reload made no other


@pytest.mark.parametrize(("key", "in_path"), [("cti", True), ("generic", False)])
def test_the_secret_url_is_offered_only_where_the_path_is_a_proof(bare, browser, key, in_path):
    """A PBX may put the secret in the URL; the generic inbound takes signatures only."""
    response = submit(browser, f"/admin/integrations/{key}/generate-secret", confirmed="yes")
    page = browser.get(response.headers["Location"]).data.decode()
    secret = revealed_secret(page)
    assert secret is not None
    offered = f"/hooks/{key}/{quote(secret, safe='')}" in page
    assert offered is in_path


def test_a_secret_of_the_configuration_file_is_not_replaced_from_the_browser(admin_client):
    """The PBX's secret set in the file stays: asking or posting goes back saying why."""
    secret = admin_client.application.extensions["carryover"].registry.get("cti").options["secret"]
    for answer in (admin_client.get("/admin/integrations/cti/generate-secret"),
                   submit(admin_client, "/admin/integrations/cti/generate-secret",
                          confirmed="yes")):  # fmt: skip
        assert answer.status_code == 302 and answer.headers["Location"].endswith("/cti")
    page = admin_client.get("/admin/integrations/cti").data.decode()
    assert "configured in the configuration file; change it there." in page
    assert admin_client.application.extensions["carryover"].registry.get("cti").options[
        "secret"] == secret  # fmt: skip


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
