"""Deliveries in the admin UI: inbound webhooks and outbound notes, their trail, replay."""

from __future__ import annotations

import json

from defusedxml.minidom import parseString
from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue

from middleware.integrations.plugin import decode_form
from middleware.store.queue import LeasedQueue
from middleware.store.tables import reading
from middleware.web.current import current_installation

bp = Blueprint("deliveries", __name__, url_prefix="/deliveries")
PAGE = 100
STATUSES = ("pending", "attempting", "done", "dead")


def _queues() -> dict[str, LeasedQueue]:
    """Return the queue of each direction: deliveries in, notes out."""
    core = current_installation()
    return {"in": core.inbox, "out": core.outbox}


@bp.get("/")
def listing() -> str:
    """List the newest deliveries, filtered by direction, plugin and status."""
    direction = request.args.get("direction", "in")
    direction = direction if direction == "out" else "in"
    queues = _queues()
    plugin, status = request.args.get("plugin", ""), request.args.get("status", "")
    with reading(current_installation().engine) as conn:
        rows = queues[direction].newest(
            conn, plugin, status if status in STATUSES else "", limit=PAGE
        )
        dead = {name: queue.dead_count(conn) for name, queue in queues.items()}
    return render_template(
        "admin/deliveries.html", rows=rows, direction=direction,
        plugin=plugin, status=status, statuses=STATUSES, dead=dead,
        plugins=sorted(current_installation().registry.classes), page=PAGE,
    )  # fmt: skip


@bp.get("/<any(in, out):direction>/<id:row_id>")
def detail(direction: str, row_id: int) -> str:
    """Show one delivery: its payload as stored (redacted), its trail and its last error."""
    with reading(current_installation().engine) as conn:
        row = _queues()[direction].stored(conn, row_id)
    if row is None:
        abort(404, f"There is no {'delivery' if direction == 'in' else 'note'} {row_id}.")
    if direction == "out":
        return render_template("admin/delivery_out.html", row=row)
    headers = json.loads(row.headers)
    return render_template(
        "admin/delivery_in.html", row=row, headers=headers,
        body=readable_body(bytes(row.body), headers.get("content-type", "")),
        trail=json.loads(row.trail or "[]"), keys=json.loads(row.event_keys),
    )  # fmt: skip


def readable_body(body: bytes, content_type: str) -> str:
    """Return a stored body for reading: JSON and XML indented, forms one field a line.

    A lone surrogate (JSON allows the escape \\ud800 without its pair) is shown as that
    escape: the page could not be encoded with the character itself.
    """
    return _indented(body, content_type).encode("utf-8", "backslashreplace").decode("utf-8")


def _indented(body: bytes, content_type: str) -> str:
    text = body.decode("utf-8", errors="replace")
    media = content_type.split(";")[0].strip().lower()
    try:
        if media == "application/json" or text.lstrip().startswith("{"):
            return json.dumps(json.loads(text, strict=False), indent=2, ensure_ascii=False)
        if media == "application/x-www-form-urlencoded":
            return "\n".join(f"{name} = {value}" for name, value in decode_form(body))
        if text.lstrip().startswith("<"):
            pretty = parseString(body).toprettyxml(indent="  ")
            return "\n".join(line for line in pretty.splitlines() if line.strip())
    except Exception:  # shown as stored, whatever it is
        return text
    return text


@bp.post("/<any(in, out):direction>/<id:row_id>/replay")
def replay(direction: str, row_id: int) -> ResponseReturnValue:
    """Queue one delivery or note again."""
    queue = current_installation().inbox if direction == "in" else current_installation().outbox
    if not queue.replay([row_id]):
        flash(f"Not queued: there is no {'delivery' if direction == 'in' else 'note'} {row_id}.",
              "error")  # fmt: skip
        return redirect(url_for("admin.deliveries.listing", direction=direction))
    current_installation().wake.set()
    flash(f"{'Delivery' if direction == 'in' else 'Note'} {row_id} is queued again.")
    return redirect(url_for("admin.deliveries.detail", direction=direction, row_id=row_id))


@bp.post("/replay-dead")
def replay_dead() -> ResponseReturnValue:
    """Queue every dead delivery and note again."""
    count = current_installation().inbox.replay() + current_installation().outbox.replay()
    current_installation().wake.set()
    flash(f"{count} dead letter{'s' if count != 1 else ''} queued again.")
    return redirect(url_for("admin.deliveries.listing", status="dead"))
