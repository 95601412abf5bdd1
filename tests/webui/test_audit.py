"""The audit log: each admin change is recorded with who, what and to what, and shown by page."""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import timedelta

import pytest
from flask.testing import FlaskClient
from sqlalchemy import insert, select, update

from middleware.admin.accounts import create_admin
from middleware.admin.audit import changed_settings, cli_actor, record
from middleware.cli import main
from middleware.customers.identity import create_customer
from middleware.installation import Installation, build_installation
from middleware.store.tables import audit_log, identities, utcnow
from middleware.web.app import create_app
from tests.actions import AdminActions, ConfigFactory
from tests.payloads import fixture_bytes
from tests.values import ADMIN_PASSWORD, ZENDESK_EMAIL, ZENDESK_SECRET, ZENDESK_TOKEN


def logged(core: Installation) -> list[tuple[str, str, str, str]]:
    """Return the audit log as stored, oldest first: (actor, action, target, detail)."""
    with core.engine.connect() as conn:
        rows = conn.execute(select(audit_log).order_by(audit_log.c.id)).all()
    return [(r.actor, r.action, r.target, r.detail) for r in rows]


def post(client: FlaskClient, path: str, page: str, **form: object):
    """POST a form of the admin UI with the CSRF token of the page it is on."""
    token = AdminActions.csrf(client.get(page).data)
    return client.post(path, data={"csrf_token": token, **form})


@pytest.fixture
def bare(database_url: str, fake_zendesk, make_config: ConfigFactory) -> Iterator[Installation]:
    """An installation whose configuration file connects no integration."""
    built = build_installation(make_config(database_url))
    yield built
    built.dispose()


@pytest.fixture
def browser(bare: Installation) -> FlaskClient:
    """The logged-in admin Ada's client of the bare installation."""
    client = create_app(core=bare).test_client()
    create_admin(bare.engine, "ada", ADMIN_PASSWORD)
    assert AdminActions(client).log_in().status_code == 302
    return client


def people(core: Installation) -> tuple[int, int]:
    """Store Ann Lee (an email and a phone) and Bob Roe (an email); return their numbers."""
    with core.engine.begin() as conn:
        ann, bob = create_customer(conn, "Ann Lee"), create_customer(conn, "Bob Roe")
        for customer, kind, value in ((ann, "email", "ann@example.com"),
                                      (ann, "phone", "+14155550142"),
                                      (bob, "email", "bob@example.com")):  # fmt: skip
            conn.execute(insert(identities).values(
                customer_id=customer, type=kind, value=value, shared=False, caused_by="test",
                created_at=utcnow()))  # fmt: skip
    return ann, bob


# -- integrations ------------------------------------------------------------------------------
def test_connecting_names_the_settings_changed_and_never_a_secret_value(
    bare, browser, fake_zendesk
):
    """Connect, then change the token: the log names the fields, marks secrets, shows no value."""
    form = {"url": fake_zendesk.url, "email": ZENDESK_EMAIL, "api_token": ZENDESK_TOKEN,
            "webhook_secret": ZENDESK_SECRET}  # fmt: skip
    page = "/admin/integrations/zendesk"
    assert post(browser, page, page, **form).status_code == 302
    assert post(browser, page, page, **{**form, "api_token": "another-token"}).status_code == 302
    assert post(browser, page, page, **{**form, "api_token": ""}).status_code == 302  # kept
    assert logged(bare) == [
        ("ada", "integration.connect", "integration zendesk",
         "connected with url, email, api_token (secret), webhook_secret (secret), update_notes"),
        ("ada", "integration.connect", "integration zendesk", "changed api_token (secret)"),
        ("ada", "integration.connect", "integration zendesk", "saved, nothing changed"),
    ]  # fmt: skip
    shown = browser.get("/admin/audit/").data.decode()
    for secret in (ZENDESK_TOKEN, ZENDESK_SECRET, "another-token"):
        assert secret not in shown and all(secret not in str(row) for row in logged(bare))


def test_disconnect_new_secret_and_connection_tests_are_recorded(bare, browser, fake_zendesk):
    """A new CTI secret names the setting only; a test says passed; a disconnect is one line."""
    cti = "/admin/integrations/cti"
    assert post(browser, f"{cti}/generate-secret", cti, confirmed="yes").status_code == 302
    zendesk = "/admin/integrations/zendesk"
    post(browser, zendesk, zendesk, url=fake_zendesk.url, email=ZENDESK_EMAIL,
         api_token=ZENDESK_TOKEN, webhook_secret=ZENDESK_SECRET)  # fmt: skip
    assert post(browser, f"{zendesk}/test", zendesk).status_code == 302
    assert post(browser, f"{zendesk}/disconnect", zendesk, confirmed="yes").status_code == 302
    entries = logged(bare)
    assert entries[0] == ("ada", "integration.new_secret", "integration cti", "replaced secret")
    assert entries[2:] == [
        ("ada", "integration.test", "integration zendesk", "passed"),
        ("ada", "integration.disconnect", "integration zendesk", ""),
    ]


