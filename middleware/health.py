"""Liveness and readiness, without authentication and without secrets."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from middleware.core import current_core
from middleware.store import migrations_applied, reading
from middleware.usage import usage_report

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    """Say the process is up."""
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    """Say whether the store is reachable and fully migrated."""
    core = current_core()
    try:
        with reading(core.engine) as conn:
            conn.execute(text("SELECT 1"))
        migrated = migrations_applied(core.engine)
        if migrated:
            with reading(core.engine) as conn:
                upstreams = usage_report(conn)
    except SQLAlchemyError:
        return jsonify(status="unavailable", store="unreachable"), 503
    if not migrated:
        return jsonify(status="unavailable", store="ok", migrations="pending"), 503
    ready = {"status": "ready", "store": "ok", "migrations": "applied"}
    return jsonify(**ready, integrations=sorted(core.registry.instances), upstreams=upstreams), 200
