"""Generated input at every endpoint: never a 5xx, a refusal stores nothing, and nothing
stored breaks the worker, the agent reads or the admin pages.

The hooks get bodies, headers and query strings signed as their senders sign them (so that
they reach the parsers) and unsigned or badly signed; the context API and the pop get
queries with and without authorisation; the admin UI gets odd searches, paths and forms.

Every test runs on SQLite and, with CARRYOVER_TEST_DATABASE_URL set, on PostgreSQL.
Hypothesis runs all examples of a test against one installation (pytest makes function
fixtures once per test, not once per example), so each check compares the store before and
after one example, and the worker drains after each example so that a failure shrinks to the
input that caused it. Runs are derandomized, so CI sees the same inputs every time;
CARRYOVER_FUZZ_EXAMPLES=2000 makes a longer hunt, and pytest --hypothesis-show-statistics
shows what the examples reached.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import re
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import pytest
import responses
from cryptography.hazmat.primitives.asymmetric import rsa
from defusedxml.ElementTree import fromstring
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from devkit.simulators.salesforce import FakeSalesforce
from devkit.simulators.sipgate import new_key, public_pem
from devkit.simulators.sipgate import sign as sipgate_sign
from devkit.simulators.zendesk import FakeZendesk
from middleware.admin.accounts import create_admin
from middleware.customers.identity import IdentityTypes
from middleware.errors import MalformedPayload
from middleware.ingest.standard_webhooks import sign as cti_sign
from middleware.installation import Installation, build_installation
from middleware.integrations.plugin import decode_form
from middleware.integrations.registry import PluginRegistry
from middleware.process.worker import Worker
from middleware.reads.context_api import sign_link
from middleware.store.tables import (
    customers,
    deliveries,
    delivery_customers,
    delivery_keys,
    identities,
    writes,
)
from plugins.placetel import sign as placetel_sign
from plugins.salesforce.outbound import SOAP_NS
from plugins.shopify import sign as shopify_sign
from plugins.twilio import sign as twilio_sign
from plugins.zendesk import EVENT_PREFIX
from plugins.zendesk import sign as zendesk_sign
from tests.actions import AdminActions, ConfigFactory, Hooks
from tests.payloads import cti_headers, generic_headers, twilio_fields, zendesk_headers
from tests.values import (
    ADMIN_PASSWORD,
    AGENT_KEY,
    CTI_SECRET,
    GENERIC_SECRET,
    PUBLIC_URL,
    SF_ORG,
    SF_SESSION,
    SHOPIFY_SECRET,
    SHOPIFY_SHOP,
    TWILIO_TOKEN,
)

PLUGINS = Path(__file__).resolve().parents[2] / "plugins"
# The context API's lookups: the core's and those the installed plugins declare.
LOOKUP_PARAMS = IdentityTypes(PluginRegistry.from_entry_points().identity_types()).lookup_params()
EXAMPLES = int(os.environ.get("CARRYOVER_FUZZ_EXAMPLES", "100"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,  # one installation for all examples, on purpose
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
        HealthCheck.filter_too_much,
    ],
)
# The contact behind the Salesforce fixtures' cases, known to the fake org.
SF_CONTACT = "0037000000xicp7AAA"
# The PBXs' proofs: sipgate signs with its key (a throwaway one here) or posts to a path
# token; Placetel signs with a shared secret or posts to a token path.
SIPGATE_TOKEN = "sipgate-path-token-for-fuzzing/with+odd=chars"
PLACETEL_SECRET = "placetel-shared-secret-for-fuzzing"
PLACETEL_TOKEN = "placetel-path-token-for-fuzzing-0123456789"
FORM = "application/x-www-form-urlencoded"


class Long(str):
    """A long string that shows itself briefly in Hypothesis' reports."""

    def __new__(cls, piece: str, times: int, tail: str = "") -> Long:
        made = super().__new__(cls, piece * times + tail)
        made.label = f"{piece!r} * {times}" + (f" + {tail!r}" if tail else "")
        return made

    def __repr__(self) -> str:
        return self.label


# -- odd values --------------------------------------------------------------------------------

ODD_TEXT = [
    "", " ", "\t\n", Long("x", 70_000), Long("7", 5000), "²", "١٢٣", "٣٤٥٦٧٨٩٠١٢٣٤٥", "\ud800",
    "a\udfffb\ud800", "\x00", "a\x00b", "\u202eevil", "💥", "\ufeff", "../../users/me",
    "5141/../../users/me", "0", "-1", "00000000", "+266696687", "anonymous", "Restricted",
    "null", "true", "<script>alert(1)</script>", "]]>", "&amp;", "%00", "\r\n", " 5141 ",
    "1e400", "NaN", "+1 (415) 555-0142", "ann.example@example.com", "ANN.EXAMPLE@EXAMPLE.COM",
    "@", "a@b", Long("a", 300, "@example.com"), "4111 1111 1111 1111", "client:", "sip:",
    "zen:event-type:", "{{ticket.id}}", "https://evil.example.com/x", "javascript:alert(1)",
    "5007000000OFL5FAAX", "0037000000xicp7AAA", "8447388090501", "\u0085", "\x7f",
]  # fmt: skip
ODD_NUMBERS: list[Any] = [
    0, -1, 1, 5141, 2**31, 2**63, 2**64, -(2**63) - 1, 10**300, 1.5, -0.0, 1e308,
    float("nan"), float("inf"), float("-inf"), True, False,
]  # fmt: skip
DEEP_JSON = Long("[", 3000, Long("]", 3000))
# JSON text put into a body as is: what json.dumps cannot write, or writes only one way.
RAW_JSON = [
    "1e400", "-1e400", "1E+999999999", "NaN", "Infinity", "-Infinity", "-0",
    Long("1", 1, Long("0", 5000)), Long("0.", 1, Long("0", 5000, "1")), '"\\ud800"',
    '"\\udc00x\\ud800"', '"\\u0000"', Long('"', 1, Long("\\u0000", 50, '"')), DEEP_JSON,
    '{"a":1,"a":{"b":2}}', "[]", "{}", '"\\ud83d\\udca5"', '"\\\\u0000"',
    "123456789012345678901234567890",
]  # fmt: skip
ODD_CONTENT_TYPES = [
    "", "application/json", "application/json; charset=utf-16", "APPLICATION/JSON",
    "text/xml; charset=utf-8", "application/soap+xml", "application/xml", "text/plain",
    "application/x-www-form-urlencoded", "application/x-www-form-urlencoded; charset=latin-1",
    "multipart/form-data; boundary=x", "multipart/form-data", "text/html", "*/*", ";",
    "application/json;;;", Long("x", 5000), "application/octet-stream",
]  # fmt: skip

leaf_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=20),
    st.sampled_from(ODD_TEXT),
    st.sampled_from(ODD_NUMBERS),
)
json_values = st.recursive(
    leaf_values,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),  # fmt: skip
    max_leaves=8,
)
odd_text = st.one_of(st.sampled_from(ODD_TEXT), st.text(max_size=30))
# Header values as a WSGI server hands them over: latin-1, no line breaks.
header_text = st.one_of(
    st.sampled_from(["", " ", Long("7", 5000), "²", "-1", "0", "v1,", "v1,AAAA", Long("x", 8000)]),
    st.text(
        st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"),
        max_size=40,
    ),  # fmt: skip
)
content_types = st.sampled_from(ODD_CONTENT_TYPES)


