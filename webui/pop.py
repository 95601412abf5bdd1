"""The screen-pop: who is calling and their whole context, live while the call goes on.

GET /pop?phone=… renders the page; the page opens GET /pop/events (server-sent events,
through a signed link the page carries) and swaps in each new rendering of its body.
A stream renders again when the worker publishes a change to the caller's number or
customer, and also every pop.poll_s, so workers in other processes reach it too; it sends
the body only when the rendering changed.

POST /pop/handoff (another signed link the page carries) stores a handoff note typed in the
pop on the call going on, for the next agent's pop and the note written when the call ends.
No cookie authorises it, and it takes JSON only: a form on another site cannot send that
without a CORS preflight, which Carryover never answers.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from flask import Blueprint, Response, jsonify, render_template, request, stream_with_context

from middleware.ingest import json_input
from middleware.process.calls import MAX_HANDOFF_CHARS, TooManyHandoffs, UnusableHandoff
from middleware.reads.context_api import agent_only, signed_path
from middleware.reads.pop import (
    NoCallInProgress,
    NotAPhoneNumber,
    PopView,
    caller_number,
    pop_view,
    save_handoff,
)
from middleware.store.tables import reading
from middleware.web.current import current_installation

# Its own static path: a proxy may keep /admin/ from the agents' network, never /pop.
bp = Blueprint("pop", __name__, template_folder="templates", static_folder="static",
               static_url_path="/pop/static")  # fmt: skip
EVENTS_LINK_TTL_S = 12 * 3600  # one shift: the page's stream reconnects with the same link
MAX_HANDOFF_BODY_BYTES = 16 * 1024  # 500 characters, each up to 12 bytes as JSON escapes


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
        view = pop_view(
            conn, phone, raw, core.config.summary["recent_limit"], mood=core.config.summary["mood"]
        )
    events = signed_path(core.link_secret, "/pop/events", {"phone": raw}, EVENTS_LINK_TTL_S)
    handoff = signed_path(core.link_secret, "/pop/handoff", {"phone": raw}, EVENTS_LINK_TTL_S)
    return render_template("pop.html", events_url=events, handoff_url=handoff,
                           handoff_max=MAX_HANDOFF_CHARS, **pop_values(view))  # fmt: skip


@bp.post("/pop/handoff")
@agent_only
def handoff() -> tuple[Response, int]:
    """Store a handoff note on the call going on from the caller's number."""
    if request.headers.get("Sec-Fetch-Site", "").lower() == "cross-site":
        return jsonify(error="handoff notes are sent from the pop itself, not another site"), 403
    if request.mimetype != "application/json":
        return jsonify(error='send JSON: Content-Type: application/json, {"text": "…"}'), 415
    core = current_installation()
    try:
        _, phone = _read_phone()
        text = _handoff_text()
        saved = save_handoff(core.engine, phone, text)
    except (NotAPhoneNumber, UnusableHandoff) as exc:
        return jsonify(error=str(exc)), 400
    except (NoCallInProgress, TooManyHandoffs) as exc:
        return jsonify(error=str(exc)), 409
    core.changed({f"phone:{phone}", f"customer:{saved.customer_id}"})
    return jsonify(saved=True, text=saved.text), 201


def _handoff_text() -> str:
    """Return the text of a handoff request's JSON body; UnusableHandoff if there is none."""
    if (request.content_length or 0) > MAX_HANDOFF_BODY_BYTES:
        raise UnusableHandoff(f"body: at most {MAX_HANDOFF_BODY_BYTES} bytes")
    body = request.get_data(cache=False)
    if len(body) > MAX_HANDOFF_BODY_BYTES:  # no Content-Length (chunked) tells nothing ahead
        raise UnusableHandoff(f"body: at most {MAX_HANDOFF_BODY_BYTES} bytes")
    try:
        payload = json_input.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise UnusableHandoff(f"body: not JSON ({exc})") from None
    except RecursionError:  # "[[[[…" nested deeper than the parser goes
        raise UnusableHandoff("body: JSON nested too deeply") from None
    text = payload.get("text") if isinstance(payload, dict) else None
    if not isinstance(text, str):
        raise UnusableHandoff('body: expected {"text": "the note for the next agent"}')
    return text


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
                    view = pop_view(
                        conn,
                        phone,
                        raw,
                        core.config.summary["recent_limit"],
                        mood=core.config.summary["mood"],
                    )
                html = render_template("pop_body.html", **pop_values(view))
                if html == shown:
                    yield ": still here\n\n"  # finds a closed connection
                else:
                    yield server_event("pop", html)
                    shown = html
                if time.monotonic() >= deadline or core.live.ending:
                    return  # the page reconnects (to another process, when this one stops)
                core.live.wait(seq, view.topics(), settings["poll_s"])
        finally:
            core.live.close_stream()

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return Response(stream_with_context(stream()), mimetype="text/event-stream", headers=headers)


def pop_values(view: PopView) -> dict[str, Any]:
    """Return what the pop's templates see: the view, its records named and linked as in the
    notes, and the notes' way of saying times (in the installation's time zone)."""
    renderer = current_installation().renderer
    filters = renderer.env.filters
    values: dict[str, Any] = {
        "view": view,
        "when": filters["when"],
        "duration": filters["duration"],
        "and_list": filters["and_list"],
        "notes": {},
        "earlier": [],
    }
    if view.context is not None:
        values["notes"] = renderer.variables(view.context)
        values["earlier"] = [renderer.named(item) for item in view.earlier]
    return values


def server_event(name: str, data: str) -> str:
    """Format one server-sent event; every line of data gets its own data: field."""
    lines = "".join(f"data: {line}\n" for line in data.splitlines() or [""])
    return f"event: {name}\n{lines}\n"
