"""Local fake of the Salesforce REST API, its logins and its outbound messages."""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import html
import itertools
import json
import re
import secrets
import ssl
import string
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn
from xml.sax.saxutils import escape

import jwt
import requests
from defusedxml import ElementTree
from defusedxml.common import DefusedXmlException
from werkzeug.exceptions import HTTPException, MethodNotAllowed
from werkzeug.routing import BaseConverter, Map, Rule
from werkzeug.wrappers import Request, Response

from devkit.fake_server import FakeUpstream, agent_page
from plugins.salesforce.ids import salesforce_id18

API_VERSION = "59.0"
DEFAULT_ORG_ID = "00D000000000001EAA"
FIXTURE_ORG_ID = "00D70000000IVNpEAO"
DAILY_API_LIMIT = 15000
API_WINDOW_SECONDS = 24 * 60 * 60
SESSION_SECONDS_VALID = 7200
COMMENT_BODY_MAX_BYTES = 4000
OUTBOUND_MAX_RECORDS = 100
JSON_TYPE = "application/json;charset=UTF-8"
XML_TYPE = "text/xml; charset=utf-8"
SOAPENV_NS = "http://schemas.xmlsoap.org/soap/envelope/"
PARTNER_NS = "urn:partner.soap.sforce.com"
OUTBOUND_NS = "http://soap.sforce.com/2005/09/outbound"
SOBJECT_NS = "urn:sobject.enterprise.soap.sforce.com"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
ID_ALPHABET = string.digits + string.ascii_uppercase + string.ascii_lowercase
SESSION_ALPHABET = ID_ALPHABET + "._"
ID_POD = "5g"
# Base62 "00Jf7oDX0": the ids mix cases, so their 15- and 18-character forms really differ.
FIRST_SERIAL = 1_116_881_324_978
FIRST_CASE_NUMBER = 1001
CLOSED_STATUSES = frozenset({"Closed"})
SALESFORCE_AUDIENCE = re.compile(r"https://[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.salesforce\.com/?")
ORG_ID = re.compile(r"00D[A-Za-z0-9]{12}([A-Za-z0-9]{3})?")
XML_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

