"""The screen-pop: who is calling and their whole context, live while the call goes on.

GET /pop?phone=… renders the page; the page opens GET /pop/events (server-sent events,
through a signed link the page carries) and swaps in each new rendering of its body.
A stream renders again when the worker publishes a change to the caller's number or
customer, and also every pop.poll_s, so workers in other processes reach it too; it sends
the body only when the rendering changed.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from flask import Blueprint, Response, render_template, request, stream_with_context

from middleware.customers.identity import JUNK_VALUES, candidates_of, find_holders, normalise_phone
from middleware.interaction import Identity
from middleware.notes.summary import CustomerContext, build_context
from middleware.process.calls import call_facts, latest_call
from middleware.reads.context_api import agent_only, signed_path
from middleware.store.tables import reading, utcnow
from middleware.web.current import current_installation

if TYPE_CHECKING:
    from sqlalchemy import Connection

# Its own static path: a proxy may keep /admin/ from the agents' network, never /pop.
bp = Blueprint("pop", __name__, template_folder="templates", static_folder="static",
               static_url_path="/pop/static")  # fmt: skip
LIVE_CALL_WINDOW = timedelta(hours=2)  # a call older than this is history, not "this call"
EVENTS_LINK_TTL_S = 12 * 3600  # one shift: the page's stream reconnects with the same link


class NotAPhoneNumber(ValueError):
    """The phone parameter cannot be a phone number."""


@dataclass
class PopView:
    """What one pop shows; `state` is known, unknown, shared or withheld."""

    state: str
    phone: str
    context: CustomerContext | None = None
    call: dict[str, Any] | None = None
    candidates: list[dict[str, Any]] = field(default_factory=list)
    earlier: list[dict[str, Any]] = field(default_factory=list)

    def topics(self) -> set[str]:
        """Name the changes that may alter this pop: its number and its customers."""
        found = {f"phone:{self.phone}"}
        if self.context is not None:
            found.add(f"customer:{self.context.customer['id']}")
        return found | {f"customer:{c['id']}" for c in self.candidates}


def caller_number(raw: str, region: str) -> str | None:
    """Return the caller's number in E.164; None when the caller withheld it."""
    value = raw.strip()
    if len(value) > 64 or not value.isprintable():
        raise NotAPhoneNumber("phone: expected a phone number")
    if value.lower() in JUNK_VALUES or (value and not value.strip("+0")):
        return None
    number = normalise_phone(value, region)
    if number is None:
        raise NotAPhoneNumber(f"phone: {value!r} cannot be a valid phone number")
    return number


def pop_view(conn: Connection, phone: str | None, raw: str, recent_limit: int) -> PopView:
    """Gather what the pop shows for one caller number."""
    if phone is None:
        return PopView("withheld", raw)
    holders = find_holders(conn, Identity("phone", phone))
    if not holders:
        return PopView("unknown", phone)
    if len(holders) > 1 or holders[0][1]:
        candidates = candidates_of(conn, [cid for cid, _ in holders])
        return PopView("shared", phone, candidates=candidates)
    customer_id = holders[0][0]
    context = build_context(conn, customer_id, recent_limit + 1)
    call_row = latest_call(conn, customer_id, updated_since=utcnow() - LIVE_CALL_WINDOW)
    call = call_facts(conn, call_row) if call_row is not None else None
    this_call = (call["source"], call["external_id"]) if call else None
    earlier = [i for i in context.interactions if (i["source"], i["external_id"]) != this_call]
    return PopView("known", phone, context, call, earlier=earlier[:recent_limit])


def _read_phone() -> tuple[str, str | None]:
    raw = request.args.get("phone", "")
    if not raw:
        raise NotAPhoneNumber("phone: missing (GET /pop?phone=+14155550142)")
    return raw, caller_number(raw, current_installation().config.default_region)


@bp.get("/pop")
@agent_only
def pop() -> str | tuple[str, int]:
    """Render the screen-pop for the caller's number."""
    core = current_installation()
    try:
        raw, phone = _read_phone()
    except NotAPhoneNumber as exc:
        return render_template("pop_error.html", error=str(exc)), 400
    with reading(core.engine) as conn:
        view = pop_view(conn, phone, raw, core.config.summary["recent_limit"])
    events = signed_path(core.link_secret, "/pop/events", {"phone": raw}, EVENTS_LINK_TTL_S)
    return render_template("pop.html", view=view, events_url=events)


@bp.get("/pop/events")
@agent_only
def events() -> Response | tuple[Response, int]:
    """Stream the pop's body as server-sent events whenever it changes."""
    core = current_installation()
    try:
        raw, phone = _read_phone()
    except NotAPhoneNumber as exc:
        return Response(str(exc), status=400, mimetype="text/plain")
    if not core.live.open_stream():
        response = Response("too many open pops; retry shortly", status=429, mimetype="text/plain")
        response.headers["Retry-After"] = "30"
        return response
    settings = core.config.pop

    def stream() -> Iterator[str]:
        try:
            yield "retry: 3000\n\n"
            deadline = time.monotonic() + settings["stream_s"]
            shown = None
            while True:
                seq = core.live.seq  # before reading, so no change slips in between
                # Never yield inside the block: the client may be slow to read.
                with reading(core.engine) as conn:
                    view = pop_view(conn, phone, raw, core.config.summary["recent_limit"])
                html = render_template("pop_body.html", view=view)
                if html == shown:
                    yield ": still here\n\n"  # finds a closed connection
                else:
                    yield server_event("pop", html)
                    shown = html
                if time.monotonic() >= deadline:
                    return
                core.live.wait(seq, view.topics(), settings["poll_s"])
        finally:
            core.live.close_stream()

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return Response(stream_with_context(stream()), mimetype="text/event-stream", headers=headers)


def server_event(name: str, data: str) -> str:
    """Format one server-sent event; every line of data gets its own data: field."""
    lines = "".join(f"data: {line}\n" for line in data.splitlines() or [""])
    return f"event: {name}\n{lines}\n"
