"""Admins in the admin UI: who can log in, and disabling, enabling, unlocking, resetting, removing.

Each change is confirmed on a page of its own first. An admin cannot disable or remove
themself here, so the admin at the keyboard always stays one who can log in.
"""

from __future__ import annotations

from flask import Blueprint, abort, flash, g, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue

from middleware.admin.accounts import (
    MIN_PASSWORD_CHARS,
    AdminAccount,
    AdminError,
    Throttle,
    disable_admin,
    enable_admin,
    list_admins,
    remove_admin,
    set_password,
    unlock_admin,
)
from middleware.admin.audit import record
from middleware.web.current import current_installation
from webui.clock import local_time

bp = Blueprint("admins", __name__, url_prefix="/admins")
# Each change: what its button and confirmation say, and what it does.
CHANGES = {
    "disable": ("Disable", "They can no longer log in, and their open sessions end now. The "
                "account stays; enable it again at any time."),
    "enable": ("Enable", "They can log in again with their password."),
    "unlock": ("Unlock", "Their recent failed logins are forgotten, so they can log in again "
               "at once instead of waiting for the lockout to pass."),
    "remove": ("Remove", "The account is deleted and their open sessions end now. This cannot "
               "be undone; `carryover admin create` makes a new account."),
}  # fmt: skip
SELF_REFUSED = frozenset({"disable", "remove"})


def _accounts() -> list[AdminAccount]:
    options = current_installation().config.admin
    engine = current_installation().engine
    return list_admins(engine, options["idle_timeout_s"], Throttle.from_options(options))


def _account(admin_id: int) -> AdminAccount:
    found = [a for a in _accounts() if a.id == admin_id]
    if not found:
        abort(404, "There is no such admin (it may have been removed).")
    return found[0]


@bp.get("/")
def listing() -> str:
    """List the admins: last login, open sessions, and whether disabled or locked out."""
    return render_template("admin/admins.html", accounts=_accounts(), at=local_time,
                           me=g.admin.id)  # fmt: skip


@bp.get("/<id:admin_id>/<any(disable, enable, unlock, remove):change>")
def confirm(admin_id: int, change: str) -> str:
    """Ask before changing an admin account."""
    account = _account(admin_id)
    _refuse_self(account, change)
    verb, effect = CHANGES[change]
    return render_template("admin/admin_confirm.html", account=account, change=change,
                           verb=verb, effect=effect)  # fmt: skip


@bp.post("/<id:admin_id>/<any(disable, enable, unlock, remove):change>")
def apply(admin_id: int, change: str) -> ResponseReturnValue:
    """Disable, enable, unlock or remove an admin account (confirmed)."""
    account = _account(admin_id)
    _refuse_self(account, change)
    engine, name = current_installation().engine, account.username
    if change == "disable":
        ended = disable_admin(engine, name)
        said = f"{name} is disabled; {ended} open session(s) ended."
    elif change == "enable":
        said = f"{name} can log in again." if enable_admin(engine, name) else f"{name} was enabled."
    elif change == "unlock":
        said = f"{name} is unlocked ({unlock_admin(engine, name)} failed login(s) forgotten)."
    else:
        ended = remove_admin(engine, name)
        said = f"{name} is removed; {ended} open session(s) ended."
    record(engine, g.admin.username, f"admin.{change}", f"admin {name}")
    flash(said)
    return redirect(url_for("admin.admins.listing"))


def _refuse_self(account: AdminAccount, change: str) -> None:
    if change in SELF_REFUSED and account.id == g.admin.id:
        abort(409, f"You cannot {change} your own account here: another admin can, or "
                   f"`carryover admin {change}` on the server.")  # fmt: skip


@bp.get("/<id:admin_id>/password")
def password_form(admin_id: int) -> str:
    """Show the form that sets a new password for an admin."""
    return _password_page(_account(admin_id))


def _password_page(account: AdminAccount, error: str | None = None) -> str:
    return render_template("admin/admin_password.html", account=account, error=error,
                           min_chars=MIN_PASSWORD_CHARS, me=g.admin.id)  # fmt: skip


@bp.post("/<id:admin_id>/password")
def reset_password(admin_id: int) -> ResponseReturnValue:
    """Set a new password typed twice (judged as on the command line); their sessions end."""
    account = _account(admin_id)
    password = request.form.get("password", "")
    if password != request.form.get("again", ""):
        return _password_page(account, "The two passwords differ; type the same one twice."), 400
    try:
        ended = set_password(current_installation().engine, account.username, password)
    except AdminError as exc:
        why = str(exc).removeprefix("password: ")
        return _password_page(account, why[:1].upper() + why[1:]), 400
    record(current_installation().engine, g.admin.username, "admin.password",
           f"admin {account.username}")  # fmt: skip
    flash(f"The password of {account.username} is changed; {ended} open session(s) ended.")
    if account.id == g.admin.id:  # this session ended too: log in with the new password
        return redirect(url_for("admin.login"))
    return redirect(url_for("admin.admins.listing"))