INVALID_SESSION = [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]
LIMIT_EXCEEDED = [
    {"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}
]
NOT_FOUND = [{"errorCode": "NOT_FOUND", "message": "The requested resource does not exist"}]
INVALID_LOGIN = "Invalid username, password, security token; or user locked out."
CUSTOM_SUFFIX_HINT = (
    "If you are attempting to use a custom {kind}, be sure to append the '__c' after the {what}."
    " Please reference your WSDL or the describe call for the appropriate names."
)

FIELD_TYPES: dict[str, dict[str, str]] = {
    "Contact": {
        "Id": "id",
        "Name": "string",
        "FirstName": "string",
        "LastName": "string",
        "Email": "string",
        "Phone": "string",
        "MobilePhone": "string",
    },
    "Case": {
        "Id": "id",
        "CaseNumber": "string",
        "Subject": "string",
        "Description": "string",
        "Status": "string",
        "Origin": "string",
        "ContactId": "id",
        "SuppliedEmail": "string",
        "SuppliedPhone": "string",
        "SuppliedName": "string",
        "Priority": "string",
        "IsClosed": "boolean",
        "CreatedDate": "datetime",
        "LastModifiedDate": "datetime",
    },
    "CaseComment": {
        "Id": "id",
        "ParentId": "id",
        "CommentBody": "string",
        "IsPublished": "boolean",
        "CreatedDate": "datetime",
    },
    # One row: the org itself (SELECT Id FROM Organization answers which org a session is of).
    "Organization": {"Id": "id", "Name": "string"},
}
CASE_WRITABLE = frozenset(
    {"Subject", "Description", "Status", "Origin", "ContactId", "SuppliedEmail", "SuppliedPhone",
     "SuppliedName", "Priority"}
)  # fmt: skip
# The lookups a query may follow from an object: relationship name → (object, its id field).
RELATIONSHIPS: dict[str, dict[str, tuple[str, str]]] = {
    "Case": {"Contact": ("Contact", "ContactId")}
}
# Query paging: a batch is 2,000 records unless Sforce-Query-Options asks for 200 to 2,000;
# a user keeps at most 10 query cursors open, opening another releases the oldest.
QUERY_BATCH_DEFAULT = 2000
QUERY_BATCH_MIN = 200
OPEN_LOCATORS_MAX = 10
INVALID_LOCATOR = [{"message": "invalid query locator", "errorCode": "INVALID_QUERY_LOCATOR"}]
COMMENT_WRITABLE = frozenset({"ParentId", "CommentBody", "IsPublished"})
OUTBOUND_CASE_FIELDS = (
    "Id", "CaseNumber", "ContactId", "Subject", "Description", "Origin", "Status", "IsClosed",
    "CreatedDate", "LastModifiedDate", "SuppliedEmail", "SuppliedPhone",
)  # fmt: skip
OUTBOUND_CONTACT_FIELDS = ("Id", "FirstName", "LastName", "Name", "Email", "Phone", "MobilePhone")

OutboundRecord = tuple[str, Mapping[str, object]]
OUTBOUND_TIMEOUT = 60.0  # how long Salesforce waits for the Ack


class _RestVersion(BaseConverter):
    regex = r"v\d+\.\d"


class _SoapVersion(BaseConverter):
    regex = r"\d+\.\d"


CONVERTERS = {"rest_version": _RestVersion, "soap_version": _SoapVersion}
DATA = "/services/data/<rest_version:version>"
REST_ROUTES = Map(
    [
        Rule(f"{DATA}/sobjects/Contact/<record_id>", endpoint="contact", methods=["GET"]),
        Rule(f"{DATA}/sobjects/Case/<record_id>", endpoint="case", methods=["GET"]),
        Rule(f"{DATA}/sobjects/CaseComment/<record_id>", endpoint="comment", methods=["GET"]),
        Rule(f"{DATA}/sobjects/Case/<record_id>", endpoint="update_case", methods=["PATCH"]),
        Rule(f"{DATA}/sobjects/CaseComment/", endpoint="create_comment", methods=["POST"]),
        Rule(f"{DATA}/query/", endpoint="query", methods=["GET"]),
        Rule(f"{DATA}/queryAll/", endpoint="query", methods=["GET"]),
        Rule(f"{DATA}/query/<locator>", endpoint="query_more", methods=["GET"]),
        Rule(f"{DATA}/queryAll/<locator>", endpoint="query_more", methods=["GET"]),
        Rule(f"{DATA}/limits/", endpoint="limits", methods=["GET"]),
    ],
    converters=CONVERTERS,
    strict_slashes=False,
    merge_slashes=False,
)
LOGIN_ROUTES = Map(
    [
        Rule("/services/Soap/u/<soap_version:version>", endpoint="soap", methods=["POST"]),
        Rule("/services/oauth2/token", endpoint="token", methods=["POST"]),
    ],
    converters=CONVERTERS,
)


def _json(payload: object, status: int = 200) -> Response:
    return Response(json.dumps(payload), status=status, content_type=JSON_TYPE)


def _error(status: int, code: str, message: str, fields: list[str] | None = None) -> Response:
    error: dict[str, object] = {"message": message, "errorCode": code}
    if fields is not None:
        error["fields"] = fields
    return _json([error], status)


def _oauth_error(error: str, description: str) -> Response:
    return _json({"error": error, "error_description": description}, 400)


def _salesforce_time(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}+0000"


def _soap_value(field_type: str, value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return _salesforce_time(value.astimezone(UTC)).replace("+0000", "Z")
    if field_type == "datetime":
        # The SOAP API writes xsd:dateTime in UTC with a Z where REST writes +0000.
        return str(value).replace("+0000", "Z")
    return str(value)


def _id18(value: object) -> str | None:
    """Return the 18-character form of an id given in 15 or 18 characters, else None."""
    if not isinstance(value, str):
        return None
    full = salesforce_id18(value)
    if full is None or (len(value) == 18 and full != value):
        return None
    return full


def _blank(value: object) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _utc(at: datetime) -> datetime:
    """Return `at` in UTC, taking a naive value as UTC."""
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def _require_id18(value: str) -> str:
    full = _id18(value)
    if full is None:
        raise ValueError(f"not a Salesforce id: {value!r}")
    return full


def is_ack(body: bytes) -> bool:
    """Tell whether a receiver's reply acknowledges an outbound message as Salesforce requires."""
    try:
        root = ElementTree.fromstring(body)
    except (ElementTree.ParseError, DefusedXmlException, ValueError):
        return False
    if root.tag != f"{{{SOAPENV_NS}}}Envelope":
        return False
    ack = root.find(
        f"{{{SOAPENV_NS}}}Body/{{{OUTBOUND_NS}}}notificationsResponse/{{{OUTBOUND_NS}}}Ack"
    )
    return ack is not None and (ack.text or "").strip() == "true"


class OutboundFailed(Exception):
    """An outbound message got no Ack (Salesforce would retry), or had nowhere to go."""


class _SoqlError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class _Condition:
    field: str
    negated: bool
    values: list[object]
    operator: str = "="  # or <, <=, >, >= (with one value)


@dataclass
class _Soql:
    fields: list[str]  # empty for SELECT COUNT()
    sobject: str
    count: bool = False
    conditions: list[_Condition] = field(default_factory=list)
    any_condition: bool = False
    order: list[tuple[str, bool, bool]] = field(default_factory=list)
    limit: int | None = None


SOQL_TOKEN = re.compile(
    r"\s*(?:(?P<string>'(?:[^'\\]|\\.)*')"
    r"|(?P<datetime>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,3})?(?:Z|[+-]\d\d:\d\d))"
    r"|(?P<number>-?\d+(?:\.\d+)?)"
    r"|(?P<word>[A-Za-z_][A-Za-z0-9_.]*)|(?P<symbol>!=|<>|<=|>=|[=<>,()])|(?P<other>\S))",
    re.DOTALL,
)
SOQL_ESCAPES = {
    "\\": "\\",
    "'": "'",
    '"': '"',
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "b": "\b",
    "f": "\f",
}


def _soql_string(quoted: str) -> str:
    text = quoted[1:-1]
    unescaped: list[str] = []
    position = 0
    while position < len(text):
        char = text[position]
        if char == "\\":
            code = text[position + 1]
            # SOQL takes \N, \R, \T, \B, \F as well as their lower-case forms.
            replacement = SOQL_ESCAPES.get(code if code in "\\'\"" else code.lower())
            if replacement is None:
                message = f"Invalid string literal {quoted}. Illegal escape sequence: \\{code}"
                raise _SoqlError("MALFORMED_QUERY", message)
            unescaped.append(replacement)
            position += 2
        else:
            unescaped.append(char)
            position += 1
    return "".join(unescaped)


def _filter_value(types: Mapping[str, str], name: str, value: object) -> object:
    field_type = types[name]
    if value is None:
        return None
    if field_type == "id":
        if not isinstance(value, str):
            message = f"value of filter criterion for field '{name}' must be of type id"
            raise _SoqlError("INVALID_QUERY_FILTER_OPERATOR", message)
        full = _id18(value)
        if full is None:
            raise _SoqlError("INVALID_QUERY_FILTER_OPERATOR", f"invalid ID field: {value}")
        return full
    expectations = {
        "boolean": (bool, "boolean and should not be enclosed in quotes"),
        "datetime": (datetime, "dateTime and should not be enclosed in quotes"),
        "string": (str, "string and should be enclosed in quotes"),
    }
    expected, wording = expectations[field_type]
    if not isinstance(value, expected):
        message = f"value of filter criterion for field '{name}' must be of type {wording}"
        raise _SoqlError("INVALID_QUERY_FILTER_OPERATOR", message)
    return value


def _equal(field_type: str, stored: object, wanted: object) -> bool:
    if isinstance(stored, str) and isinstance(wanted, str) and field_type == "string":
        # SOQL compares text without regard to case; ids and booleans compare exactly.
        return stored.casefold() == wanted.casefold()
    if field_type == "datetime" and stored is not None and wanted is not None:
        return bool(_comparable(field_type, stored) == wanted)
    return stored == wanted


def _comparable(field_type: str, value: object) -> Any:
    """Return a stored value as SOQL compares it: datetimes as times, text without case."""
    if field_type == "datetime" and isinstance(value, str):
        return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%f%z")
    if field_type == "string" and isinstance(value, str):
        return value.casefold()
    return value


def _ordered(field_type: str, stored: object, operator: str, wanted: object) -> bool:
    """Tell whether a stored value is <, <=, > or >= a filter value (never when null)."""
    if stored is None or wanted is None:
        return False
    left, right = _comparable(field_type, stored), _comparable(field_type, wanted)
    outcomes = {"<": left < right, "<=": left <= right, ">": left > right, ">=": left >= right}
    return outcomes[operator]


def _datetime_literal(text: str) -> datetime:
    """Read a SOQL dateTime literal: 2025-12-06T00:00:00Z, with milliseconds or an offset."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _sort_key(value: object) -> Any:
    return value.casefold() if isinstance(value, str) else value


class _SoqlParser:
    """Parse the SOQL subset the fake answers: one object, flat filters, order and limit."""

    def __init__(self, query: str) -> None:
        self.tokens: list[tuple[str, str]] = []
        position = 0
        while (match := SOQL_TOKEN.match(query, position)) is not None:
            kind = match.lastgroup or "other"
            self.tokens.append((kind, match.group(kind)))
            position = match.end()
        self.position = 0

    def parse(self) -> _Soql:
        self.expect("SELECT")
        counting = self.accept_count()
        fields = [] if counting else [self.path()]
        while not counting and self.accept_symbol(","):
            fields.append(self.path())
        self.expect("FROM")
        soql = _Soql(fields, self.name(), count=counting)
        if self.accept("WHERE"):
            soql.conditions.append(self.condition())
            connector: str | None = None
            while self.peek_keyword() in ("AND", "OR"):
                keyword = self.peek_keyword()
                if connector not in (None, keyword):
                    self.unexpected()
                connector = keyword
                self.position += 1
                soql.conditions.append(self.condition())
            soql.any_condition = connector == "OR"
        if self.accept("ORDER"):
            self.expect("BY")
            soql.order.append(self.ordering())
            while self.accept_symbol(","):
                soql.order.append(self.ordering())
        if self.accept("LIMIT"):
            kind, text = self.next()
            if kind != "number" or not text.isdigit():
                self.unexpected(text)
            soql.limit = int(text)
        if self.position < len(self.tokens):
            self.unexpected()
        return soql

    def condition(self) -> _Condition:
        name = self.name()
        if self.accept("IN"):
            return _Condition(name, False, self.literal_list())
        if self.accept("NOT"):
            self.expect("IN")
            return _Condition(name, True, self.literal_list())
        kind, text = self.next()
        if kind != "symbol" or text not in ("=", "!=", "<>", "<", "<=", ">", ">="):
            self.unexpected(text)
        if text in ("<", "<=", ">", ">="):
            return _Condition(name, False, [self.literal()], text)
        return _Condition(name, text != "=", [self.literal()])

    def literal_list(self) -> list[object]:
        if not self.accept_symbol("("):
            self.unexpected()
        values = [self.literal()]
        while self.accept_symbol(","):
            values.append(self.literal())
        if not self.accept_symbol(")"):
            self.unexpected()
        return values

    def literal(self) -> object:
        kind, text = self.next()
        if kind == "string":
            return _soql_string(text)
        if kind == "datetime":
            return _datetime_literal(text)
        if kind == "number":
            return float(text) if "." in text else int(text)
        keywords: dict[str, object] = {"TRUE": True, "FALSE": False, "NULL": None}
        if kind == "word" and text.upper() in keywords:
            return keywords[text.upper()]
        self.unexpected(text)

    def ordering(self) -> tuple[str, bool, bool]:
        name = self.name()
        descending = False
        if self.peek_keyword() in ("ASC", "DESC"):
            descending = self.next()[1].upper() == "DESC"
        nulls_last = False
        if self.accept("NULLS"):
            if self.peek_keyword() not in ("FIRST", "LAST"):
                self.unexpected()
            nulls_last = self.next()[1].upper() == "LAST"
        return name, descending, nulls_last

    def accept_count(self) -> bool:
        """Take COUNT() as the whole select list, if it is there."""
        tokens = self.tokens[self.position : self.position + 3]
        if [token[1].upper() for token in tokens] == ["COUNT", "(", ")"]:
            self.position += 3
            return True
        return False

    def path(self) -> str:
        """Take a field, or a relationship's field (Contact.Email): one dot at most."""
        kind, text = self.next()
        if kind != "word" or text.count(".") > 1 or text.startswith(".") or text.endswith("."):
            self.unexpected(text)
        return text

    def name(self) -> str:
        kind, text = self.next()
        if kind != "word" or "." in text:
            self.unexpected(text)
        return text

    def next(self) -> tuple[str, str]:
        if self.position >= len(self.tokens):
            self.unexpected()
        token = self.tokens[self.position]
        self.position += 1
        return token

    def peek_keyword(self) -> str | None:
        if self.position < len(self.tokens) and self.tokens[self.position][0] == "word":
            return self.tokens[self.position][1].upper()
        return None

    def accept(self, keyword: str) -> bool:
        if self.peek_keyword() == keyword:
            self.position += 1
            return True
        return False

    def accept_symbol(self, symbol: str) -> bool:
        if self.position < len(self.tokens) and self.tokens[self.position] == ("symbol", symbol):
            self.position += 1
            return True
        return False

    def expect(self, keyword: str) -> None:
        if not self.accept(keyword):
            self.unexpected()

    def unexpected(self, text: str | None = None) -> NoReturn:
        if text is None:
            at_end = self.position >= len(self.tokens)
            text = "<EOF>" if at_end else self.tokens[self.position][1]
        raise _SoqlError("MALFORMED_QUERY", f"unexpected token: {text}")


def _field_name(sobject: str, given: str) -> str:
    """Return a field's own spelling, or raise Salesforce's INVALID_FIELD."""
    canonical = {name.lower(): name for name in FIELD_TYPES[sobject]}
    if given.lower() not in canonical:
        hint = CUSTOM_SUFFIX_HINT.format(kind="field", what="custom field name")
        message = f"No such column '{given}' on entity '{sobject}'. {hint}"
        raise _SoqlError("INVALID_FIELD", message)
    return canonical[given.lower()]


def _field_path(sobject: str, given: str) -> tuple[str, ...]:
    """Return a selected field as (name,) or (relationship, name) in their own spelling."""
    if "." not in given:
        return (_field_name(sobject, given),)
    relationship, name = given.split(".")
    known = {rel.lower(): rel for rel in RELATIONSHIPS.get(sobject, {})}
    if relationship.lower() not in known:
        hint = CUSTOM_SUFFIX_HINT.format(kind="field", what="custom relationship name")
        message = f"Didn't understand relationship '{relationship}' in field path. {hint}"
        raise _SoqlError("INVALID_FIELD", message)
    relationship = known[relationship.lower()]
    target = RELATIONSHIPS[sobject][relationship][0]
    return relationship, _field_name(target, name)


def _holds(field_type: str, stored: object, condition: _Condition) -> bool:
    """Tell whether a stored value meets one condition of a WHERE clause."""
    if condition.operator != "=":
        return _ordered(field_type, stored, condition.operator, condition.values[0])
    found = any(_equal(field_type, stored, value) for value in condition.values)
    return found != condition.negated


def _batch_size(request: Request) -> int:
    """Return the batch size Sforce-Query-Options asks for (batchSize=N), within 200-2,000."""
    match = re.search(r"batchSize\s*=\s*(\d+)", request.headers.get("Sforce-Query-Options", ""))
    if match is None:
        return QUERY_BATCH_DEFAULT
    return min(max(int(match.group(1)), QUERY_BATCH_MIN), QUERY_BATCH_DEFAULT)


def _query_batch(
    records: list[dict[str, Any]], batch: int, offset: int, locator: str, version: str
) -> dict[str, Any]:
    """Return one batch of a query's records, with the nextRecordsUrl of the next one."""
    end = min(offset + batch, len(records))
    page: dict[str, Any] = {"totalSize": len(records), "done": end >= len(records)}
    if not page["done"]:
        page["nextRecordsUrl"] = f"/services/data/{version}/query/{locator}-{end}"
    page["records"] = records[offset:end]
    return page


class FakeSalesforce(FakeUpstream):
    """Serve a fake Salesforce org (REST API, logins, outbound messages) on 127.0.0.1."""

    def __init__(
        self,
        username: str = "carryover@example.com",
        password: str = "test-password",
        security_token: str = "test-security-token",
        consumer_key: str = "3MVG9test.consumer.key",
        jwt_public_key: str | bytes | None = None,
        session_id: str | None = None,
        org_id: str = DEFAULT_ORG_ID,
        daily_limit: int = DAILY_API_LIMIT,
        host: str = "127.0.0.1",
        port: int = 0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.username = username
        self.password = password
        self.security_token = security_token
        self.consumer_key = consumer_key
        self.jwt_public_key = jwt_public_key
        if not ORG_ID.fullmatch(org_id):
            raise ValueError(f"not an org id (00D…, 15 or 18 characters): {org_id!r}")
        self.org_id = org_id if len(org_id) == 18 else _require_id18(org_id)
        self.session_id = session_id
        self.logins = 0
        self.delay_seconds: float = 0.0
        self.requests_log: list[tuple[str, str, bytes, float]] = []
        self._lock = threading.RLock()
        self._serials = itertools.count(FIRST_SERIAL)
        self._case_numbers = itertools.count(FIRST_CASE_NUMBER)
        self._records: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in FIELD_TYPES}
        self._sessions: set[str] = {session_id} if session_id else set()
        self._failures: deque[tuple[int, object, dict[str, str]]] = deque()
        self._api_used = 0
        self._api_limit = daily_limit
        self._api_window_start = time.monotonic()
        self._last_stamp = datetime.min.replace(tzinfo=UTC)
        self._signing_key = secrets.token_bytes(32)
        self._outbound_url: str | None = None
        self._outbound_timeout = OUTBOUND_TIMEOUT
        self._locators: dict[str, tuple[list[dict[str, Any]], int]] = {}
        self.user_id = self._new_id("005")
        self.action_id = self._new_id("04k")
        self._records["Organization"][self.org_id] = {"Id": self.org_id, "Name": "Example Org"}
        super().__init__(host, port, ssl_context)

    @property
    def api_usage(self) -> tuple[int, int]:
        """Return (requests counted in the current 24-hour window, daily limit)."""
        with self._lock:
            self._roll_api_window()
            return self._api_used, self._api_limit

    def set_usage(self, used: int, limit: int | None = None) -> None:
        """Set the requests already counted today, and the daily limit when given."""
        with self._lock:
            self._api_used = used
            self._api_limit = self._api_limit if limit is None else limit
            self._api_window_start = time.monotonic()

    def expire_query_locators(self) -> None:
        """Release every open query cursor, as Salesforce does after two days."""
        with self._lock:
            self._locators.clear()

    def new_session(self) -> str:
        """Issue a valid session id without a login, for clients given a session id."""
        session_id = (
            self.org_id[:15] + "!AQ" + "".join(secrets.choice(SESSION_ALPHABET) for _ in range(93))
        )
        with self._lock:
            self._sessions.add(session_id)
        return session_id

    def expire_sessions(self) -> None:
        """Invalidate every session issued so far, the constructor's fixed one included."""
        with self._lock:
            self._sessions.clear()

    def fail_next(
        self, status: int, body: object, headers: dict[str, str] | None = None, count: int = 1
    ) -> None:
        """Answer the next `count` REST requests with this status, body and headers."""
        with self._lock:
            self._failures.extend([(status, body, dict(headers or {}))] * count)

    def add_contact(
        self,
        first_name: str | None,
        last_name: str,
        email: str | None = None,
        phone: str | None = None,
        mobile: str | None = None,
        *,
        record_id: str | None = None,
    ) -> str:
        """Create a contact (with a fresh id unless one is given) and return its 18-char id."""
        with self._lock:
            contact_id = self._given_or_new_id("Contact", "003", record_id)
            self._records["Contact"][contact_id] = {
                "Id": contact_id,
                "Name": f"{first_name} {last_name}" if first_name else last_name,
                "FirstName": first_name,
                "LastName": last_name,
                "Email": email,
                "Phone": phone,
                "MobilePhone": mobile,
            }
        return contact_id

    def add_case(
        self,
        subject: str,
        contact_id: str | None = None,
        origin: str = "Web",
        status: str = "New",
        description: str | None = None,
        supplied_email: str | None = None,
        supplied_phone: str | None = None,
        *,
        record_id: str | None = None,
        at: datetime | None = None,
        updated: datetime | None = None,
        priority: str = "Medium",
        supplied_name: str | None = None,
    ) -> str:
        """Create a case, optionally of a stored contact, and return its 18-character id.

        `at` backdates the case's CreatedDate and LastModifiedDate, `updated` the latter alone.
        """
        with self._lock:
            contact = None if contact_id is None else _require_id18(contact_id)
            if contact is not None and contact not in self._records["Contact"]:
                raise ValueError(f"no contact {contact_id}")
            case_id = self._given_or_new_id("Case", "500", record_id)
            stamp = self._stamp() if at is None else _salesforce_time(_utc(at))
            modified = stamp if updated is None else _salesforce_time(_utc(updated))
            self._records["Case"][case_id] = {
                "Id": case_id,
                "CaseNumber": f"{next(self._case_numbers):08d}",
                "Subject": subject,
                "Description": description,
                "Status": status,
                "Origin": origin,
                "ContactId": contact,
                "SuppliedEmail": supplied_email,
                "SuppliedPhone": supplied_phone,
                "SuppliedName": supplied_name,
                "Priority": priority,
                "IsClosed": status in CLOSED_STATUSES,
                "CreatedDate": stamp,
                "LastModifiedDate": modified,
            }
        return case_id

    def update_case(self, case_id: str, **fields: object) -> None:
        """Change a stored case's fields (Salesforce names) and bump its LastModifiedDate."""
        with self._lock:
            case = self._stored("Case", case_id)
            unknown = {name for name in fields if name not in FIELD_TYPES["Case"] or name == "Id"}
            if unknown:
                raise ValueError(f"cannot set {', '.join(sorted(unknown))} on a case")
            if "ContactId" in fields and fields["ContactId"] is not None:
                fields["ContactId"] = _require_id18(str(fields["ContactId"]))
            case.update(fields)
            if "Status" in fields and "IsClosed" not in fields:
                case["IsClosed"] = case["Status"] in CLOSED_STATUSES
            if "LastModifiedDate" not in fields:
                case["LastModifiedDate"] = self._stamp()

    def contact(self, contact_id: str) -> dict[str, Any]:
        """Return a stored contact's fields as the REST API names them."""
        with self._lock:
            return dict(self._stored("Contact", contact_id))

    def case(self, case_id: str) -> dict[str, Any]:
        """Return a stored case's fields as the REST API names them."""
        with self._lock:
            return dict(self._stored("Case", case_id))

    def records(self, sobject: str) -> list[dict[str, Any]]:
        """Return every stored record of an object (Case, Contact, …), oldest first."""
        with self._lock:
            return [dict(record) for record in self._records[sobject].values()]

    def comments(self, case_id: str) -> list[dict[str, Any]]:
        """Return the comments written to a case, oldest first."""
        parent_id = _require_id18(case_id)
        with self._lock:
            stored = self._records["CaseComment"].values()
            return [dict(comment) for comment in stored if comment["ParentId"] == parent_id]

    def case_fields(self, case_id: str) -> dict[str, str]:
        """Return a stored case's fields as an outbound message carries them."""
        return self._outbound_fields("Case", case_id, OUTBOUND_CASE_FIELDS)

    def contact_fields(self, contact_id: str) -> dict[str, str]:
        """Return a stored contact's fields as an outbound message carries them."""
        return self._outbound_fields("Contact", contact_id, OUTBOUND_CONTACT_FIELDS)

    def outbound_message(
        self, records: Sequence[OutboundRecord], *, session_id: str | None = None
    ) -> bytes:
        """Build the SOAP envelope Salesforce POSTs for an outbound message of 1-100 records."""
        if not 1 <= len(records) <= OUTBOUND_MAX_RECORDS:
            raise ValueError(f"an outbound message holds 1 to 100 records, not {len(records)}")
        org15 = self.org_id[:15]
        if session_id is None:
            session = '<SessionId xsi:nil="true"/>'
        else:
            session = f"<SessionId>{escape(session_id)}</SessionId>"
        notifications: list[str] = []
        for sobject_type, fields in records:
            names = [sobject_type, *fields]
            if not all(XML_NAME.fullmatch(name) for name in names):
                raise ValueError(f"not an sObject or field name in {names}")
            with self._lock:
                notification_id = self._new_id("04l")
            values = "".join(
                f"\n     <sf:{name}>{escape(_soap_value('string', value))}</sf:{name}>"
                for name, value in fields.items()
                if value is not None
            )
            notifications.append(
                f"\n   <Notification>\n    <Id>{notification_id}</Id>"
                f'\n    <sObject xsi:type="sf:{sobject_type}" xmlns:sf="{SOBJECT_NS}">'
                f"{values}\n    </sObject>\n   </Notification>"
            )
        envelope = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f'<soapenv:Envelope xmlns:soapenv="{SOAPENV_NS}"'
            ' xmlns:xsd="http://www.w3.org/2001/XMLSchema"'
            ' xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">\n'
            " <soapenv:Body>\n"
            f'  <notifications xmlns="{OUTBOUND_NS}">\n'
            f"   <OrganizationId>{self.org_id}</OrganizationId>\n"
            f"   <ActionId>{self.action_id}</ActionId>\n"
            f"   {session}\n"
            f"   <EnterpriseUrl>{self.url}/services/Soap/c/{API_VERSION}/{org15}</EnterpriseUrl>\n"
            f"   <PartnerUrl>{self.url}/services/Soap/u/{API_VERSION}/{org15}</PartnerUrl>"
            f"{''.join(notifications)}\n"
            "  </notifications>\n"
            " </soapenv:Body>\n"
            "</soapenv:Envelope>\n"
        )
        return envelope.encode("utf-8")

    def send_outbound(
        self,
        url: str,
        records: Sequence[OutboundRecord],
        *,
        session_id: str | None = None,
        timeout: float = 10.0,
    ) -> requests.Response:
        """POST an outbound message to `url` the way Salesforce delivers one."""
        return requests.post(
            url,
            data=self.outbound_message(records, session_id=session_id),
            headers={"Content-Type": XML_TYPE, "SOAPAction": '""'},
            timeout=timeout,
        )

    is_ack = staticmethod(is_ack)

    def subscribe(self, url: str, timeout: float = OUTBOUND_TIMEOUT) -> None:
        """Send the Case outbound message of open_case() to `url` (its endpoint URL)."""
        self._outbound_url = url
        self._outbound_timeout = timeout

    def open_case(
        self,
        contact_id: str | None,
        subject: str,
        description: str | None = None,
        origin: str = "Phone",
        status: str = "New",
        *,
        supplied_email: str | None = None,
        supplied_phone: str | None = None,
        at: datetime | None = None,
    ) -> str:
        """Create a case, send its outbound message as a Flow would, and return its id.

        Raises OutboundFailed unless the endpoint answers 200 with the Ack; the case
        stays created, as it would in Salesforce.
        """
        url = self._outbound_url
        if url is None:
            raise OutboundFailed("no endpoint: call subscribe(url) first")
        case_id = self.add_case(subject, contact_id, origin, status, description, supplied_email,
                                supplied_phone, at=at)  # fmt: skip
        where = f"outbound message of case {case_id} to {url}"
        try:
            reply = self.send_outbound(url, [("Case", self.case_fields(case_id))],
                                       timeout=self._outbound_timeout)  # fmt: skip
        except requests.RequestException as exc:
            raise OutboundFailed(f"{where}: not delivered ({exc})") from exc
        if reply.status_code != 200 or not is_ack(reply.content):
            answer = reply.text[:300]
            raise OutboundFailed(f"{where}: answered {reply.status_code} without the Ack: {answer}")
        return case_id

    def _new_id(self, prefix: str) -> str:
        number = next(self._serials)
        digits = ""
        for _ in range(9):
            number, digit = divmod(number, 62)
            digits = ID_ALPHABET[digit] + digits
        return _require_id18(f"{prefix}{ID_POD}0{digits}")

    def _given_or_new_id(self, sobject: str, prefix: str, given: str | None) -> str:
        if given is None:
            return self._new_id(prefix)
        record_id = _require_id18(given)
        if not record_id.startswith(prefix) or record_id in self._records[sobject]:
            raise ValueError(f"not a new {sobject} id (prefix {prefix}): {given}")
        return record_id

    def _stamp(self) -> str:
        now = datetime.now(UTC)
        now = now.replace(microsecond=now.microsecond // 1000 * 1000)
        # Strictly increasing, so an update is always visible in LastModifiedDate.
        self._last_stamp = max(now, self._last_stamp + timedelta(milliseconds=1))
        return _salesforce_time(self._last_stamp)

    def _stored(self, sobject: str, record_id: str) -> dict[str, Any]:
        record = self._records[sobject].get(_id18(record_id) or "")
        if record is None:
            raise KeyError(f"no {sobject} {record_id}")
        return record

    def _outbound_fields(
        self, sobject: str, record_id: str, names: Sequence[str]
    ) -> dict[str, str]:
        with self._lock:
            record = self._stored(sobject, record_id)
        types = FIELD_TYPES[sobject]
        return {
            name: _soap_value(types[name], record[name])
            for name in names
            if record[name] is not None
        }

    def _roll_api_window(self) -> None:
        if time.monotonic() - self._api_window_start >= API_WINDOW_SECONDS:
            self._api_used = 0
            self._api_window_start = time.monotonic()

    def _agent_view(self) -> Response:
        """Render the cases, newest first, as an agent would read them (read-only)."""
        with self._lock:
            cases = sorted(self._records["Case"].values(),
                           key=lambda c: (c["CreatedDate"], c["Id"]), reverse=True)  # fmt: skip
            sections = "\n".join(self._case_html(case) for case in cases)
        return agent_page("Salesforce (fake): cases", sections, "No cases yet.")

    def _case_html(self, case: dict[str, Any]) -> str:
        contact = self._records["Contact"].get(case["ContactId"] or "", {})
        who = contact.get("Name") or case["SuppliedEmail"] or case["SuppliedPhone"] or "no contact"
        facts = (who, case["Origin"] or "no origin", case["Status"], case["CreatedDate"])
        comments = sorted(
            (c for c in self._records["CaseComment"].values() if c["ParentId"] == case["Id"]),
            key=lambda c: (c["CreatedDate"], c["Id"]),
        )
        description = case["Description"]
        return (
            f"<section><h2>Case {case['CaseNumber']} {html.escape(case['Subject'] or '')}</h2>"
            f'<p class="meta">{html.escape(" · ".join(str(f) for f in facts))}</p>'
            + (f"<pre>{html.escape(description)}</pre>" if description else "")
            + "".join(_case_comment_html(comment) for comment in comments)
            + "</section>"
        )

    def _api(self, request: Request, received: float) -> Response:
        if not request.path.startswith("/services/data/"):
            return self._login(request)
        response = self._rest(request)
        with self._lock:
            usage = f"api-usage={self._api_used}/{self._api_limit}"
        response.headers.setdefault("Sforce-Limit-Info", usage)
        return response

    def _rest(self, request: Request) -> Response:
        with self._lock:
            failure = self._failures.popleft() if self._failures else None
        if failure is not None:
            return self._failure(*failure)
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        with self._lock:
            # Salesforce takes "OAuth" as a synonym of "Bearer".
            if scheme not in ("Bearer", "OAuth") or token.strip() not in self._sessions:
                return _json(INVALID_SESSION, 401)
            self._roll_api_window()
            if self._api_used + 1 > self._api_limit:
                return _json(LIMIT_EXCEEDED, 403)
            self._api_used += 1
        try:
            endpoint, args = REST_ROUTES.bind_to_environ(request.environ).match()
        except MethodNotAllowed as refusal:
            allowed = ",".join(sorted(refusal.valid_methods or []))
            message = f"HTTP Method '{request.method}' not allowed. Allowed are {allowed}"
            return _json([{"errorCode": "METHOD_NOT_ALLOWED", "message": message}], 405)
        except HTTPException:
            return _json(NOT_FOUND, 404)
        with self._lock:
            response: Response = getattr(self, f"_rest_{endpoint}")(request, **args)
            return response

    def _failure(self, status: int, body: object, headers: dict[str, str]) -> Response:
        if isinstance(body, str | bytes):
            response = Response(body, status=status, content_type="text/plain; charset=utf-8")
        else:
            response = _json(body, status)
        response.headers.update(headers)
        return response

    def _rest_contact(self, request: Request, version: str, record_id: str) -> Response:
        return self._get_record("Contact", version, record_id)

    def _rest_case(self, request: Request, version: str, record_id: str) -> Response:
        return self._get_record("Case", version, record_id)

    def _rest_comment(self, request: Request, version: str, record_id: str) -> Response:
        return self._get_record("CaseComment", version, record_id)

    def _get_record(self, sobject: str, version: str, record_id: str) -> Response:
        record = self._records[sobject].get(_id18(record_id) or "")
        if record is None:
            return _json(NOT_FOUND, 404)
        return _json({"attributes": self._attributes(sobject, version, record["Id"]), **record})

    def _attributes(self, sobject: str, version: str, record_id: str) -> dict[str, str]:
        return {"type": sobject, "url": f"/services/data/{version}/sobjects/{sobject}/{record_id}"}

    def _rest_update_case(self, request: Request, version: str, record_id: str) -> Response:
        case = self._records["Case"].get(_id18(record_id) or "")
        if case is None:
            return _json(NOT_FOUND, 404)
        changes = self._json_body(request)
        if isinstance(changes, Response):
            return changes
        refused = self._field_error("Case", changes, CASE_WRITABLE)
        if refused is not None:
            return refused
        if changes.get("ContactId") is not None:
            contact_id = _id18(changes["ContactId"])
            if contact_id not in self._records["Contact"]:
                return _error(400, "INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id", [])
            changes["ContactId"] = contact_id
        self.update_case(case["Id"], **changes)
        return Response(status=204)

    def _rest_create_comment(self, request: Request, version: str) -> Response:
        given = self._json_body(request)
        if isinstance(given, Response):
            return given
        refused = self._field_error("CaseComment", given, COMMENT_WRITABLE)
        if refused is not None:
            return refused
        missing = [name for name in ("ParentId", "CommentBody") if _blank(given.get(name))]
        if missing:
            message = f"Required fields are missing: [{', '.join(missing)}]"
            return _error(400, "REQUIRED_FIELD_MISSING", message, missing)
        body = str(given["CommentBody"])
        if len(body.encode("utf-8")) > COMMENT_BODY_MAX_BYTES:
            message = f"Body: data value too large: {body[:40]}... (max length=4000)"
            return _error(400, "STRING_TOO_LONG", message, ["CommentBody"])
        parent_id = _id18(given["ParentId"])
        if parent_id not in self._records["Case"]:
            return _error(400, "INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id", [])
        comment_id = self._new_id("00a")
        self._records["CaseComment"][comment_id] = {
            "Id": comment_id,
            "ParentId": parent_id,
            "CommentBody": body,
            "IsPublished": bool(given.get("IsPublished")),
            "CreatedDate": self._stamp(),
        }
        return _json({"id": comment_id, "success": True, "errors": []}, 201)

    def _json_body(self, request: Request) -> dict[str, Any] | Response:
        try:
            given = json.loads(request.get_data())
        except ValueError as error:
            return _error(400, "JSON_PARSER_ERROR", f"Unexpected character: {error}")
        if not isinstance(given, dict):
            message = "Cannot deserialize instance of SObject from a JSON value that is no object"
            return _error(400, "JSON_PARSER_ERROR", message)
        return given

    def _field_error(
        self, sobject: str, given: Mapping[str, object], writable: frozenset[str]
    ) -> Response | None:
        for name, value in given.items():
            if name not in FIELD_TYPES[sobject]:
                message = f"No such column '{name}' on sobject of type {sobject}"
                return _error(400, "INVALID_FIELD", message, [])
            if name not in writable:
                message = (
                    f"Unable to create/update fields: {name}. Please check the security"
                    " settings of this field and verify that it is read/write for your"
                    " profile or permission set."
                )
                return _error(400, "INVALID_FIELD_FOR_INSERT_UPDATE", message, [name])
            field_type = FIELD_TYPES[sobject][name]
            wanted = bool if field_type == "boolean" else str
            if value is not None and not isinstance(value, wanted):
                java_type = "boolean" if field_type == "boolean" else "string"
                message = f"Cannot deserialize instance of {java_type} from {json.dumps(value)}"
                return _error(400, "JSON_PARSER_ERROR", message, [])
        return None

    # Query, Query More Results, and the batch size of the Query Options header:
    # https://developer.salesforce.com/docs/platform/api-rest/guide/resources-query.html
    # https://developer.salesforce.com/docs/platform/api-rest/guide/resources-query-more-results.html
    # https://developer.salesforce.com/docs/platform/api-rest/guide/dome-query.html
    def _rest_query(self, request: Request, version: str) -> Response:
        query = request.args.get("q", "")
        if not query.strip():
            return _error(400, "MALFORMED_QUERY", "A query string has to be specified")
        try:
            soql = _SoqlParser(query).parse()
            records = self._run_query(soql, version)
        except _SoqlError as error:
            return _error(400, error.code, error.message)
        if soql.count:
            return _json({"totalSize": len(records), "done": True, "records": []})
        batch = _batch_size(request)
        locator = self._open_locator(records, batch) if len(records) > batch else ""
        return _json(_query_batch(records, batch, 0, locator, version))

    def _rest_query_more(self, request: Request, version: str, locator: str) -> Response:
        cursor, _, offset = locator.rpartition("-")
        kept = self._locators.get(cursor)
        if kept is None or not offset.isdigit() or int(offset) > len(kept[0]):
            # An unknown locator, or one released (over 10 open, or expire_query_locators()).
            return _json(INVALID_LOCATOR, 400)
        records, batch = kept
        return _json(_query_batch(records, batch, int(offset), cursor, version))

    def _open_locator(self, records: list[dict[str, Any]], batch: int) -> str:
        """Keep a query's records behind a new locator; release the oldest beyond ten."""
        locator = self._new_id("01g")
        self._locators[locator] = (records, batch)
        while len(self._locators) > OPEN_LOCATORS_MAX:
            del self._locators[next(iter(self._locators))]
        return locator

    # Limits: https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/resources_limits.htm
    def _rest_limits(self, request: Request, version: str) -> Response:
        self._roll_api_window()
        remaining = max(self._api_limit - self._api_used, 0)
        return _json(
            {
                "DailyApiRequests": {"Max": self._api_limit, "Remaining": remaining},
                "DailyBulkApiBatches": {"Max": 15000, "Remaining": 15000},
                "DataStorageMB": {"Max": 1024, "Remaining": 1024},
                "FileStorageMB": {"Max": 1024, "Remaining": 1024},
            }
        )

    def _run_query(self, soql: _Soql, version: str) -> list[dict[str, Any]]:
        sobject = next((name for name in FIELD_TYPES if name.lower() == soql.sobject.lower()), "")
        if not sobject:
            hint = CUSTOM_SUFFIX_HINT.format(kind="object", what="entity name")
            message = f"sObject type '{soql.sobject}' is not supported. {hint}"
            raise _SoqlError("INVALID_TYPE", message)
        types = FIELD_TYPES[sobject]
        selected = [_field_path(sobject, path) for path in soql.fields]
        duplicate = next((path for path in selected if selected.count(path) > 1), None)
        if duplicate:
            raise _SoqlError("MALFORMED_QUERY", f"duplicate field selected: {'.'.join(duplicate)}")
        for condition in soql.conditions:
            condition.field = _field_name(sobject, condition.field)
            condition.values = [_filter_value(types, condition.field, v) for v in condition.values]

        def matches(row: Mapping[str, Any]) -> bool:
            outcomes = [_holds(types[c.field], row[c.field], c) for c in soql.conditions]
            return any(outcomes) if soql.any_condition else all(outcomes)

        rows = [row for row in self._records[sobject].values() if matches(row)]
        for name, descending, nulls_last in reversed(soql.order):
            ordered = _field_name(sobject, name)
            present = [row for row in rows if row[ordered] is not None]
            absent = [row for row in rows if row[ordered] is None]
            present.sort(key=lambda row: _sort_key(row[ordered]), reverse=descending)
            rows = present + absent if nulls_last else absent + present
        if soql.limit is not None:
            rows = rows[: soql.limit]
        return [self._query_record(sobject, row, selected, version) for row in rows]

    def _query_record(
        self, sobject: str, row: Mapping[str, Any], selected: list[tuple[str, ...]], version: str
    ) -> dict[str, Any]:
        """Return a row as a query answers it: a related record nested under its relationship."""
        record: dict[str, Any] = {"attributes": self._attributes(sobject, version, row["Id"])}
        for path in selected:
            if len(path) == 1:
                record[path[0]] = row[path[0]]
                continue
            relationship, name = path
            target, id_field = RELATIONSHIPS[sobject][relationship]
            linked = self._records[target].get(row[id_field] or "")
            if linked is None:
                record[relationship] = None  # Salesforce writes null for an empty lookup
                continue
            attributes = {"attributes": self._attributes(target, version, linked["Id"])}
            record.setdefault(relationship, attributes)[name] = linked[name]
        return record

    def _login(self, request: Request) -> Response:
        try:
            endpoint, args = LOGIN_ROUTES.bind_to_environ(request.environ).match()
        except HTTPException as refusal:
            return refusal.get_response(request.environ)
        response: Response = getattr(self, f"_login_{endpoint}")(request, **args)
        return response

    def _login_soap(self, request: Request, version: str) -> Response:
        try:
            envelope = ElementTree.fromstring(request.get_data())
        except (ElementTree.ParseError, DefusedXmlException):
            return self._soap_fault("soapenv:Client", "Unable to parse the login request", "")
        login = envelope.find(f"{{{SOAPENV_NS}}}Body/{{{PARTNER_NS}}}login")
        if login is None:
            return self._soap_fault("soapenv:Client", "No operation available for request", "")
        username = login.findtext(f"{{{PARTNER_NS}}}username") or ""
        password = login.findtext(f"{{{PARTNER_NS}}}password") or ""
        # Usernames are case-insensitive; the token is appended to the password.
        if (
            username.casefold() != self.username.casefold()
            or password != self.password + self.security_token
        ):
            detail = (
                '<sf:LoginFault xsi:type="sf:LoginFault">'
                "<sf:exceptionCode>INVALID_LOGIN</sf:exceptionCode>"
                f"<sf:exceptionMessage>{INVALID_LOGIN}</sf:exceptionMessage>"
                "</sf:LoginFault>"
            )
            return self._soap_fault("sf:INVALID_LOGIN", f"INVALID_LOGIN: {INVALID_LOGIN}", detail)
        session_id = self.new_session()
        with self._lock:
            self.logins += 1
        org15 = self.org_id[:15]
        soap_url = f"{self.url}/services/Soap"
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>'
            f'<soapenv:Envelope xmlns:soapenv="{SOAPENV_NS}" xmlns="{PARTNER_NS}"'
            ' xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
            "<soapenv:Body><loginResponse><result>"
            f"<metadataServerUrl>{soap_url}/m/{version}/{org15}</metadataServerUrl>"
            "<passwordExpired>false</passwordExpired>"
            "<sandbox>false</sandbox>"
            f"<serverUrl>{soap_url}/u/{version}/{org15}</serverUrl>"
            f"<sessionId>{session_id}</sessionId>"
            f"<userId>{self.user_id}</userId>"
            "<userInfo>"
            f"<organizationId>{self.org_id}</organizationId>"
            "<organizationName>Carryover Fake Org</organizationName>"
            f"<sessionSecondsValid>{SESSION_SECONDS_VALID}</sessionSecondsValid>"
            f"<userEmail>{escape(self.username)}</userEmail>"
            "<userFullName>Carryover Integration</userFullName>"
            f"<userId>{self.user_id}</userId>"
            f"<userName>{escape(self.username)}</userName>"
            "<userTimeZone>Etc/UTC</userTimeZone>"
            "<userType>Standard</userType>"
            "</userInfo>"
            "</result></loginResponse></soapenv:Body></soapenv:Envelope>"
        )
        return Response(body, status=200, content_type=XML_TYPE)

    def _soap_fault(self, code: str, message: str, detail: str) -> Response:
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>'
            f'<soapenv:Envelope xmlns:soapenv="{SOAPENV_NS}"'
            ' xmlns:sf="urn:fault.partner.soap.sforce.com"'
            ' xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
            "<soapenv:Body><soapenv:Fault>"
            f"<faultcode>{code}</faultcode><faultstring>{escape(message)}</faultstring>"
            f"{f'<detail>{detail}</detail>' if detail else ''}"
            "</soapenv:Fault></soapenv:Body></soapenv:Envelope>"
        )
        return Response(body, status=500, content_type=XML_TYPE)

    def _login_token(self, request: Request) -> Response:
        if request.form.get("grant_type") != JWT_BEARER:
            return _oauth_error("unsupported_grant_type", "grant type not supported")
        refusal = self._assertion_refusal(request.form.get("assertion", ""))
        if refusal is not None:
            return _oauth_error("invalid_grant", refusal)
        session_id = self.new_session()
        with self._lock:
            self.logins += 1
        identity_url = f"{self.url}/id/{self.org_id}/{self.user_id}"
        issued_at = str(int(time.time() * 1000))
        digest = hmac.new(
            self._signing_key, (identity_url + issued_at).encode(), hashlib.sha256
        ).digest()
        return _json(
            {
                "access_token": session_id,
                "scope": "api",
                "instance_url": self.url,
                "id": identity_url,
                "token_type": "Bearer",
                "issued_at": issued_at,
                "signature": base64.b64encode(digest).decode("ascii"),
            }
        )

    def _assertion_refusal(self, assertion: str) -> str | None:
        """Return why a JWT bearer assertion is refused, or None when it is good."""
        try:
            if self.jwt_public_key is None:
                claims = jwt.decode(assertion, options={"verify_signature": False})
            else:
                # Claims are checked below, with Salesforce's own wording for each refusal.
                claims = jwt.decode(
                    assertion,
                    self.jwt_public_key,
                    algorithms=["RS256"],
                    options={"verify_exp": False, "verify_aud": False, "verify_iat": False},
                )
        except jwt.InvalidTokenError:
            return "invalid assertion"
        if claims.get("iss") != self.consumer_key:
            return "client identifier invalid"
        if str(claims.get("sub", "")).casefold() != self.username.casefold():
            return "invalid user"
        audiences = claims.get("aud")
        audiences = audiences if isinstance(audiences, list) else [audiences]
        if not any(self._accepted_audience(audience) for audience in audiences):
            return "audience is invalid"
        try:
            # simple-salesforce sends `exp` as a string of digits, which Salesforce takes.
            expires = int(claims["exp"])
        except (KeyError, TypeError, ValueError):
            return "invalid assertion"
        if expires <= time.time():
            return "expired assertion"
        return None

    def _accepted_audience(self, audience: object) -> bool:
        if not isinstance(audience, str):
            return False
        return bool(SALESFORCE_AUDIENCE.fullmatch(audience)) or audience.rstrip("/") == self.url


