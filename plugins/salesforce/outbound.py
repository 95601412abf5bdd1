"""Salesforce Outbound Messages: the SOAP 1.1 envelope in, the Ack or a Fault out."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from xml.etree.ElementTree import Element, ParseError
from xml.sax.saxutils import escape, quoteattr

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring, iterparse

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
MAX_DEPTH = 64  # a SOAP notification is 6 deep; a body far deeper is not one


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
    session_id: str | None = None  # sent when the message's "Send Session ID" is on
    # Any element named SessionId holds something: the body must not be stored as it is.
    holds_session_id: bool = False


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
        session_id=_child_text(notifications, "SessionId"),
        holds_session_id=any(_is_session_holder(e) for e in root.iter()),
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
    """Return the body with every SessionId element emptied, found by parsing it.

    A body that holds none is returned as it is. Otherwise the document is written anew
    from its parsed tree (with the sender's namespace prefixes), so no spelling of the
    element (CDATA, character references, another prefix) can carry the session through.
    """
    root = _parse(body)
    holders = [element for element in root.iter() if _is_session_holder(element)]
    if not holders:
        return body
    for element in holders:
        tail = element.tail
        element.clear()  # its text, children and attributes
        element.tail = tail
    prefixes = _prefixes(body)
    declarations = "".join(
        f" xmlns:{prefix}={quoteattr(uri)}" if prefix else f" xmlns={quoteattr(uri)}"
        for uri, prefix in prefixes.items()
    )
    return ('<?xml version="1.0" encoding="UTF-8"?>\n'
            + _written(root, prefixes, declarations, 0)).encode("utf-8")  # fmt: skip


def _is_session_holder(element: Element) -> bool:
    """Tell whether an element is a SessionId with anything in it but xsi:nil."""
    if _local(element.tag) != "SessionId":
        return False
    extra = [name for name in element.attrib if name != f"{{{XSI_NS}}}nil"]
    return bool((element.text or "").strip() or len(element) or extra)


def _prefixes(body: bytes) -> dict[str, str]:
    """Return the namespace prefix the sender used for each namespace URI (first one wins)."""
    found: dict[str, str] = {}
    used: set[str] = set()
    for _event, (prefix, uri) in iterparse(io.BytesIO(body), events=("start-ns",),
                                           forbid_dtd=True, forbid_entities=True,
                                           forbid_external=True):  # fmt: skip
        if uri in found:
            continue
        while prefix in used:  # one prefix rebound to another URI deeper down
            prefix = f"{prefix or 'ns'}_"
        found[uri] = prefix
        used.add(prefix)
    return found


def _qualified(name: str, prefixes: dict[str, str]) -> str:
    if not name.startswith("{"):
        return name
    uri, _, local = name[1:].partition("}")
    prefix = prefixes.get(uri, "")
    return f"{prefix}:{local}" if prefix else local


def _written(element: Element, prefixes: dict[str, str], declarations: str, depth: int) -> str:
    """Write one element and its content as XML (the namespaces declared on the root)."""
    if depth > MAX_DEPTH:
        raise MalformedPayload(f"body: nested deeper than {MAX_DEPTH} elements")
    tag = _qualified(element.tag, prefixes)
    attributes = "".join(
        f" {_qualified(name, prefixes)}={quoteattr(value)}"
        for name, value in element.attrib.items()
    )
    inner = escape(element.text or "") + "".join(
        _written(child, prefixes, "", depth + 1) + escape(child.tail or "") for child in element
    )
    return f"<{tag}{declarations}{attributes}>{inner}</{tag}>"


def _parse(body: bytes) -> Element:
    try:
        return fromstring(body, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException as exc:
        raise MalformedPayload(f"body: XML with a DTD or entities is refused ({exc})") from None
    except ParseError as exc:
        raise MalformedPayload(f"body: not well-formed XML ({exc})") from None
    except (ValueError, LookupError, RecursionError) as exc:
        # LookupError: an encoding Python does not know (<?xml encoding="x-bogus"?>).
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
