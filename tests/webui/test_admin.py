"""Admin access: accounts, login, sessions with an idle timeout, CSRF, throttling."""

from __future__ import annotations

import hashlib
import io
import re
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta

import pytest
from sqlalchemy import select, update
from werkzeug.security import check_password_hash

from middleware.admin.accounts import (
    AdminError,
    check_password,
    create_admin,
    remove_admin,
    set_password,
)
from middleware.cli import main
from middleware.installation import build_installation
from middleware.store.tables import admin_sessions, admins
from middleware.web.app import create_app
from tests.actions import AdminActions
from tests.values import ADMIN_PASSWORD

PASSWORD = ADMIN_PASSWORD


def log_in(client, username: str = "ada", password: str = PASSWORD, **extra: str):
    """Log in through the form, as a browser does."""
    return AdminActions(client).log_in(username, password, **extra)


@pytest.fixture
def ada(core):
    """Create the admin Ada."""
    return create_admin(core.engine, "ada", PASSWORD)


@pytest.fixture
def config_file(tmp_path, database_url) -> str:
    """Write a configuration file that points the command line at the test store."""
    config = tmp_path / "config.yaml"
    config.write_text(f"database_url: {database_url}\n", encoding="utf-8")
    return str(config)


def test_admin_create_stores_a_scrypt_hash_never_the_password(monkeypatch, database_url,
                                                              config_file,
                                                              make_config):  # fmt: skip
    """`carryover admin create` makes an admin whose password is kept only as a scrypt hash."""
    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + "\n"))
    assert main(["admin", "create", "--config", config_file, "--username", "ada",
                 "--password-stdin"]) == 0  # fmt: skip
    core = build_installation(make_config(database_url))
    try:
        with core.engine.connect() as conn:
            row = conn.execute(select(admins)).one()
        assert row.username == "ada"
        assert row.password_hash.startswith("scrypt:") and PASSWORD not in row.password_hash
    finally:
        core.dispose()


def test_admin_create_refuses_short_passwords_and_taken_names(core):
    """A password under 12 characters, or a name in use, is refused with the reason."""
    with pytest.raises(AdminError, match="at least 12"):
        create_admin(core.engine, "ada", "short")
    create_admin(core.engine, "ada", PASSWORD)
    with pytest.raises(AdminError, match="exists already"):
        create_admin(core.engine, "ada", PASSWORD)


# What zxcvbn says first about each: the reason opens the message, its advice follows.
WEAK_PASSWORDS = {
    "            ": 'Repeats like "aaa" are easy to guess.',
    "password1234": "This is a very common password.",
    "aaaaaaaaaaaa": 'Repeats like "aaa" are easy to guess.',
    "abcdefghijkl": 'Sequences like "abc" or "6543" are easy to guess.',
    "123456789012": "This is similar to a commonly used password.",
    "adaadaadaada": 'Repeats like "abcabcabc" are only slightly harder to guess than "abc".',
}


@pytest.mark.parametrize(
    ("password", "reason"), WEAK_PASSWORDS.items(), ids=list(map(repr, WEAK_PASSWORDS))
)
def test_common_repetitive_and_sequential_passwords_are_refused_saying_why(password, reason):
    """Spaces, a common password, repeats, a sequence and the name repeated are refused."""
    with pytest.raises(AdminError) as refused:
        check_password(password, "ada")
    assert str(refused.value).startswith(f"password: too easy to guess. {reason} ")


def test_a_password_made_from_the_username_is_refused():
    """zxcvbn is given the username, so the name itself as a password is refused."""
    with pytest.raises(AdminError) as refused:
        check_password("margaret.hamilton", "margaret.hamilton")
    assert str(refused.value) == (
        "password: too easy to guess. It is made from the username. "
        "Add another word or two. Uncommon words are better."
    )


def test_strong_passphrases_are_accepted_even_past_what_zxcvbn_judges():
    """A passphrase of uncommon words is accepted, also one longer than 72 characters."""
    for password in ("quartz lantern orbit meadow", PASSWORD, "quartz lantern orbit meadow " * 4):
        assert check_password(password, "ada") is None  # a weak one raises AdminError


def test_a_weak_password_is_refused_wherever_a_password_is_set(
    config_file, ada, core, monkeypatch, capsys
):
    """Creating an admin and changing a password, by function or command, refuse a weak one."""
    common = "password: too easy to guess. This is a very common password."
    with pytest.raises(AdminError, match=common):
        create_admin(core.engine, "grace", "password1234")
    with pytest.raises(AdminError, match=common):
        set_password(core.engine, "ada", "password1234")
    for command, name in (("create", "grace"), ("password", "ada")):
        monkeypatch.setattr("sys.stdin", io.StringIO("password1234\n"))
        argv = ["admin", command, "--config", config_file, "--username", name, "--password-stdin"]
        assert main(argv) == 2
        assert capsys.readouterr().err.startswith(f"carryover: {common} ")
    with core.engine.connect() as conn:
        assert conn.execute(select(admins.c.username)).scalars().all() == ["ada"]
        stored = conn.execute(select(admins.c.password_hash)).scalar_one()
    assert check_password_hash(stored, PASSWORD)


