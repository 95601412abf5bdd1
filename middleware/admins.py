"""Admins of the web UI: accounts with scrypt-hashed passwords, and throttled logins."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import Connection, Engine, Row, func, insert, select, text, update
from sqlalchemy.exc import IntegrityError
from werkzeug.security import check_password_hash, generate_password_hash

from middleware.store import admins, inserted_id, login_failures, utcnow

MIN_PASSWORD_CHARS = 12
# Hashed when a username is unknown, so a wrong name costs the same time as a wrong password.
DUMMY_HASH = generate_password_hash("carryover-no-such-admin")
# The classes of the two-key advisory locks that serialise login attempts on PostgreSQL (the
# one-key lock of identity resolution lives in another key space).
LOCK_SPACE_USERNAME = 7240101
LOCK_SPACE_ADDRESS = 7240102


class AdminError(ValueError):
    """An admin account cannot be created as asked; the message says why."""


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
class Throttle:
    """How many failed logins a name or an address may have in a window."""

    per_username: int = 5
    per_address: int = 20
    window_s: int = 900


def create_admin(engine: Engine, username: str, password: str) -> Admin:
    """Create an admin whose password is stored as a scrypt hash."""
    username = username.strip()
    if not username or len(username) > 255 or not username.isprintable():
        raise AdminError("username: expected 1 to 255 printable characters")
    if len(password) < MIN_PASSWORD_CHARS:
        raise AdminError(f"password: use at least {MIN_PASSWORD_CHARS} characters")
    values = {"username": username, "password_hash": generate_password_hash(password),
              "created_at": utcnow()}  # fmt: skip
    try:
        with engine.begin() as conn:
            admin_id = inserted_id(conn.execute(insert(admins).values(**values)))
    except IntegrityError:
        raise AdminError(f"username: an admin {username!r} exists already") from None
    return Admin(admin_id, username)


def admin_count(engine: Engine) -> int:
    """Return how many admins there are."""
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(admins)).scalar() or 0)


def log_in(
    engine: Engine, username: str, password: str, remote_addr: str, throttle: Throttle
) -> Admin:
    """Check a login; refuse it while the name or address has too many recent failures."""
    username, remote_addr = username.strip()[:255], remote_addr[:64]
    row, attempt_id = _claim_attempt(engine, username, remote_addr, throttle)
    valid = check_password_hash(row.password_hash if row else DUMMY_HASH, password)
    if row is None or not valid:
        raise LoginRefused("Wrong username or password.")  # the attempt stays a failure
    with engine.begin() as conn:
        conn.execute(update(admins).where(admins.c.id == row.id).values(last_login_at=utcnow()))
        # A success clears the name's failures up to its own attempt, so the next typo is not
        # the last straw; attempts claimed after it (in parallel) still count.
        conn.execute(login_failures.delete().where(
            login_failures.c.username == username, login_failures.c.id <= attempt_id))  # fmt: skip
    return Admin(int(row.id), row.username)


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


def _lock_attempts(conn: Connection, username: str, remote_addr: str) -> None:
    """Serialise login attempts for one name and one address (SQLite's BEGIN IMMEDIATE does).

    Transaction-level advisory locks, released at commit. Always the name's first, then the
    address's, so two attempts never wait for each other in a circle.
    """
    if conn.dialect.name != "postgresql":
        return
    lock = text("SELECT pg_advisory_xact_lock(CAST(:space AS integer), CAST(:key AS integer))")
    conn.execute(lock, {"space": LOCK_SPACE_USERNAME, "key": _lock_key(username)})
    conn.execute(lock, {"space": LOCK_SPACE_ADDRESS, "key": _lock_key(remote_addr)})


def _lock_key(value: str) -> int:
    """Return a 32-bit signed key for an advisory lock on a name or an address."""
    return int.from_bytes(hashlib.sha256(value.encode()).digest()[:4], "big", signed=True)


def find_admin(engine: Engine, admin_id: int) -> Admin | None:
    """Return the admin with that id, or None when the account is gone."""
    with engine.connect() as conn:
        row = conn.execute(select(admins).where(admins.c.id == admin_id)).first()
    return Admin(int(row.id), row.username) if row else None
