"""The admin landing page: what is configured and how deliveries are doing."""

from __future__ import annotations

from flask import Blueprint, current_app, render_template
from sqlalchemy import func, select

from middleware.store import deliveries, writes

bp = Blueprint("webui", __name__, template_folder="templates")


@bp.get("/")
def index() -> str:
    """Show integrations, their webhook URLs and delivery counts."""
    core = current_app.extensions["carryover"]
    with core.engine.connect() as conn:
        inbound = dict(
            conn.execute(select(deliveries.c.status, func.count()).group_by(deliveries.c.status)).all()
        )
        outbound = dict(
            conn.execute(select(writes.c.status, func.count()).group_by(writes.c.status)).all()
        )
    plugins = [
        {"key": key, "title": cls.title, "configured": key in core.registry.instances,
         "webhook_url": f"{core.config.public_url}/hooks/{key}"}
        for key, cls in sorted(core.registry.classes.items())
    ]  # fmt: skip
    return render_template("index.html", plugins=plugins, inbound=inbound, outbound=outbound)
