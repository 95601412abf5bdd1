"""sipgate.io: the push API's call events in, signed by sipgate or sent to a secret path.

sipgate posts a form for each new call (newCall) to the URL set in its console. Only the
reply to that post subscribes to the call's later events: an XML <Response> whose onAnswer
and onHangup attributes name the URLs of the answer and hangup pushes (as Zammad's sipgate
endpoint answers). Each push carries X-Sipgate-Signature: base64 of an RSA signature
(PKCS#1 v1.5, SHA-256) over the raw body, made with sipgate's private key.

Sources: the push API reference (github.com/sipgate/docs, docs/push-api/api-reference.md),
sipgate's Node SDK (github.com/sipgate-io/sipgateio-node, lib/webhook/signatureVerifier.ts
and webhook.ts), and Zammad's endpoint (zammad/zammad,
app/controllers/integration/sipgate_controller.rb).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
import secrets
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote
from xml.sax.saxutils import quoteattr

from cryptography.exceptions import InvalidSignature as BadRsaSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from middleware.config import Config, ConfigError, Setting
from middleware.errors import InvalidSignature, MalformedPayload, UnsupportedEvent
from middleware.integrations.network import parse_networks, within
from middleware.integrations.plugin import (
    Capability,
    InboundEvent,
    InboundRequest,
    Plugin,
    decode_form_fields,
)

EVENTS = ("newCall", "answer", "hangup")
HOOK_PATH = "/hooks/sipgate"
XML = "application/xml"
EMPTY_RESPONSE = b'<?xml version="1.0" encoding="UTF-8"?>\n<Response/>'
# sipgate's call ids: hex like 54566B150B0C0D3A5D544C in its docs, digits and a dash in
# Zammad's tests (4991155921769858278-1). Linear, anchored, and short.
CALL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
MAX_SIGNATURE_CHARS = 2048  # base64 of a 4096-bit signature is 684 characters
MAX_FIELD_CHARS = 500

# sipgate's public key for X-Sipgate-Signature, as published in its Node SDK
# (sipgate-io/sipgateio-node, lib/webhook/signatureVerifier.ts, 2021-08-10, still the key
# of its latest release). The setting public_key replaces it should sipgate publish another.
SIPGATE_PUBLIC_KEY = """\
-----BEGIN PUBLIC KEY-----
MIICIjANBgkqhkiG9w0BAQEFAAOCAg8AMIICCgKCAgEAvFdlnqRfO5TmqzjtsFVC
qPz+oW+poi3lXQFvMJJMEAtlU4MbX+yuIkgnC+Qt3AQWIK+oWSEQiybg+p39wEMl
16PZxEzf9gONQvTg1XhyHnwqYUFQj/AoxPKGYC3jmdjZ224SrESiTN3CdxoOc3vk
cXiQstYE7SxnksPtzfk0aIOkicim5/tAP9izNQ18/zmX3ChjK2k72gf5dDlq+qZ8
pRiHAPZ64TySH6cLQDhaoh6Nbq8FEG3usXXPClbUMh2DZaTMPafpd+LNuTngJ/y+
KoZasVuFfXAeBqGA6l5d4Uedfr99Z6qjwDrJ8sU4z2Do9bJrbuqP+mOXEebhSI1K
vi8trEfrIt8hnDBGsBaB9NEO3kYxvDT2/PhC9fNYFocjEpZNd7/mUqTJDYlpa4UC
NDQaU+ATdXG8/P5sGAegks6MQTu+qe9XTO0CV48eswDkz6g3UbLOwmrJK59SjD3J
yAZ52sluwyDKRWw/PPTt8BTQLjvkdbiLUlc4ehJ4b1X7D7diYWHDPeFL47cAvaXh
dXVrZDeBJYibvD1jRx4ES0KlfhwzNXBYUoM/Movg9zMM2PzyHHKS//xIjwUC/FJ6
/6eykno0Hy2B1ev6s3hdY6VkN2zd7Wf+EK4DxRliwsg1U99szFE3ewLfexF+Uag5
M+TfPtOUumI/NHMTvsRW9+ECAwEAAQ==
-----END PUBLIC KEY-----
"""

# Step 4's addresses are those sipgate's Node SDK checks (lib/webhook/webhook.ts,
# SIPGATE_WEBHOOK_IP_ADDRESSES); offered, not assumed, as they may change.
SETUP = """\
1. Book the sipgate.io feature in your sipgate account (Feature Store), then open
   sipgate.io → Webhooks → URLs in the sipgate console.
