"""Any other channel: events signed as Standard Webhooks, mapped by mappings/generic.yaml.

For systems without a plugin of their own (store visits, kiosks, chatbots, survey tools,
letters scanned into a system). The body has the shape the Standard Webhooks spec recommends
(github.com/standard-webhooks/standard-webhooks, spec/standard-webhooks.md, "Payload
structure"): {"type": "...", "timestamp": "...", "data": {...}}. Which types Carryover uses,
and what their data means, is the mapping's business: a type it does not define is ignored.
The fixtures and their sources are described in FIXTURES.md.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any

from middleware.config import Setting
from middleware.errors import MalformedPayload
from middleware.ingest import standard_webhooks
from middleware.integrations.plugin import (
    Capability,
    InboundEvent,
    InboundRequest,
    Plugin,
    decode_json_object,
)

# The event types the shipped mapping defines; an admin may map more (any dotted name).
EVENTS = (
    "store.visit",
    "chatbot.conversation",
    "survey.answered",
    "letter.scanned",
)
# How a message is named by its channel (the shipped mapping's letters and chats).
MESSAGE_LABELS = {"letter": "letter", "chat": "chatbot conversation"}
# A full-stop delimited type ("user.created"), as the spec describes it; linear and anchored.
EVENT_TYPE = re.compile(r"[A-Za-z0-9_\-]{1,64}(?:\.[A-Za-z0-9_\-]{1,64}){0,7}")
# webhook-id is the dedupe key: the spec's examples are msg_<base62>; any short printable id.
WEBHOOK_ID = re.compile(r"[A-Za-z0-9_\-.:]{1,200}")

SETUP = """\
1. Choose a secret: press "Generate a secret" on this page, which makes a whsec_… secret
   (whsec_ followed by base64 of 32 random bytes) and shows it once. Or set your own in
   integrations.generic.secret (whsec_ and base64 of 24 to 64 random bytes).
2. In the sending system (a store app, a kiosk, a chatbot, a survey tool, a mail-scanning
   service), send each event as a Standard Webhooks message to {public_url}/hooks/generic:
   a POST with a JSON body {"type": "<event type>", "timestamp": "<ISO 8601>", "data": {...}}
   and the headers webhook-id (unique per event, kept on retries), webhook-timestamp (unix
   seconds, at most 5 minutes off) and webhook-signature ("v1," and the base64 HMAC-SHA256
   of "<webhook-id>.<webhook-timestamp>.<body>", keyed with the secret's base64 part). The
   Standard Webhooks libraries (standardwebhooks on PyPI and npm) do exactly this.
3. The shipped mapping (Mappings → generic) reads these types; their data:
   - store.visit (a visit at a store, or a kiosk session): data.id, data.customer (email,
     phone, name), data.location, data.staff, data.channel ("in_person", the default),
     data.subject, data.notes (the staff's notes on what the customer came for).
   - chatbot.conversation: data.id, data.customer, data.bot, data.topic, data.messages (a
     list of {"from": "customer" or "bot", "text": ...}); the customer's lines are what
     they already said, the bot's are not.
   - survey.answered: data.id, data.customer, data.survey, data.answers.preferred_channels
     (a list such as ["email", "sms"]: it becomes the customer's preferred channels),
     data.answers.comment.
   - letter.scanned: data.id, data.customer, data.subject, data.text, data.scanned_by.
   Edit the mapping to read other types or shapes; a type it does not define gets 200
   {"ignored": type}, so the sender does not retry it.
"""


class GenericPlugin(Plugin):
    """Receive Standard Webhooks events from any system, mapped by an admin-edited mapping."""

    key = "generic"
    title = "Generic inbound (any other channel)"
    short_title = "Inbound"
    capabilities = frozenset({Capability.RECEIVE})
    id_fields = ("id",)  # data.id: a sender's record id may be a long number, never a card
    settings = {
        "secret": Setting(str, required=True, secret=True, doc="whsec_… Standard Webhooks secret"),
        "tolerance_s": Setting(int, 300, doc="how far webhook-timestamp may be off"),
    }
    event_types = EVENTS
    setup_doc = SETUP
    generated_secret = "secret"
    refusal_hints = {
        "signature": "check the sender signs with the secret set here (whsec_...); generating "
        "a new secret replaces the old one",
        "missing-signature": "the sender must sign each event as Standard Webhooks do "
        "(webhook-id, webhook-timestamp, webhook-signature)",
        "timestamp": "check the clocks of this server and of the sender (5 minutes at most apart)",
    }

    @classmethod
    def record_label(cls, item: Mapping[str, Any]) -> str:
        """Name a record by what happened: a store visit, a letter, a chatbot conversation."""
        kind, channel = str(item.get("kind") or ""), str(item.get("channel") or "")
        if kind == "visit":
            return "store visit" if channel == "in_person" else "visit"
        if kind == "message" and channel in MESSAGE_LABELS:
            return MESSAGE_LABELS[channel]
        return super().record_label(item)

    @classmethod
    def generate_secret(cls) -> str:
        """Return a Standard Webhooks secret: whsec_ and base64 of 32 random bytes."""
        return standard_webhooks.generate_secret()

    def verify(self, request: InboundRequest) -> str:
        """Accept a Standard Webhooks signature that is fresh."""
        standard_webhooks.verify(
            self.options["secret"], request.headers, request.body, self.options["tolerance_s"]
        )
        return "signature"

    def parse(self, request: InboundRequest) -> list[InboundEvent]:
        """Read one event; its type is `type`, its dedupe key the webhook-id."""
        payload = decode_json_object(request.body)
        event_type = payload.get("type")
        if not isinstance(event_type, str) or not event_type:
            raise MalformedPayload("type: missing (the event type, e.g. survey.answered)")
        if not EVENT_TYPE.fullmatch(event_type):
            raise MalformedPayload("type: expected a full-stop delimited name (e.g. store.visit)")
        if not isinstance(payload.get("data"), dict):
            raise MalformedPayload("data: expected a JSON object (the event's data)")
        webhook_id = request.headers.get("webhook-id")
        if webhook_id is None:
            # Only a fixture in the mapping preview comes without headers: verify() refuses
            # every real delivery without a webhook-id.
            webhook_id = "fixture-" + hashlib.sha256(request.body).hexdigest()[:32]
        if not WEBHOOK_ID.fullmatch(webhook_id):
            raise MalformedPayload("webhook-id: expected 1 to 200 letters, digits or _-.:")
        # A type the mapping does not define is answered 200 {"ignored": type} by the core.
        return [InboundEvent(key=f"generic:{webhook_id}", type=event_type, payload=payload)]
