"""Admins of the web UI: accounts with scrypt-hashed passwords, throttled logins, sessions.

Sessions live in the store, not only in the signed cookie: a cookie copied before a logout,
a password change or the removal of the account opens nothing afterwards. Passwords are
judged by zxcvbn, which knows common passwords, words, names, keyboard patterns, repeats and
sequences, so an admin account is not opened with `password1234` or its own name.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, Row, delete, func, insert, select, text, update
from sqlalchemy.exc import IntegrityError
from werkzeug.security import check_password_hash, generate_password_hash

from middleware.store.tables import (
    admin_sessions,
    admins,
    advisory_key,
    inserted_id,
    login_failures,
    reading,
    utcnow,
)

MIN_PASSWORD_CHARS = 12
# zxcvbn's score 3 is "safely unguessable": 10^8 guesses or more, far beyond an online attack
# even without the lockout, and some protection should the scrypt hashes ever leak.
MIN_PASSWORD_SCORE = 3
# zxcvbn refuses longer input, since its cost grows faster than the length (72 characters
# take up to about 60 ms); the first 72 characters of a passphrase are judged.
JUDGED_PASSWORD_CHARS = 72
# zxcvbn keeps the user inputs of a call in a module-level dictionary: two calls at once
# could judge a password against the other call's username.
_ZXCVBN_LOCK = threading.Lock()
# A session's last request is written at most this often: a write on every page view would
# queue every admin request behind SQLite's single writer. It is how precisely the idle
# timeout is kept.
SEEN_RESOLUTION_S = 60
# Hashed when a username is unknown, so a wrong name costs the same time as a wrong password.
DUMMY_HASH = generate_password_hash("carryover-no-such-admin")
# The classes of the two-key advisory locks that serialise login attempts on PostgreSQL (the
# one-key lock of identity resolution lives in another key space).
LOCK_SPACE_USERNAME = 7240101
LOCK_SPACE_ADDRESS = 7240102


class AdminError(ValueError):
    """An admin account cannot be created or changed as asked; the message says why."""


class LoginRefused(Exception):
    """A login failed: wrong name or password, or too many recent failures."""

    def __init__(self, message: str, retry_after_s: int | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class Admin:
    """One admin of the web UI."""

    id: int
    username: str


@dataclass(frozen=True)
class AdminAccount:
    """An admin as `carryover admin list` shows it."""

    username: str
    created_at: datetime
    last_login_at: datetime | None
    open_sessions: int
    id: int = 0
    disabled_at: datetime | None = None
    locked: bool = False  # too many failed logins lately: refused until unlocked or the window ends


@dataclass(frozen=True)
class AdminSession:
    """A session opened by a login: the token goes into the cookie, the store keeps its hash."""

    admin: Admin
    token: str


@dataclass(frozen=True)
class Throttle:
    """How many failed logins a name or an address may have in a window."""

    per_username: int = 5
    per_address: int = 20
    window_s: int = 900

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> Throttle:
        """Build the throttle that the configuration's `admin` section describes."""
        return cls(
            per_username=options["failed_logins_per_username"],
            per_address=options["failed_logins_per_address"],
            window_s=options["failed_login_window_s"],
        )


def create_admin(engine: Engine, username: str, password: str) -> Admin:
    """Create an admin whose password is stored as a scrypt hash."""
    username = username.strip()
    if not username or len(username) > 255 or not username.isprintable():
        raise AdminError("username: expected 1 to 255 printable characters")
    check_password(password, username)
    values = {"username": username, "password_hash": generate_password_hash(password),
              "created_at": utcnow()}  # fmt: skip
    try:
        with engine.begin() as conn:
            admin_id = inserted_id(conn.execute(insert(admins).values(**values)))
    except IntegrityError:
        raise AdminError(f"username: an admin {username!r} exists already") from None
    return Admin(admin_id, username)