def test_a_failed_connection_test_is_recorded_with_its_reason(admin_client, core):
    """Zendesk not answering: the entry says the test failed and why."""
    page = "/admin/integrations/zendesk"
    assert post(admin_client, f"{page}/test", page).status_code == 302
    [(actor, action, target, detail)] = logged(core)
    assert (actor, action, target) == ("ada", "integration.test", "integration zendesk")
    assert detail.startswith("failed: ") and len(detail) > len("failed: ")


# -- mappings and templates --------------------------------------------------------------------
def test_mapping_saves_and_restores_are_recorded(admin_client, core):
    """A save carries the admin's note; a rollback names the version put back."""
    editor = "/admin/mappings/zendesk"
    document, _ = core.mappings.document("zendesk")
    changed = document.replace("    mail: email\n", "    mail: chat\n", 1)
    post(admin_client, editor, editor, document=changed, note="mail is chat for now")
    assert post(admin_client, f"{editor}/versions/1/rollback", editor).status_code == 302
    assert logged(core) == [
        ("ada", "mapping.save", "mapping zendesk", "mail is chat for now"),
        ("ada", "mapping.restore", "mapping zendesk", "version 1"),
    ]


def test_template_saves_and_restores_are_recorded(admin_client, core):
    """A save, a rollback to a version, and putting the shipped template back: three lines."""
    editor = "/admin/templates/zendesk.txt.j2"
    text, _ = core.renderer.saved.document("zendesk.txt.j2")
    saved = post(admin_client, editor, editor, document=text + "\n", note="a blank line")
    assert saved.status_code == 302
    post(admin_client, f"{editor}/versions/1/rollback", editor)
    post(admin_client, f"{editor}/restore", editor)
    assert logged(core) == [
        ("ada", "template.save", "template zendesk.txt.j2", "a blank line"),
        ("ada", "template.restore", "template zendesk.txt.j2", "version 1"),
        ("ada", "template.restore", "template zendesk.txt.j2", "the shipped template"),
    ]


# -- customers ---------------------------------------------------------------------------------
def test_merge_split_and_channels_are_recorded_and_shown_with_the_customers_name(
    admin_client, core
):
    """Entries keep the customer's number; the page adds the name the customer has now."""
    ann, bob = people(core)
    profile = f"/admin/customers/{ann}"
    merged = post(admin_client, f"{profile}/merge", profile, other=str(bob), confirmed="yes")
    assert merged.status_code == 302
    with core.engine.connect() as conn:
        phone = conn.execute(select(identities.c.id).where(identities.c.type == "phone")).scalar()
    split = f"{profile}/identities/{phone}/split"
    assert post(admin_client, split, profile, confirmed="yes").status_code == 302
    channels = f"{profile}/preferred-channels"
    assert post(admin_client, channels, profile, channel=["sms", "email"]).status_code == 302
    assert logged(core) == [
        ("ada", "customer.merge", f"customer {ann}", f"customer {bob} merged in"),
        ("ada", "customer.split", f"customer {ann}", f"to new customer {bob + 1}"),
        ("ada", "customer.channels", f"customer {ann}", "sms, email"),
    ]
    page = admin_client.get("/admin/audit/").data.decode()
    assert page.count(f"customer {ann} (Ann Lee)") == 3


def test_an_erasure_is_recorded_and_leaves_no_name_in_the_log(admin_client, core):
    """After an erasure, neither its entry nor earlier ones about the customer show the name."""
    ann, _ = people(core)
    profile = f"/admin/customers/{ann}"
    post(admin_client, f"{profile}/preferred-channels", profile, channel="sms")
    assert "Ann Lee" in admin_client.get("/admin/audit/").data.decode()
    assert post(admin_client, f"{profile}/erase", profile, confirm=str(ann)).status_code == 302
    actor, action, target, detail = logged(core)[-1]
    assert (actor, action, target) == ("ada", "customer.erase", f"customer {ann}")
    assert detail.startswith("removed ") and "2 identities" in detail
    assert "Ann Lee" not in admin_client.get("/admin/audit/").data.decode()
    assert all("Ann" not in str(row) for row in logged(core))