2. Set "Incoming calls" and "Outgoing calls" to {public_url}/hooks/sipgate. That is all:
   Carryover answers each new call with the URLs of its answer and hangup events, so
   sipgate sends them without more settings. public_url must be the address sipgate
   reaches (HTTPS with a certificate sipgate accepts; self-signed ones are refused).
3. sipgate signs every push (X-Sipgate-Signature) with its own key, which Carryover knows:
   nothing to copy. For pushes that arrive unsigned (a relay in between), press "Generate
   a secret" here for a path token and use {public_url}/hooks/sipgate/<path_token> as the
   URL instead; Carryover's answer then names that URL for the later events too.
4. Optionally, accept pushes only from sipgate's addresses: its SDK lists 217.116.118.254
   and 212.9.46.32; set allowed_networks to ["217.116.118.254/32", "212.9.46.32/32"] (and
   trusted_proxies when a proxy is in front).
5. Numbers come without a plus (492111234567) and are read as international numbers.
"""


class SipgatePlugin(Plugin):
    """Receive sipgate.io push API call events (newCall, answer, hangup)."""

    key = "sipgate"
    title = "sipgate.io"
    short_title = "sipgate"
    capabilities = frozenset({Capability.RECEIVE})
    # sipgate's ids: a call id may be a long number, user ids end in digits (1234567w0).
    id_fields = ("callId", "origCallId", "xcid", "userId", "fullUserId", "userId[]",
                 "fullUserId[]")  # fmt: skip
    id_formats = {"call": CALL_ID}
    settings = {
        "path_token": Setting(
            str,
            secret=True,
            doc="optional: a long random token, for pushes to /hooks/sipgate/<path_token>",
        ),
        "public_key": Setting(
            str,
            "",
            doc="empty for sipgate's published key (PEM); replace only if sipgate publishes "
            "another",
        ),
        "allowed_networks": Setting(
            list, [], doc="optional: only these source networks (CIDR) may push; others get 401"
        ),
    }
    event_types = EVENTS
    setup_doc = SETUP
    generated_secret = "path_token"
    secret_in_path = True
    refusal_hints = {
        "signature": "X-Sipgate-Signature does not verify with sipgate's key: if sipgate has "
        "published a new key, set it as public_key; otherwise the push was not sipgate's",
        "path-token": "check the URL set in the sipgate console ends with the current "
        "path_token; generating a new one replaces the old",
        "missing-signature": "the push is neither signed (X-Sipgate-Signature) nor sent to "
        "/hooks/sipgate/<path_token>: is something else posting to this URL?",
        "source-network": "check allowed_networks holds the addresses sipgate pushes from, "
        "and trusted_proxies if a proxy is in front",
    }

    def __init__(self, settings: Mapping[str, Any], config: Config) -> None:
        super().__init__(settings, config)
        self.public_key = load_public_key(self.options.get("public_key") or SIPGATE_PUBLIC_KEY)
        try:
            self.networks = parse_networks(
                self.options.get("allowed_networks") or [], "integrations.sipgate.allowed_networks"
            )
        except ValueError as exc:
            raise ConfigError(str(exc)) from None

    @classmethod
    def generate_secret(cls) -> str:
        """Return a new path token: 32 random bytes, URL-safe base64."""
        return secrets.token_urlsafe(32)

    # -- receiving -------------------------------------------------------------------------
    def verify(self, request: InboundRequest) -> str:
        """Accept the configured path token, or else a valid X-Sipgate-Signature.

        With allowed_networks set, a push from any other address is refused first.
        """
        if self.networks and not within(request.remote_addr, self.networks):
            raise InvalidSignature(
                f"source address {request.remote_addr or '?'} is not in allowed_networks",
                "source-network",
            )
        if request.path_token is not None:
            self._check_path_token(request.path_token)
            return "path token"
        signature = request.headers.get("x-sipgate-signature", "").strip()
        if not signature:
            raise InvalidSignature(
                "missing X-Sipgate-Signature header (or POST to /hooks/sipgate/<path_token>)",
                "missing-signature",
            )
        if not signed_by(self.public_key, signature, request.body):
            raise InvalidSignature("X-Sipgate-Signature does not verify with sipgate's key")
        return "signature"

    def _check_path_token(self, given: str) -> None:
        """Raise InvalidSignature unless the token in the path is the configured one."""
        expected = self.options.get("path_token") or ""
        if not expected:
            raise InvalidSignature(
                "no path_token is set for sipgate: post to /hooks/sipgate", "path-token"
            )
        if not hmac.compare_digest(given.encode(), expected.encode()):
            raise InvalidSignature("the token in the path does not match", "path-token")

    def parse(self, request: InboundRequest) -> list[InboundEvent]:
        """Read one push (a form) and name the outside party and the sipgate users."""
        fields = decode_form_fields(request.body)
        _check_values(fields)
        event = fields.get("event")
        if not isinstance(event, str) or not event:
            raise MalformedPayload("event: missing (newCall, answer or hangup)")
        if event not in EVENTS:
            raise UnsupportedEvent(event)  # dtmf, or an event sipgate adds later
        call_id = _call_id(fields, "callId")
        if call_id is None:
            raise MalformedPayload("callId: missing (the id that ties a call's events together)")
        direction = fields.get("direction")
        if direction not in ("in", "out"):
            raise MalformedPayload("direction: expected 'in' or 'out'")
        payload = dict(fields)
        payload["callId"] = call_id
        payload["origCallId"] = _call_id(fields, "origCallId")
        payload["customer"] = fields.get("from" if direction == "in" else "to") or None
        payload["agent"] = _agent(fields)
        return [InboundEvent(key=f"sipgate:{call_id}:{event}", type=event, payload=payload)]

    def acknowledgement(self) -> tuple[bytes, str]:
        """Return an empty XML <Response/>: sipgate discards the reply to later events."""
        return EMPTY_RESPONSE, XML

    def acknowledge(
        self, request: InboundRequest, events: Sequence[InboundEvent]
    ) -> tuple[bytes, str]:
        """Answer a new call with the URLs of its answer and hangup events, as sipgate asks."""
        if not any(e.type == "newCall" for e in events):
            return self.acknowledgement()
        url = quoteattr(self.callback_url(request))
        reply = f'<?xml version="1.0" encoding="UTF-8"?>\n<Response onAnswer={url} onHangup={url}/>'
        return reply.encode(), XML

    def callback_url(self, request: InboundRequest) -> str:
        """Return the URL of a call's later events: the one sipgate posted to, on public_url."""
        url = self.config.public_url.rstrip("/") + HOOK_PATH
        if request.path_token is not None:  # verified: it is the configured token
            url += "/" + quote(self.options["path_token"], safe="")
        return url