def check_password(password: str, username: str) -> None:
    """Refuse a password that is short, common, repetitive or built from the username."""
    if len(password) < MIN_PASSWORD_CHARS:
        raise AdminError(f"password: use at least {MIN_PASSWORD_CHARS} characters")
    # Imported here: its frequency lists take about 13 MiB, and only setting a password (the
    # command line, a few milliseconds a call) needs them, not the web or worker processes.
    from zxcvbn import zxcvbn

    names = [username.strip(), *(p for p in re.split(r"[\W_]+", username) if len(p) >= 3)]
    with _ZXCVBN_LOCK:
        judged = zxcvbn(password[:JUDGED_PASSWORD_CHARS], user_inputs=names)
    if judged["score"] >= MIN_PASSWORD_SCORE:
        return
    from_name = any(match.get("dictionary_name") == "user_inputs" for match in judged["sequence"])
    feedback = judged["feedback"]
    why = _why_weak(feedback["warning"], feedback["suggestions"], from_name)
    raise AdminError(f"password: too easy to guess. {why}")


def _why_weak(warning: str, suggestions: list[str], from_name: bool) -> str:
    """Say in plain words why zxcvbn found a password weak, and what would help."""
    if from_name:
        reason = "It is made from the username."
    else:  # zxcvbn gives no warning for, say, a short phrase of common words
        reason = warning or "Password-guessing tools would try it early."
    return " ".join([reason, *suggestions])


def set_password(engine: Engine, username: str, password: str) -> int:
    """Change an admin's password and end their sessions; return how many were open."""
    check_password(password, username.strip())
    password_hash = generate_password_hash(password)
    with engine.begin() as conn:
        admin_id = _lock_admin(conn, username)
        # The account row first: a login finishing at the same moment waits for it, then
        # finds the hash it checked gone (see _open_session), so no session outlives this.
        conn.execute(update(admins).where(admins.c.id == admin_id)
                     .values(password_hash=password_hash))  # fmt: skip
        return _end_sessions_of(conn, admin_id)


def disable_admin(engine: Engine, username: str) -> int:
    """Stop an admin from logging in and end their sessions; return how many were open."""
    with engine.begin() as conn:
        admin_id = _lock_admin(conn, username)
        # As for a password change: a login finishing now waits for this row, then opens nothing.
        conn.execute(update(admins).where(admins.c.id == admin_id, admins.c.disabled_at.is_(None))
                     .values(disabled_at=utcnow()))  # fmt: skip
        return _end_sessions_of(conn, admin_id)


def enable_admin(engine: Engine, username: str) -> bool:
    """Let a disabled admin log in again; return False when they were not disabled."""
    with engine.begin() as conn:
        admin_id = _lock_admin(conn, username)
        changed = conn.execute(
            update(admins).where(admins.c.id == admin_id, admins.c.disabled_at.is_not(None))
            .values(disabled_at=None)
        ).rowcount  # fmt: skip
    return bool(changed)


def unlock_admin(engine: Engine, username: str) -> int:
    """Forget an admin's failed logins, which lock the name out; return how many there were."""
    with engine.begin() as conn:
        _lock_admin(conn, username)
        cleared = conn.execute(
            delete(login_failures).where(login_failures.c.username == username.strip())
        ).rowcount
    return int(cleared)


def enabled_count(engine: Engine) -> int:
    """Return how many admins can log in (are not disabled)."""
    query = select(func.count()).select_from(admins).where(admins.c.disabled_at.is_(None))
    with engine.connect() as conn:
        return int(conn.execute(query).scalar() or 0)


def remove_admin(engine: Engine, username: str) -> int:
    """Remove an admin and end their sessions; return how many were open."""
    with engine.begin() as conn:
        admin_id = _lock_admin(conn, username)
        ended = _end_sessions_of(conn, admin_id)
        conn.execute(delete(admins).where(admins.c.id == admin_id))
    return ended


def _lock_admin(conn: Connection, username: str) -> int:
    """Return the id of the admin with that name, locking the row until the transaction ends."""
    found = conn.execute(
        select(admins.c.id).where(admins.c.username == username.strip()).with_for_update()
    ).first()
    if found is None:
        raise AdminError(f"username: no admin {username.strip()!r}")
    return int(found.id)