def test_a_refused_change_records_nothing(admin_client, core):
    """A merge of an unknown customer, refused, leaves the log as it was: no half-stored entry."""
    ann, _ = people(core)
    profile = f"/admin/customers/{ann}"
    refused = post(admin_client, f"{profile}/merge", profile, other="999", confirmed="yes")
    assert refused.status_code == 302  # back to the profile, saying why
    assert "Not merged" in admin_client.get(profile).data.decode()
    assert logged(core) == []


# -- deliveries and history imports ----------------------------------------------------------
def test_replays_of_one_and_of_every_dead_letter_are_recorded(admin_client, core, hooks):
    """Replaying delivery 1, then every dead one: two entries, the second with the count."""
    hooks.zendesk(fixture_bytes("ticket_created__mail.json"))
    detail = "/admin/deliveries/in/1"
    assert post(admin_client, f"{detail}/replay", detail).status_code == 302
    listing = "/admin/deliveries/?status=dead"
    assert post(admin_client, "/admin/deliveries/replay-dead", listing).status_code == 302
    assert logged(core) == [
        ("ada", "delivery.replay", "delivery 1", ""),
        ("ada", "delivery.replay_dead", "dead deliveries and notes", "0 queued again"),
    ]


def test_history_imports_started_and_stopped_in_the_browser_are_recorded(
    admin_client, core, monkeypatch
):
    """Start since a date, then stop: two entries naming the integration and the date."""
    monkeypatch.setattr("webui.history.HistoryImport.run", lambda job: job.stopping.wait(10))
    page = "/admin/integrations/zendesk"
    assert post(admin_client, f"{page}/history", page, since="2026-01-31").status_code == 302
    assert post(admin_client, f"{page}/history/stop", page).status_code == 302
    assert logged(core) == [
        ("ada", "history.start", "integration zendesk", "since 2026-01-31"),
        ("ada", "history.stop", "integration zendesk", ""),
    ]
    assert post(admin_client, f"{page}/history", page, since="someday").status_code == 302
    assert len(logged(core)) == 2  # not started: nothing to record


# -- admin accounts and the command line -----------------------------------------------------
def test_account_changes_in_the_browser_are_recorded(admin_client, core):
    """Disable, enable, unlock, password reset and removal of another admin: one line each."""
    create_admin(core.engine, "grace", "another long passphrase")
    grace = "/admin/admins/2"
    for change in ("disable", "enable", "unlock"):
        assert post(admin_client, f"{grace}/{change}", f"{grace}/{change}").status_code == 302
    new = "yet another long passphrase"
    post(admin_client, f"{grace}/password", f"{grace}/password", password=new, again=new)
    post(admin_client, f"{grace}/remove", f"{grace}/remove")
    assert logged(core) == [
        ("ada", f"admin.{change}", "admin grace", "")
        for change in ("disable", "enable", "unlock", "password", "remove")
    ]


@pytest.fixture
def config_file(tmp_path, database_url) -> str:
    """Write a configuration file that points the command line at the test store."""
    config = tmp_path / "config.yaml"
    config.write_text(f"database_url: {database_url}\n", encoding="utf-8")
    return str(config)


def test_command_line_changes_are_recorded_as_cli_with_the_system_user(
    config_file, core, monkeypatch, hooks
):
    """Account changes and replays from the shell are recorded as "cli (os user)"."""
    monkeypatch.setattr("getpass.getuser", lambda: "ops")
    assert cli_actor() == "cli (ops)"
    base = ["--config", config_file, "--username", "grace"]
    monkeypatch.setattr("sys.stdin", io.StringIO("another long passphrase\n"))
    assert main(["admin", "create", *base, "--password-stdin"]) == 0
    for command in ("disable", "enable", "unlock"):
        assert main(["admin", command, *base]) == 0
    monkeypatch.setattr("sys.stdin", io.StringIO("yet another long passphrase\n"))
    assert main(["admin", "password", *base, "--password-stdin"]) == 0
    assert main(["admin", "remove", *base]) == 0
    assert main(["deliveries", "replay", "in:1", "--config", config_file]) == 1  # no such one
    hooks.zendesk(fixture_bytes("ticket_created__mail.json"))
    assert main(["deliveries", "replay", "in:1", "--config", config_file]) == 0
    assert main(["deliveries", "replay", "--dead", "--config", config_file]) == 0
    entries = logged(core)
    assert entries[:6] == [
        ("cli (ops)", f"admin.{change}", "admin grace", "0 failed login(s) forgotten"
         if change == "unlock" else "")
        for change in ("create", "disable", "enable", "unlock", "password", "remove")
    ]  # fmt: skip
    assert entries[6:] == [
        ("cli (ops)", "delivery.replay", "delivery 1", ""),
        ("cli (ops)", "delivery.replay_dead", "dead deliveries and notes", "0 queued again"),
    ]