def mostly(usual: st.SearchStrategy[Any], odd: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Draw from usual three times in four: input refused at the door tests little.

    (one_of weighs its branches alike, however often one is given.)
    """
    return st.integers(0, 3).flatmap(lambda n: odd if n == 3 else usual)


# Headers a sender or a proxy may add: believed from the trusted proxy (127.0.0.1), dropped
# when they look like credentials, or kept with the delivery and shown in the admin UI.
extra_headers = st.dictionaries(
    st.sampled_from(["X-Forwarded-For", "X-Carryover-Url", "X-Carryover-Proof", "X-Api-Key",
                     "Authorization", "Cookie", "X-Client-Cert", "Forwarded", "X-Real-IP",
                     "X-Zendesk-Webhook-Id", "SOAPAction", "User-Agent"])
    | st.text(st.sampled_from("abcxyz-_0"), min_size=1, max_size=12),
    mostly(st.sampled_from(["127.0.0.1", "10.0.0.1, 127.0.0.1", "::1", "1.2.3.4, junk",
                            "203.0.113.9", ", ,", "999.1.1.1"]), header_text),
    max_size=3,
)  # fmt: skip


def encoded(text: str) -> bytes:
    """Encode text as UTF-8, lone surrogates too (as a careless sender would)."""
    return text.encode("utf-8", "surrogatepass")


def percent(text: str) -> str:
    """Percent-encode text (lone surrogates as their UTF-8-like bytes) for a URL."""
    return quote(encoded(text), safe="")


@st.composite
def query_strings(draw: st.DrawFn, names: list[str]) -> str:
    """Draw a raw query string: known and unknown names, odd values, damaged escapes."""
    pairs = draw(st.lists(st.tuples(st.sampled_from(names) | st.text(max_size=6), odd_text),
                          max_size=5))  # fmt: skip
    parts = [f"{percent(name)}={percent(value)}" for name, value in pairs]
    damage = st.sampled_from(["%", "%F", "%FF", "%00", "=", "&", "&&", "+", "a=%ZZ", ";", "%C3"])
    parts += draw(st.lists(damage, max_size=2))
    return "&".join(draw(st.permutations(parts)))


# -- mutations of the plugins' own fixtures ----------------------------------------------------


def json_fixtures(key: str) -> list[dict[str, Any]]:
    """Load a plugin's JSON fixtures."""
    folder = PLUGINS / key / "fixtures"
    return [json.loads(p.read_bytes()) for p in sorted(folder.glob("*.json"))]


TWILIO_FIXTURES = sorted(p.name for p in (PLUGINS / "twilio" / "fixtures").glob("*.form"))
# Each plugin's fixtures as JSON objects (Twilio's forms as the JSON that Twilio can send).
JSON_FIXTURES = {
    "zendesk": json_fixtures("zendesk"),
    "cti": json_fixtures("cti"),
    "twilio": [dict(twilio_fields(name)) for name in TWILIO_FIXTURES],
    "intelligence": json_fixtures("twilio"),  # Voice Intelligence's webhook
    "generic": json_fixtures("generic"),
}
# Shopify's fixtures with the topic each is delivered under (orders_create.json: orders/create).
SHOPIFY_FIXTURES = {
    p.stem.split("__")[0].replace("_", "/", 1): json.loads(p.read_bytes())
    for p in sorted((PLUGINS / "shopify" / "fixtures").glob("*.json"))
}


# The fields that name an event's type, for each plugin's JSON.
TYPE_FIELDS = {
    "zendesk": ("type", "event"),
    "cti": ("event",),
    "twilio": ("CallStatus", "SmsStatus", "MessageStatus", "Direction"),
    "intelligence": ("event_type",),
    "generic": ("type",),
    "shopify": ("financial_status", "fulfillment_status", "cancel_reason", "kind"),
}
ODD_TYPES = ["a\nb", "ticket.created\n", "\r\n", "\x1b[31m", "ticket.", "ticket.created ", "ping",
             "store.visit", "survey.answered", "letter.scanned", "chatbot.conversation", "a..b",
             ".store", "store.visit.", "voice_intelligence_transcript_available"]  # fmt: skip


def paths_of(node: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Yield the path of every value inside a JSON value (the root excluded)."""
    if not isinstance(node, dict | list):
        return
    for step, child in node.items() if isinstance(node, dict) else enumerate(node):
        yield (*prefix, step)
        yield from paths_of(child, (*prefix, step))


def fresh(draw: st.DrawFn) -> bool:
    """Tell whether an example gets fresh ids (three in four), or repeats the fixture's.

    Fresh ids come from uuid4, not from Hypothesis: an example replayed while shrinking
    must not meet its own earlier delivery as a duplicate.
    """
    return draw(st.integers(0, 3)) != 3


@st.composite
def mutated_json(
    draw: st.DrawFn,
    key: str,
    refresh: Callable[[dict, str], None],
    fixtures: list[dict[str, Any]] | None = None,
) -> bytes:
    """Draw a fixture with fields dropped, replaced, nested or added, written as JSON.

    refresh gives the payload a fresh event id, so that most examples are new deliveries
    and reach the worker rather than stop at the duplicate check; fixtures, when given,
    are drawn from in place of the plugin's.
    """
    payload = copy.deepcopy(draw(st.sampled_from(fixtures or JSON_FIXTURES[key])))
    if fresh(draw):
        refresh(payload, uuid.uuid4().hex)
    raws: dict[str, str] = {}
    for _ in range(draw(st.integers(0, 3))):
        paths = list(paths_of(payload))
        operation = draw(st.sampled_from(["drop", "replace", "replace", "nest", "add", "raw",
                                          "retype"]))  # fmt: skip
        if operation == "retype":  # the field that names the event: where a type is read
            field = draw(st.sampled_from(TYPE_FIELDS[key]))
            value = draw(odd_text | st.sampled_from(ODD_TYPES))
            zendesk = key == "zendesk" and field == "type"
            payload[field] = EVENT_PREFIX + value if zendesk else value
            continue
        if operation == "add" or not paths:
            objects = [p for p in paths if isinstance(_at(payload, p), dict)]
            node = _at(payload, draw(st.sampled_from([(), *objects])))
            name = draw(st.text(max_size=10) | st.sampled_from(["id", "type", "event", "ticket"]))
            node[name] = draw(json_values)
            continue
        path = draw(st.sampled_from(paths))
        parent, step = _at(payload, path[:-1]), path[-1]
        if operation == "drop":
            del parent[step]
        elif operation == "replace":
            parent[step] = draw(json_values)
        elif operation == "raw":
            marker = f"@@raw{len(raws)}@@"
            raws[marker] = draw(st.sampled_from(RAW_JSON))
            parent[step] = marker
        else:
            parent[step] = draw(st.sampled_from([[parent[step]], {"value": parent[step]},
                                                 [[[parent[step]]]]]))  # fmt: skip
    text = json.dumps(payload, ensure_ascii=draw(st.booleans()), indent=draw(
        st.sampled_from([None, 1])))  # fmt: skip
    for marker, raw in raws.items():
        text = text.replace(json.dumps(marker), raw)
    if draw(st.booleans()) and text.startswith("{") and len(text) > 2:
        # A duplicate key: before the original (which wins) or after it (which it beats).
        name = draw(st.sampled_from(["id", "type", "event", "callId", "detail", "ticket"]))
        value = draw(st.sampled_from(RAW_JSON))
        if draw(st.booleans()):
            text = "{" + json.dumps(name) + ":" + value + "," + text[1:]
        else:
            text = text[:-1] + "," + json.dumps(name) + ":" + value + "}"
    body = encoded(text)
    if draw(st.integers(0, 9)) == 0:  # now and then a BOM, or a body cut short
        body = draw(st.sampled_from([b"\xef\xbb\xbf" + body, body[: len(body) // 2]]))
    return body


def _at(payload: Any, path: tuple[Any, ...]) -> Any:
    node = payload
    for step in path:
        node = node[step]
    return node


def refresh_zendesk(payload: dict, new_id: str) -> None:
    if str(payload.get("type", "")).startswith("zen:"):
        payload["id"] = str(uuid.UUID(new_id))
    else:
        payload.setdefault("fuzz", new_id)  # trigger bodies are keyed by their hash


def refresh_cti(payload: dict, new_id: str) -> None:
    payload["callId"] = str(uuid.UUID(new_id))


def random_bodies() -> st.SearchStrategy[bytes]:
    """Bytes that are not a fixture: random bytes, random JSON, random text."""
    return st.one_of(
        st.binary(max_size=200),
        json_values.map(lambda v: encoded(json.dumps(v))),
        st.text(max_size=100).map(encoded),
        st.sampled_from([b"", b"{", b"[]", b"null", b"\xff\xfe{\x00}\x00", b"\x00" * 10]),
        st.sampled_from([DEEP_JSON, Long('{"a":', 2000)]).map(encoded),
    )


# -- the installation --------------------------------------------------------------------------


@pytest.fixture
def fake_salesforce() -> Iterator[FakeSalesforce]:
    """Serve a fake org that knows the fixtures' contact and the test session.

    The fake has no Organization object: the query a SessionId is checked with is answered
    here, for the test session only (any other gets Salesforce's 401).
    """
    with (
        FakeSalesforce(session_id=SF_SESSION, org_id=SF_ORG) as fake,
        responses.RequestsMock(assert_all_requests_are_fired=False) as api,
    ):
        fake.add_contact("Ann", "Example", email="ann.example@example.com",
                         phone="(415) 555-0142", record_id=SF_CONTACT)  # fmt: skip
        api.add_passthru(fake.url)
        api.add_passthru("http://127.0.0.1")  # the fake Zendesk
        query = f"{fake.url}/services/data/v59.0/query/"
        organization = responses.matchers.query_param_matcher({"q": "SELECT Id FROM Organization"})
        session = responses.matchers.header_matcher({"Authorization": f"Bearer {SF_SESSION}"})
        api.get(
            query,
            match=[organization, session],
            json={
                "totalSize": 1,
                "done": True,
                "records": [{"attributes": {"type": "Organization"}, "Id": fake.org_id}],
            },
        )
        api.get(
            query,
            match=[organization],
            status=401,
            json=[{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}],
        )
        yield fake


@pytest.fixture(params=["network", "unverified"])
def salesforce_proof(request: pytest.FixtureRequest) -> str:
    """Say how Salesforce messages are proven: by source network, or not (read back)."""
    return str(request.param)


@pytest.fixture(scope="module")
def sipgate_key() -> rsa.RSAPrivateKey:
    """Return a throwaway key pair that signs in place of sipgate's."""
    return new_key()


@pytest.fixture
def core(
    database_url: str, fake_zendesk: FakeZendesk, fake_salesforce: FakeSalesforce,
    request: pytest.FixtureRequest, make_config: ConfigFactory, sipgate_key: rsa.RSAPrivateKey,
) -> Iterator[Installation]:  # fmt: skip
    """Build an installation with every plugin, each upstream a local fake."""
    proof = "network"
    if "salesforce_proof" in request.fixturenames:
        proof = request.getfixturevalue("salesforce_proof")
    networks = ["127.0.0.1/32"] if proof == "network" else []
    salesforce = {"instance_url": fake_salesforce.url, "allowed_networks": networks}
    # The test client's address is a trusted proxy: X-Forwarded-For is believed. Failed
    # logins lock nobody out, so that fuzzed logins keep reaching the form's checks.
    unthrottled = {"failed_logins_per_username": 10**6, "failed_logins_per_address": 10**6}
    pbxs = {
        "sipgate": {"public_key": public_pem(sipgate_key), "path_token": SIPGATE_TOKEN},
        "placetel": {"secret": PLACETEL_SECRET, "token": PLACETEL_TOKEN},
    }
    config = make_config(database_url, fake_zendesk.url, phone=True, salesforce=salesforce,
                         shopify={}, generic=True, integrations=pbxs,
                         trusted_proxies=["127.0.0.1/32"], admin=unthrottled)  # fmt: skip
    built = build_installation(config)
    yield built
    built.dispose()


@pytest.fixture
def admin(app: Flask, core: Installation, admin_for: type[AdminActions]) -> FlaskClient:
    """Return a second client, with an admin logged in."""
    create_admin(core.engine, "ada", ADMIN_PASSWORD)
    logged_in = app.test_client()
    assert admin_for(logged_in).log_in().status_code == 302
    return logged_in


def count(core: Installation, table: Any) -> int:
    with core.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar() or 0)


def top_id(core: Installation, table: Any) -> int:
    with core.engine.connect() as conn:
        return int(conn.execute(select(func.max(table.c.id))).scalar() or 0)


def exception_names() -> set[str]:
    """Name every exception class loaded in this process."""
    names, todo = set(), [BaseException]
    while todo:
        cls = todo.pop()
        names.add(cls.__name__)
        todo.extend(cls.__subclasses__())
    return names


class Watch:
    """Check one example: the reply, what was stored, what the worker and the pages made of it.

    Made once per test; begin() marks where an example starts.
    """

    def __init__(self, core: Installation, worker: Worker, admin: FlaskClient,
                 client: FlaskClient, caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
        self.core, self.worker, self.admin, self.client = core, worker, admin, client
        self.caplog = caplog
        caplog.set_level(logging.INFO)

    def begin(self) -> None:
        """Note the store and the log as they are before one example."""
        self.caplog.clear()
        self.stored = count(self.core, deliveries)
        self.marks = {t.name: top_id(self.core, t) for t in (deliveries, writes, customers)}

    def reply(self, response: Any, key: str, label: str = "") -> None:
        """Check a webhook's reply: no 5xx; a refusal is one of ours and stores nothing."""
        where = f"{key} {label}: {response.status_code} {response.data[:300]!r}"
        stored = count(self.core, deliveries) - self.stored
        # What the examples reached, shown by pytest --hypothesis-show-statistics.
        event(f"{response.status_code}, {stored} stored")
        event(response.data[:70].decode("utf-8", "replace"))
        # The example decides which answer is right (accepted, malformed, unsigned, too large),
        # so a set is checked; every member is exact and none is a 5xx.
        assert response.status_code in (200, 400, 401, 413), where
        if response.status_code >= 400:
            assert not stored, "a refusal stored something"
            if key == "salesforce" and response.status_code == 401:
                fault = fromstring(response.data).find(f"{{{SOAP_NS}}}Body/{{{SOAP_NS}}}Fault")
                assert fault is not None and fault.findtext("faultcode") == "soapenv:Client"
            else:
                assert response.is_json and response.get_json()["error"], where
        else:
            assert response.status_code == 200, where
            assert stored <= 1, where
        self.settle()

    def settle(self) -> None:
        """Drain the worker; check the stored rows, the logs and the pages that show them."""
        self.worker.drain()
        names = exception_names()
        with self.core.engine.connect() as conn:
            new = conn.execute(
                select(deliveries).where(deliveries.c.id > self.marks["deliveries"])
            ).all()
            notes = conn.execute(select(writes).where(writes.c.id > self.marks["writes"])).all()
            # New customers, and the customers whose timeline a new delivery touched.
            touched = select(delivery_customers.c.customer_id).where(
                delivery_customers.c.delivery_id > self.marks["deliveries"]
            )
            people = conn.execute(
                select(customers.c.id).where(
                    (customers.c.id > self.marks["customers"]) | customers.c.id.in_(touched)
                )
            ).all()
            for row in new:
                keys = conn.execute(select(delivery_keys.c.key).where(
                    delivery_keys.c.delivery_id == row.id)).scalars().all()  # fmt: skip
                assert sorted(keys) == sorted(json.loads(row.event_keys)), "keys half stored"
            found = conn.execute(select(identities.c.type, identities.c.value).where(
                identities.c.customer_id.in_([p.id for p in people]))).all()  # fmt: skip
        for row in new:
            event(f"worker: delivery {row.status} {(row.last_error or '')[:60]}")
        for row in [*new, *notes]:
            error = row.last_error or ""
            assert error.partition(":")[0] not in names, (error, bytes(getattr(row, "body", b"")))
        for record in self.caplog.records:
            message = record.getMessage()
            assert "unexpected failure" not in message, message
            assert not re.match(r"(delivery|write) \d+ failed", message), message
        for row in new:
            page = self.admin.get(f"/admin/deliveries/in/{row.id}")
            assert page.status_code == 200, (row.id, page.data[:300])
        for row in notes:
            assert self.admin.get(f"/admin/deliveries/out/{row.id}").status_code == 200
        agent = {"Authorization": f"Bearer {AGENT_KEY}"}
        for person in people:
            assert self.admin.get(f"/admin/customers/{person.id}").status_code in (200, 302)
            reply = self.client.get(f"/api/v1/context?customer={person.id}", headers=agent)
            assert reply.status_code == 200, reply.data[:300]
        for kind, value in found:
            if kind in LOOKUP_PARAMS:
                reply = self.client.get(f"/api/v1/context?{kind}={percent(value)}", headers=agent)
                # A stored value may be found, refused as not an identifier, or unknown: no 5xx.
                assert reply.status_code in (200, 400, 404), (kind, value, reply.data[:300])
            if kind == "phone":
                pop = self.client.get(f"/pop?phone={percent(value)}", headers=agent)
                # A pop answers for any number it can read, and refuses the rest: no 5xx.
                assert pop.status_code in (200, 400), (value, pop.data[:300])

    def pages(self) -> None:
        """Walk the admin overview and listings once the examples are stored."""
        for path in ("/admin/", "/admin/deliveries/", "/admin/deliveries/?direction=out",
                     "/admin/deliveries/?status=dead", "/admin/customers/?q=a",
                     "/admin/integrations/"):  # fmt: skip
            page = self.admin.get(path)
            assert page.status_code == 200, (path, page.data[:300])


@pytest.fixture
def watch(core: Installation, worker: Worker, admin: FlaskClient, client: FlaskClient,
          caplog: pytest.LogCaptureFixture) -> Iterator[Watch]:  # fmt: skip
    """Check each example, and walk the admin pages after the last one."""
    watching = Watch(core, worker, admin, client, caplog)
    yield watching
    watching.pages()


# -- Zendesk -------------------------------------------------------------------------------------

zendesk_bodies = mostly(mutated_json("zendesk", refresh_zendesk), random_bodies())


@FUZZ
@given(
    body=zendesk_bodies,
    content_type=mostly(st.just("application/json"), content_types),
    query=mostly(st.just(""), query_strings(["id", "x"])),
    extra=extra_headers,
)
@example(body=b'{"type":"zen:event-type:ticket.created","id":"x","detail":{"id":1e400}}',
         content_type="application/json", query="", extra={})  # fmt: skip
@example(body=b"{" + b" " * (1024 * 1024) + b"}", content_type="application/json", query="",
         extra={})  # fmt: skip
def test_zendesk_signed_bodies(client, watch, body, content_type, query, extra):
    """Signed Zendesk bodies of any shape get 200 or a clear 400, and the worker copes."""
    watch.begin()
    headers = {**extra, **zendesk_headers(body), "Content-Type": content_type}
    response = client.post(f"/hooks/zendesk?{query}", data=body, headers=headers)
    watch.reply(response, "zendesk", repr(body[:200]))


zendesk_timestamps = st.one_of(
    header_text,
    st.sampled_from(["2021-03-25T05:09:27Z", "9999-12-31T23:59:59Z", "0001-01-01T00:00:00+14:00",
                     "2025-01-08T10:12:08+99:00", "2025-13-45T99:99:99Z", "now", "1614265330"]),
)  # fmt: skip


@FUZZ
@given(
    body=zendesk_bodies,
    signature=st.none() | header_text | st.just("right"),
    timestamp=st.none() | zendesk_timestamps,
    secret=st.sampled_from(["dGhpc19zZWNyZXRfaXNfZm9yX3Rlc3Rpbmdfb25seQ=", "", "wrong"]),
)
def test_zendesk_unsigned_or_badly_signed(client, watch, body, signature, timestamp, secret):
    """A missing, wrong or stale Zendesk signature gets 401, whatever the body."""
    watch.begin()
    headers: dict[str, str] = {"Content-Type": "application/json"}
    if timestamp is not None:
        headers["X-Zendesk-Webhook-Signature-Timestamp"] = timestamp
    if signature == "right":  # right for the timestamp, but with the wrong secret or stale
        signature = zendesk_sign(secret, timestamp or "", body)
    if signature is not None:
        headers["X-Zendesk-Webhook-Signature"] = signature
    response = client.post("/hooks/zendesk", data=body, headers=headers)
    watch.reply(response, "zendesk")
    assert response.status_code in (401, 413), response.data[:300]


@FUZZ
@given(body=mutated_json("zendesk", refresh_zendesk), timestamp=zendesk_timestamps)
def test_zendesk_signed_over_an_odd_timestamp(client, watch, body, timestamp):
    """A valid signature over a timestamp that is not a fresh ISO time still gets 401."""
    watch.begin()
    headers = zendesk_headers(body, timestamp=timestamp)
    response = client.post("/hooks/zendesk", data=body, headers=headers)
    watch.reply(response, "zendesk")


# -- Twilio --------------------------------------------------------------------------------------


# The parameters that carry a Twilio resource's SID: fresh ones make a new delivery.
SID_PREFIXES = {"CallSid": "CA", "MessageSid": "CA", "SmsSid": "CA", "RecordingSid": "RE",
                "TranscriptionSid": "TR"}  # fmt: skip
# The recording status callbacks and <Record> transcriptions.
TWILIO_WORDS = [n for n in TWILIO_FIXTURES if n.startswith(("call_recorded", "call_transcribed"))]


@st.composite
def twilio_forms(draw: st.DrawFn, names: list[str] = TWILIO_FIXTURES) -> list[tuple[str, str]]:
    """Draw a Twilio fixture's parameters with some dropped, changed, repeated or added."""
    fields = twilio_fields(draw(st.sampled_from(names)))
    if fresh(draw):
        sid = uuid.uuid4().hex
        fields = [(n, SID_PREFIXES[n] + sid if n in SID_PREFIXES else v) for n, v in fields]
    for _ in range(draw(st.integers(0, 4))):
        operation = draw(st.sampled_from(["drop", "replace", "repeat", "add"]))
        index = draw(st.integers(0, max(0, len(fields) - 1)))
        if operation == "add" or not fields:
            name = draw(
                st.sampled_from(
                    [
                        "ParentCallSid",
                        "CallStatus",
                        "Direction",
                        "From",
                        "To",
                        "Body",
                        "MessageSid",
                        "SmsStatus",
                        "RecordingSid",
                        "RecordingStatus",
                        "RecordingUrl",
                        "TranscriptionText",
                        "TranscriptionStatus",
                    ]
                )
                | st.text(max_size=8)
            )
            fields.append((name, draw(odd_text)))  # fmt: skip
        elif operation == "drop":
            del fields[index]
        elif operation == "replace":
            fields[index] = (fields[index][0], draw(odd_text))
        else:
            fields.insert(index, (fields[index][0], draw(odd_text)))
    return fields


def form_body(fields: list[tuple[str, str]]) -> bytes:
    """Write fields as a form body (lone surrogates as the bytes a careless sender sends)."""
    return "&".join(
        f"{quote_plus(encoded(n))}={quote_plus(encoded(v))}" for n, v in fields
    ).encode()


def form_params(body: bytes) -> list[tuple[str, str]]:
    """Read back the parameters a sender signs; none when the body is no form."""
    try:
        return decode_form(body)
    except MalformedPayload:
        return []


raw_forms = st.one_of(
    st.lists(st.tuples(odd_text, odd_text), max_size=5).map(form_body),
    st.sampled_from(
        [
            b"a=%FF",
            b"%ZZ=1",
            b"a&&b",
            b"=",
            b"&",
            b"a=1;b=2",
            b"CallSid",
            b"\xff=1",
            b"CallSid=CA1&CallSid=CA2&CallStatus=ringing",
        ]
    ),  # fmt: skip
    random_bodies(),
)


@FUZZ
@given(
    body=mostly(twilio_forms().map(form_body), raw_forms),
    content_type=mostly(st.just("application/x-www-form-urlencoded"), content_types),
    query=mostly(st.just(""), query_strings(["bodySHA256", "x"])),
    extra=extra_headers,
)
def test_twilio_signed_forms(client, watch, body, content_type, query, extra):
    """Signed Twilio callbacks of any shape get TwiML or a clear 400."""
    watch.begin()
    url = f"/hooks/twilio?{query}" if query else "/hooks/twilio"
    signature = twilio_sign(TWILIO_TOKEN, PUBLIC_URL + url, form_params(body))
    headers = {**extra, "X-Twilio-Signature": signature, "Content-Type": content_type}
    watch.reply(client.post(url, data=body, headers=headers), "twilio", repr(body[:200]))


def refresh_twilio(payload: dict, new_id: str) -> None:
    for name in ("CallSid", "MessageSid"):
        if name in payload:
            payload[name] = "CA" + new_id


@FUZZ
@given(body=mostly(mutated_json("twilio", refresh_twilio), random_bodies()))
def test_twilio_signed_json_with_body_sha256(client, watch, body):
    """A JSON body signed through bodySHA256 gets TwiML or a clear 400."""
    watch.begin()
    url = f"/hooks/twilio?bodySHA256={hashlib.sha256(body).hexdigest()}"
    headers = {"X-Twilio-Signature": twilio_sign(TWILIO_TOKEN, PUBLIC_URL + url, []),
               "Content-Type": "application/json"}  # fmt: skip
    watch.reply(client.post(url, data=body, headers=headers), "twilio", repr(body[:200]))


@FUZZ
@given(
    fields=twilio_forms(),
    signature=st.none() | header_text,
    token=st.sampled_from(["", "wrong", TWILIO_TOKEN + " "]),
    query=st.just("") | query_strings(["bodySHA256"]),
)
def test_twilio_unsigned_or_badly_signed(client, watch, fields, signature, token, query):
    """A missing or wrong X-Twilio-Signature gets 401 (or 400 for a body that is no form)."""
    watch.begin()
    if signature is None:  # signed, but with another token
        body = form_body(fields)
        headers = {"X-Twilio-Signature": twilio_sign(token, PUBLIC_URL + "/hooks/twilio",
                                                     form_params(body)),
                   "Content-Type": "application/x-www-form-urlencoded"}  # fmt: skip
        response = client.post("/hooks/twilio", data=body, headers=headers)
    else:
        headers = {"X-Twilio-Signature": signature,
                   "Content-Type": "application/x-www-form-urlencoded"}  # fmt: skip
        response = client.post(f"/hooks/twilio?{query}", data=form_body(fields), headers=headers)
    watch.reply(response, "twilio")
    assert response.status_code in (400, 401), response.data[:300]


# -- generic CTI ---------------------------------------------------------------------------------

cti_json = mutated_json("cti", refresh_cti)


@st.composite
def cti_forms(draw: st.DrawFn) -> bytes:
    """Draw a CTI event as a form: fixture fields, odd values, user[] lists."""
    payload = copy.deepcopy(draw(st.sampled_from(JSON_FIXTURES["cti"])))
    if fresh(draw):
        payload["callId"] = uuid.uuid4().hex
    fields = [(str(k), str(v)) for k, v in payload.items()]
    for _ in range(draw(st.integers(0, 3))):
        name = draw(st.sampled_from([*payload, "user[]", "callId[]", "event[]", "[]"])
                    | st.text(max_size=6))  # fmt: skip
        fields.append((name, draw(odd_text)))
    if draw(st.booleans()):
        fields = [(n, v) for n, v in fields if n != draw(st.sampled_from(list(payload)))]
    return form_body(fields)


cti_bodies = mostly(cti_json | cti_forms(), raw_forms)


@st.composite
def cti_requests(draw: st.DrawFn) -> tuple[bytes, str]:
    """Draw a CTI body with its content type, an odd one now and then."""
    kind = draw(st.sampled_from(["json", "form", "json", "form", "raw"]))
    if kind == "json":
        body, content_type = draw(cti_json), "application/json"
    elif kind == "form":
        body, content_type = draw(cti_forms()), "application/x-www-form-urlencoded"
    else:
        body, content_type = draw(raw_forms), ""
    return body, draw(mostly(st.just(content_type), content_types))


@FUZZ
@given(
    sent=cti_requests(),
    webhook_id=mostly(st.just(""), st.sampled_from(["msg_1", Long("x", 5000)]) | header_text),
    extra=extra_headers,
)
def test_cti_signed_events(client, watch, sent, webhook_id, extra):
    """Standard Webhooks-signed CTI events of any shape get {} or a clear 400."""
    watch.begin()
    body, content_type = sent
    headers = {**extra, **cti_headers(body, webhook_id=webhook_id or None)}
    headers["Content-Type"] = content_type
    watch.reply(client.post("/hooks/cti", data=body, headers=headers), "cti", repr(body[:200]))


@FUZZ
@given(sent=cti_requests())
def test_cti_events_to_the_secret_path(client, watch, sent):
    """CTI events sent to /hooks/cti/<secret> get {} or a clear 400."""
    watch.begin()
    body, content_type = sent
    response = client.post(f"/hooks/cti/{quote(CTI_SECRET, safe='')}", data=body,
                           headers={"Content-Type": content_type})  # fmt: skip
    watch.reply(response, "cti", repr(body[:200]))


def assert_refused(client, watch, key: str, body: bytes, headers: dict[str, str],
                   token: str | None) -> None:  # fmt: skip
    """POST to /hooks/<key>, or to /hooks/<key>/<token>, and check the 401 stored nothing."""
    if token is None:
        response = client.post(f"/hooks/{key}", data=body, headers=headers)
    else:
        response = client.post(f"/hooks/{key}/{percent(token) or '%20'}", data=body,
                               headers=headers)  # fmt: skip
        if "\n" in token or token.startswith("/"):
            # No route may take such a path (werkzeug's path converter matches no line break
            # after the first character, and merges a double slash with a redirect).
            assert response.status_code in (308, 401, 404)
            assert count(watch.core, deliveries) == watch.stored
            return
    watch.reply(response, key)
    assert response.status_code in (401, 413), response.data[:300]


cti_timestamps = st.one_of(
    header_text,
    st.sampled_from(
        [Long("7", 5000), "²", "-1", "1e9", "0x10", " 1614265330", "1614265330.0", "٣"]
    ),
    st.integers(-(2**70), 2**70).map(str),
)


@FUZZ
@given(
    body=cti_bodies,
    token=st.none() | odd_text.filter(lambda t: t != CTI_SECRET),
    webhook_id=header_text,
    timestamp=st.none() | cti_timestamps,
    signature=st.none() | header_text | st.just("right"),
)
def test_cti_unsigned_or_badly_signed(client, watch, body, token, webhook_id, timestamp, signature):
    """A wrong path token, or missing, stale or wrong Standard Webhooks headers, get 401."""
    watch.begin()
    if token is not None:
        assert_refused(client, watch, "cti", body, {}, token)
        return
    headers = {"webhook-id": webhook_id}
    if timestamp is not None:
        headers["webhook-timestamp"] = timestamp
    if signature == "right":  # right over an odd timestamp, or an empty id
        signature = "v1," + cti_sign(CTI_SECRET, webhook_id, timestamp or "", body)
    if signature is not None:
        headers["webhook-signature"] = signature
    assert_refused(client, watch, "cti", body, headers, None)


@FUZZ
@given(
    fields=twilio_forms(TWILIO_WORDS),
    content_type=mostly(st.just(FORM), content_types),
)
def test_twilio_recordings_and_transcriptions(client, watch, fields, content_type):
    """Signed recording status callbacks and <Record> transcriptions of any shape get 200 or 400."""
    watch.begin()
    body = form_body(fields)
    signature = twilio_sign(TWILIO_TOKEN, PUBLIC_URL + "/hooks/twilio", form_params(body))
    headers = {"X-Twilio-Signature": signature, "Content-Type": content_type}
    response = client.post("/hooks/twilio", data=body, headers=headers)
    watch.reply(response, "twilio", repr(body[:200]))


def refresh_intelligence(payload: dict, new_id: str) -> None:
    payload["transcript_sid"] = "GT" + new_id


@FUZZ
@given(
    body=mostly(mutated_json("intelligence", refresh_intelligence), random_bodies()),
    digest=mostly(st.just("right"), st.sampled_from(["", "A" * 64, "right-upper"]) | odd_text),
)
def test_twilio_intelligence_webhooks(client, watch, body, digest):
    """Voice Intelligence JSON signed through bodySHA256 gets 200 or a clear 400; a wrong
    bodySHA256 gets 401."""
    watch.begin()
    right = hashlib.sha256(body).hexdigest()
    sent = {"right": right, "right-upper": right.upper()}.get(digest, digest)
    url = f"/hooks/twilio?bodySHA256={percent(sent)}"
    headers = {"X-Twilio-Signature": twilio_sign(TWILIO_TOKEN, PUBLIC_URL + url, []),
               "Content-Type": "application/json"}  # fmt: skip
    response = client.post(url, data=body, headers=headers)
    watch.reply(response, "twilio", repr(body[:200]))
    if sent.lower() != right:
        assert response.status_code in (400, 401), response.data[:300]


# -- Shopify -------------------------------------------------------------------------------------

SHOPIFY_TOPICS = [*SHOPIFY_FIXTURES]


@st.composite
def shopify_deliveries(draw: st.DrawFn) -> tuple[bytes, str]:
    """Draw a Shopify fixture, mutated, with its topic (now and then another one)."""
    topic = draw(st.sampled_from(SHOPIFY_TOPICS))
    body = draw(mutated_json("shopify", lambda payload, new_id: None, [SHOPIFY_FIXTURES[topic]]))
    if draw(st.integers(0, 5)) == 0:
        odd_topics = ["orders/updated", "app/uninstalled", "orders/Create", "orders/create ",
                      "orders/create/x", "orders", "customers/data_request"]  # fmt: skip
        topic = draw(st.sampled_from(SHOPIFY_TOPICS + odd_topics) | header_text)
    return body, topic


shopify_webhook_ids = mostly(
    st.just("fresh"),
    st.sampled_from(["fixed-webhook-id", "", "1234567890", "a" * 65]) | header_text,
)


@FUZZ
@given(
    sent=mostly(shopify_deliveries(), st.tuples(random_bodies(), st.sampled_from(SHOPIFY_TOPICS))),
    webhook_id=shopify_webhook_ids,
    shop=mostly(st.sampled_from([SHOPIFY_SHOP, SHOPIFY_SHOP.upper(), f" {SHOPIFY_SHOP} "]),
                st.sampled_from(["other.myshopify.com", ""]) | header_text),
    content_type=mostly(st.just("application/json"), content_types),
    extra=extra_headers,
)  # fmt: skip
def test_shopify_signed_deliveries(client, watch, sent, webhook_id, shop, content_type, extra):
    """Signed Shopify orders and refunds of any shape get 200 or a clear 400 (401 for
    another shop)."""
    watch.begin()
    body, topic = sent
    headers = {
        **extra,
        "Content-Type": content_type,
        "X-Shopify-Hmac-Sha256": shopify_sign(SHOPIFY_SECRET, body),
        "X-Shopify-Topic": topic,
        "X-Shopify-Shop-Domain": shop,
        "X-Shopify-Webhook-Id": str(uuid.uuid4()) if webhook_id == "fresh" else webhook_id,
    }
    response = client.post("/hooks/shopify", data=body, headers=headers)
    watch.reply(response, "shopify", repr((topic, body[:200])))
    if shop.strip().lower() != SHOPIFY_SHOP:
        assert response.status_code in (401, 413), response.data[:300]


@FUZZ
@given(
    sent=shopify_deliveries(),
    signature=st.none() | header_text | st.sampled_from(["other secret", ""]),
)
def test_shopify_unsigned_or_badly_signed(client, watch, sent, signature):
    """A missing or wrong X-Shopify-Hmac-Sha256 gets 401, whatever the body."""
    watch.begin()
    body, topic = sent
    headers = {"Content-Type": "application/json", "X-Shopify-Topic": topic,
               "X-Shopify-Shop-Domain": SHOPIFY_SHOP,
               "X-Shopify-Webhook-Id": str(uuid.uuid4())}  # fmt: skip
    if signature in ("other secret", ""):  # right for the body, but with another secret
        signature = shopify_sign(signature or "x", body)
    if signature is not None:
        headers["X-Shopify-Hmac-Sha256"] = signature
    response = client.post("/hooks/shopify", data=body, headers=headers)
    watch.reply(response, "shopify")
    assert response.status_code in (401, 413), response.data[:300]


# -- generic inbound -----------------------------------------------------------------------------

generic_bodies = mostly(mutated_json("generic", lambda payload, new_id: None), random_bodies())


@FUZZ
@given(
    body=generic_bodies,
    webhook_id=mostly(st.just(""), st.sampled_from(["msg_fixed", "a" * 201, "a b"]) | header_text),
    content_type=mostly(st.just("application/json"), content_types),
    extra=extra_headers,
)
def test_generic_signed_events(client, watch, body, webhook_id, content_type, extra):
    """Standard Webhooks-signed generic events of any shape get 200, ignored or a clear 400."""
    watch.begin()
    headers = {**extra, **generic_headers(body, webhook_id=webhook_id or None)}
    headers["Content-Type"] = content_type
    response = client.post("/hooks/generic", data=body, headers=headers)
    watch.reply(response, "generic", repr(body[:200]))


@FUZZ
@given(
    body=generic_bodies,
    webhook_id=header_text,
    timestamp=st.none() | cti_timestamps,
    signature=st.none() | header_text | st.sampled_from(["right", "cti secret"]),
    token=st.none() | odd_text,
)
def test_generic_unsigned_or_badly_signed(client, watch, body, webhook_id, timestamp, signature,
                                          token):  # fmt: skip
    """Missing, stale or wrong Standard Webhooks headers get 401; no path takes a token."""
    watch.begin()
    if token is not None:
        response = client.post(f"/hooks/generic/{percent(token) or '%20'}", data=body,
                               headers=generic_headers(body))  # fmt: skip
        # The generic inbound takes signatures only: no path with a token is its hook.
        assert response.status_code in (308, 404), response.data[:300]
        assert count(watch.core, deliveries) == watch.stored
        return
    headers = {"webhook-id": webhook_id, "Content-Type": "application/json"}
    if timestamp is not None:
        headers["webhook-timestamp"] = timestamp
    if signature in ("right", "cti secret"):  # right over an odd timestamp, or another secret
        secret = GENERIC_SECRET if signature == "right" else CTI_SECRET
        signature = "v1," + cti_sign(secret, webhook_id, timestamp or "", body)
    if signature is not None:
        headers["webhook-signature"] = signature
    response = client.post("/hooks/generic", data=body, headers=headers)
    watch.reply(response, "generic")
    assert response.status_code in (401, 413), response.data[:300]


# -- sipgate.io and Placetel -------------------------------------------------------------------


def form_fixtures(key: str) -> list[list[tuple[str, str]]]:
    """Load a plugin's form fixtures as their parameters."""
    return [
        decode_form(p.read_bytes()) for p in sorted((PLUGINS / key / "fixtures").glob("*.form"))
    ]


PBX_FORMS = {"sipgate": form_fixtures("sipgate"), "placetel": form_fixtures("placetel")}
# The parameter that names a PBX's call, and the others its events carry.
PBX_CALL_IDS = {"sipgate": "callId", "placetel": "call_id"}
PBX_NAMES = {
    "sipgate": ["event", "from", "to", "direction", "callId", "origCallId", "user[]", "userId[]",
                "fullUserId[]", "cause", "answeringNumber", "diversion", "dtmf", "xcid"],
    "placetel": ["event", "call_id", "from", "to", "peer", "type", "duration", "direction",
                 "event[]"],
}  # fmt: skip


@st.composite
def pbx_forms(draw: st.DrawFn, key: str) -> bytes:
    """Draw a PBX fixture's parameters with some dropped, changed, repeated or added."""
    fields = list(draw(st.sampled_from(PBX_FORMS[key])))
    if fresh(draw):
        call = uuid.uuid4().hex.upper()
        fields = [(n, call if n in (PBX_CALL_IDS[key], "origCallId") else v) for n, v in fields]
    for _ in range(draw(st.integers(0, 4))):
        operation = draw(st.sampled_from(["drop", "replace", "repeat", "add"]))
        index = draw(st.integers(0, max(0, len(fields) - 1)))
        if operation == "add" or not fields:
            name = draw(st.sampled_from(PBX_NAMES[key]) | st.text(max_size=8))
            fields.append((name, draw(odd_text)))
        elif operation == "drop":
            del fields[index]
        elif operation == "replace":
            fields[index] = (fields[index][0], draw(odd_text))
        else:
            fields.insert(index, (fields[index][0], draw(odd_text)))
    return form_body(fields)


@FUZZ
@given(
    body=mostly(pbx_forms("sipgate"), raw_forms),
    by_path=st.booleans(),
    content_type=mostly(st.just(FORM), content_types),
    extra=extra_headers,
)
def test_sipgate_signed_pushes(client, watch, sipgate_key, body, by_path, content_type, extra):
    """Signed sipgate pushes (or pushes to the token path) of any shape get 200 or a clear 400."""
    watch.begin()
    if by_path:
        url, headers = f"/hooks/sipgate/{quote(SIPGATE_TOKEN, safe='')}", {}
    else:
        url, headers = "/hooks/sipgate", {"X-Sipgate-Signature": sipgate_sign(sipgate_key, body)}
    headers = {**extra, **headers, "Content-Type": content_type}
    watch.reply(client.post(url, data=body, headers=headers), "sipgate", repr(body[:200]))


@pytest.fixture(scope="module")
def other_key() -> rsa.RSAPrivateKey:
    """Return a key pair that is not the configured one."""
    return new_key()


@FUZZ
@given(
    body=pbx_forms("sipgate"),
    signature=st.none() | header_text | st.sampled_from(["other key", "other body"]),
    token=st.none() | odd_text.filter(lambda t: t != SIPGATE_TOKEN),
)
def test_sipgate_unsigned_or_badly_signed(client, watch, sipgate_key, other_key, body, signature,
                                          token):  # fmt: skip
    """A missing or wrong X-Sipgate-Signature, or a wrong path token, gets 401."""
    watch.begin()
    if signature == "other key":
        signature = sipgate_sign(other_key, body)
    elif signature == "other body":
        signature = sipgate_sign(sipgate_key, body + b"&x=1")
    headers = {"Content-Type": FORM}
    if signature is not None:
        headers["X-Sipgate-Signature"] = signature
    assert_refused(client, watch, "sipgate", body, headers, token)


@FUZZ
@given(
    body=mostly(pbx_forms("placetel"), raw_forms),
    proof=st.sampled_from(["signature", "token", "both", "upper-case signature"]),
    content_type=mostly(st.just(FORM), content_types),
    extra=extra_headers,
)
def test_placetel_signed_notifications(client, watch, body, proof, content_type, extra):
    """Signed Placetel notifications (or to the token path) of any shape get 200 or a clear 400."""
    watch.begin()
    url, headers = "/hooks/placetel", {}
    if proof in ("token", "both"):
        url = f"/hooks/placetel/{PLACETEL_TOKEN}"
    if proof != "token":
        signature = placetel_sign(PLACETEL_SECRET, body)
        headers["X-PLACETEL-SIGNATURE"] = signature.upper() if "upper" in proof else signature
    headers = {**extra, **headers, "Content-Type": content_type}
    watch.reply(client.post(url, data=body, headers=headers), "placetel", repr(body[:200]))


@FUZZ
@given(
    body=mostly(pbx_forms("placetel"), raw_forms),
    signature=st.none() | header_text | st.sampled_from(["other secret", "right"]),
    token=st.none() | odd_text.filter(lambda t: t != PLACETEL_TOKEN),
)
def test_placetel_unsigned_or_badly_signed(client, watch, body, signature, token):
    """A wrong or missing signature, or a wrong token (even beside a right signature), gets 401."""
    watch.begin()
    if signature in ("other secret", "right"):
        secret = PLACETEL_SECRET if signature == "right" else "other-secret"
        signature = placetel_sign(secret, body)
    if signature == placetel_sign(PLACETEL_SECRET, body) and token is None:
        signature = None  # a right signature alone is a proof: it is tried beside a wrong token
    headers = {"Content-Type": FORM}
    if signature is not None:
        headers["X-PLACETEL-SIGNATURE"] = signature
    assert_refused(client, watch, "placetel", body, headers, token)


# -- Salesforce ----------------------------------------------------------------------------------

SALESFORCE = [
    p.read_text().replace(
        "00D70000000IVNp!AQ4AQFakeSessionForFixtureOnly0123456789", SF_SESSION)
    for p in sorted((PLUGINS / "salesforce" / "fixtures").glob("*.xml"))
]  # fmt: skip
ELEMENT = re.compile(r"<((?:sf:)?\w+)(?: [^>]*)?>([^<]*)</\1>")
XML_DECLARATIONS = [
    '<?xml version="1.0" encoding="UTF-8"?>\n', '<?xml version="1.0" encoding="utf-16"?>\n',
    '<?xml version="1.0" encoding="ISO-8859-1"?>\n', '<?xml version="1.0" encoding="x-bogus"?>\n',
    '<?xml version="1.0" encoding="UTF-32"?>\n', '<?xml version="1.0" encoding="cp500"?>\n',
    '<?xml version="1.1"?>\n', '<?xml version="2.0"?>\n', "\ufeff", '<?xml encoding="ascii"?>',
    '<!DOCTYPE x [<!ENTITY a "b">]>\n', '<!DOCTYPE x SYSTEM "http://127.0.0.1:1/x.dtd">\n',
    '<!DOCTYPE x [<!ENTITY a "&#38;a;&#38;a;">]>\n', "<?pi x?>\n", "<!-- c -->\n",
]  # fmt: skip


SOBJECT_TYPES = ["sf:Contact", "sf:CaseComment", "sf:Case", "", "sf:", "Case", "sf:../../User",
                 "sf:User", "a:b:c"]  # fmt: skip
OPERATIONS = ["text", "text", "cdata", "charref", "drop", "nil", "nest", "repeat", "type", "raw"]


def xml_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


@st.composite
def outbound_messages(draw: st.DrawFn, damage: bool = True) -> bytes:
    """Draw a Salesforce fixture with elements changed, dropped, nested or repeated."""
    text = draw(st.sampled_from(SALESFORCE))
    fresh_id = uuid.uuid4().hex[:10].upper() if fresh(draw) else "DjbKjAAJ00"
    text = re.sub(r"<Id>04l(\w{5})\w{10}</Id>", lambda m: f"<Id>04l{m[1]}{fresh_id}</Id>", text)
    if not damage:
        return encoded(text)
    for _ in range(draw(st.integers(0, 3))):
        elements = list(ELEMENT.finditer(text))
        found = draw(st.sampled_from(elements))
        tag, start, end = found[1], found.start(), found.end()
        operation = draw(st.sampled_from(OPERATIONS))
        value = draw(odd_text)
        if operation == "text":
            new = f"<{tag}>{xml_escape(value)}</{tag}>"
        elif operation == "cdata":
            new = f"<{tag}><![CDATA[{value}]]></{tag}>"
        elif operation == "charref":
            refs = "".join(f"&#x{ord(c):x};" for c in value[:50])
            new = (
                f"<{tag}>{draw(st.sampled_from([refs, '&#0;', '&#xD800;', '&#x10FFFF;']))}</{tag}>"
            )
        elif operation == "drop":
            new = ""
        elif operation == "nil":
            new = f'<{tag} xsi:nil="true"/>'
        elif operation == "nest":
            new = f"<{tag}><{tag}>{found[2]}</{tag}><x:y xmlns:x='urn:x'/></{tag}>"
        elif operation == "repeat":
            new = found[0] * draw(st.integers(2, 3))
        elif operation == "type":
            kind = xml_escape(draw(st.sampled_from(SOBJECT_TYPES) | odd_text)).replace(
                '"', "&quot;"
            )
            if draw(st.integers(0, 3)) == 0:  # a character reference keeps a line break
                kind += draw(st.sampled_from(["&#10;x", "&#13;", "&#9;"]))
            declared = f'xsi:type="{kind}"'
            text = re.sub(r'xsi:type="[^"]*"', declared.replace("\\", "\\\\"), text, count=1)
            continue
        else:
            new = draw(st.sampled_from(["<", "&", "&a;", "]]>", "<a>", "</x>", "\x00", "\ud800"]))
        text = text[:start] + new + text[end:]
    if draw(st.booleans()):  # a batch: the notification repeated, with new ids or the same
        first, last = text.find("   <Notification>"), text.rfind("</Notification>") + 15
        if 0 <= first < last:
            block = text[first:last]
            copies = [block.replace(fresh_id, f"{i:010d}") if draw(st.booleans()) else block
                      for i in range(draw(st.integers(1, 3)))]  # fmt: skip
            text = text[:last] + "".join(copies) + text[last:]
    if draw(st.integers(0, 3)) == 0:
        text = draw(st.sampled_from(XML_DECLARATIONS)) + text
    if draw(st.integers(0, 3)) == 0:
        text = text.replace("soapenv:", "s:").replace("xmlns:soapenv", "xmlns:s")
    body = encoded(text)
    if draw(st.integers(0, 7)) == 0:
        body = text.encode(draw(st.sampled_from(["utf-16", "latin-1", "utf-32"])), "replace")
    return body[: draw(st.integers(0, len(body)))] if draw(st.integers(0, 9)) == 0 else body


SOAP_TYPES = st.sampled_from(["text/xml; charset=utf-8", "text/xml", "application/soap+xml"])


@FUZZ
@given(
    body=mostly(outbound_messages(), random_bodies()),
    content_type=mostly(SOAP_TYPES, content_types),
    extra=mostly(st.just({}), extra_headers),
)
def test_salesforce_messages(client, watch, salesforce_proof, body, content_type, extra):
    """Outbound Messages of any shape, proven or read back, get the Ack or a clear refusal."""
    watch.begin()
    headers = {"SOAPAction": '""', **extra, "Content-Type": content_type}
    response = client.post("/hooks/salesforce", data=body, headers=headers)
    watch.reply(response, "salesforce", repr(body[:300]))


@FUZZ
@given(
    body=outbound_messages(damage=False),
    org=st.sampled_from([SF_ORG, "00D70000000IVNq", "00D", "00D70000000IVNP"]) | odd_text,
    session=st.sampled_from([SF_SESSION, "00D70000000IVNp!AQ4AQ.other"]) | odd_text,
)
def test_salesforce_other_org_or_session(client, watch, body, org, session):
    """Another org, or a SessionId that is not the org's, gets 401 with a SOAP fault."""
    watch.begin()
    text = body.decode("utf-8", "surrogatepass") if body.isascii() else None
    if text is not None and "<OrganizationId>" in text:
        sent = f"<OrganizationId>{xml_escape(org)}"
        text = re.sub(r"<OrganizationId>[^<]*", lambda _: sent, text)
        text = text.replace(SF_SESSION, xml_escape(session))
        body = encoded(text)
    headers = {"Content-Type": "text/xml; charset=utf-8", "SOAPAction": '""'}
    response = client.post("/hooks/salesforce", data=body, headers=headers)
    watch.reply(response, "salesforce")


# -- agent reads -------------------------------------------------------------------------------

READ_NAMES = [*LOOKUP_PARAMS, "exp", "sig", "scope"]


@pytest.fixture
def seeded(client: FlaskClient, worker: Worker, hooks: Hooks) -> None:
    """Store a ticket, a call and a CTI call of Ann, so that reads find someone."""
    from tests.payloads import cti_body, fixture_bytes

    body = fixture_bytes("ticket_created.json")
    assert (
        client.post("/hooks/zendesk", data=body, headers=zendesk_headers(body)).status_code == 200
    )
    assert hooks.twilio(twilio_fields("call_started__ringing.form")).status_code == 200
    body = cti_body("newCall.json")
    assert client.post("/hooks/cti", data=body, headers=cti_headers(body)).status_code == 200
    worker.drain()


# Ways to name the seeded customer, and things that look almost like them.
KNOWN = [
    "+14155550142", "(415) 555-0142", "14155550142", "004414155550142", "011 1 415 555 0142",
    "ann.example@example.com", " ANN.Example@Example.com ", "8447388090501", "1", "2",
    "0037000000xicp7", "0037000000xicp7AAA", "+266696687", "anonymous", "+1415555014２",
]  # fmt: skip


@st.composite
def lookups(draw: st.DrawFn, names: tuple[str, ...]) -> str:
    """Draw one lookup (phone, email, …), now and then with a scope, an exp or a sig."""
    name = draw(st.sampled_from(names))
    value = draw(mostly(st.sampled_from(KNOWN), odd_text))
    parts = [f"{name}={percent(value)}"]
    for extra in ("scope", "exp", "sig"):
        if draw(st.integers(0, 5)) == 0:
            parts.append(f"{extra}={percent(draw(st.sampled_from(['any-phone']) | odd_text))}")
    return "&".join(parts)


@st.composite
def read_requests(
    draw: st.DrawFn, names: tuple[str, ...] = LOOKUP_PARAMS
) -> tuple[str, dict[str, str], str]:
    """Draw a query and how it is authorised: none, a key, a wrong key, or a signed link."""
    query = draw(mostly(lookups(names), query_strings(READ_NAMES)))
    auth = draw(st.sampled_from(["key", "link", "key", "link", "none", "wrong key", "scheme"]))
    headers = {}
    if auth == "key":
        headers["Authorization"] = f"Bearer {AGENT_KEY}"
    elif auth == "wrong key":
        headers["Authorization"] = "Bearer " + draw(header_text)
    elif auth == "scheme":
        headers["Authorization"] = draw(header_text)
    return query, headers, auth


def link_for(client: FlaskClient, core: Installation, path: str, query: str) -> str:
    """Append exp and sig to a fuzzed query, signed over what the view will read."""
    from werkzeug.datastructures import MultiDict

    with client.application.test_request_context(f"{path}?{query}"):
        from flask import request

        args: MultiDict[str, str] = request.args
        expires = int(time.time()) + 600
        unsigned = {"sig", "exp"}
        if args.get("scope") == "any-phone":
            unsigned.add("phone")
        params = "&".join(f"{k}={v}" for k, v in sorted(args.items()) if k not in unsigned)
    signature = sign_link(core.link_secret, path, params, expires)
    kept = "&".join(p for p in query.split("&") if not p.startswith(("exp=", "sig=")))
    return f"{path}?{kept}&exp={expires}&sig={signature}"


def check_read(response: Any, auth: str, where: str) -> None:
    event(f"{auth}: {response.status_code}")
    # Generated reads: found, refused, unauthorised, unknown or throttled; never a 5xx.
    assert response.status_code in (200, 400, 401, 404, 429), (where, response.data[:300])
    if response.status_code == 401:
        assert response.get_json()["error"], where


@FUZZ
@given(read=read_requests())
def test_context_api_queries(client, core, seeded, read):
    """GET /api/v1/context with any query and any authorisation never answers 5xx."""
    query, headers, auth = read
    path = "/api/v1/context"
    url = link_for(client, core, path, query) if auth == "link" else f"{path}?{query}"
    response = client.get(url, headers=headers)
    check_read(response, auth, url)
    if auth in ("none", "wrong key", "scheme"):
        assert response.status_code == 401, url
    if response.status_code in (400, 404):
        assert response.get_json()["error"], url


@FUZZ
@given(read=read_requests(("phone",)), path=st.sampled_from(["/pop", "/pop/events"]))
def test_pop_queries(client, core, seeded, read, path):
    """GET /pop and /pop/events with any query and any authorisation never answer 5xx."""
    query, headers, auth = read
    url = link_for(client, core, path, query) if auth == "link" else f"{path}?{query}"
    response = client.get(url, headers=headers, buffered=False)
    try:
        check_read(response, auth, url)
        if auth in ("none", "wrong key", "scheme"):
            assert response.status_code == 401, url
        if response.status_code == 200 and path == "/pop/events":
            stream = iter(response.response)
            assert next(stream).startswith(b"retry:")
            assert next(stream).startswith(b"event: pop\n")  # the first rendering
        elif response.status_code == 200:
            assert b"<html" in response.get_data().lower()
    finally:
        response.close()


@FUZZ
@given(
    query=query_strings(["q", "direction", "plugin", "status"]),
    page=st.sampled_from(["/admin/customers/", "/admin/deliveries/", "/admin/"]),
)
@example(query="q=a%00b", page="/admin/customers/")
@example(query="direction=out&plugin=%00", page="/admin/deliveries/")
def test_admin_pages_with_odd_queries(admin, seeded, query, page):
    """The admin search and listings take any query string: a page, or 400 for a NUL."""
    response = admin.get(f"{page}?{query}")
    event(f"{page}: {response.status_code}")
    if response.status_code == 400:
        assert b"NUL character" in response.data, query
    else:
        assert response.status_code == 200, (query, response.data[:300])


@FUZZ
@given(
    page=st.sampled_from(["integrations", "mappings", "templates", "deliveries/in",
                          "deliveries/out", "customers"]),
    segment=mostly(st.sampled_from(["zendesk", "cti", "summary", "1", "2", "0"]), odd_text),
)  # fmt: skip
def test_admin_pages_with_odd_path_segments(admin, seeded, page, segment):
    """An odd name or id in an admin path gets a page, a redirect or a 404, never a 5xx."""
    response = admin.get(f"/admin/{page}/{percent(segment) or '%20'}")
    event(f"{page}: {response.status_code}")
    assert response.status_code in (200, 302, 308, 404), (segment, response.data[:300])


@FUZZ
@given(
    form=st.sampled_from(["merge", "preferred-channels"]),
    values=st.lists(mostly(st.sampled_from(["1", "2", "3", "email", "phone", "sms"]), odd_text),
                    max_size=3),
)  # fmt: skip
@example(form="merge", values=["²"])
@example(form="merge", values=[str(2**63)])
def test_admin_customer_forms_with_odd_values(admin, seeded, form, values, admin_for):
    """The merge and preferred-channel forms take any value: done, refused or 404, no 5xx."""
    token = admin_for.csrf(admin.get("/admin/customers/1").data)
    field = "other" if form == "merge" else "channel"
    body = form_body([("csrf_token", token), *[(field, value) for value in values]])
    response = admin.post(f"/admin/customers/1/{form}", data=body,
                          content_type="application/x-www-form-urlencoded")  # fmt: skip
    event(f"{form}: {response.status_code}")
    assert response.status_code in (302, 400, 404, 409), (values, response.data[:300])


@settings(FUZZ, max_examples=max(10, EXAMPLES // 4))  # each login checks a scrypt hash
@given(
    username=mostly(st.just("ada"), odd_text),
    password=mostly(st.just(ADMIN_PASSWORD), odd_text),
    target=mostly(st.sampled_from(["/admin/", "/admin/customers/?q=a"]),
                  odd_text.map("/admin/".__add__)),
)  # fmt: skip
@example(username="ada", password=ADMIN_PASSWORD, target="/admin/\nx")
def test_admin_login_with_odd_values(app, admin, username, password, target, admin_for):
    """The login form takes any name, password and next=: a session, a refusal, never a 5xx."""
    browser = app.test_client()
    form = browser.get(f"/admin/login?next={percent(target)}")
    assert form.status_code == (400 if "\x00" in target else 200), form.data[:300]
    form = browser.get("/admin/login")
    body = form_body([("csrf_token", admin_for.csrf(form.data)), ("username", username),
                      ("password", password), ("next", target)])  # fmt: skip
    response = browser.post("/admin/login", data=body,
                            content_type="application/x-www-form-urlencoded")  # fmt: skip
    event(f"login: {response.status_code}")
    assert response.status_code in (302, 400, 401, 429), (username, target, response.data[:300])
    if response.status_code == 302:
        assert response.headers["Location"].startswith("/admin")


def test_health_endpoints_answer(client, core):
    """/healthz and /readyz answer JSON (nothing to generate: they take no input)."""
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200
