"""Integrations in the admin UI: state, webhook URL, setup steps, a connection test."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, flash, redirect, render_template, url_for
from flask.typing import ResponseReturnValue
from sqlalchemy import func, select

from middleware.core import current_core
from middleware.errors import UpstreamError
from middleware.plugins import Plugin
from middleware.store import deliveries, reading, writes

bp = Blueprint("integrations", __name__, url_prefix="/integrations")


def masked(value: Any) -> str:
    """Show that a secret is set without showing it: its length, and its end if long."""
    if not value:
        return "not set"
    text = str(value) if not isinstance(value, list) else ",".join(value)
    tail = f", ending …{text[-4:]}" if len(text) >= 16 else ""
    return f"set ({len(text)} characters{tail})"


@bp.get("/")
def listing() -> str:
    """List every installed integration with its state and last activity."""
    core = current_core()
    with reading(core.engine) as conn:
        rows = [_state(conn, key, cls) for key, cls in sorted(core.registry.classes.items())]
    return render_template("admin/integrations.html", rows=rows)


@bp.get("/<key>")
def detail(key: str) -> str:
    """Show one integration: settings (secrets masked), webhook URL, setup steps, activity."""
    core = current_core()
    cls = core.registry.classes.get(key)
    if cls is None:
        abort(404, f"There is no integration {key!r}.")
    with reading(core.engine) as conn:
        state = _state(conn, key, cls)
    plugin = core.registry.get(key)
    settings = []
    for name, setting in cls.settings.items():
        value = plugin.options.get(name) if plugin else None
        shown = masked(value) if setting.secret else ("—" if value is None else value)
        settings.append({"name": name, "value": shown, "secret": setting.secret,
                         "doc": setting.doc})  # fmt: skip
    setup = cls.setup_doc.replace("{public_url}", core.config.public_url)
    return render_template("admin/integration.html", state=state, settings=settings, setup=setup)


@bp.post("/<key>/test")
def test_connection(key: str) -> ResponseReturnValue:
    """Call the upstream API once with the configured credentials and say how it went."""
    plugin: Plugin | None = current_core().registry.get(key)
    if plugin is None:
        abort(404, f"The integration {key!r} is not configured.")
    try:
        answer = plugin.check_connection()
    except UpstreamError as exc:
        flash(f"Connection test failed: {exc}", "error")
    else:
        flash(answer or f"{plugin.title} only sends webhooks: there is no API to test.")
    return redirect(url_for("admin.integrations.detail", key=key))


def _state(conn: Any, key: str, cls: type[Plugin]) -> dict[str, Any]:
    core = current_core()
    last_in = conn.execute(select(func.max(deliveries.c.received_at))
                           .where(deliveries.c.plugin == key)).scalar()  # fmt: skip
    error_in = conn.execute(
        select(deliveries.c.last_error, deliveries.c.received_at)
        .where(deliveries.c.plugin == key, deliveries.c.last_error.is_not(None))
        .order_by(deliveries.c.id.desc()).limit(1)
    ).first()  # fmt: skip
    error_out = conn.execute(
        select(writes.c.last_error, writes.c.created_at)
        .where(writes.c.target == key, writes.c.last_error.is_not(None))
        .order_by(writes.c.id.desc()).limit(1)
    ).first()  # fmt: skip
    return {
        "key": key,
        "title": cls.title,
        "configured": key in core.registry.instances,
        "capabilities": sorted(str(c) for c in cls.capabilities),
        "webhook_url": f"{core.config.public_url}/hooks/{key}",
        "last_delivery": last_in,
        "last_error": (error_out or error_in).last_error if (error_out or error_in) else None,
    }
