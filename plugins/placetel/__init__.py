"""Placetel: the call notifications of its Notify API, signed or sent to a secret path.

Placetel posts a form for each event of a call (IncomingCall, OutgoingCall, CallAccepted,
HungUp) and signs it with X-PLACETEL-SIGNATURE, the hex HMAC-SHA256 of the raw body under
the shared secret set in its web portal (github.com/Placetel/call-control-notify-api,
README "Our POST request"). Zammad's native Placetel integration instead puts a token in
the URL; both are accepted here.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Mapping
from typing import Any

from middleware.config import Config, ConfigError, Setting
from middleware.errors import InvalidSignature, MalformedPayload, UnsupportedEvent
from middleware.integrations.plugin import (
    Capability,
    InboundEvent,
    InboundRequest,
    Plugin,
    decode_form,
)

# The events and the direction each implies (None: the event may belong to either).
EVENTS: Mapping[str, str | None] = {
    "IncomingCall": "in",
    "OutgoingCall": "out",
    "CallAccepted": None,  # documented for incoming calls; Zammad also sends it for outgoing
    "HungUp": None,
}
# Placetel documents 64 hex digits (a SHA-256); Zammad's own spec posts "1234567890-1".
CALL_ID = re.compile(r"[0-9A-Za-z][0-9A-Za-z._-]{0,127}")
SIGNATURE = re.compile(r"[0-9a-fA-F]{64}")
DURATION = re.compile(r"[0-9]{1,9}")
MAX_FIELD = 200  # a number, a SIP user (7777abcdefg@fpbx.de) or a name
MIN_TOKEN = 16
ACKNOWLEDGEMENT = b'<?xml version="1.0" encoding="UTF-8"?>\n<Response/>\n'

SETUP = """\
1. In the Placetel web portal, open Settings → External APIs, turn on the Call
   Control/Notify API and tick the numbers whose calls Carryover should see (outgoing calls
   are notified when the SIP user's caller ID is one of them).
2. Prove the notifications are Placetel's, in either way (or both):
   - signed: set a shared secret there and the same text in secret below; the URL is
     {public_url}/hooks/placetel, and each notification carries X-PLACETEL-SIGNATURE; or
   - by URL, as Zammad's Placetel integration does: press "Generate a secret" on this page
     (or set token below to a long random text) and enter the URL
     {public_url}/hooks/placetel/<token>.
3. Numbers come in national form (022129191999): set default_region to DE (or your
   country) in the configuration file.
4. The agent is the SIP user Placetel names (peer), e.g. 7777abcdefg@fpbx.de.
"""


class PlacetelPlugin(Plugin):
    """Receive Placetel's call notifications (Notify API)."""

    key = "placetel"
    title = "Placetel"
    short_title = "Placetel"
    capabilities = frozenset({Capability.RECEIVE})
    # Never taken for card numbers: a call id of digits, and numbers such as 004930609854181
    # (international form with 00) may pass the Luhn check.
    id_fields = ("call_id", "from", "to", "peer")
    id_formats = {"call": re.compile(r"^[0-9A-Za-z][0-9A-Za-z._-]{0,127}$")}
    settings = {
        "secret": Setting(str, secret=True, doc="the shared secret set in Placetel (Settings → "
                          "External APIs): checks X-PLACETEL-SIGNATURE"),
        "token": Setting(str, secret=True, doc=f"a random text of {MIN_TOKEN}+ characters "
                         "for the URL /hooks/placetel/<token>"),
    }  # fmt: skip
    event_types = tuple(EVENTS)
    setup_doc = SETUP
    generated_secret = "token"
    secret_in_path = True
    refusal_hints = {
        "signature": "check secret is the shared secret set in Placetel (Settings > External "
        "APIs); Placetel signs the body exactly as it posts it",
        "path-token": "check the URL set in Placetel ends with the current token; generating "
        "a new one replaces the old",
        "missing-signature": "no X-PLACETEL-SIGNATURE and no token in the URL: set a shared "
        "secret in Placetel, or post to /hooks/placetel/<token>",
    }

    def __init__(self, settings: Mapping[str, Any], config: Config) -> None:
        super().__init__(settings, config)
        secret, token = self.options.get("secret") or "", self.options.get("token") or ""
        if not (secret or token):
            raise ConfigError(
                "integrations.placetel: set secret (Placetel's shared secret) or token "
                "(for /hooks/placetel/<token>), or both"
            )
        if token and len(token) < MIN_TOKEN:
            raise ConfigError(f"integrations.placetel.token: at least {MIN_TOKEN} characters")

    @classmethod
    def generate_secret(cls) -> str:
        """Return a new path token: 32 random bytes, URL-safe base64 (no encoding needed)."""
        return secrets.token_urlsafe(32)

    def acknowledgement(self) -> tuple[bytes, str]:
        """Return an empty XML Response: what Placetel reads from its API endpoint."""
        return ACKNOWLEDGEMENT, "application/xml"

    # -- receiving -------------------------------------------------------------------------
    def verify(self, request: InboundRequest) -> str:
        """Accept the token in the path or the body's signature; any proof given must be right."""
        proofs = []
        if request.path_token is not None:
            self._check_token(request.path_token)
            proofs.append("path token")
        signature = request.headers.get("x-placetel-signature")
        if signature is not None:
            self._check_signature(signature.strip(), request.body)
            proofs.append("signature")
        if not proofs:
            raise InvalidSignature(
                "missing X-PLACETEL-SIGNATURE (or POST to /hooks/placetel/<token>)",
                "missing-signature",
            )
        return " and ".join(proofs)

    def _check_token(self, given: str) -> None:
        token = self.options.get("token") or ""
        # With no token set, every token is wrong; comparing anyway keeps the time the same.
        if not hmac.compare_digest(given.encode(), token.encode()) or not token:
            raise InvalidSignature("the token in the path does not match", "path-token")

    def _check_signature(self, given: str, body: bytes) -> None:
        secret = self.options.get("secret") or ""
        if not secret:
            raise InvalidSignature("X-PLACETEL-SIGNATURE sent, but no secret is set here")
        if not SIGNATURE.fullmatch(given):
            raise InvalidSignature("X-PLACETEL-SIGNATURE: expected 64 hex digits")
        if not hmac.compare_digest(sign(secret, body), given.lower()):
            raise InvalidSignature("X-PLACETEL-SIGNATURE does not match")

    def parse(self, request: InboundRequest) -> list[InboundEvent]:
        """Read one notification and name the outside party and the agent."""
        fields = _fields(request.body)
        event = fields.get("event", "")
        if not event:
            raise MalformedPayload("event: missing (IncomingCall, OutgoingCall, CallAccepted "
                                   "or HungUp)")  # fmt: skip
        if event not in EVENTS:
            raise UnsupportedEvent(event[:MAX_FIELD])
        call_id = fields.get("call_id", "")
        if not CALL_ID.fullmatch(call_id):
            raise MalformedPayload("call_id: expected the call's id (64 hex digits, or at most "
                                   "128 letters, digits, '.', '_' or '-')")  # fmt: skip
        for name in ("from", "to", "peer", "user", "type"):
            if len(fields.get(name, "")) > MAX_FIELD or not fields.get(name, "").isprintable():
                raise MalformedPayload(f"{name}: expected at most {MAX_FIELD} printable characters")
        duration = fields.get("duration", "")
        if duration and not DURATION.fullmatch(duration):
            raise MalformedPayload("duration: expected whole seconds")
        direction = _direction(event, fields.get("direction", ""))
        payload: dict[str, Any] = dict(fields)
        payload["direction"] = direction
        payload["customer"] = _customer(direction, fields)
        payload["agent"] = _agent(direction, fields)
        key = f"placetel:{call_id}:{event}"
        if event == "CallAccepted":
            # Another peer accepting the same call is a transfer, not a retry.
            key += f":{payload['agent'] or ''}"
        return [InboundEvent(key=key[:255], type=event, payload=payload)]


def sign(secret: str, body: bytes) -> str:
    """Return X-PLACETEL-SIGNATURE for a body: hex HMAC-SHA256 under the shared secret."""
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _fields(body: bytes) -> dict[str, str]:
    """Read the form; a name sent twice keeps its first value, as the dedupe key does."""
    fields: dict[str, str] = {}
    for name, value in decode_form(body):
        fields.setdefault(name, value.strip())
    return fields


def _direction(event: str, given: str) -> str | None:
    """Return in or out: what the event implies, else the direction sent, else None."""
    implied = EVENTS[event]
    if implied is not None:
        return implied  # as Zammad does: IncomingCall is in, OutgoingCall out, whatever is sent
    if given not in ("", "in", "out"):
        raise MalformedPayload("direction: expected 'in' or 'out'")
    return given or None


def _customer(direction: str | None, fields: Mapping[str, str]) -> str | None:
    """Name the outside party's number; none when the direction is unknown.

    A CallAccepted or HungUp without direction (Zammad's spec sends them so) belongs to a
    call whose first event named the customer; guessing could take the company's own line
    for a customer.
    """
    if direction is None:
        return None
    number = fields.get("from" if direction == "in" else "to", "")
    return number or None


def _agent(direction: str | None, fields: Mapping[str, str]) -> str | None:
    """Name the agent: the user sent (Zammad's), else the SIP peer, else a SIP user as from."""
    for value in (fields.get("user", ""), fields.get("peer", "")):
        if value:
            return value
    sender = fields.get("from", "")
    # Older notifications of outgoing calls put the calling SIP user in from.
    if direction == "out" and "@" in sender:
        return sender
    return None
