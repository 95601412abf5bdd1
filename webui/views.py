"""The admin landing page: what is configured and how deliveries are doing."""

from __future__ import annotations

from flask import Blueprint, current_app, render_template
from sqlalchemy import Select, Table, func, select

from middleware.store import deliveries, reading, writes

bp = Blueprint("webui", __name__, template_folder="templates")


@bp.get("/")
def index() -> str:
    """Show integrations, their webhook URLs and delivery counts."""
    core = current_app.extensions["carryover"]
    with reading(core.engine) as conn:
        inbound = dict(conn.execute(_count_by_status(deliveries)).all())
        outbound = dict(conn.execute(_count_by_status(writes)).all())
    plugins = [
        {"key": key, "title": cls.title, "configured": key in core.registry.instances,
         "webhook_url": f"{core.config.public_url}/hooks/{key}"}
        for key, cls in sorted(core.registry.classes.items())
    ]  # fmt: skip
    return render_template("index.html", plugins=plugins, inbound=inbound, outbound=outbound)


def _count_by_status(table: Table) -> Select:
    return select(table.c.status, func.count()).group_by(table.c.status)
