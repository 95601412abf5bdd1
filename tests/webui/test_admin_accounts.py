"""Admin accounts: the Admins page and `carryover admin disable/enable/unlock`."""

from __future__ import annotations

import hashlib
import re

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select

from middleware.admin.accounts import create_admin, disable_admin, list_admins, renew_session
from middleware.cli import main
from middleware.installation import Installation
from middleware.store.tables import admin_sessions, login_failures, utcnow
from tests.actions import AdminActions
from tests.values import ADMIN_PASSWORD

GRACE_PASSWORD = "another long passphrase"
GRACE = "/admin/admins/2"


@pytest.fixture
def grace(core: Installation, admin_client: FlaskClient, app) -> FlaskClient:
    """Create the admin Grace (after Ada) and return her own logged-in client."""
    create_admin(core.engine, "grace", GRACE_PASSWORD)
    client = app.test_client()
    assert AdminActions(client).log_in("grace", GRACE_PASSWORD).status_code == 302
    return client


@pytest.fixture
def config_file(tmp_path, database_url) -> str:
    """Write a configuration file that points the command line at the test store."""
    config = tmp_path / "config.yaml"
    config.write_text(f"database_url: {database_url}\n", encoding="utf-8")
    return str(config)


def confirm(client: FlaskClient, change: str, target: str = GRACE):
    """Open a change's confirmation page and press its button."""
    page = client.get(f"{target}/{change}")
    assert page.status_code == 200, page.data
    return client.post(f"{target}/{change}", data={"csrf_token": AdminActions.csrf(page.data)})


def lock_out(client: FlaskClient, username: str = "grace") -> None:
    """Fail to log in five times as the name, so the right password is refused too."""
    for _ in range(5):
        assert AdminActions(client).log_in(username, "not the password").status_code == 401
    assert AdminActions(client).log_in(username, GRACE_PASSWORD).status_code == 429


def test_the_page_lists_admins_with_last_login_and_state(admin_client, grace, core, app):
    """Each admin: last login, open sessions, disabled or locked out, and the buttons that fit."""
    lock_out(app.test_client())
    disable_admin(core.engine, "grace")
    page = admin_client.get("/admin/admins/").data.decode()
    ada_row, grace_row = re.findall(r"<tr>\s*<td>(.*?)</tr>", page, re.DOTALL)
    assert "ada" in ada_row and "(you)" in ada_row and "can log in" in ada_row
    assert "Disable…" not in ada_row and "Remove…" not in ada_row  # not oneself
    assert "grace" in grace_row and "disabled" in grace_row and "locked out" in grace_row
    assert "Unlock…" in grace_row and "Enable…" in grace_row and "Remove…" in grace_row
    assert re.search(r"<td>\d{4}-\d\d-\d\d \d\d:\d\d UTC</td>", grace_row)  # her last login


def test_a_disabled_admin_is_refused_at_login_and_their_sessions_end_at_once(
    admin_client, grace, app
):
    """Disabling (confirmed) ends Grace's session; her right password then gets a plain refusal."""
    assert grace.get("/admin/").status_code == 200
    response = confirm(admin_client, "disable")
    assert response.status_code == 302 and response.headers["Location"] == "/admin/admins/"
    said = admin_client.get("/admin/admins/").data.decode()
    assert "grace is disabled; 1 open session(s) ended." in said
    assert grace.get("/admin/").status_code == 302
    refused = AdminActions(app.test_client()).log_in("grace", GRACE_PASSWORD)
    assert refused.status_code == 401
    assert b"This admin account is disabled; another admin can enable it again." in refused.data
    wrong = AdminActions(app.test_client()).log_in("grace", "not the password")
    assert b"disabled" not in wrong.data  # said only to whoever knows the password
    assert confirm(admin_client, "enable").status_code == 302
    assert AdminActions(app.test_client()).log_in("grace", GRACE_PASSWORD).status_code == 302


def test_a_session_of_a_disabled_admin_opens_nothing(core):
    """Even a session row left behind (written as the account was disabled) opens nothing."""
    create_admin(core.engine, "grace", GRACE_PASSWORD)
    disable_admin(core.engine, "grace")
    token = "a-session-token-left-behind"
    with core.engine.begin() as conn:
        conn.execute(admin_sessions.insert().values(
            token_hash=hashlib.sha256(token.encode()).hexdigest(), admin_id=1,
            created_at=utcnow(), seen_at=utcnow()))  # fmt: skip
    assert renew_session(core.engine, token, 3600) is None


def test_unlock_clears_a_lockout(admin_client, grace, app, core):
    """Grace, locked out after five failures, logs in at once after an admin unlocks her."""
    lock_out(app.test_client())
    assert confirm(admin_client, "unlock").status_code == 302
    assert "grace is unlocked (5 failed login(s) forgotten)." in admin_client.get(
        "/admin/admins/").data.decode()  # fmt: skip
    assert AdminActions(app.test_client()).log_in("grace", GRACE_PASSWORD).status_code == 302
    assert not any(a.locked for a in list_admins(core.engine, 3600))


