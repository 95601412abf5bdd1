"""Standard Webhooks signatures: the one scheme that signed generic senders share.

Spec: https://github.com/standard-webhooks/standard-webhooks, spec/standard-webhooks.md
(version 1.0.0): headers webhook-id, webhook-timestamp (unix seconds) and webhook-signature
(a space-delimited list of "v1,<base64>"); signed content "{msg_id}.{timestamp}.{payload}";
HMAC-SHA256 keyed with the base64-decoded part of a whsec_ secret; timestamps too far from
now are refused against replays. Plugins that take such senders call verify() here.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import time
from collections.abc import Mapping

from middleware.errors import InvalidSignature

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32  # the spec asks for 24 to 64 random bytes
MAX_TIMESTAMP = 12  # digits of unix seconds, far beyond any real time
DEFAULT_TOLERANCE_S = 300  # the spec's reference libraries allow 5 minutes either way


def generate_secret() -> str:
    """Return a new secret: whsec_ and base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


def signing_key(secret: str) -> bytes:
    """Return the HMAC key: the base64 part of a whsec_ secret, else the secret's bytes."""
    if secret.startswith(SECRET_PREFIX):
        try:
            return base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
        except binascii.Error:
            pass
    return secret.encode()


def sign(secret: str, webhook_id: str, timestamp: str, body: bytes) -> str:
    """Return the v1 signature of a message (without the 'v1,' prefix)."""
    content = f"{webhook_id}.{timestamp}.".encode() + body
    digest = hmac.new(signing_key(secret), content, hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def headers(
    secret: str, webhook_id: str, body: bytes, timestamp: int | None = None
) -> dict[str, str]:
    """Return the three headers a sender puts on a signed message."""
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": stamp,
        "webhook-signature": "v1," + sign(secret, webhook_id, stamp, body),
    }


def verify(
    secret: str,
    request_headers: Mapping[str, str],
    body: bytes,
    tolerance_s: int = DEFAULT_TOLERANCE_S,
    missing_hint: str = "",
) -> str:
    """Return the message's webhook-id; raise InvalidSignature unless signed and fresh.

    `request_headers` has lower-case names; `missing_hint` is added to the message of a
    delivery that carries no signature headers at all (another way the sender may prove).
    """
    webhook_id = request_headers.get("webhook-id", "")
    timestamp = request_headers.get("webhook-timestamp", "")
    signatures = request_headers.get("webhook-signature", "")
    if not (webhook_id and timestamp and signatures):
        raise InvalidSignature(
            f"missing webhook-id, webhook-timestamp or webhook-signature{missing_hint}",
            "missing-signature",
        )
    # Unix seconds have 10 digits; int() of thousands of digits would raise (or crawl).
    if not (timestamp.isascii() and timestamp.isdigit()) or len(timestamp) > MAX_TIMESTAMP:
        raise InvalidSignature("webhook-timestamp: expected unix seconds", "timestamp")
    if abs(time.time() - int(timestamp)) > tolerance_s:
        raise InvalidSignature(f"webhook-timestamp {timestamp} is over {tolerance_s}s off",
                               "timestamp")  # fmt: skip
    expected = sign(secret, webhook_id, timestamp, body).encode()
    given = [s.partition(",")[2].encode() for s in signatures.split() if s.startswith("v1,")]
    # Several signatures let a sender rotate its secret; any one of them may match. The list
    # is compared whole (no early exit) so that timing tells nothing about which one failed.
    if not any([hmac.compare_digest(expected, g) for g in given]):
        raise InvalidSignature("webhook-signature does not match")
    return webhook_id
