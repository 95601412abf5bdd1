"""Salesforce Service Cloud: outbound messages in, case comments out."""

from __future__ import annotations

import hashlib
import hmac
import re
import threading
from collections.abc import Iterator, Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from cachetools import TTLCache

from middleware.config import ConfigError, Setting
from middleware.errors import (
    InboundError,
    InvalidSignature,
    MalformedPayload,
    PermanentUpstreamError,
    TryLater,
    UpstreamError,
)
from middleware.integrations.network import parse_networks, within
from middleware.integrations.plugin import (
    NOTE_SETTINGS,
    UNVERIFIED,
    Capability,
    Comment,
    HistoryPage,
    IdentityType,
    InboundEvent,
    InboundRequest,
    Plugin,
    period_progress,
)
from middleware.integrations.usage import ApiUsage
from middleware.interaction import Identity, Interaction
from plugins.salesforce.client import QUERY_BATCH, LoginRefused, SalesforceClient
from plugins.salesforce.ids import CASE_NUMBER, SALESFORCE_ID, normalise_contact
from plugins.salesforce.outbound import (
    ACK,
    Notification,
    OutboundMessage,
    fault,
    read_message,
    without_session_id,
)

ORG_ID = re.compile(r"^00D[A-Za-z0-9]{12}([A-Za-z0-9]{3})?$")
# A notification sent within this long of the case's creation announces a new case; later
# ones are edits (a workflow rule or Flow that fires on every edit sends both).
CREATED_WITHIN_S = 60
# A record read back is taken as new when it was created this recently: Salesforce retries
# an Outbound Message for up to 24 hours.
READ_BACK_NEW_WITHIN = timedelta(hours=24)
SESSION_CHECKS_KEPT_S = 600  # a session proven to be the org's is believed this long
# Fields holding record ids: each must be a Salesforce id before it goes anywhere near a URL.
ID_FIELDS = ("Id", "ContactId", "ParentId", "AccountId", "OwnerId")
# What an import reads of each case, its contact's email, phones and name included.
HISTORY_FIELDS = (
    "Id, CaseNumber, Subject, Description, Status, IsClosed, Origin, Priority, CreatedDate, "
    "LastModifiedDate, ContactId, SuppliedName, SuppliedEmail, SuppliedPhone, Contact.Name, "
    "Contact.Email, Contact.Phone, Contact.MobilePhone"
)
# What a contact look-up keeps (in memory and in the store every process shares): what
# enrich() reads, never the contact's other fields.
CONTACT_FIELDS = ("Name", "Email", "Phone", "MobilePhone")
LOGIN_HINT = (
    "check integrations.salesforce: session_id and instance_url, or username, password and "
    "security_token"
)
SOAP_TYPES = ("text/xml", "application/soap+xml", "application/xml")
LOGIN_KEYS = {
    "session id": ("session_id", "instance_url"),
    "username/password": ("username", "password"),
    "JWT bearer": ("username", "consumer_key"),
}

SETUP = """\
1. In Setup → Outbound Messages, create one for the Case object with the endpoint URL
   {public_url}/hooks/salesforce; choose the fields Id, CaseNumber, ContactId, Subject,
   Description, Origin, Status, IsClosed, CreatedDate, LastModifiedDate (and SuppliedEmail,
   SuppliedPhone, SuppliedName for web-to-case). Optionally one for Contact (Id, Name, Email, Phone,
   MobilePhone) and one for CaseComment (Id, ParentId, CommentBody).
2. Send it from a Flow (record-triggered, when a record is created or updated) or a workflow
   rule ("created, and every time it's edited").
3. Enter the organization_id below (Setup → Company Information) and one login:
   session_id + instance_url, username + password + security_token, or username +
   consumer_key + private_key (JWT bearer, a connected app).
4. Prove the sender: Outbound Messages carry no signature, and the org id is no secret.
   Turn "Send Session ID" on in the Outbound Message (Carryover checks the session with
   your org's API, then drops it), and/or list Salesforce's networks in allowed_networks,
   and/or have a TLS proxy check Salesforce's client certificate (client_cert_header).
   A message proven by none of these is still taken, but only as a ping: each record is
   read back from the API before anything in it is believed.
"""


