"""Admins of the web UI: accounts with scrypt-hashed passwords, and throttled logins."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import Engine, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from werkzeug.security import check_password_hash, generate_password_hash

from middleware.store import admins, inserted_id, login_failures, utcnow

MIN_PASSWORD_CHARS = 12
# Hashed when a username is unknown, so a wrong name costs the same time as a wrong password.
DUMMY_HASH = generate_password_hash("carryover-no-such-admin")


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
    username = username.strip()[:255]
    since = utcnow() - timedelta(seconds=throttle.window_s)
    with engine.connect() as conn:
        recent = (
            select(func.count()).select_from(login_failures).where(login_failures.c.at >= since)
        )
        by_name = conn.execute(recent.where(login_failures.c.username == username)).scalar() or 0
        by_address = conn.execute(
            recent.where(login_failures.c.remote_addr == remote_addr)
        ).scalar()
        row = conn.execute(select(admins).where(admins.c.username == username)).first()
    if by_name >= throttle.per_username or (by_address or 0) >= throttle.per_address:
        raise LoginRefused("Too many failed logins; try again later.", throttle.window_s)
    valid = check_password_hash(row.password_hash if row else DUMMY_HASH, password)
    with engine.begin() as conn:
        if row is None or not valid:
            conn.execute(insert(login_failures).values(
                username=username, remote_addr=remote_addr[:64], at=utcnow()))  # fmt: skip
        else:
            conn.execute(update(admins).where(admins.c.id == row.id).values(last_login_at=utcnow()))
            # A success clears the name's failures: the next typo is not the last straw.
            conn.execute(login_failures.delete().where(login_failures.c.username == username))
    if row is None or not valid:
        raise LoginRefused("Wrong username or password.")
    return Admin(int(row.id), row.username)


def find_admin(engine: Engine, admin_id: int) -> Admin | None:
    """Return the admin with that id, or None when the account is gone."""
    with engine.connect() as conn:
        row = conn.execute(select(admins).where(admins.c.id == admin_id)).first()
    return Admin(int(row.id), row.username) if row else None
