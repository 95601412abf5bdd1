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

from middleware.admin.audit import Transaction
from middleware.customers.edits import (
    CustomerError,
    customer_name,
    customer_profile,
    erase_customer,
    live_customer,
    merge_by_admin,
    search_customers,
    set_preferred_channels,
    split_identity,
)
from middleware.customers.preferences import (
    BEHAVIOUR,
    SURVEY,
    Preference,
)
from middleware.interaction import CHANNELS
from middleware.notes.summary import build_context
from middleware.store.tables import MAX_ID, reading
from middleware.web.current import current_installation
from webui.audit import log_change, log_customer_change
from webui.clock import local_time

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
        origin = preference_origin(person["preference"], person["preference_delivery"])
    return render_template("admin/customer.html", person=person, context=context,
                           channels=CHANNELS, origin=origin)  # fmt: skip


def preference_origin(preference: Preference | None, delivery: int | None) -> dict[str, Any]:
    """Say where the preferred channels came from, with the delivery of a survey answer."""
    if preference is None:
        return {"source": BEHAVIOUR, "text": "from behaviour: the most used channels"}
    at = local_time(preference.at)
    if preference.source == SURVEY:
        return {"source": SURVEY, "text": f"from a survey answer on {at}",
                "delivery": delivery}  # fmt: skip
    who = preference.caused_by.removeprefix("admin:")
    return {"source": preference.source, "text": f"set by admin {who} on {at}"}


@bp.get("/<id:customer_id>/identities/<id:identity_id>/split")
def confirm_split(customer_id: int, identity_id: int) -> ResponseReturnValue:
    """Ask before an identity is split off into a customer of its own."""
    with reading(current_installation().engine) as conn:
        person = _live_profile(conn, customer_id)
    held = [i for i in person["identities"] if i.id == identity_id]
    if not held:
        return _back(customer_id, "That identity is no longer this customer's.")
    who = _name(person)
    facts = [f"{held[0].type} {held[0].value} becomes a new customer of its own, with the "
             "records that only it linked.",
             f"The new customer and {who} are kept apart from then on: the identities they "
             "share no longer join them. Merging them again undoes this."]  # fmt: skip
    return render_template(
        "admin/confirm.html", title=f"Split {held[0].value} off {who}?",
        action=url_for("admin.customers.split", customer_id=customer_id, identity_id=identity_id),
        button="Split it off", danger=True, facts=facts,
        cancel=url_for("admin.customers.profile", customer_id=customer_id),
    )  # fmt: skip


@bp.post("/<id:customer_id>/identities/<id:identity_id>/split")
def split(customer_id: int, identity_id: int) -> ResponseReturnValue:
    """Move one identity, and the records only it linked, to a new customer."""
    if request.form.get("confirmed") != "yes":  # not from the confirmation page: ask first
        return redirect(url_for("admin.customers.confirm_split", customer_id=customer_id,
                                identity_id=identity_id))  # fmt: skip
    with current_installation().engine.begin() as conn:
        try:
            new_customer = split_identity(conn, customer_id, identity_id, g.admin.username)
        except CustomerError as exc:
            return _back(customer_id, f"Not split: {exc}.")
        log_customer_change("customer.split", customer_id, f"to new customer {new_customer}", conn)
    flash(f"The identity is now customer {new_customer}'s; the two stay apart.")
    return redirect(url_for("admin.customers.profile", customer_id=customer_id))