def test_an_admin_cannot_disable_or_remove_themself(admin_client, core):
    """Ada's own disable and remove are refused (409) before and at the confirmation."""
    for change in ("disable", "remove"):
        assert admin_client.get(f"/admin/admins/1/{change}").status_code == 409
        token = AdminActions.csrf(admin_client.get("/admin/admins/").data)
        refused = admin_client.post(f"/admin/admins/1/{change}", data={"csrf_token": token})
        assert refused.status_code == 409
        assert b"You cannot" in refused.data
    assert admin_client.get("/admin/").status_code == 200
    [ada] = list_admins(core.engine, 3600)
    assert ada.disabled_at is None


def test_removing_an_admin_ends_their_sessions(admin_client, grace, core):
    """Remove (confirmed) deletes Grace; her session ends."""
    assert confirm(admin_client, "remove").status_code == 302
    assert grace.get("/admin/").status_code == 302
    assert [a.username for a in list_admins(core.engine, 3600)] == ["ada"]
    assert admin_client.get(f"{GRACE}/remove").status_code == 404


def test_changes_need_the_csrf_token(admin_client, grace):
    """A forged disable is refused and Grace keeps her session."""
    assert admin_client.post(f"{GRACE}/disable").status_code == 400
    assert grace.get("/admin/").status_code == 200


def test_a_password_reset_takes_a_strong_password_typed_twice(admin_client, grace, app):
    """Differing or weak passwords get 400 with the reason; a good one ends Grace's sessions."""
    path = f"{GRACE}/password"
    token = AdminActions.csrf(admin_client.get(path).data)

    def reset(password: str, again: str):
        form = {"csrf_token": token, "password": password, "again": again}
        return admin_client.post(path, data=form)

    differ = reset("a brand new passphrase", "a brand new passphrase!")
    assert differ.status_code == 400 and b"The two passwords differ" in differ.data
    weak = reset("password1234", "password1234")
    assert weak.status_code == 400 and b"Too easy to guess" in weak.data
    assert b"password1234" not in weak.data  # what was typed is not sent back
    done = reset("a brand new passphrase", "a brand new passphrase")
    assert done.status_code == 302 and done.headers["Location"] == "/admin/admins/"
    assert grace.get("/admin/").status_code == 302
    fresh = AdminActions(app.test_client())
    assert fresh.log_in("grace", GRACE_PASSWORD).status_code == 401
    assert fresh.log_in("grace", "a brand new passphrase").status_code == 302


def test_resetting_ones_own_password_leads_to_the_login(admin_client):
    """Ada's own reset ends her session too: she is sent to log in with the new password."""
    path = "/admin/admins/1/password"
    token = AdminActions.csrf(admin_client.get(path).data)
    new = "a brand new passphrase"
    done = admin_client.post(path, data={"csrf_token": token, "password": new, "again": new})
    assert done.status_code == 302 and done.headers["Location"] == "/admin/login"
    login = admin_client.get("/admin/login").data.decode()
    assert "The password of ada is changed" in login
    assert AdminActions(admin_client).log_in("ada", new).status_code == 302


def test_an_unknown_admin_is_a_404(admin_client):
    """A number that is no admin's gets a 404 page, for each page and change."""
    for path in ("/admin/admins/99/disable", "/admin/admins/99/password"):
        assert admin_client.get(path).status_code == 404


# -- the command line ------------------------------------------------------------------------
def test_cli_disable_and_enable(config_file, core, client, capsys):
    """`admin disable` ends the sessions and stops logins; `admin enable` lets the admin in."""
    create_admin(core.engine, "ada", ADMIN_PASSWORD)
    assert AdminActions(client).log_in().status_code == 302
    assert main(["admin", "disable", "--config", config_file, "--username", "ada"]) == 0
    out = capsys.readouterr().out
    assert "admin ada disabled; 1 open session(s) ended" in out
    assert "no admin can log in now" in out  # she was the only one
    assert client.get("/admin/").status_code == 302
    assert AdminActions(client).log_in().status_code == 401
    assert main(["admin", "list", "--config", config_file]) == 0
    assert capsys.readouterr().out.splitlines()[1].endswith("  0  (disabled)")
    assert main(["admin", "enable", "--config", config_file, "--username", "ada"]) == 0
    assert "admin ada enabled" in capsys.readouterr().out
    assert AdminActions(client).log_in().status_code == 302
    assert main(["admin", "enable", "--config", config_file, "--username", "ada"]) == 0
    assert "was not disabled; nothing changed" in capsys.readouterr().out


def test_cli_unlock_clears_a_lockout(config_file, core, client, capsys):
    """`admin list` shows the lockout; `admin unlock` clears it and the right password works."""
    create_admin(core.engine, "grace", GRACE_PASSWORD)
    lock_out(client)
    assert main(["admin", "list", "--config", config_file]) == 0
    assert capsys.readouterr().out.splitlines()[1].endswith("(locked out)")
    assert main(["admin", "unlock", "--config", config_file, "--username", "grace"]) == 0
    assert "admin grace unlocked; 5 failed login(s) forgotten" in capsys.readouterr().out
    with core.engine.connect() as conn:
        assert conn.execute(select(login_failures)).all() == []
    assert AdminActions(client).log_in("grace", GRACE_PASSWORD).status_code == 302


def test_cli_changes_name_an_unknown_admin(config_file, core, capsys):
    """disable, enable and unlock refuse a name that is no admin's, with status 2."""
    for command in ("disable", "enable", "unlock"):
        assert main(["admin", command, "--config", config_file, "--username", "nobody"]) == 2
        assert "username: no admin 'nobody'" in capsys.readouterr().err
