"""Agent-facing reads: the merged context of one customer, for screen-pops and agent tools."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Callable
from functools import wraps
from typing import Any
from urllib.parse import urlencode

from flask import Blueprint, Response, jsonify, request
from sqlalchemy import Connection, select

from middleware.customers.identity import CUSTOMER, IdentityTypes, candidates_of, find_holders
from middleware.interaction import Identity
from middleware.notes.summary import build_context
from middleware.store.tables import customers, reading
from middleware.web.current import current_installation

bp = Blueprint("context_api", __name__)
MAX_ID_DIGITS = 18  # customer ids are 64-bit; a longer number cannot be one
MAX_EXPIRY_DIGITS = 12
# A link signed with scope=any-phone opens the pop of any number appended to it (for
# softphones and PBXs that open a URL with the caller's number but cannot sign per call).
ANY_PHONE = "any-phone"


def sign_link(secret: str, path: str, params: str, expires: int) -> str:
    """Sign a path and query (e.g. '/api/v1/context', 'phone=+14155550100') until `expires`."""
    message = f"{path}?{params}|{expires}".encode()
    digest = hmac.new(secret.encode(), message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def signed_path(secret: str, path: str, params: dict[str, str], ttl_s: int) -> str:
    """Return path?params&exp=…&sig=…, a link that works without a key until it expires."""
    expires = int(time.time()) + ttl_s
    pairs = sorted(params.items())
    signature = sign_link(secret, path, "&".join(f"{k}={v}" for k, v in pairs), expires)
    return f"{path}?{urlencode(pairs)}&exp={expires}&sig={signature}"


def _signed_link_ok(secret: str | None) -> bool:
    signature, expires = request.args.get("sig"), request.args.get("exp", "")
    # isdigit() alone admits "²" and other digits that int() refuses, and int() refuses (or
    # crawls through) thousands of digits: unix seconds have 10.
    if not secret or not signature or not (expires.isascii() and expires.isdigit()):
        return False
    if len(expires) > MAX_EXPIRY_DIGITS:
        return False
    if int(expires) < time.time():
        return False
    unsigned = {"sig", "exp"}
    if request.args.get("scope") == ANY_PHONE:
        unsigned.add("phone")  # a shift link: the softphone appends the caller's number
    params = "&".join(f"{k}={v}" for k, v in sorted(request.args.items()) if k not in unsigned)
    # Bytes, because compare_digest refuses str with non-ASCII characters.
    expected = sign_link(secret, request.path, params, int(expires)).encode()
    return hmac.compare_digest(expected, signature.encode())


def agent_only(view: Callable[..., Any]) -> Callable[..., Any]:
    """Require a Bearer agent key or a signed, unexpired link."""

    @wraps(view)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        core = current_installation()
        config = core.config
        header = request.headers.get("Authorization", "")
        token = header[7:].strip() if header.lower().startswith("bearer ") else ""
        # Compare against every key, so the time taken tells nothing about which one matched.
        matches = [hmac.compare_digest(token.encode(), k.encode()) for k in config.agent_api_keys]
        if (token and any(matches)) or _signed_link_ok(core.link_secret):
            return view(*args, **kwargs)
        response = jsonify(error="authorisation required: Bearer agent key or a signed link")
        response.headers["WWW-Authenticate"] = 'Bearer realm="carryover"'
        return response, 401

    return guarded


class UnusableIdentifier(ValueError):
    """The identifier given cannot be what it claims to be."""


def _customer_from_query(
    conn: Connection, region: str, types: IdentityTypes
) -> tuple[list[int], bool]:
    lookups = types.lookup_params()
    given = [(p, request.args[p]) for p in lookups if request.args.get(p)]
    if len(given) != 1:
        raise UnusableIdentifier(f"give exactly one of {', '.join(lookups)}")
    kind, raw = given[0]
    if not raw.isprintable():
        # No identifier holds control characters, and PostgreSQL refuses NUL in a query.
        raise UnusableIdentifier(f"{kind}: contains control characters")
    if kind == CUSTOMER:
        if not (raw.isascii() and raw.isdigit()) or len(raw) > MAX_ID_DIGITS:
            raise UnusableIdentifier("customer: expected a number")
        row = conn.execute(
            select(customers.c.id, customers.c.merged_into).where(customers.c.id == int(raw))
        ).first()
        if row is None:
            return [], False
        return [row.merged_into or row.id], False
    identity = types.normalise(Identity(kind, raw), region)
    if identity is None:
        raise UnusableIdentifier(f"{kind}: {raw!r} cannot be a valid {kind.replace('_', ' ')}")
    holders = find_holders(conn, identity)
    shared = len(holders) > 1 or any(s for _, s in holders)
    return [cid for cid, _ in holders], shared


@bp.get("/api/v1/context")
@agent_only
def context() -> Response | tuple[Response, int]:
    """Return the merged context of the customer behind one identifier."""
    core = current_installation()
    with reading(core.engine) as conn:
        try:
            found, shared = _customer_from_query(
                conn, core.config.default_region, core.identity_types
            )
        except UnusableIdentifier as exc:
            return jsonify(error=str(exc)), 400
        if not found:
            return jsonify(error="no customer known by that identifier"), 404
        if shared:
            return jsonify(
                customer=None,
                candidates=candidates_of(conn, found),
                reason="a shared line: several customers use this number",
            )
        settings = core.config.summary
        ctx = build_context(conn, found[0], settings["recent_limit"], mood=settings["mood"])
        summary = core.renderer.render("summary", ctx)
    payload = ctx.as_dict()
    payload["customer"] = {**ctx.customer, "identities": [
        {"type": i["type"], "value": i["value"], "shared": i["shared"]}
        for i in ctx.customer["identities"]
    ]}  # fmt: skip
    payload.pop("candidates")
    payload["summary"] = summary
    return jsonify(payload)
