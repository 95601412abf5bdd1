"""Inbound webhooks: verify, store durably, reply; the work happens later in the worker."""

from __future__ import annotations

import logging
import sqlite3
import time
from dataclasses import replace

from flask import Blueprint, Response, current_app, jsonify, request
from flask.blueprints import BlueprintSetupState
from sqlalchemy.exc import SQLAlchemyError

from middleware.customers.redaction import redact_body
from middleware.errors import InboundError, MalformedPayload, TryLater, UnsupportedEvent
from middleware.ingest.refusals import describe
from middleware.installation import Installation
from middleware.integrations.network import client_address, within
from middleware.integrations.plugin import Capability, InboundEvent, InboundRequest, Plugin
from middleware.process.mapping import PluginMapping
from middleware.throttled_log import ThrottledLog, store_error
from middleware.web.current import current_installation

bp = Blueprint("hooks", __name__)
log = logging.getLogger(__name__)
MAX_BODY_BYTES = 1024 * 1024
MAX_HEADER_CHARS = 200
RETRY_AFTER_S = 30  # what a sender refused for want of a store is told to wait
# While the store is down every delivery is refused: one line per plugin and cause this often.
REFUSAL_LOG_INTERVAL_S = 10.0
STORE_ERRORS = (SQLAlchemyError, sqlite3.Error)  # the inbox's SQLite path uses the driver
REFUSED = (400, 401, 403)  # what is counted as refused: not authentic, or not readable


@bp.record_once
def _set_up_refusal_log(state: BlueprintSetupState) -> None:
    """Give each app that serves the hooks its own log of refused deliveries."""
    state.app.extensions["hooks.refusal_log"] = ThrottledLog(
        state.app.logger, REFUSAL_LOG_INTERVAL_S
    )


def _log_refusal(key: str, exc: Exception) -> None:
    """Log a delivery refused for want of a store: one line, a traceback only for a bug."""
    refusals: ThrottledLog = current_app.extensions["hooks.refusal_log"]
    message = "could not store a %s delivery (answered 503)"
    if not isinstance(exc, STORE_ERRORS):  # a program error: its traceback tells where
        refusals.log(logging.ERROR, f"bug:{key}:{type(exc).__name__}", message, key, exc_info=True)
        return
    why = store_error(exc)
    refusals.log(logging.ERROR, f"store:{key}:{why.partition(':')[0]}", message + ": %s", key, why)


def _record_refusal(core: Installation, plugin: Plugin, reason: str, address: str) -> None:
    """Count a refused delivery for the admin pages; a failure here never changes the answer."""
    try:
        core.refusals.record(plugin.key, describe(reason, plugin.refusal_hints), address)
    except Exception:  # a bug in recording: the sender still gets its 401 or 400
        current_app.logger.exception("could not record a refused %s delivery", plugin.key)


def _log_accepted(
    mapping: PluginMapping, key: str, delivery_id: int | None, events: list[InboundEvent]
) -> None:
    """Log a stored delivery with its events and the records they are about (no body)."""
    if not log.isEnabledFor(logging.INFO):
        return
    types = list(dict.fromkeys(e.type for e in events))
    records = [r for r in dict.fromkeys(mapping.record_ref(e.type, e.payload) for e in events) if r]
    about = ", ".join(records) or "no record named"
    fields = {"integration": key, "events": types, "records": records}
    if delivery_id is None:  # a sender's retry: every event was stored before
        log.info("%s delivery seen before, nothing stored: %s (%s)", key, ", ".join(types),
                 about, extra={**fields, "outcome": "duplicate"})  # fmt: skip
        return
    log.info("accepted %s delivery in:%d: %s (%s)", key, delivery_id, ", ".join(types), about,
             extra={**fields, "delivery_id": delivery_id, "outcome": "accepted"})  # fmt: skip


def _check_key(key: str) -> None:
    """Refuse an event key that the store's text columns cannot hold exactly."""
    try:
        key.encode("utf-8")  # an unpaired surrogate, from a JSON escape, cannot be stored
    except UnicodeEncodeError:
        raise MalformedPayload(f"event key {key!r}: holds an unpaired surrogate") from None
    if "\x00" in key:
        raise MalformedPayload(f"event key {key!r}: holds a NUL character")


def _header_value(text: str) -> str:
    """Return sender-chosen text as a header can carry it: printable ASCII, kept short.

    A line break would make the response unbuildable (a 500), and a long value can exceed
    what a proxy in front accepts.
    """
    printable = "".join(c if c.isprintable() and c.isascii() else "?" for c in text)
    return printable[:MAX_HEADER_CHARS]