def test_admin_list_shows_each_admin_with_last_login_and_open_sessions(
    config_file, client, ada, core, capsys
):
    """`carryover admin list` prints one line per admin: name, created, last login, sessions."""
    create_admin(core.engine, "grace", "another long passphrase")
    log_in(client)
    capsys.readouterr()
    assert main(["admin", "list", "--config", config_file]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["username", "created", "(UTC)", "last", "login", "(UTC)", "open",
                                "sessions"]  # fmt: skip
    minute = r"\d{4}-\d\d-\d\d \d\d:\d\d"
    assert re.fullmatch(rf"ada +{minute}  {minute}  1", lines[1])
    assert re.fullmatch(rf"grace +{minute}  never +  0", lines[2])
    assert len(lines) == 3


def test_admin_password_sets_a_new_password_and_ends_the_sessions(
    config_file, client, ada, monkeypatch, capsys
):
    """`carryover admin password` replaces the password and ends the admin's open sessions."""
    log_in(client)
    monkeypatch.setattr("sys.stdin", io.StringIO("a new long passphrase\n"))
    assert main(["admin", "password", "--config", config_file, "--username", "ada",
                 "--password-stdin"]) == 0  # fmt: skip
    assert "password of ada changed; 1 open session(s) ended" in capsys.readouterr().out
    assert client.get("/admin/").status_code == 302
    assert log_in(client).status_code == 401
    assert log_in(client, password="a new long passphrase").status_code == 302


def test_admin_remove_removes_the_admin_and_ends_the_sessions(config_file, client, ada, capsys):
    """`carryover admin remove` deletes the account and ends its open sessions."""
    log_in(client)
    assert main(["admin", "remove", "--config", config_file, "--username", "ada"]) == 0
    assert "admin ada removed; 1 open session(s) ended" in capsys.readouterr().out
    assert client.get("/admin/").status_code == 302
    assert main(["admin", "list", "--config", config_file]) == 0
    assert "no admins yet" in capsys.readouterr().out


def test_admin_password_and_remove_name_an_unknown_admin(config_file, ada, capsys):
    """Both commands refuse a name that is no admin's, with exit status 2 and the reason."""
    for command in (["password", "--password-stdin"], ["remove"]):
        argv = ["admin", *command, "--config", config_file, "--username", "grace"]
        assert main(argv) == 2
        assert "username: no admin 'grace'" in capsys.readouterr().err


def test_admin_create_refuses_a_taken_name_before_asking_for_a_password(
    config_file, ada, monkeypatch, capsys
):
    """A taken username is said at once: nobody types a password twice for nothing."""

    def no_prompt(prompt=""):
        raise AssertionError(f"asked {prompt!r}")

    monkeypatch.setattr("getpass.getpass", no_prompt)
    assert main(["admin", "create", "--config", config_file, "--username", " ada "]) == 2
    assert "username: 'ada' is taken" in capsys.readouterr().err


def test_ctrl_c_at_the_password_prompt_ends_the_command_cleanly(config_file, monkeypatch, capsys):
    """Ctrl-C while the password is asked for: a line saying so and status 130, no traceback,
    no admin."""

    def interrupted(prompt=""):
        raise KeyboardInterrupt

    monkeypatch.setattr("getpass.getpass", interrupted)
    assert main(["admin", "create", "--config", config_file, "--username", "grace"]) == 130
    told = capsys.readouterr()
    assert "interrupted; nothing more was done" in told.err and "Traceback" not in told.err
    assert main(["admin", "list", "--config", config_file]) == 0
    assert "no admins yet" in capsys.readouterr().out


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


def test_a_nul_in_a_query_or_form_value_gets_400_not_a_store_error(client, ada):
    """A NUL in the login form, a search or a filter is refused with 400 (PostgreSQL holds none)."""
    assert log_in(client, username="ada\x00").status_code == 400
    assert log_in(client).status_code == 302
    for path in ("/admin/customers/?q=a%00b", "/admin/deliveries/?plugin=%00",
                 "/admin/deliveries/?direction=out&plugin=zendesk%00"):  # fmt: skip
        response = client.get(path)
        assert response.status_code == 400, path
        assert b"NUL character" in response.data


def test_state_changing_requests_without_the_csrf_token_are_refused(client, ada, admin):
    """A POST without the session's token (a forged form) gets 400 and changes nothing."""
    missing = client.post("/admin/login", data={"username": "ada", "password": PASSWORD})
    assert missing.status_code == 400
    assert b"security token" in missing.data
    assert client.get("/admin/").status_code == 302  # not logged in

    log_in(client)
    forged = client.post("/admin/logout", data={"csrf_token": "guessed"})
    assert forged.status_code == 400
    assert client.get("/admin/").status_code == 200  # still logged in
    token = admin.csrf(client.get("/admin/").data)
    assert client.post("/admin/logout", data={"csrf_token": token}).status_code == 302
    assert client.get("/admin/").status_code == 302


def test_the_csrf_token_is_accepted_from_a_header_for_scripts(client, ada, admin):
    """X-CSRF-Token carries the token for requests made by the pages' own scripts."""
    log_in(client)
    token = admin.csrf(client.get("/admin/").data)
    assert client.post("/admin/logout", headers={"X-CSRF-Token": token}).status_code == 302


def idle_for(core, seconds: float) -> None:
    """Move the last request of every open session back by that many seconds."""
    with core.engine.begin() as conn:
        for row in conn.execute(select(admin_sessions)).all():
            earlier = row.seen_at - timedelta(seconds=seconds)
            conn.execute(
                update(admin_sessions).where(admin_sessions.c.id == row.id).values(seen_at=earlier)
            )


def seen_at(core) -> datetime:
    """Return when the one open session last made a request, as the store has it."""
    with core.engine.connect() as conn:
        return conn.execute(select(admin_sessions.c.seen_at)).scalar_one()


def test_a_session_idle_for_longer_than_the_timeout_ends(client, ada, core):
    """After idle_timeout_s without a request the admin must log in again."""
    log_in(client)
    assert client.get("/admin/").status_code == 200
    idle_for(core, core.config.admin["idle_timeout_s"] + 1)
    assert client.get("/admin/").status_code == 302
    with client.session_transaction("/admin/") as session:
        assert "admin_session" not in session
    with core.engine.connect() as conn:
        assert conn.execute(select(admin_sessions)).all() == []


def test_an_active_session_stays_open(client, ada, core):
    """Each request resets the idle clock."""
    log_in(client)
    timeout = core.config.admin["idle_timeout_s"]
    idle_for(core, timeout - 5)
    assert client.get("/admin/").status_code == 200
    idle_for(core, 10)
    assert client.get("/admin/").status_code == 200


def test_requests_leave_the_cookie_alone_and_touch_the_session_once_a_minute(client, ada, core):
    """Requests never rewrite the session cookie, so a slow background request cannot put back
    an older session (a flash message already shown), and the store's last-seen time of the
    session is written at most once a minute."""
    log_in(client)
    opened = seen_at(core)
    assert "Set-Cookie" not in client.get("/admin/").headers
    assert "Set-Cookie" not in client.get("/admin/").headers
    assert seen_at(core) == opened
    idle_for(core, 61)
    assert "Set-Cookie" not in client.get("/admin/").headers
    assert seen_at(core) >= opened


def test_a_cookie_copied_before_logout_opens_nothing_after_it(client, ada, app, admin):
    """Logging out ends the session in the store: a copy of the cookie gets the login page."""
    log_in(client)
    copied = client.get_cookie("carryover_admin").value
    thief = app.test_client()
    thief.set_cookie("carryover_admin", copied)
    assert thief.get("/admin/").status_code == 200
    token = admin.csrf(client.get("/admin/").data)
    assert client.post("/admin/logout", data={"csrf_token": token}).status_code == 302
    response = thief.get("/admin/")
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/admin/login?next=/admin/")


def test_logging_in_again_ends_the_session_the_browser_had(client, ada, app):
    """A second login in the same browser ends its first session: a copy of it opens nothing."""
    log_in(client)
    copied = client.get_cookie("carryover_admin").value
    client.get("/admin/login")
    assert log_in(client).status_code == 302
    thief = app.test_client()
    thief.set_cookie("carryover_admin", copied)
    assert thief.get("/admin/").status_code == 302
    assert client.get("/admin/").status_code == 200


def test_the_store_keeps_a_hash_of_the_session_token_never_the_token(client, ada, core):
    """The cookie's session token is kept in the store only as its SHA-256."""
    log_in(client)
    with client.session_transaction("/admin/") as session:
        token = session["admin_session"]
    with core.engine.connect() as conn:
        row = conn.execute(select(admin_sessions)).one()
    assert row.token_hash == hashlib.sha256(token.encode()).hexdigest()
    assert row.admin_id == ada.id and token not in row.token_hash


def test_a_password_change_ends_every_session_of_that_admin_only(app, ada, core):
    """After a password change each of the admin's sessions gets the login page; another
    admin's session goes on, and the new password opens a new one."""
    create_admin(core.engine, "grace", "another long passphrase")
    laptop, phone, other = app.test_client(), app.test_client(), app.test_client()
    for browser in (laptop, phone):
        assert log_in(browser).status_code == 302
    assert log_in(other, "grace", "another long passphrase").status_code == 302
    assert set_password(core.engine, "ada", "a new long passphrase") == 2
    assert laptop.get("/admin/").status_code == phone.get("/admin/").status_code == 302
    assert other.get("/admin/").status_code == 200
    assert log_in(laptop).status_code == 401
    assert log_in(laptop, password="a new long passphrase").status_code == 302
    assert laptop.get("/admin/").status_code == 200


def test_removing_an_admin_ends_their_sessions(client, ada, core):
    """A removed admin's open session gets the login page, and their name no longer logs in."""
    log_in(client)
    assert remove_admin(core.engine, "ada") == 1
    assert client.get("/admin/").status_code == 302
    assert log_in(client).status_code == 401
    with pytest.raises(AdminError, match="no admin 'ada'"):
        remove_admin(core.engine, "ada")


def test_a_password_changed_while_a_login_is_checked_opens_no_session(
    client, ada, core, monkeypatch
):
    """A login whose password is replaced while it is being checked opens no session."""
    from middleware.admin import accounts as admins_module

    real = admins_module.check_password_hash

    def changed_meanwhile(password_hash: str, password: str) -> bool:
        valid = real(password_hash, password)
        set_password(core.engine, "ada", "a new long passphrase")
        return valid

    monkeypatch.setattr(admins_module, "check_password_hash", changed_meanwhile)
    assert log_in(client).status_code == 401
    assert client.get("/admin/").status_code == 302
    with core.engine.connect() as conn:
        assert conn.execute(select(admin_sessions)).all() == []


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
    from middleware.admin import accounts as admins_module

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
    tokens = [AdminActions.csrf(c.get("/admin/login").data) for c in clients]
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


def test_a_successful_login_clears_earlier_failures(client, ada, admin):
    """Failures before a successful login do not count towards the next lockout."""
    for _ in range(4):
        log_in(client, password="guess")
    log_in(client)
    token = admin.csrf(client.get("/admin/").data)
    client.post("/admin/logout", data={"csrf_token": token})
    for _ in range(4):
        assert log_in(client, password="guess").status_code == 401
    assert log_in(client).status_code == 302


def test_after_login_only_admin_paths_are_followed(client, ada, admin):
    """next= may name an admin page, never another site (no open redirect)."""
    assert log_in(client, next="/admin/?x=1").headers["Location"] == "/admin/?x=1"
    for target in ("https://evil.example/", "//evil.example/admin", "/pop?phone=1", "/admin\\x"):
        client.post("/admin/logout", data={"csrf_token": admin.csrf(client.get("/admin/").data)})
        assert log_in(client, next=target).headers["Location"] == "/admin/"


def test_a_next_target_with_a_line_break_or_non_ascii_leads_to_the_overview(client, ada, admin):
    """next= holding a line break (no Location header can) or non-ASCII text is not followed."""
    for target in ("/admin/\nx", "/admin/\r\nSet-Cookie: a=b", "/admin/💥", "/admin/\tx"):
        response = log_in(client, next=target)
        assert response.status_code == 302, repr(target)
        assert response.headers["Location"] == "/admin/"
        client.post("/admin/logout", data={"csrf_token": admin.csrf(client.get("/admin/").data)})


def test_the_session_cookie_is_http_only_same_site_and_new_at_login(client, ada):
    """The admin cookie is HttpOnly and SameSite=Lax, and logging in starts a new session."""
    client.get("/admin/login")
    before = client.get_cookie("carryover_admin").value
    response = log_in(client)
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie
    assert client.get_cookie("carryover_admin").value != before


def test_the_cookie_is_secure_when_carryover_is_served_over_https(
    database_url, fake_zendesk, make_config
):
    """With an https public_url the admin cookie carries Secure."""
    built = build_installation(
        make_config(database_url, public_url="https://carryover.example.com")
    )
    try:
        create_admin(built.engine, "ada", PASSWORD)
        client = create_app(core=built).test_client()
        response = client.get("/admin/login")
        assert "Secure" in response.headers["Set-Cookie"]
    finally:
        built.dispose()


def test_the_icon_browsers_ask_for_is_served(client):
    """/favicon.ico answers with Carryover's icon, not a 404 in every page's console."""
    response = client.get("/favicon.ico")
    assert response.status_code == 200 and response.mimetype == "image/svg+xml"
    assert response.data.startswith(b"<svg")
