"""Customers in the admin UI: search, the merged profile, split, merge, preferences, erase."""

from __future__ import annotations

from typing import Any

from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    g,
    redirect,
    render_template,
    request,
    url_for,
)
from flask.typing import ResponseReturnValue

from middleware.customers.edits import (
    CustomerError,
    customer_profile,
    erase_customer,
    live_customer,
    merge_by_admin,
    search_customers,
    set_preferred_channels,
    split_identity,
)
from middleware.interaction import CHANNELS
from middleware.notes.summary import build_context
from middleware.store.tables import MAX_ID, reading
from middleware.web.current import current_installation
from webui.audit import log_change, log_customer_change

bp = Blueprint("customers", __name__, url_prefix="/customers")


@bp.get("/")
def search() -> str:
    """Find customers by name, email or phone."""
    text = request.args.get("q", "")
    with reading(current_installation().engine) as conn:
        found = search_customers(conn, text, current_installation().config.default_region)
    return render_template("admin/customers.html", q=text, found=found)


@bp.get("/<id:customer_id>")
def profile(customer_id: int) -> ResponseReturnValue:
    """Show the merged profile: each identity and the record that linked it, the timeline."""
    with reading(current_installation().engine) as conn:
        live = live_customer(conn, customer_id)
        if live is None:
            abort(404, f"There is no customer {customer_id}.")
        if live != customer_id:
            flash(f"Customer {customer_id} was merged into customer {live}.")
            return redirect(url_for("admin.customers.profile", customer_id=live))
        person = customer_profile(conn, customer_id)
        settings = current_installation().config.summary
        context = build_context(conn, customer_id, settings["recent_limit"], mood=settings["mood"])
    return render_template("admin/customer.html", person=person, context=context,
                           channels=CHANNELS)  # fmt: skip


@bp.post("/<id:customer_id>/identities/<id:identity_id>/split")
def split(customer_id: int, identity_id: int) -> ResponseReturnValue:
    """Move one identity, and the records only it linked, to a new customer."""
    with current_installation().engine.begin() as conn:
        try:
            new_customer = split_identity(conn, customer_id, identity_id, g.admin.username)
        except CustomerError as exc:
            abort(409, str(exc))
        log_customer_change("customer.split", customer_id, f"to new customer {new_customer}", conn)
    flash(f"The identity is now customer {new_customer}'s; the two stay apart.")
    return redirect(url_for("admin.customers.profile", customer_id=customer_id))


@bp.post("/<id:customer_id>/merge")
def merge(customer_id: int) -> ResponseReturnValue:
    """Fold another customer into this one."""
    other = customer_number(request.form.get("other", ""))
    if other is None:
        abort(400, "Give the number of the customer to merge into this one.")
    with current_installation().engine.begin() as conn:
        try:
            merge_by_admin(conn, other, customer_id, g.admin.username)
        except CustomerError as exc:
            abort(409, str(exc))
        log_customer_change("customer.merge", customer_id, f"customer {other} merged in", conn)
    flash(f"Customer {other} is merged into this one.")
    return redirect(url_for("admin.customers.profile", customer_id=customer_id))


def customer_number(text: str) -> int | None:
    """Return the customer number an admin typed; None unless the store can hold it."""
    text = text.strip()
    # isdigit() alone takes "²", which int() refuses; a 64-bit id has at most 19 digits.
    if not (text.isascii() and text.isdigit()) or len(text) > len(str(MAX_ID)):
        return None
    number = int(text)
    return number if 0 < number <= MAX_ID else None


@bp.post("/<id:customer_id>/preferred-channels")
def preferred_channels(customer_id: int) -> ResponseReturnValue:
    """Record the channels the customer said they prefer."""
    with current_installation().engine.begin() as conn:
        if live_customer(conn, customer_id) != customer_id:
            abort(404, f"There is no customer {customer_id}.")
        try:
            set_preferred_channels(conn, customer_id, request.form.getlist("channel"))
        except CustomerError as exc:
            abort(400, str(exc))
        log_customer_change("customer.channels", customer_id, channels_said(request.form), conn)
    flash("Preferred channels saved.")
    return redirect(url_for("admin.customers.profile", customer_id=customer_id))


@bp.post("/<id:customer_id>/erase")
def erase(customer_id: int) -> ResponseReturnValue:
    """Erase every row about the customer, raw deliveries included (typed confirmation)."""
    if request.form.get("confirm", "").strip() != str(customer_id):
        abort(400, f"Type the customer's number ({customer_id}) to confirm the erasure.")
    with current_installation().engine.begin() as conn:
        if live_customer(conn, customer_id) != customer_id:
            abort(404, f"There is no customer {customer_id}.")
        counts = erase_customer(conn, customer_id)
        log_change("customer.erase", f"customer {customer_id}", counted(counts), conn)
    current_app.logger.info("admin %s erased customer %s: %s", g.admin.username, customer_id,
                            counts)  # fmt: skip
    flash(f"Customer {customer_id} is erased: " + ", ".join(f"{n} {k}" for k, n in counts.items()))
    return redirect(url_for("admin.customers.search"))


def channels_said(form: Any) -> str:
    """Name the preferred channels a form sets, for the audit log."""
    return ", ".join(form.getlist("channel")) or "none"


def counted(counts: dict[str, int]) -> str:
    """Say what an erasure removed: "3 notes, 1 deliveries, …" (no name: it is erased)."""
    return "removed " + ", ".join(f"{n} {kind}" for kind, n in counts.items())