def test_a_failed_command_records_nothing(config_file, core, capsys):
    """Disabling an admin that does not exist changes nothing, and the log stays empty."""
    assert main(["admin", "disable", "--config", config_file, "--username", "nobody"]) == 2
    assert "no admin 'nobody'" in capsys.readouterr().err
    assert logged(core) == []


# -- the page ----------------------------------------------------------------------------------
def test_the_page_shows_the_newest_first_in_the_installations_time_zone(database_url, make_config):
    """Times are shown in `timezone`; the newest change comes first."""
    core = build_installation(make_config(database_url, timezone="Europe/Berlin"))
    try:
        client = create_app(core=core).test_client()
        create_admin(core.engine, "ada", ADMIN_PASSWORD)
        AdminActions(client).log_in()
        record(core.engine, "ada", "mapping.save", "mapping zendesk", "first")
        record(core.engine, "ada", "template.save", "template zendesk.txt.j2", "second")
        with core.engine.begin() as conn:
            first = select(audit_log.c.id).where(audit_log.c.detail == "first").scalar_subquery()
            conn.execute(update(audit_log).where(audit_log.c.id == first)
                         .values(at=utcnow().replace(2026, 1, 15, 11, 30, 5)))  # fmt: skip
        page = client.get("/admin/audit/").data.decode()
        assert "2026-01-15 12:30:05 CET" in page
        assert page.index("Template saved</td>") < page.index("Mapping saved</td>")
    finally:
        core.dispose()


def test_the_page_filters_by_admin_and_action_and_pages_through(admin_client, core):
    """60 entries: 50 a page with a link to the older ones; filters keep only what matches."""
    for n in range(55):
        record(core.engine, "ada", "mapping.save", "mapping zendesk", f"save {n}")
    for n in range(5):
        record(core.engine, "grace", "customer.erase", f"customer {n + 1}", "removed")
    first = admin_client.get("/admin/audit/").data.decode()
    assert "60 changes, page 1 of 2" in first and "page=2" in first
    assert "save 10<" in first and "save 9<" not in first  # 5 erasures, then saves 54 to 10
    second = admin_client.get("/admin/audit/?page=2").data.decode()
    assert "save 9<" in second and "save 0<" in second and "save 10<" not in second
    grace = admin_client.get("/admin/audit/?actor=grace").data.decode()
    assert "5 changes" in grace and "Mapping saved</td>" not in grace
    erased = admin_client.get("/admin/audit/?action=customer.erase").data.decode()
    assert erased.count("Customer erased</td>") == 5
    for odd in ("?page=x", "?page=0", "?page=99999999", "?action=nonsense"):
        assert admin_client.get(f"/admin/audit/{odd}").status_code == 200, odd


def test_the_audit_page_needs_a_login(client):
    """Without a session the audit log redirects to the login form."""
    assert client.get("/admin/audit/").status_code == 302


def test_a_long_detail_is_cut_to_a_line(core):
    """An upstream's long error becomes a detail of at most 500 characters."""
    record(core.engine, "ada", "integration.test", "integration zendesk", "x" * 5000)
    assert len(logged(core)[0][3]) == 500


def test_changed_settings_treat_a_blank_as_the_default():
    """A blank field that stays at its default is no change; a changed secret is named only."""
    from middleware.config import Setting

    schema = {"url": Setting(str), "timeout_s": Setting(int, default=10),
              "token": Setting(str, secret=True)}  # fmt: skip
    before = {"url": "https://a.example.com", "timeout_s": 10, "token": "s3cret"}
    same = {"url": "https://a.example.com", "timeout_s": None, "token": "s3cret"}
    assert changed_settings(before, same, schema) == "saved, nothing changed"
    other = {**same, "token": "other", "timeout_s": 20}
    assert changed_settings(before, other, schema) == "changed timeout_s, token (secret)"


def test_times_are_kept_in_utc(core):
    """The stored time is the store's naive UTC."""
    before = utcnow()
    record(core.engine, "ada", "mapping.save", "mapping zendesk")
    with core.engine.connect() as conn:
        at = conn.execute(select(audit_log.c.at)).scalar()
    assert before - timedelta(seconds=1) <= at <= utcnow()