class SalesforcePlugin(Plugin):
    """Receive Salesforce Outbound Messages and write summaries as private case comments."""

    key = "salesforce"
    title = "Salesforce Service Cloud"
    short_title = "Salesforce"
    capabilities = frozenset(
        {Capability.RECEIVE, Capability.ENRICH, Capability.WRITE_NOTE, Capability.IMPORT_HISTORY}
    )
    identity_types = (
        IdentityType("salesforce_contact", normalise_contact, system_id=True, lookup=True),
    )
    # Record ids in Outbound Messages (<sf:Id>, <sf:ContactId>): 18 characters, some all digits.
    id_fields = ("*Id",)
    id_formats = {"record": SALESFORCE_ID, "contact": SALESFORCE_ID, "case": SALESFORCE_ID}
    settings = {
        "organization_id": Setting(str, required=True, doc="00D…, 15 or 18 characters"),
        "instance_url": Setting(str, doc="https://acme.my.salesforce.com or any base URL"),
        "session_id": Setting(str, secret=True, doc="with instance_url; cannot be renewed"),
        "username": Setting(str, doc="for username/password or JWT bearer login"),
        "password": Setting(str, secret=True),
        "security_token": Setting(str, secret=True),
        "consumer_key": Setting(str, doc="the connected app's key, for JWT bearer login"),
        "private_key": Setting(str, secret=True, doc="PEM, for JWT bearer login"),
        "private_key_file": Setting(str, doc="or the path of the PEM file", file_only=True),
        "login_url": Setting(str, "https://login.salesforce.com", doc="test.salesforce.com…"),
        "api_version": Setting(str, "59.0"),
        "contact_cache_ttl_s": Setting(int, 300),
        "limit_backoff_s": Setting(float, 900.0, doc="wait after REQUEST_LIMIT_EXCEEDED"),
        "timeout_s": Setting(float, 10.0),
        **NOTE_SETTINGS,
        "verify_session_id": Setting(
            bool, True, doc="check a message's SessionId with the org's API (Send Session ID on)"
        ),
        "allowed_networks": Setting(
            list, [], doc="only these source networks (CIDR) may send; others get 401"
        ),
        "client_cert_header": Setting(
            str, doc="a header a trusted proxy sets once Salesforce's client certificate checks"
        ),
        "client_cert_value": Setting(str, "SUCCESS", doc="the header's value when it checked"),
        "require_verified": Setting(
            bool, False, doc="refuse messages nothing proves, instead of reading them back"
        ),
        "history_keeps_api_calls": Setting(
            int, 1000, doc="of the org's daily API requests, what an import leaves for the rest"
        ),
    }
    history_event_types = ("history.case",)
    event_types = (
        "case.created",
        "case.updated",
        "contact.changed",
        "casecomment.created",
    )
    setup_doc = SETUP
    refusal_hints = {
        "organization": "check organization_id is the id of the org that sends the Outbound "
        "Messages (Setup > Company Information > Salesforce.com Organization ID)",
        "source-network": "check allowed_networks holds Salesforce's IP ranges, and "
        "trusted_proxies if a proxy is in front (it must pass the client's address)",
        "client-certificate": "check the proxy in front verifies Salesforce's client "
        "certificate and sets client_cert_header to client_cert_value",
        "session-id": "check the Outbound Message's user (Send Session ID) is active in the "
        "configured org",
        "unproven": "turn on Send Session ID in the Outbound Message, or set allowed_networks",
        "malformed": "check the Outbound Message is sent as SOAP (text/xml), as Salesforce does",
    }
    note_max_bytes = 4000  # CaseComment.CommentBody

    @classmethod
    def record_label(cls, item: Mapping[str, Any]) -> str:
        """Name a case by its CaseNumber, as agents do: "case 00001001"."""
        number = item.get("number")
        if item.get("kind") == "case" and isinstance(number, str) and CASE_NUMBER.fullmatch(number):
            return f"case {number}"
        return super().record_label(item)

    @classmethod
    def record_url(cls, item: Mapping[str, Any], settings: Mapping[str, Any]) -> str | None:
        """Link a case in Lightning: <instance>/lightning/r/Case/<Id>/view."""
        record_id = str(item.get("external_id") or "").partition("#")[0]
        base = settings.get("instance_url") or item.get("link")
        if item.get("kind") != "case" or not SALESFORCE_ID.fullmatch(record_id) or not base:
            return None
        parts = urlsplit(str(base))
        if parts.scheme not in ("https", "http") or not parts.netloc:
            return None
        host = parts.netloc.replace("-api.salesforce.com", ".salesforce.com")
        return f"{parts.scheme}://{host}/lightning/r/Case/{record_id}/view"

    def __init__(self, settings: dict[str, Any], config: Any) -> None:
        super().__init__(settings, config)
        org = self.options["organization_id"].strip()
        if not ORG_ID.match(org):
            raise ConfigError(
                "integrations.salesforce.organization_id: expected a 15- or 18-character "
                f"org id starting 00D, got {org!r}"
            )
        self.org15 = org[:15]
        _check_login(self.options)
        for name in ("instance_url", "login_url"):
            if self.options.get(name):
                self.upstream_url(name)
        try:
            self.networks = parse_networks(
                self.options["allowed_networks"], "integrations.salesforce.allowed_networks"
            )
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if self.options.get("client_cert_header") and not config.trusted_proxies:
            raise ConfigError(
                "integrations.salesforce.client_cert_header: set trusted_proxies to the proxy "
                "that checks the certificate (only its headers are believed)"
            )
        self.client = SalesforceClient(self.options, self.upstream_guard)
        # Keyed by the 18-character id: its 15-character form names the same contact.
        self._contacts = self.lookups.cached(
            "salesforce_contact", self.options["contact_cache_ttl_s"],
            lambda contact_id: _kept_contact(contact_id, self.client.contact(contact_id)),
            key=normalise_contact,
        )  # fmt: skip
        # Kept in this process only, never in the shared store: a verdict on a live credential.
        self._sessions: TTLCache[str, bool] = TTLCache(maxsize=1000, ttl=SESSION_CHECKS_KEPT_S)
        self._last_parsed = threading.local()

    # -- receiving -------------------------------------------------------------------------
    def verify(self, request: InboundRequest) -> str:
        """Accept the org's messages; say what proves one (Outbound Messages are unsigned).

        The org id is no secret, so it only picks the messages to look at. What proves a
        sender: its network (allowed_networks), a client certificate a trusted proxy
        checked (client_cert_header), or a SessionId that the org's API accepts. A message
        with none of these is UNVERIFIED: its records are read back before use.
        """
        message = self._message(request.body)
        sender = message.organization_id
        if not hmac.compare_digest(sender[:15].encode(), self.org15.encode()):
            raise InvalidSignature(
                f"OrganizationId {sender} is not the configured org", "organization"
            )
        proofs = []
        if self.networks:
            if not within(request.remote_addr, self.networks):
                raise InvalidSignature(
                    f"source address {request.remote_addr or '?'} is not in allowed_networks",
                    "source-network",
                )
            proofs.append("source network")
        header = self.options.get("client_cert_header")
        if header:
            value = request.headers.get(header.lower(), "") if request.via_trusted_proxy else ""
            if not hmac.compare_digest(value.encode(), self.options["client_cert_value"].encode()):
                raise InvalidSignature(
                    f"no verified client certificate ({header})", "client-certificate"
                )
            proofs.append("client certificate")
        if message.session_id and self.options["verify_session_id"]:
            self._check_session(message.session_id)
            proofs.append("session id")
        if proofs:
            return ", ".join(proofs)
        if self.options["require_verified"]:
            raise InvalidSignature(
                "nothing proves the sender: turn on Send Session ID in the Outbound Message",
                "unproven",
            )
        return UNVERIFIED

    def _check_session(self, session_id: str) -> None:
        """Refuse a SessionId that the org's API does not take as one of the org's."""
        digest = hashlib.sha256(session_id.encode("utf-8", "replace")).hexdigest()
        verdict = self._sessions.get(digest)
        if verdict is None:
            try:
                org = self.client.session_org(session_id)
            except UpstreamError as exc:
                # Salesforce retries the message, so nothing is lost by waiting.
                raise TryLater(f"the SessionId cannot be checked now ({exc})") from None
            verdict = org is not None and org[:15] == self.org15
            self._sessions[digest] = verdict
        if not verdict:
            raise InvalidSignature(
                "the SessionId is not a working session of the configured org", "session-id"
            )

    def parse(self, request: InboundRequest) -> list[InboundEvent]:
        """Split an Outbound Message into one event per notification."""
        if request.content_type and request.content_type not in SOAP_TYPES:
            raise MalformedPayload(f"Content-Type {request.content_type}: expected text/xml")
        message = self._message(request.body)
        base = self.options.get("instance_url") or message.partner_url
        return [_event(message, n, base) for n in message.notifications]

    def read_back(self, event: InboundEvent) -> InboundEvent | None:
        """Replace a notification's fields with the record as the org's API has it now."""
        sobject = dict(event.payload["sObject"])
        kind = str(sobject.get("type") or "")
        record = self.client.record(kind, str(sobject.get("Id") or ""))
        if record is None:
            return None
        fields = {k: _as_message_text(v) for k, v in record.items() if k != "attributes"}
        _check_ids(fields, f"the {kind} record read back")
        event_type = event.type
        if event_type == "case.created" and not _created_lately(fields.get("CreatedDate")):
            event_type = "case.updated"
        base = self.client.instance_base()
        payload = {**event.payload, "sObject": {"type": kind, **fields},
                   "Link": _record_link(base, fields.get("Id"))}  # fmt: skip
        return replace(event, type=event_type, payload=payload)

    def _message(self, body: bytes) -> OutboundMessage:
        """Parse a message once: verify() and then parse() read the same body in one thread."""
        last = self._last_parsed
        if getattr(last, "body", None) != body:
            last.message = read_message(body)
            last.body = body
        return last.message  # type: ignore[no-any-return]

    def acknowledgement(self) -> tuple[bytes, str]:
        """Return the SOAP Ack, the only reply Salesforce takes as delivered."""
        return ACK, "text/xml; charset=utf-8"

    def ignored_reply(self, event_type: str) -> tuple[bytes, str]:
        """Acknowledge unused notifications too: anything but the Ack is retried for a day."""
        return self.acknowledgement()

    def refusal(self, error: InboundError) -> tuple[bytes, str] | None:
        """Refuse another org's message with a SOAP Fault (faultcode soapenv:Client)."""
        if not isinstance(error, InvalidSignature):
            return None
        return fault("soapenv:Client", str(error)), "text/xml; charset=utf-8"

    def storable_body(self, body: bytes) -> bytes:
        """Drop the SessionId Salesforce may send: it is a live credential of the org."""
        if not self._message(body).holds_session_id:
            return body
        return without_session_id(body)

    def comment_of(self, event: InboundEvent) -> Comment | None:
        """Return a CaseComment's body, with its case."""
        if not event.type.startswith("casecomment."):
            return None
        sobject = event.payload["sObject"]
        body = sobject.get("CommentBody")
        return Comment(sobject.get("ParentId"), (body,) if isinstance(body, str) else ())

    # -- upstream API ----------------------------------------------------------------------
    def enrich(self, interaction: Interaction) -> Interaction:
        """Add the case contact's name, email, phone and mobile from the REST API."""
        contact_ids = [i.value for i in interaction.identities if i.type == "salesforce_contact"]
        if not contact_ids:
            return interaction
        contact = self._contact(contact_ids[0])
        found = list(interaction.identities)
        for field, kind in (("Email", "email"), ("Phone", "phone"), ("MobilePhone", "phone")):
            if contact.get(field):
                found.append(Identity(kind, str(contact[field])))
        return replace(
            interaction,
            identities=tuple(dict.fromkeys(found)),
            customer_name=contact.get("Name") or interaction.customer_name,
        )

    def _contact(self, contact_id: str) -> dict[str, Any]:
        """Return a contact's fields: from memory, the shared store, or the REST API."""
        return self._contacts(contact_id)

    def write_note(self, target_ref: str, body: str) -> None:
        """Add a private CaseComment (IsPublished false) to the case."""
        self.client.add_case_comment(target_ref, body)

    def note_exists(self, target_ref: str, marker: str) -> bool:
        """Look for a comment carrying the marker on the case."""
        return any(marker in body for body in self.client.case_comment_bodies(target_ref))

    def api_calls(self) -> int:
        """Return the requests sent to Salesforce (logins, reads, comments, queries)."""
        return self.client.session.sent

    # -- importing history -----------------------------------------------------------------
    def history(self, since: datetime, cursor: str | None) -> Iterator[HistoryPage]:
        """Yield the org's cases changed since `since`, 2,000 a batch (query, queryMore).

        The cursor is the last case's LastModifiedDate: a query locator expires after 15
        minutes, so an import that was stopped queries again from there.
        """
        start = _cursor_time(cursor) or since
        try:
            batch = self.client.query_page(_cases_since(start))
            while True:
                page = self.history_page(batch, since)
                self._remember_contacts(batch)
                yield replace(page, cursor=page.cursor or cursor)
                next_url = batch.get("nextRecordsUrl")
                if page.done or not isinstance(next_url, str):
                    return
                batch = self.client.query_more(next_url)
        except LoginRefused as exc:
            raise PermanentUpstreamError(f"{exc}: {LOGIN_HINT}") from exc

    def history_plan(self, since: datetime) -> str | None:
        """Count the cases and read the org's API budget: "about N API calls of M left"."""
        try:
            total = int(self.client.query_page(_cases_since(since, count=True))["totalSize"])
            budget = self.client.daily_api_requests()
        except LoginRefused as exc:
            raise PermanentUpstreamError(f"{exc}: {LOGIN_HINT}") from exc
        except (KeyError, TypeError, ValueError):
            return None
        calls = max(1, -(-total // QUERY_BATCH))
        plan = f"{total:,} cases: about {calls:,} API call{'s' if calls > 1 else ''}"
        if budget is not None:
            remaining, most = budget
            plan += f" of {remaining:,} left today (of {most:,})"
        return plan

    def history_budget_left(self) -> int | None:
        """Return the API calls left today beyond what an import must leave for the rest."""
        usage = self.client.session.usage
        if usage is None:
            return None
        return usage.allowed - usage.used - int(self.options["history_keeps_api_calls"])

    @classmethod
    def history_page(cls, page: Mapping[str, Any], since: datetime) -> HistoryPage:
        """Turn a batch of Case records (with their Contact's fields) into history.case events."""
        records = page.get("records")
        if not isinstance(records, list):
            raise UpstreamError("Salesforce sent a query batch without records")
        events, refused = [], []
        for found in records:
            case_id = found.get("Id") if isinstance(found, dict) else None
            if not isinstance(case_id, str) or not SALESFORCE_ID.fullmatch(case_id):
                refused.append(("a case", "its Id is not a Salesforce id"))
                continue
            version = found.get("LastModifiedDate")
            contact = found.get("ContactId")
            if _salesforce_time(version) is None:
                refused.append((f"case {case_id}", "LastModifiedDate is not a time"))
            elif contact not in (None, "") and not (
                isinstance(contact, str) and SALESFORCE_ID.fullmatch(contact)
            ):
                refused.append((f"case {case_id}", "ContactId is not a Salesforce id"))
            else:
                record = {k: v for k, v in found.items() if k != "attributes"}
                key = f"history:case:{case_id}@{version}"
                events.append(InboundEvent(key, "history.case", {"sObject": record}))
        versions = [_salesforce_time(e.payload["sObject"]["LastModifiedDate"]) for e in events]
        reached = max((v for v in versions if v is not None), default=None)
        return HistoryPage(
            tuple(events),
            cursor=reached.isoformat() if reached else None,
            done=page.get("done") is True,
            refused=tuple(refused),
            progress=period_progress(since, reached) if reached else None,
        )

    def _remember_contacts(self, batch: Mapping[str, Any]) -> None:
        """Keep the contacts a batch names (its Contact.* fields), for enrich() to find."""
        found = {}
        for record in batch.get("records") or []:
            contact = record.get("Contact") if isinstance(record, dict) else None
            contact_id = record.get("ContactId") if isinstance(record, dict) else None
            if isinstance(contact, dict) and isinstance(contact_id, str):
                found[contact_id] = _kept_contact(contact_id, contact)
        self._contacts.remember(found)

    def check_connection(self) -> str | None:
        """Log in and make one REST call."""
        return f"Salesforce answered at {self.client.whoami()}"

    def api_usage(self) -> ApiUsage | None:
        """Return the org's API usage from the last Sforce-Limit-Info header."""
        return self.client.session.usage


def _kept_contact(contact_id: str, contact: Mapping[str, Any]) -> dict[str, Any]:
    """Return what a contact look-up keeps: its id and CONTACT_FIELDS ({} if it is gone)."""
    if not contact:
        return {}
    return {"Id": contact_id, **{k: contact[k] for k in CONTACT_FIELDS if k in contact}}


def _cases_since(start: datetime, *, count: bool = False) -> str:
    """Return the SOQL of the cases changed since a time, oldest first (or their count)."""
    # The time is formatted here, never taken as text: nothing reaches the query unchecked.
    literal = start.replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")
    fields = "COUNT()" if count else HISTORY_FIELDS
    order = "" if count else " ORDER BY LastModifiedDate, Id"
    return f"SELECT {fields} FROM Case WHERE LastModifiedDate >= {literal}{order}"


def _salesforce_time(value: Any) -> datetime | None:
    """Read a Salesforce datetime (2026-03-04T16:40:11.000+0000) as naive UTC, else None."""
    if not isinstance(value, str) or len(value) > 40:
        return None
    try:
        moment = datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%f%z")
    except ValueError:
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment


def _cursor_time(cursor: str | None) -> datetime | None:
    """Read a stored cursor (an ISO time this plugin wrote), None for none or a bad one."""
    if not cursor:
        return None
    try:
        return datetime.fromisoformat(cursor)
    except ValueError:
        return None


def _check_login(options: dict[str, Any]) -> None:
    """Refuse a configuration that names no complete login, naming what is missing."""
    complete = [name for name, keys in LOGIN_KEYS.items() if all(options.get(k) for k in keys)]
    if not complete:
        raise ConfigError(
            "integrations.salesforce: configure a login: session_id + instance_url, or "
            "username + password (+ security_token), or username + consumer_key + private_key"
        )
    has_key = options.get("private_key") or options.get("private_key_file")
    if "JWT bearer" in complete and not has_key:
        raise ConfigError("integrations.salesforce.private_key: required with consumer_key")


def _event(message: OutboundMessage, notification: Notification, base: str | None) -> InboundEvent:
    _check_ids(notification.fields, f"Notification {notification.id}/sObject")
    sobject = {"type": notification.sobject_type, **notification.fields}
    payload = {
        "OrganizationId": message.organization_id,
        "ActionId": message.action_id,
        "NotificationId": notification.id,
        "Link": _record_link(base, notification.fields.get("Id")),
        "sObject": sobject,
    }
    kind = notification.sobject_type.lower()
    if kind == "case":
        event_type = "case.created" if _announces_creation(notification.fields) else "case.updated"
    elif kind == "casecomment":
        event_type = "casecomment.created"
    else:
        event_type = f"{kind}.changed"
    return InboundEvent(key=f"notification:{notification.id}", type=event_type, payload=payload)


def _check_ids(fields: dict[str, str | None], where: str) -> None:
    """Refuse a record whose id fields are not Salesforce ids (15 or 18 letters and digits)."""
    for name in ID_FIELDS:
        value = fields.get(name)
        if value and not SALESFORCE_ID.fullmatch(value):
            raise MalformedPayload(f"{where}/{name}: expected a Salesforce id, got {value[:40]!r}")


def _as_message_text(value: Any) -> str | None:
    """Write an API value as an Outbound Message carries it (true, 2025-01-06T08:30:00Z)."""
    if value is None or isinstance(value, dict | list):
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _created_lately(created: str | None) -> bool:
    moment = _moment(created)
    return moment is not None and datetime.now(UTC) - moment <= READ_BACK_NEW_WITHIN


def _announces_creation(fields: dict[str, str | None]) -> bool:
    """Tell whether a case notification was sent for the case's creation."""
    created, modified = _moment(fields.get("CreatedDate")), _moment(fields.get("LastModifiedDate"))
    if created is None or modified is None:
        return True  # without both dates, each notification may announce the case
    return abs((modified - created).total_seconds()) <= CREATED_WITHIN_S


def _moment(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else None  # the API writes +0000, messages Z


def _record_link(base_url: str | None, record_id: str | None) -> str | None:
    """Link the record in the org: https://<instance>/<record id>."""
    if not base_url or not record_id or not SALESFORCE_ID.fullmatch(record_id):
        return None
    parts = urlsplit(base_url)
    if parts.scheme not in ("https", "http") or not parts.netloc:
        return None
    # The SOAP API host of older instances is na5-api.salesforce.com; people use na5.
    host = parts.netloc.replace("-api.salesforce.com", ".salesforce.com")
    return f"{parts.scheme}://{host}/{record_id}"
