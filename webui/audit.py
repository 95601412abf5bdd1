"""The audit log in the admin UI: every admin change, newest first, by admin or by action."""

from __future__ import annotations

from flask import Blueprint, g, render_template, request

from middleware.admin.audit import ACTIONS, Transaction, actors, entries, record
from middleware.store.tables import reading
from middleware.web.current import current_installation
from webui.clock import local_time

bp = Blueprint("audit", __name__, url_prefix="/audit")
PAGE = 50


def log_change(
    action: str, target: str, detail: str = "", conn: Transaction | None = None,
    customer: int | None = None,
) -> None:  # fmt: skip
    """Record a change the logged-in admin made (in conn's transaction, when given one)."""
    where = conn if conn is not None else current_installation().engine
    record(where, g.admin.username, action, target, detail, customer)


def log_customer_change(action: str, customer_id: int, detail: str, conn: Transaction) -> None:
    """Record a change to a customer, in the change's transaction (the page adds the name)."""
    log_change(action, f"customer {customer_id}", detail, conn, customer_id)


@bp.get("/")
def listing() -> str:
    """Show a page of the audit log, filtered by who acted and by action."""
    actor = request.args.get("actor", "")[:255]
    action = request.args.get("action", "")
    action = action if action in ACTIONS else ""
    page = request.args.get("page", "1")
    number = int(page) if page.isascii() and page.isdigit() and 0 < len(page) < 7 else 1
    number = max(number, 1)
    with reading(current_installation().engine) as conn:
        rows, total = entries(conn, actor, action, offset=(number - 1) * PAGE, limit=PAGE)
        everyone = actors(conn)
    pages = max(1, -(-total // PAGE))
    return render_template(
        "admin/audit.html", rows=rows, total=total, page=number, pages=pages, actor=actor,
        action=action, actions=ACTIONS, actors=everyone, at=local_time,
    )  # fmt: skip
