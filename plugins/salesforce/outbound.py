"""Salesforce Outbound Messages: the SOAP 1.1 envelope in, the Ack or a Fault out."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from xml.etree.ElementTree import Element, ParseError
from xml.sax.saxutils import escape

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring

from middleware.errors import MalformedPayload

SOAP_NS = "http://schemas.xmlsoap.org/soap/envelope/"
OUTBOUND_NS = "http://soap.sforce.com/2005/09/outbound"
SOBJECT_NS = "urn:sobject.enterprise.soap.sforce.com"
XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"
MAX_NOTIFICATIONS = 100
MAX_ID = 200
ENVELOPE_OPEN = (
    '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"'
    ' xmlns:xsd="http://www.w3.org/2001/XMLSchema"'
    ' xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
)
# Salesforce takes a delivery as done only on HTTP 200 with this body; anything else is
# retried for 24 hours.
ACK = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    f"{ENVELOPE_OPEN}\n"
    " <soapenv:Body>\n"
    '  <notificationsResponse xmlns="http://soap.sforce.com/2005/09/outbound">\n'
    "   <Ack>true</Ack>\n"
    "  </notificationsResponse>\n"
    " </soapenv:Body>\n"
    "</soapenv:Envelope>\n"
).encode()
# The session id Salesforce may send is a live credential of the org: it is never stored.
SESSION_ID = re.compile(
    rb"(<(?:[A-Za-z_][\w.-]*:)?SessionId(?:\s[^>]*)?>)[^<]*(</(?:[A-Za-z_][\w.-]*:)?SessionId\s*>)"
)


@dataclass(frozen=True)
class Notification:
    """One changed record: the notification id (unique per change) and the record's fields."""

    id: str
    sobject_type: str  # "Case", "Contact", "CaseComment", …
    fields: dict[str, str | None]


@dataclass(frozen=True)
class OutboundMessage:
    """One Outbound Message: the sending org and its 1 to 100 notifications."""

    organization_id: str
    action_id: str | None = None
    partner_url: str | None = None
    notifications: list[Notification] = field(default_factory=list)


def read_message(body: bytes) -> OutboundMessage:
    """Parse an Outbound Message by namespace; refuse DTDs, entities and anything else."""
    root = _parse(body)
    if root.tag != f"{{{SOAP_NS}}}Envelope":
        raise MalformedPayload(f"body: expected a SOAP 1.1 Envelope, got <{_local(root.tag)}>")
    notifications = root.find(f"{{{SOAP_NS}}}Body/{{{OUTBOUND_NS}}}notifications")
    if notifications is None:
        raise MalformedPayload(f"Envelope/Body/notifications: missing (namespace {OUTBOUND_NS})")
    org = _child_text(notifications, "OrganizationId")
    if not org:
        raise MalformedPayload("notifications/OrganizationId: missing")
    items = notifications.findall(f"{{{OUTBOUND_NS}}}Notification")
    if not 1 <= len(items) <= MAX_NOTIFICATIONS:
        raise MalformedPayload(
            f"notifications: expected 1 to {MAX_NOTIFICATIONS} Notification elements, "
            f"got {len(items)}"
        )
    return OutboundMessage(
        organization_id=org,
        action_id=_child_text(notifications, "ActionId"),
        partner_url=_child_text(notifications, "PartnerUrl"),
        notifications=[_notification(item, i) for i, item in enumerate(items)],
    )


def fault(code: str, message: str) -> bytes:
    """Return a SOAP 1.1 Fault, the refusal Salesforce understands."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"{ENVELOPE_OPEN}\n"
        " <soapenv:Body>\n"
        "  <soapenv:Fault>\n"
        f"   <faultcode>{escape(code)}</faultcode>\n"
        f"   <faultstring>{escape(message)}</faultstring>\n"
        "  </soapenv:Fault>\n"
        " </soapenv:Body>\n"
        "</soapenv:Envelope>\n"
    ).encode()


def without_session_id(body: bytes) -> bytes:
    """Return the body with the content of its SessionId element removed."""
    return SESSION_ID.sub(rb"\1\2", body)


def _parse(body: bytes) -> Element:
    try:
        return fromstring(body, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException as exc:
        raise MalformedPayload(f"body: XML with a DTD or entities is refused ({exc})") from None
    except ParseError as exc:
        raise MalformedPayload(f"body: not well-formed XML ({exc})") from None
    except (ValueError, RecursionError) as exc:
        raise MalformedPayload(f"body: XML beyond what Carryover reads ({exc})") from None


def _notification(item: Element, index: int) -> Notification:
    where = f"notifications/Notification[{index + 1}]"
    notification_id = _child_text(item, "Id")
    if not notification_id:
        raise MalformedPayload(f"{where}/Id: missing (the notification id)")
    if len(notification_id) > MAX_ID or not notification_id.isprintable():
        raise MalformedPayload(f"{where}/Id: expected at most {MAX_ID} printable characters")
    sobject = item.find(f"{{{OUTBOUND_NS}}}sObject")
    if sobject is None:
        raise MalformedPayload(f"{where}/sObject: missing")
    declared = sobject.get(f"{{{XSI_NS}}}type") or ""
    sobject_type = declared.rpartition(":")[2]  # "sf:Case": the prefix is the sender's choice
    if not sobject_type:
        raise MalformedPayload(f"{where}/sObject: no xsi:type (e.g. sf:Case)")
    fields: dict[str, str | None] = {}
    for element in sobject:
        if not element.tag.startswith(f"{{{SOBJECT_NS}}}"):
            continue
        nil = element.get(f"{{{XSI_NS}}}nil") == "true"
        fields[_local(element.tag)] = None if nil else (element.text or "")
    if not fields.get("Id"):
        raise MalformedPayload(f"{where}/sObject/Id: missing (select the Id field to send)")
    return Notification(id=notification_id, sobject_type=sobject_type, fields=fields)


def _child_text(parent: Element, name: str) -> str | None:
    child = parent.find(f"{{{OUTBOUND_NS}}}{name}")
    if child is None or child.get(f"{{{XSI_NS}}}nil") == "true":
        return None
    return (child.text or "").strip() or None


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]