def _error(status: int, message: str) -> tuple[Response, int]:
    return jsonify(error=message), status


def _inbound(core: Installation, key: str, token: str | None) -> InboundRequest:
    """Describe the request for the plugin; a path token never goes into what is stored."""
    query = request.query_string.decode("latin-1")
    # The stored URL names the path token's place, never the token: it is a secret.
    path = f"/hooks/{key}" + ("/[path token]" if token is not None else "")
    tail = path + (f"?{query}" if query else "")
    peer = request.remote_addr or ""
    trusted = core.config.trusted_proxies
    return InboundRequest(
        path=path,
        url=core.config.public_url + tail,
        received_url=request.host_url.rstrip("/") + tail,
        headers={k.lower(): v for k, v in request.headers.items()},
        body=request.get_data(cache=False),  # raises 413 past MAX_CONTENT_LENGTH
        path_token=token,
        remote_addr=client_address(peer, request.headers.get("X-Forwarded-For"), trusted),
        via_trusted_proxy=within(peer, trusted),
    )


@bp.post("/hooks/<key>")
@bp.post("/hooks/<key>/<path:token>")
def receive(key: str, token: str | None = None) -> Response | tuple[Response, int]:
    """Accept one delivery for the plugin `key`."""
    core = current_installation()
    core.webhook_seen_at = time.monotonic()
    plugin = core.registry.get(key)
    if plugin is None or not plugin.has_capability(Capability.RECEIVE):
        return _error(404, f"no integration {key!r} is configured")
    if token is not None and not plugin.secret_in_path:
        # Only senders that cannot sign put a secret in the path; for the others the rest
        # of the path was ignored, so a signed delivery to any /hooks/<key>/... was taken.
        return _error(404, f"integration {key!r} takes no token in its path")
    inbound = _inbound(core, key, token)
    body = inbound.body
    mapping = core.mappings[key]
    try:
        inbound = replace(inbound, proof=plugin.verify(inbound))
        # Parse the body as it will be stored, so that event keys derived from it (e.g. a
        # hash) are the same when the worker parses the stored copy again.
        stored = plugin.storable_body(redact_body(body, inbound.content_type, core.id_fields))
        if stored is not body:
            inbound = replace(inbound, body=stored)
        events = plugin.parse(inbound)
        # An event of read_back_types is mapped as the record the worker reads for it.
        mapped = [e for e in events if mapping.handles(e.type) or e.type in plugin.read_back_types]
        used = [e for e in mapped if not core.is_own_note(plugin, e)]
        for event in used:
            _check_key(event.key)
        if not used:
            ignored = events[0] if events else None
            own = ignored is not None and core.is_own_note(plugin, ignored)
            raise UnsupportedEvent("own note" if own else ignored.type if ignored else "empty")
    except UnsupportedEvent as exc:
        reply, content_type = plugin.ignored_reply(exc.event_type)
        headers = {"X-Carryover-Ignored": _header_value(exc.event_type)}
        return Response(reply, status=200, content_type=content_type, headers=headers)
    except InboundError as exc:
        if exc.status in REFUSED:
            _record_refusal(core, plugin, exc.reason, inbound.remote_addr)
        refusal = plugin.refusal(exc)
        if refusal is not None:
            response = Response(refusal[0], status=exc.status, content_type=refusal[1])
        else:
            response = jsonify(error=str(exc))
            response.status_code = exc.status
        if isinstance(exc, TryLater):
            response.headers["Retry-After"] = str(exc.retry_after)
        return response
    except Exception:  # a body no check foresaw: refused, and logged so it gets one
        current_app.logger.exception("unexpected failure reading a %s delivery", key)
        _record_refusal(core, plugin, "malformed", inbound.remote_addr)
        return _error(400, "the delivery could not be read")
    try:
        delivery_id = core.inbox.accept(key, inbound, [e.key for e in used])
    except Exception as exc:  # nothing was stored: the sender must retry
        _log_refusal(key, exc)
        response = jsonify(error="the store is unavailable; retry later")
        response.headers["Retry-After"] = str(RETRY_AFTER_S)
        return response, 503
    _log_accepted(mapping, key, delivery_id, used)
    if delivery_id is not None and not core.wake.is_set():
        core.wake.set()
    ack, content_type = plugin.acknowledge(inbound, used)
    return Response(ack, status=200, content_type=content_type)
