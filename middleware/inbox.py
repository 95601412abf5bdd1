"""The inbox: every authentic delivery is committed here before the sender gets its 2xx."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, Engine, Row, select
from sqlalchemy.dialects import postgresql, sqlite

from middleware.plugins import InboundRequest
from middleware.queue import PENDING, LeasedQueue
from middleware.redaction import redact
from middleware.store import deliveries, delivery_keys, dumps, inserted_id, utcnow

# Never keep credentials that a sender or proxy put in headers.
DROPPED_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})


def _insert_key(conn: Connection, plugin: str, key: str, delivery_id: int) -> bool:
    values = {"plugin": plugin, "key": key, "delivery_id": delivery_id}
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    statement = (
        dialect.insert(delivery_keys)
        .values(**values)
        .on_conflict_do_nothing()
        .returning(delivery_keys.c.key)  # rowcount is not reliable across drivers here
    )
    return conn.execute(statement).first() is not None


def stored_body(body: bytes) -> bytes:
    """Return the body as it may be kept: card numbers and secrets redacted."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return body
    try:
        payload = json.loads(text, strict=False)
    except (ValueError, RecursionError):
        cleaned = redact(text)
        return body if cleaned == text else (cleaned or "").encode("utf-8")
    # Redact inside JSON strings only: on the raw text a secret phrase would swallow the
    # closing quote, and an id passing the Luhn check would be taken for a card.
    cleaned_payload = _redact_values(payload)
    return body if cleaned_payload == payload else json.dumps(cleaned_payload).encode()


def _redact_values(value: Any, key: str = "") -> Any:
    if isinstance(value, str):
        return value if key == "id" or key.endswith("_id") else redact(value)
    if isinstance(value, list):
        return [_redact_values(v, key) for v in value]
    if isinstance(value, dict):
        return {k: _redact_values(v, str(k)) for k, v in value.items()}
    return value


class _AllSeen(Exception):
    """Every event key of a delivery was seen before."""


class DeliveryInbox(LeasedQueue):
    """Raw deliveries, deduplicated by event key, waiting for the worker."""

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine, deliveries, ready=(PENDING,))

    def accept(self, plugin: str, request: InboundRequest, keys: Sequence[str]) -> int | None:
        """Commit a delivery with its unseen event keys; None when every key was seen before."""
        now = utcnow()
        headers = {k: v for k, v in request.headers.items() if k not in DROPPED_HEADERS}
        headers["x-carryover-url"] = request.url
        try:
            with self.engine.begin() as conn:
                result = conn.execute(
                    deliveries.insert().values(
                        plugin=plugin,
                        received_at=now,
                        headers=dumps(headers),
                        body=stored_body(request.body),
                        event_keys="[]",
                        status=PENDING,
                        attempts=0,
                        next_attempt_at=now,
                        trail="[]",
                    )
                )
                delivery_id = inserted_id(result)
                unique = dict.fromkeys(keys)
                fresh = [k for k in unique if _insert_key(conn, plugin, k, delivery_id)]
                if not fresh:
                    raise _AllSeen
                conn.execute(
                    deliveries.update()
                    .where(deliveries.c.id == delivery_id)
                    .values(event_keys=dumps(fresh))
                )
        except _AllSeen:
            return None  # the transaction rolled back: nothing of this delivery is kept
        return delivery_id

    def get(self, delivery_id: int) -> Row | None:
        """Return one delivery row."""
        with self.engine.begin() as conn:
            return conn.execute(select(deliveries).where(deliveries.c.id == delivery_id)).first()

    def listing(self, status: str | None = None, limit: int = 50) -> list[Row]:
        """Return the newest deliveries, optionally of one status."""
        query = select(
            deliveries.c.id, deliveries.c.plugin, deliveries.c.received_at, deliveries.c.status,
            deliveries.c.attempts, deliveries.c.last_error, deliveries.c.event_keys,
        ).order_by(deliveries.c.id.desc()).limit(limit)  # fmt: skip
        if status:
            query = query.where(deliveries.c.status == status)
        with self.engine.begin() as conn:
            return list(conn.execute(query))


def request_of(row: Row) -> InboundRequest:
    """Rebuild the inbound request a stored delivery came from."""
    headers: Mapping[str, str] = json.loads(row.headers)
    return InboundRequest(
        path=f"/hooks/{row.plugin}",
        url=headers.get("x-carryover-url", ""),
        headers=headers,
        body=bytes(row.body),
    )
