"""Admin access: accounts, login, sessions with an idle timeout, CSRF, throttling."""

from __future__ import annotations

import io
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import ADMIN_PASSWORD, admin_log_in, csrf_of, make_config
from sqlalchemy import select

from middleware.admins import AdminError, create_admin
from middleware.app import create_app
from middleware.cli import main
from middleware.core import build_carryover
from middleware.store import admins

PASSWORD = ADMIN_PASSWORD


def log_in(client, username: str = "ada", password: str = PASSWORD, **extra: str):
    """Log in through the form, as a browser does."""
    return admin_log_in(client, username, password, **extra)


@pytest.fixture
def ada(core):
    """Create the admin Ada."""
    return create_admin(core.engine, "ada", PASSWORD)


def test_admin_create_stores_a_scrypt_hash_never_the_password(tmp_path, monkeypatch, database_url):
    """`carryover admin create` makes an admin whose password is kept only as a scrypt hash."""
    config = tmp_path / "config.yaml"
    config.write_text(f"database_url: {database_url}\n", encoding="utf-8")
    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + "\n"))
    assert main(["admin", "create", "--config", str(config), "--username", "ada",
                 "--password-stdin"]) == 0  # fmt: skip
    core = build_carryover(make_config(database_url))
    try:
        with core.engine.connect() as conn:
            row = conn.execute(select(admins)).one()
        assert row.username == "ada"
        assert row.password_hash.startswith("scrypt:") and PASSWORD not in row.password_hash
    finally:
        core.dispose()


def test_admin_create_refuses_short_passwords_and_taken_names(tmp_path, monkeypatch, core, capsys):
    """A password under 12 characters, or a name in use, is refused with the reason."""
    with pytest.raises(AdminError, match="at least 12"):
        create_admin(core.engine, "ada", "short")
    create_admin(core.engine, "ada", PASSWORD)
    with pytest.raises(AdminError, match="exists already"):
        create_admin(core.engine, "ada", PASSWORD)


def test_every_admin_page_needs_a_login(client, ada):
    """Without a session the overview redirects to the login form, which names where to return."""
    response = client.get("/admin/")
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/admin/login?next=/admin/")
    assert client.get("/").headers["Location"] == "/admin/"


def test_logging_in_opens_the_overview(client, ada):
    """The right name and password lead to the overview, which shows the integrations."""
    response = log_in(client)
    assert response.status_code == 302 and response.headers["Location"] == "/admin/"
    page = client.get("/admin/")
    assert page.status_code == 200
    assert b"Zendesk" in page.data and b"/hooks/zendesk" in page.data


def test_a_wrong_password_is_refused_without_saying_which_part_was_wrong(client, ada):
    """A wrong password and an unknown name get the same 401 and message."""
    wrong_password = log_in(client, password="not the password")
    unknown_name = log_in(client, username="grace")
    assert wrong_password.status_code == unknown_name.status_code == 401
    assert b"Wrong username or password." in wrong_password.data
    assert b"Wrong username or password." in unknown_name.data
    assert client.get("/admin/").status_code == 302


def test_state_changing_requests_without_the_csrf_token_are_refused(client, ada):
    """A POST without the session's token (a forged form) gets 400 and changes nothing."""
    missing = client.post("/admin/login", data={"username": "ada", "password": PASSWORD})
    assert missing.status_code == 400
    assert b"security token" in missing.data
    assert client.get("/admin/").status_code == 302  # not logged in

    log_in(client)
    forged = client.post("/admin/logout", data={"csrf_token": "guessed"})
    assert forged.status_code == 400
    assert client.get("/admin/").status_code == 200  # still logged in
    token = csrf_of(client.get("/admin/").data)
    assert client.post("/admin/logout", data={"csrf_token": token}).status_code == 302
    assert client.get("/admin/").status_code == 302


def test_the_csrf_token_is_accepted_from_a_header_for_scripts(client, ada):
    """X-CSRF-Token carries the token for requests made by the pages' own scripts."""
    log_in(client)
    token = csrf_of(client.get("/admin/").data)
    assert client.post("/admin/logout", headers={"X-CSRF-Token": token}).status_code == 302


def test_a_session_idle_for_longer_than_the_timeout_ends(client, ada, core):
    """After idle_timeout_s without a request the admin must log in again."""
    log_in(client)
    assert client.get("/admin/").status_code == 200
    timeout = core.config.admin["idle_timeout_s"]
    with client.session_transaction("/admin/") as session:
        session["seen"] -= timeout + 1
    assert client.get("/admin/").status_code == 302
    with client.session_transaction("/admin/") as session:
        assert "admin_id" not in session