@bp.get("/<id:customer_id>/merge")
def confirm_merge(customer_id: int) -> ResponseReturnValue:
    """Show both customers, by name and identities, before one is folded into the other."""
    other = customer_number(request.args.get("other", ""))
    if other is None:
        return _back(customer_id, "Give the number of the customer to merge into this one.")
    with reading(current_installation().engine) as conn:
        into = _live_profile(conn, customer_id)
        if live_customer(conn, other) is None:
            return _back(customer_id, f"There is no customer {other}.")
        if live_customer(conn, other) == customer_id:
            return _back(customer_id, f"Customer {other} is this customer already.")
        source = customer_profile(conn, live_customer(conn, other) or other)
    facts = [f"{_name(source)} (#{source['id']}) is folded into {_name(into)} "
             f"(#{into['id']}): identities, contacts and open items become theirs.",
             f"Customer {source['id']}'s page then leads to customer {into['id']}. A split "
             "undoes it, one identity at a time."]  # fmt: skip
    return render_template(
        "admin/confirm_merge.html", title=f"Merge {_name(source)} into {_name(into)}?",
        action=url_for("admin.customers.merge", customer_id=customer_id),
        button=f"Merge into #{into['id']}", danger=True, facts=facts, into=into, source=source,
        fields={"other": source["id"]},
        cancel=url_for("admin.customers.profile", customer_id=customer_id),
    )  # fmt: skip


@bp.post("/<id:customer_id>/merge")
def merge(customer_id: int) -> ResponseReturnValue:
    """Fold another customer into this one."""
    other = customer_number(request.form.get("other", ""))
    if other is None:
        return _back(customer_id, "Give the number of the customer to merge into this one.")
    if request.form.get("confirmed") != "yes":  # not from the confirmation page: ask first
        return redirect(url_for("admin.customers.confirm_merge", customer_id=customer_id,
                                other=other))  # fmt: skip
    with current_installation().engine.begin() as conn:
        try:
            name = customer_name(conn, other)
            merge_by_admin(conn, other, customer_id, g.admin.username)
        except CustomerError as exc:
            return _back(customer_id, f"Not merged: {exc}.")
        log_customer_change("customer.merge", customer_id, f"customer {other} merged in", conn)
    flash(f"Customer {other}{f' ({name})' if name else ''} is merged into this one.")
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
            set_preferred_channels(conn, customer_id, request.form.getlist("channel"),
                                   g.admin.username)  # fmt: skip
        except CustomerError as exc:
            return _back(customer_id, f"Not saved: {exc}.")
        log_customer_change("customer.channels", customer_id, channels_said(request.form), conn)
    flash("Preferred channels saved.")
    return redirect(url_for("admin.customers.profile", customer_id=customer_id))


@bp.get("/<id:customer_id>/erase")
def confirm_erase(customer_id: int) -> ResponseReturnValue:
    """Ask, with the customer's number typed, before every row about them is erased."""
    with reading(current_installation().engine) as conn:
        person = _live_profile(conn, customer_id)
    facts = ["Every row about this customer is deleted: identities, timeline, queued notes "
             "and the raw webhooks that spoke of them. This cannot be undone.",
             "Notes already written in other tools stay there."]  # fmt: skip
    return render_template(
        "admin/confirm_erase.html", title=f"Erase {_name(person)}?", person=person,
        action=url_for("admin.customers.erase", customer_id=customer_id),
        button=f"Erase customer #{customer_id}", danger=True, facts=facts,
        cancel=url_for("admin.customers.profile", customer_id=customer_id),
    )  # fmt: skip


@bp.post("/<id:customer_id>/erase")
def erase(customer_id: int) -> ResponseReturnValue:
    """Erase every row about the customer, raw deliveries included (typed confirmation)."""
    if request.form.get("confirm", "").strip() != str(customer_id):
        flash(f"Type the customer's number ({customer_id}) to confirm the erasure.", "error")
        return redirect(url_for("admin.customers.confirm_erase", customer_id=customer_id))
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


def _live_profile(conn: Transaction, customer_id: int) -> dict[str, Any]:
    """Return the profile of a customer that is not merged away; 404 otherwise."""
    if live_customer(conn, customer_id) != customer_id:
        abort(404, f"There is no customer {customer_id}.")
    return customer_profile(conn, customer_id)


def _name(person: dict[str, Any]) -> str:
    return str(person["name"] or f"customer #{person['id']}")


def _back(customer_id: int, message: str) -> ResponseReturnValue:
    """Go back to the customer's page with an error message."""
    flash(message, "error")
    return redirect(url_for("admin.customers.profile", customer_id=customer_id))
