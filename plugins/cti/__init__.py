"""Any PBX: Zammad's generic-CTI events, signed as Standard Webhooks or sent to a secret path."""

from __future__ import annotations

import hmac
from typing import Any

from middleware.config import Setting
from middleware.errors import InvalidSignature, MalformedPayload, UnsupportedEvent
from middleware.ingest import standard_webhooks
from middleware.integrations.plugin import (
    Capability,
    InboundEvent,
    InboundRequest,
    Plugin,
    decode_form_fields,
    decode_json_object,
    looks_like_json,
)

EVENTS = ("newCall", "answer", "hangup")
MAX_CALL_ID = 200

SETUP = """\
1. Choose a secret: press "Generate a secret" on this page, which makes a whsec_… secret
   (whsec_ followed by base64 of 32 random bytes) and shows it once. Or set your own in
   integrations.cti.secret: a whsec_… secret for a PBX that signs Standard Webhooks (base64
   of 24 to 64 random bytes), a long random token for one that cannot sign.
2. In the PBX (or its CTI connector), send call events in Zammad's generic-CTI schema
   (event = newCall, answer, hangup; from, to, direction, callId or call_id, user or user[],
   answeringNumber, queue, cause) as JSON or form to:
   - {public_url}/hooks/cti, with webhook-id, webhook-timestamp and webhook-signature
     headers signed with the whsec_ secret; or
   - {public_url}/hooks/cti/<secret> (the secret percent-encoded), when it cannot sign.
3. Numbers without a country code are read in default_region.
4. Recorded calls (optional, beyond Zammad's schema, which ignores extra parameters): send
   recordingUrl (an http(s) link where agents listen to the recording) and transcript (what
   the caller said, their side only) with the hangup, or in a later hangup of the same
   callId; the call note and the pop show both. Edit mappings/cti.yaml for other names.
"""


class CtiPlugin(Plugin):
    """Receive call events from any PBX in Zammad's generic-CTI schema."""

    key = "cti"
    title = "Generic CTI (any PBX)"
    short_title = "PBX"
    capabilities = frozenset({Capability.RECEIVE})
    id_fields = ("callId",)  # the PBX's call id, which may be a long number
    settings = {
        "secret": Setting(str, required=True, secret=True, doc="whsec_… or a path token"),
        "tolerance_s": Setting(int, 300, doc="how far webhook-timestamp may be off"),
    }
    event_types = EVENTS
    setup_doc = SETUP
    generated_secret = "secret"
    secret_in_path = True
    refusal_hints = {
        "signature": "check the PBX signs with the secret set here (whsec_...); generating a "
        "new secret replaces the old one",
        "path-token": "check the URL set in the PBX ends with the current secret; generating "
        "a new secret replaces the old one",
        "missing-signature": "the PBX neither signs (webhook-signature) nor puts the secret in "
        "the URL: use /hooks/cti/<secret> for a PBX that cannot sign",
        "timestamp": "check the clocks of this server and of the PBX (5 minutes at most apart)",
    }

    @classmethod
    def generate_secret(cls) -> str:
        """Return a Standard Webhooks secret: whsec_ and base64 of 32 random bytes."""
        return standard_webhooks.generate_secret()

    # -- receiving -------------------------------------------------------------------------
    def verify(self, request: InboundRequest) -> str:
        """Accept the secret path segment, or a Standard Webhooks signature that is fresh."""
        secret = self.options["secret"]
        if request.path_token is not None:
            if not hmac.compare_digest(request.path_token.encode(), secret.encode()):
                raise InvalidSignature("the secret in the path does not match", "path-token")
            return "path token"
        standard_webhooks.verify(
            secret,
            request.headers,
            request.body,
            self.options["tolerance_s"],
            missing_hint=" (or POST to /hooks/cti/<secret>)",
        )
        return "signature"

    def parse(self, request: InboundRequest) -> list[InboundEvent]:
        """Read one call event (JSON or form) and name the outside party and the agent."""
        fields = _fields(request)
        event = fields.get("event")
        if not isinstance(event, str) or not event:
            raise MalformedPayload("event: missing (newCall, answer or hangup)")
        if event not in EVENTS:
            raise UnsupportedEvent(event)
        call_id = fields.get("callId", fields.get("call_id"))  # Zammad reads either spelling
        if not isinstance(call_id, str | int) or not str(call_id).strip():
            raise MalformedPayload(
                "callId: missing (the id that ties a call's events together; call_id also works)"
            )
        call_id = str(call_id).strip()
        if len(call_id) > MAX_CALL_ID or not call_id.isprintable():
            raise MalformedPayload(f"callId: expected at most {MAX_CALL_ID} printable characters")
        direction = fields.get("direction")
        if direction not in ("in", "out"):
            raise MalformedPayload("direction: expected 'in' or 'out'")
        payload = dict(fields)
        payload["callId"] = call_id
        payload["customer"] = fields.get("from" if direction == "in" else "to")
        payload["agent"] = _agent(fields)
        key = f"cti:{call_id}:{event}"
        if event == "answer":
            # A transfer is a second answer within one call: keep it apart from a retry.
            key += f":{payload['agent'] or ''}"
        return [InboundEvent(key=key[:255], type=event, payload=payload)]


def _fields(request: InboundRequest) -> dict[str, Any]:
    if looks_like_json(request):
        return decode_json_object(request.body)
    return decode_form_fields(request.body)  # user[]=Emma&user[]=Bob: a list under user


def _agent(fields: dict[str, Any]) -> str | None:
    """Name who answered: the user (or users), else the answering number."""
    user = fields.get("user")
    if isinstance(user, list):
        user = ", ".join(str(u) for u in user if isinstance(u, str | int) and str(u).strip())
    if isinstance(user, str | int) and str(user).strip():
        return str(user).strip()
    number = fields.get("answeringNumber")
    return str(number).strip() if isinstance(number, str | int) and str(number).strip() else None