def test_an_active_session_stays_open(client, ada, core):
    """Each request resets the idle clock."""
    log_in(client)
    timeout = core.config.admin["idle_timeout_s"]
    with client.session_transaction("/admin/") as session:
        session["seen"] -= timeout - 5
    assert client.get("/admin/").status_code == 200
    with client.session_transaction("/admin/") as session:
        session["seen"] -= 10
    assert client.get("/admin/").status_code == 200


def test_requests_within_a_minute_leave_the_session_cookie_alone(client, ada):
    """Only a request a minute after the last rewrites the cookie, so a slow background
    request cannot put back an older session (a flash message already shown)."""
    log_in(client)
    client.get("/admin/")
    assert "Set-Cookie" not in client.get("/admin/").headers
    with client.session_transaction("/admin/") as session:
        session["seen"] -= 61
    assert "carryover_admin=" in client.get("/admin/").headers["Set-Cookie"]


def test_repeated_failures_lock_the_name_out_even_with_the_right_password(client, ada):
    """After 5 failures within the window, even the right password gets 429 and Retry-After."""
    for _ in range(5):
        assert log_in(client, password="guess").status_code == 401
    locked = log_in(client)
    assert locked.status_code == 429
    assert int(locked.headers["Retry-After"]) == 900
    assert b"Too many failed logins" in locked.data


@pytest.fixture
def password_checks(monkeypatch) -> list[str]:
    """Record every password hash that a login checks."""
    from middleware import admins as admins_module

    checks: list[str] = []
    real = admins_module.check_password_hash

    def counted(password_hash: str, password: str) -> bool:
        checks.append(password_hash)
        return real(password_hash, password)

    monkeypatch.setattr(admins_module, "check_password_hash", counted)
    return checks


def post_logins_in_parallel(app, usernames: list[str]) -> Counter:
    """Post one wrong password for each name, all at once, each from a client of its own."""
    clients = [app.test_client() for _ in usernames]
    tokens = [csrf_of(c.get("/admin/login").data) for c in clients]
    start = threading.Barrier(len(clients))

    def attempt(i: int) -> int:
        form = {"username": usernames[i], "password": "not the password", "csrf_token": tokens[i]}
        start.wait()
        return clients[i].post("/admin/login", data=form).status_code

    with ThreadPoolExecutor(len(clients)) as pool:
        return Counter(pool.map(attempt, range(len(clients))))


def test_parallel_wrong_passwords_for_one_name_are_checked_only_up_to_the_limit(
    app, ada, password_checks
):
    """40 wrong passwords for one name at once: 5 are checked (401), the other 35 get 429."""
    statuses = post_logins_in_parallel(app, ["ada"] * 40)
    assert statuses == Counter({401: 5, 429: 35})
    assert len(password_checks) == 5


def test_parallel_logins_from_one_address_are_checked_only_up_to_its_limit(
    app, ada, password_checks
):
    """40 names tried at once from one address: 20 are checked (401), the other 20 get 429."""
    statuses = post_logins_in_parallel(app, [f"name{i}" for i in range(40)])
    assert statuses == Counter({401: 20, 429: 20})
    assert len(password_checks) == 20


def test_a_successful_login_clears_earlier_failures(client, ada):
    """Failures before a successful login do not count towards the next lockout."""
    for _ in range(4):
        log_in(client, password="guess")
    log_in(client)
    token = csrf_of(client.get("/admin/").data)
    client.post("/admin/logout", data={"csrf_token": token})
    for _ in range(4):
        assert log_in(client, password="guess").status_code == 401
    assert log_in(client).status_code == 302


def test_after_login_only_admin_paths_are_followed(client, ada):
    """next= may name an admin page, never another site (no open redirect)."""
    assert log_in(client, next="/admin/?x=1").headers["Location"] == "/admin/?x=1"
    for target in ("https://evil.example/", "//evil.example/admin", "/pop?phone=1", "/admin\\x"):
        client.post("/admin/logout", data={"csrf_token": csrf_of(client.get("/admin/").data)})
        assert log_in(client, next=target).headers["Location"] == "/admin/"


def test_the_session_cookie_is_http_only_same_site_and_new_at_login(client, ada):
    """The admin cookie is HttpOnly and SameSite=Lax, and logging in starts a new session."""
    client.get("/admin/login")
    before = client.get_cookie("carryover_admin").value
    response = log_in(client)
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie
    assert client.get_cookie("carryover_admin").value != before


def test_the_cookie_is_secure_when_carryover_is_served_over_https(database_url, fake_zendesk):
    """With an https public_url the admin cookie carries Secure."""
    built = build_carryover(make_config(database_url, public_url="https://carryover.example.com"))
    try:
        create_admin(built.engine, "ada", PASSWORD)
        client = create_app(core=built).test_client()
        response = client.get("/admin/login")
        assert "Secure" in response.headers["Set-Cookie"]
    finally:
        built.dispose()
