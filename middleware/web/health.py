"""Liveness and readiness, without authentication and without secrets.

/readyz answers 503 only when the store cannot take webhooks (unreachable, or migrations
pending). A paused or failing upstream does not stop webhooks from being accepted and
stored, so a load balancer must keep sending them: the answer stays 200, and says
"degraded", naming each upstream's state and the work waiting for it. A store that a newer
release has migrated is ready too ("migrations": "newer"): migrations only add, and during a
rolling upgrade the processes not yet replaced keep serving. It also counts the workers that
beat lately (`workers_alive`), without naming them: webhooks are taken with none, but nothing
is processed until one runs.
"""

from __future__ import annotations

from flask import Blueprint, Response, jsonify
from flask.blueprints import BlueprintSetupState
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from middleware.integrations.faults import readiness, upstream_keys
from middleware.process.liveness import alive_count, serve_web
from middleware.store.tables import (
    migrated_by_newer_release,
    migrations_applied,
    reading,
    utcnow,
)
from middleware.web.current import current_installation

bp = Blueprint("health", __name__)


@bp.record
def _serving(state: BlueprintSetupState) -> None:
    """Note that this process serves the installation: its worker, if any, is embedded."""
    serve_web(state.app.extensions["carryover"])


@bp.get("/healthz")
def healthz() -> Response:
    """Say the process is up."""
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    """Say whether the store is reachable and fully migrated, and how the upstreams fare."""
    core = current_installation()
    try:
        with reading(core.engine) as conn:
            conn.execute(text("SELECT 1"))
        migrations = "applied" if migrations_applied(core.engine) else None
        if migrations is None and migrated_by_newer_release(core.engine):
            migrations = "newer"  # a rolling upgrade: this process is yet to be replaced
        if migrations:
            with reading(core.engine) as conn:
                unwell, upstreams = readiness(conn, upstream_keys(core.registry))
                alive = alive_count(conn, utcnow())
    except SQLAlchemyError:
        return jsonify(status="unavailable", store="unreachable"), 503
    if not migrations:
        return jsonify(status="unavailable", store="ok", migrations="pending"), 503
    return jsonify(
        status="degraded" if unwell else "ready", store="ok", migrations=migrations,
        degraded_upstreams=unwell, integrations=sorted(core.registry.instances),
        upstreams=upstreams, workers_alive=alive,
    ), 200  # fmt: skip
