"""Deliveries in the admin UI: inbound webhooks and outbound notes, their trail, replay."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from defusedxml.minidom import parseString
from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue

from middleware.admin.delivery_search import (
    inbound_filter,
    links_of_delivery,
    links_of_note,
    outbound_filter,
    page_of,
    read_search,
)
from middleware.integrations.plugin import decode_form
from middleware.store.queue import FAILED_TRIES_KEPT, LeasedQueue, status_words
from middleware.store.tables import MAX_ID, reading
from middleware.web.current import current_installation
from webui.audit import log_change
from webui.clock import local_time

bp = Blueprint("deliveries", __name__, url_prefix="/deliveries")
PAGE = 50
STATUSES = ("pending", "attempting", "done", "dead")
SEARCH_HINT = (
    "Ticket or case id, CaseNumber, call SID or call id, or a customer's name, email, "
    'phone or "customer 12"'
)


def _queues() -> dict[str, LeasedQueue]:
    """Return the queue of each direction: deliveries in, notes out."""
    core = current_installation()
    return {"in": core.inbox, "out": core.outbox}


def _row_id(name: str) -> int | None:
    """Read an id from the query string for paging; a malformed one is a 400."""
    value = request.args.get(name, "")
    if not value:
        return None
    if not (value.isascii() and value.isdigit()) or int(value) > MAX_ID:
        abort(400, f"{name} must be a delivery or note number, not {value[:40]!r}.")
    return int(value)


@bp.get("/")
def listing() -> str:
    """List deliveries newest first, a page at a time: searched, by direction, plugin, status."""
    direction = "out" if request.args.get("direction") == "out" else "in"
    plugin, status = request.args.get("plugin", ""), request.args.get("status", "")
    status = status if status in STATUSES else ""
    plugin = plugin if plugin in current_installation().registry.classes else ""
    text = request.args.get("q", "").strip()
    before, after = _row_id("before"), _row_id("after")
    core = current_installation()
    table = core.inbox.table if direction == "in" else core.outbox.table
    with reading(core.engine) as conn:
        matched = read_search(conn, text, core.config.default_region) if text else None
        searched = inbound_filter(matched) if direction == "in" else outbound_filter(matched)
        conditions = [] if searched is None else [searched]
        if plugin:
            conditions.append(_queues()[direction].lane_column == plugin)
        page = page_of(conn, table, conditions, status, PAGE, before=before, after=after)
        dead = {name: queue.dead_count(conn) for name, queue in _queues().items()}
    args = {"direction": direction, "plugin": plugin, "status": status, "q": text}
    return render_template(
        "admin/deliveries.html", page=page, rows=page.rows, direction=direction,
        words=status_words, at=local_time, plugin=plugin, status=status, statuses=STATUSES,
        dead=dead, q=text, matched=matched,
        plugins=sorted(core.registry.classes), size=PAGE, hint=SEARCH_HINT,
        args={k: v for k, v in args.items() if v}, paged=before is not None or after is not None,
    )  # fmt: skip


@bp.get("/<any(in, out):direction>/<id:row_id>")
def detail(direction: str, row_id: int) -> str:
    """Show one delivery: its payload as stored (redacted), its trail, records and notes."""
    with reading(current_installation().engine) as conn:
        row = _queues()[direction].stored(conn, row_id)
        if row is None:
            abort(404, f"There is no {'delivery' if direction == 'in' else 'note'} {row_id}.")
        if direction == "out":
            return render_template("admin/delivery_out.html", row=row, words=status_words,
                                   at=local_time, **links_of_note(conn, row))  # fmt: skip
        links = links_of_delivery(conn, row_id)
    headers = json.loads(row.headers)
    return render_template(
        "admin/delivery_in.html", row=row, headers=headers, words=status_words, at=local_time,
        body=readable_body(bytes(row.body), headers.get("content-type", "")),
        trail=readable_trail(row.trail), keys=json.loads(row.event_keys), **links,
        kept=FAILED_TRIES_KEPT,
    )  # fmt: skip


def readable_trail(trail_json: str | None) -> list[dict[str, Any]]:
    """Return a delivery's trail with each step's time in the installation's zone."""
    trail = json.loads(trail_json or "[]")
    for step in trail:
        try:
            moment = datetime.fromisoformat(str(step.get("at", "")).removesuffix("Z"))
        except ValueError:  # shown as stored
            step["when"] = step.get("at", "")
        else:
            step["when"] = local_time(moment.replace(tzinfo=None), seconds=True)
    return list(trail)


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
    current_installation().work_arrived()
    log_change("delivery.replay", f"{'delivery' if direction == 'in' else 'note'} {row_id}")
    flash(f"{'Delivery' if direction == 'in' else 'Note'} {row_id} is queued again.")
    return redirect(url_for("admin.deliveries.detail", direction=direction, row_id=row_id))


@bp.post("/replay-dead")
def replay_dead() -> ResponseReturnValue:
    """Queue every dead delivery and note again."""
    count = current_installation().inbox.replay() + current_installation().outbox.replay()
    current_installation().work_arrived()
    log_change("delivery.replay_dead", "dead deliveries and notes", f"{count} queued again")
    flash(f"{count} dead letter{'s' if count != 1 else ''} queued again.")
    return redirect(url_for("admin.deliveries.listing", status="dead"))