def load_public_key(text: str) -> rsa.RSAPublicKey:
    """Read an RSA public key in PEM, also with its line breaks lost (a one-line form field)."""
    inner = text.replace("-----BEGIN PUBLIC KEY-----", "").replace("-----END PUBLIC KEY-----", "")
    try:
        key = serialization.load_der_public_key(base64.b64decode("".join(inner.split()),
                                                                 validate=True))  # fmt: skip
    except (ValueError, binascii.Error, TypeError):
        key = None
    if not isinstance(key, rsa.RSAPublicKey):
        raise ConfigError(
            "integrations.sipgate.public_key: expected an RSA public key in PEM "
            "(-----BEGIN PUBLIC KEY----- …), or empty for sipgate's published key"
        )
    return key


def signed_by(key: rsa.RSAPublicKey, signature: str, body: bytes) -> bool:
    """Tell whether a base64 signature is the key's RSA-SHA256 (PKCS#1 v1.5) over the body."""
    if len(signature) > MAX_SIGNATURE_CHARS:
        return False
    try:
        key.verify(base64.b64decode(signature, validate=True), body, padding.PKCS1v15(),
                   hashes.SHA256())  # fmt: skip
    except (BadRsaSignature, binascii.Error, ValueError):
        return False
    return True


def _check_values(fields: Mapping[str, Any]) -> None:
    """Refuse values no call event holds: NUL characters and overlong text."""
    for name, value in fields.items():
        for item in value if isinstance(value, list) else [value]:
            if "\x00" in item:
                raise MalformedPayload(f"{name}: holds a NUL character")
            if len(item) > MAX_FIELD_CHARS:
                raise MalformedPayload(f"{name}: longer than {MAX_FIELD_CHARS} characters")


def _call_id(fields: Mapping[str, Any], name: str) -> str | None:
    """Return a call id field, None when absent or empty; refuse one of another format."""
    value = fields.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not CALL_ID.match(value):
        raise MalformedPayload(
            f"{name}: expected letters, digits, '.', '_' or '-' (at most 100), got {value!r:.60}"
        )
    return value


def _agent(fields: Mapping[str, Any]) -> str | None:
    """Name the sipgate users: user[] on a new call, user on an answer (incoming calls only).

    Never answeringNumber: on an outgoing call it is the customer's own number.
    """
    users = fields.get("user")
    names = users if isinstance(users, list) else [users]
    joined = ", ".join(n.strip() for n in names if isinstance(n, str) and n.strip())
    return joined or None