def list_admins(
    engine: Engine, idle_timeout_s: int, throttle: Throttle | None = None
) -> list[AdminAccount]:
    """Return every admin, by name, with their last login, open sessions and whether locked."""
    throttle = throttle or Throttle()
    now = utcnow()
    idle_since = now - timedelta(seconds=idle_timeout_s)
    sessions = (
        select(func.count()).select_from(admin_sessions)
        .where(admin_sessions.c.admin_id == admins.c.id, admin_sessions.c.seen_at >= idle_since)
        .scalar_subquery()
    )  # fmt: skip
    failures = (
        select(func.count()).select_from(login_failures)
        .where(login_failures.c.username == admins.c.username,
               login_failures.c.at >= now - timedelta(seconds=throttle.window_s))
        .scalar_subquery()
    )  # fmt: skip
    query = select(admins.c.username, admins.c.created_at, admins.c.last_login_at, sessions,
                   admins.c.id, admins.c.disabled_at, failures)  # fmt: skip
    with reading(engine) as conn:
        rows = conn.execute(query.order_by(admins.c.username)).all()
    return [AdminAccount(row[0], row[1], row[2], int(row[3] or 0), int(row[4]), row[5],
                         int(row[6] or 0) >= throttle.per_username) for row in rows]  # fmt: skip


def admin_count(engine: Engine) -> int:
    """Return how many admins there are."""
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(admins)).scalar() or 0)


def log_in(
    engine: Engine,
    username: str,
    password: str,
    remote_addr: str,
    throttle: Throttle,
    idle_timeout_s: int,
) -> AdminSession:
    """Check a login and open a session; refuse while the name or address failed too often."""
    username, remote_addr = username.strip()[:255], remote_addr[:64]
    row, attempt_id = _claim_attempt(engine, username, remote_addr, throttle)
    valid = check_password_hash(row.password_hash if row else DUMMY_HASH, password)
    if row is None or not valid:
        raise LoginRefused("Wrong username or password.")  # the attempt stays a failure
    if row.disabled_at is not None:  # said only to whoever knows the password
        raise LoginRefused("This admin account is disabled; another admin can enable it again.")
    with engine.begin() as conn:
        token = _open_session(conn, row, idle_timeout_s)
        if token is not None:
            # A success clears the name's failures up to its own attempt, so the next typo is
            # not the last straw; attempts claimed after it (in parallel) still count.
            earlier = login_failures.c.id <= attempt_id
            conn.execute(
                login_failures.delete().where(login_failures.c.username == username, earlier)
            )
    if token is None:  # the password changed, or the account went, while it was checked
        raise LoginRefused("Wrong username or password.")
    return AdminSession(Admin(int(row.id), row.username), token)


def _claim_attempt(
    engine: Engine, username: str, remote_addr: str, throttle: Throttle
) -> tuple[Row[Any] | None, int]:
    """Count the attempt as a failure before its password is checked, or refuse it.

    Counting and recording happen in one serialised write, so parallel attempts cannot all
    see the count under the limit: the password is checked at most `per_username` times a
    window. The attempt is cleared again when the password turns out right.
    """
    since = utcnow() - timedelta(seconds=throttle.window_s)
    recent = select(func.count()).select_from(login_failures).where(login_failures.c.at >= since)
    with engine.begin() as conn:  # on SQLite BEGIN IMMEDIATE: writers queue here
        _lock_attempts(conn, username, remote_addr)
        by_name = conn.execute(recent.where(login_failures.c.username == username)).scalar()
        by_address = conn.execute(
            recent.where(login_failures.c.remote_addr == remote_addr)
        ).scalar()
        if (by_name or 0) >= throttle.per_username or (by_address or 0) >= throttle.per_address:
            raise LoginRefused("Too many failed logins; try again later.", throttle.window_s)
        attempt_id = inserted_id(conn.execute(insert(login_failures).values(
            username=username, remote_addr=remote_addr, at=utcnow())))  # fmt: skip
        row = conn.execute(select(admins).where(admins.c.username == username)).first()
    return row, attempt_id


