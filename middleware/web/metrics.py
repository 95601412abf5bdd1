"""GET /metrics: the installation's figures in Prometheus' text format, for those allowed.

The figures name integrations, queues and volumes, not customers; still, they say how busy
a support team is, so only the `metrics.allow` networks (this host, by default) may read
them, or whoever sends `Authorization: Bearer <metrics.bearer_token>`. Anyone else gets 403;
with `metrics.enabled: false` the page does not exist (404).
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from typing import Any

from flask import Blueprint, Response, jsonify, request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from middleware.integrations.network import client_address, within
from middleware.web.current import current_installation

bp = Blueprint("metrics", __name__)


def _allowed(settings: Mapping[str, Any], address: str) -> bool:
    """Tell whether the request may read the figures: from an allowed network, or the token."""
    if within(address, settings["allow"]):
        return True
    token = settings["bearer_token"]
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if token is None or scheme.lower() != "bearer" or not given.strip():
        return False
    return hmac.compare_digest(given.strip().encode(), token.encode())


@bp.get("/metrics")
def metrics() -> Response | tuple[Response, int]:
    """Answer the figures in Prometheus' text format."""
    core = current_installation()
    settings = core.config.metrics
    if not settings["enabled"]:
        return jsonify(error="metrics are turned off (metrics.enabled)"), 404
    proxies = core.config.trusted_proxies
    address = client_address(request.remote_addr, request.headers.get("X-Forwarded-For"), proxies)
    if not _allowed(settings, address):
        return jsonify(
            error="metrics are served to the networks in metrics.allow, or with "
            "Authorization: Bearer and metrics.bearer_token"
        ), 403  # fmt: skip
    body = generate_latest(core.metrics.registry)
    return Response(body, content_type=CONTENT_TYPE_LATEST, headers={"Cache-Control": "no-store"})