def _case_comment_html(comment: Mapping[str, Any]) -> str:
    published = comment["IsPublished"]
    kind = "public comment" if published else "private comment (internal)"
    return (
        f'<article class="{"public" if published else "internal"}">'
        f'<p class="meta">{html.escape(kind)} · {html.escape(comment["CreatedDate"])}</p>'
        f"<pre>{html.escape(comment['CommentBody'])}</pre></article>"
    )


def main(argv: Sequence[str] | None = None) -> None:
    """Serve a fake Salesforce org until Ctrl-C, printing its URL and credentials."""
    parser = argparse.ArgumentParser(
        description="Serve a fake Salesforce REST API and login until Ctrl-C."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8302)
    parser.add_argument("--username", default="carryover@example.com")
    parser.add_argument("--password", default="test-password")
    parser.add_argument("--security-token", default="test-security-token")
    parser.add_argument("--consumer-key", default="3MVG9test.consumer.key")
    parser.add_argument(
        "--jwt-public-key", type=Path, help="PEM file that JWT bearer assertions must verify with"
    )
    parser.add_argument("--session-id", help="a session id that is valid from the start")
    parser.add_argument(
        "--org-id", help=f"default {DEFAULT_ORG_ID}, or {FIXTURE_ORG_ID} with --seed"
    )
    parser.add_argument("--daily-limit", type=int, default=DAILY_API_LIMIT)
    parser.add_argument(
        "--seed", action="store_true", help="add the contact and cases of the fixtures"
    )
    options = parser.parse_args(argv)
    fake = FakeSalesforce(
        username=options.username,
        password=options.password,
        security_token=options.security_token,
        consumer_key=options.consumer_key,
        jwt_public_key=options.jwt_public_key.read_bytes() if options.jwt_public_key else None,
        session_id=options.session_id,
        org_id=options.org_id or (FIXTURE_ORG_ID if options.seed else DEFAULT_ORG_ID),
        daily_limit=options.daily_limit,
        host=options.host,
        port=options.port,
    )
    lines = [
        f"Fake Salesforce at {fake.url} (org {fake.org_id}), agent view {fake.url}/",
        f"  username {fake.username}, password {fake.password}, token {fake.security_token}",
        f"  consumer key {fake.consumer_key}",
        f"  session id {options.session_id or fake.new_session()}",
    ]
    if options.seed:
        # The contact and cases that plugins/salesforce/fixtures/ talk about, under their ids.
        ann = fake.add_contact(
            "Ann",
            "Lee",
            email="ann.lee@example.com",
            phone="(415) 555-0142",
            mobile="+1 415 555 0199",
            record_id="0037000000xicp7AAA",
        )
        refund = fake.add_case(
            "Refund not received", ann, origin="Phone", record_id="5007000000OFL5FAAX"
        )
        charged = fake.add_case(
            "Charged twice for January",
            description="Invoice INV-2201 charged twice & no reply to my email.",
            supplied_email="Ann.Lee@Example.com",
            supplied_phone="(415) 555-0142",
            record_id="5007000000OFL6GAAX",
        )
        lines.append(f"  contact {ann} (Ann Lee), cases {refund} and {charged}")
    print("\n".join(lines), flush=True)
    fake.start()
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        fake.stop()


if __name__ == "__main__":
    main()