def _open_session(conn: Connection, row: Row[Any], idle_timeout_s: int) -> str | None:
    """Open a session for the admin whose password was just checked; return its token.

    Only while that password is still the admin's and the account enabled: a password change,
    a disabling or a removal that committed meanwhile wins (the UPDATE waits for it, then
    matches nothing), and None is returned.
    """
    now = utcnow()
    still = conn.execute(
        update(admins).where(admins.c.id == row.id, admins.c.password_hash == row.password_hash,
                             admins.c.disabled_at.is_(None))
        .values(last_login_at=now)
    ).rowcount  # fmt: skip
    if not still:
        return None
    token = secrets.token_urlsafe(32)
    conn.execute(insert(admin_sessions).values(
        token_hash=_token_hash(token), admin_id=row.id, created_at=now, seen_at=now))  # fmt: skip
    # Sessions left idle (a browser closed without logging out) are cleared at each login.
    idle_since = now - timedelta(seconds=idle_timeout_s)
    conn.execute(delete(admin_sessions).where(admin_sessions.c.seen_at < idle_since))
    return token


def _lock_attempts(conn: Connection, username: str, remote_addr: str) -> None:
    """Serialise login attempts for one name and one address (SQLite's BEGIN IMMEDIATE does).

    Transaction-level advisory locks, released at commit. Always the name's first, then the
    address's, so two attempts never wait for each other in a circle.
    """
    if conn.dialect.name != "postgresql":
        return
    lock = text("SELECT pg_advisory_xact_lock(CAST(:space AS integer), CAST(:key AS integer))")
    conn.execute(lock, {"space": LOCK_SPACE_USERNAME, "key": advisory_key(username)})
    conn.execute(lock, {"space": LOCK_SPACE_ADDRESS, "key": advisory_key(remote_addr)})


def renew_session(engine: Engine, token: str, idle_timeout_s: int) -> Admin | None:
    """Renew a session's idle timer and return its admin; None once it ended.

    A session ends on logout, a password change or removal, or here when it was idle longer
    than `idle_timeout_s` (it is then deleted).
    """
    query = (
        select(admin_sessions.c.id, admin_sessions.c.seen_at, admins.c.id.label("admin_id"),
               admins.c.username)
        .join_from(admin_sessions, admins, admin_sessions.c.admin_id == admins.c.id)
        .where(admin_sessions.c.token_hash == _token_hash(token), admins.c.disabled_at.is_(None))
    )  # fmt: skip
    with reading(engine) as conn:
        row = conn.execute(query).first()
    if row is None:
        return None
    now = utcnow()
    idle_s = (now - row.seen_at).total_seconds()
    if idle_s > idle_timeout_s:
        with engine.begin() as conn:
            conn.execute(delete(admin_sessions).where(admin_sessions.c.id == row.id))
        return None
    if idle_s > SEEN_RESOLUTION_S:
        with engine.begin() as conn:
            conn.execute(update(admin_sessions).where(admin_sessions.c.id == row.id)
                         .values(seen_at=now))  # fmt: skip
    return Admin(int(row.admin_id), row.username)


def end_session(engine: Engine, token: str) -> None:
    """End one session (a logout)."""
    with engine.begin() as conn:
        conn.execute(
            delete(admin_sessions).where(admin_sessions.c.token_hash == _token_hash(token))
        )


def _end_sessions_of(conn: Connection, admin_id: int) -> int:
    result = conn.execute(delete(admin_sessions).where(admin_sessions.c.admin_id == admin_id))
    return int(result.rowcount)


def _token_hash(token: str) -> str:
    # The token is 256 random bits, so a plain SHA-256 suffices: nothing to guess, no salt needed.
    return hashlib.sha256(token.encode()).hexdigest()
