"""The Salesforce simulator, checked through the real simple-salesforce client."""

from __future__ import annotations

import html
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import jwt
import pytest
import requests
import responses
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from defusedxml import ElementTree
from simple_salesforce import Salesforce, format_soql
from simple_salesforce.exceptions import (
    SalesforceAuthenticationFailed,
    SalesforceExpiredSession,
    SalesforceMalformedRequest,
    SalesforceRefusedRequest,
    SalesforceResourceNotFound,
)
from simple_salesforce.util import Usage
from sqlalchemy import select

from devkit.simulators.salesforce import FakeSalesforce, OutboundFailed, is_ack
from middleware.installation import Installation, build_installation
from middleware.process.worker import Worker
from middleware.store.tables import interactions
from tests.actions import ConfigFactory

SESSION = "00D000000000001!AQ.fixed.session.for.tests"
USERNAME = "carryover@example.com"
PASSWORD = "test-password"
TOKEN = "test-security-token"
CONSUMER_KEY = "3MVG9test.consumer.key"
SOAPENV = "{http://schemas.xmlsoap.org/soap/envelope/}"
OUTBOUND = "{http://soap.sforce.com/2005/09/outbound}"
SOBJECT = "{urn:sobject.enterprise.soap.sforce.com}"
XSI = "{http://www.w3.org/2001/XMLSchema-instance}"
SALESFORCE_DATE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+0000$")
ACK = (
    b'<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/">'
    b'<soapenv:Body><notificationsResponse xmlns="http://soap.sforce.com/2005/09/outbound">'
    b"<Ack>true</Ack></notificationsResponse></soapenv:Body></soapenv:Envelope>"
)
MONDAY = datetime(2025, 1, 6, 9, 0, tzinfo=UTC)


class LocalSession(requests.Session):
    """Send simple-salesforce's https:// URLs (instance and fake login) to the fake's http URL."""

    def __init__(self, fake_url: str) -> None:
        super().__init__()
        self.trust_env = False
        host = fake_url.removeprefix("http://")
        self.origins = {f"https://{host}": fake_url, "https://fake-login.salesforce.com": fake_url}

    def request(self, method: Any, url: Any, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        """Rewrite the origin, then send as usual."""
        for origin, base in self.origins.items():
            if str(url).startswith(origin):
                url = base + str(url)[len(origin) :]
        return super().request(method, url, *args, **kwargs)


def _pem_pair() -> tuple[str, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private.decode(), public


@pytest.fixture(scope="module")
def keys() -> tuple[str, bytes]:
    """Make one RSA key pair (private PEM, public PEM) for the module's JWT logins."""
    return _pem_pair()


@pytest.fixture
def fake(keys: tuple[str, bytes]) -> Iterator[FakeSalesforce]:
    """Serve a fake org that knows the fixed session and the module's JWT key."""
    with FakeSalesforce(session_id=SESSION, jwt_public_key=keys[1]) as running:
        yield running


@pytest.fixture
def sf(fake: FakeSalesforce) -> Salesforce:
    """Connect a client on the fixed session, as one configured with session_id does."""
    return Salesforce(instance_url=fake.url, session_id=SESSION, session=LocalSession(fake.url))


def _password_client(fake: FakeSalesforce, password: str = PASSWORD) -> Salesforce:
    return Salesforce(
        username=USERNAME,
        password=password,
        security_token=TOKEN,
        domain="fake-login",
        session=LocalSession(fake.url),
    )


def _case_with_contact(fake: FakeSalesforce) -> tuple[str, str]:
    contact_id = fake.add_contact("Ann", "Example", email="ann.example@example.com")
    return contact_id, fake.add_case("Refund not received", contact_id, origin="Phone")


def _token_reply(fake: FakeSalesforce, private_key: str, **claims: Any) -> requests.Response:
    payload = {
        "iss": CONSUMER_KEY,
        "sub": USERNAME,
        "aud": "https://login.salesforce.com",
        "exp": int(time.time()) + 180,
    } | claims
    assertion = jwt.encode(payload, private_key, algorithm="RS256")
    grant = {"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "assertion": assertion}
    return requests.post(f"{fake.url}/services/oauth2/token", data=grant, timeout=5)


def test_password_login_gives_a_session_the_rest_api_takes(fake: FakeSalesforce) -> None:
    """A SOAP login with password and security token yields a working session on the fake."""
    contact_id, _ = _case_with_contact(fake)
    sf = _password_client(fake)
    assert fake.logins == 1
    assert sf.session_id.startswith("00D000000000001!AQ")
    assert sf.sf_instance == fake.url.removeprefix("http://")
    assert sf.Contact.get(contact_id)["LastName"] == "Example"


def test_wrong_password_is_refused_with_invalid_login(fake: FakeSalesforce) -> None:
    """A wrong password gets the SOAP fault simple-salesforce reports as INVALID_LOGIN."""
    with pytest.raises(SalesforceAuthenticationFailed) as refused:
        _password_client(fake, password="wrong")
    assert refused.value.code == "INVALID_LOGIN"
    assert "Invalid username, password, security token" in refused.value.auth_message
    assert fake.logins == 0


def test_jwt_bearer_login_with_the_registered_key(
    fake: FakeSalesforce, keys: tuple[str, bytes]
) -> None:
    """A JWT bearer assertion signed with the registered key logs in and returns instance_url."""
    contact_id, _ = _case_with_contact(fake)
    sf = Salesforce(
        username=USERNAME,
        consumer_key=CONSUMER_KEY,
        privatekey=keys[0],
        domain="fake-login",
        session=LocalSession(fake.url),
    )
    assert fake.logins == 1
    assert sf.sf_instance == fake.url.removeprefix("http://")
    assert sf.Contact.get(contact_id)["Email"] == "ann.example@example.com"


@pytest.mark.parametrize(
    ("claims", "description"),
    [
        ({"iss": "someone-else"}, "client identifier invalid"),
        ({"sub": "mallory@example.com"}, "invalid user"),
        ({"aud": "https://evil.example.com"}, "audience is invalid"),
        ({"exp": int(time.time()) - 10}, "expired assertion"),
    ],
)
def test_jwt_with_wrong_claims_is_refused(
    fake: FakeSalesforce, keys: tuple[str, bytes], claims: dict, description: str
) -> None:
    """A JWT whose issuer, subject, audience or expiry is wrong gets 400 invalid_grant."""
    reply = _token_reply(fake, keys[0], **claims)
    assert reply.status_code == 400
    assert reply.json() == {"error": "invalid_grant", "error_description": description}
    assert fake.logins == 0


def test_jwt_signed_with_another_key_is_refused(fake: FakeSalesforce) -> None:
    """A JWT signed with a key other than the registered one gets 400 invalid_grant."""
    reply = _token_reply(fake, _pem_pair()[0])
    assert reply.status_code == 400
    assert reply.json()["error"] == "invalid_grant"


def test_expired_session_gets_401_invalid_session_id(fake: FakeSalesforce, sf: Salesforce) -> None:
    """After expire_sessions the fixed session gets 401 INVALID_SESSION_ID."""
    contact_id, _ = _case_with_contact(fake)
    assert sf.Contact.get(contact_id)["Id"] == contact_id
    fake.expire_sessions()
    with pytest.raises(SalesforceExpiredSession) as refused:
        sf.Contact.get(contact_id)
    assert refused.value.status == 401
    assert refused.value.content == [
        {"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}
    ]


def test_password_client_logs_in_again_after_expiry(fake: FakeSalesforce) -> None:
    """simple-salesforce answers INVALID_SESSION_ID by logging in again and retrying."""
    contact_id, _ = _case_with_contact(fake)
    sf = _password_client(fake)
    fake.expire_sessions()
    assert sf.Contact.get(contact_id)["FirstName"] == "Ann"
    assert fake.logins == 2


def test_every_rest_reply_reports_api_usage(fake: FakeSalesforce, sf: Salesforce) -> None:
    """Each REST request counts one, and Sforce-Limit-Info reports used/limit."""
    sf.query("SELECT Id FROM Contact")
    assert sf.api_usage["api-usage"] == Usage(used=1, total=15000)
    sf.query("SELECT Id FROM Contact")
    assert sf.api_usage["api-usage"] == Usage(used=2, total=15000)
    assert fake.api_usage == (2, 15000)


def test_request_over_the_limit_gets_403_request_limit_exceeded(
    fake: FakeSalesforce, sf: Salesforce
) -> None:
    """The request past the daily limit gets 403 REQUEST_LIMIT_EXCEEDED, without Retry-After."""
    fake.set_usage(99, 100)
    sf.query("SELECT Id FROM Contact")
    assert sf.api_usage["api-usage"] == Usage(used=100, total=100)
    with pytest.raises(SalesforceRefusedRequest) as refused:
        sf.query("SELECT Id FROM Contact")
    assert refused.value.content == [
        {"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}
    ]
    raw = requests.get(
        f"{fake.url}/services/data/v59.0/query/",
        params={"q": "SELECT Id FROM Contact"},
        headers={"Authorization": f"Bearer {SESSION}"},
        timeout=5,
    )
    assert raw.status_code == 403
    assert raw.headers["Sforce-Limit-Info"] == "api-usage=100/100"
    assert "Retry-After" not in raw.headers


def test_contact_is_read_by_15_and_18_character_id(fake: FakeSalesforce, sf: Salesforce) -> None:
    """GET sobjects/Contact takes either id form and answers with the 18-character id."""
    contact_id = fake.add_contact("Ann", "Example", email="ann@example.com", phone="+14155550142")
    assert len(contact_id) == 18 and contact_id.startswith("003")
    by_18 = sf.Contact.get(contact_id)
    assert sf.Contact.get(contact_id[:15]) == by_18
    assert by_18 == {
        "attributes": {
            "type": "Contact",
            "url": f"/services/data/v59.0/sobjects/Contact/{contact_id}",
        },
        "Id": contact_id,
        "Name": "Ann Example",
        "FirstName": "Ann",
        "LastName": "Example",
        "Email": "ann@example.com",
        "Phone": "+14155550142",
        "MobilePhone": None,
    }


def test_records_can_be_added_under_given_ids(fake: FakeSalesforce, sf: Salesforce) -> None:
    """A contact and case added under fixture ids are served under those ids."""
    contact_id = fake.add_contact("Ann", "Lee", record_id="0037000000xicp7")
    case_id = fake.add_case("Refund", contact_id, record_id="5007000000OFL5FAAX")
    assert contact_id == "0037000000xicp7AAA"
    assert sf.Case.get(case_id)["ContactId"] == contact_id
    with pytest.raises(ValueError):
        fake.add_case("Again", record_id=case_id)


def test_unknown_contact_gets_404_not_found(fake: FakeSalesforce, sf: Salesforce) -> None:
    """An id no contact has gets 404 NOT_FOUND."""
    with pytest.raises(SalesforceResourceNotFound) as missing:
        sf.Contact.get("0035g000000AbCdAAA")
    assert missing.value.content[0]["errorCode"] == "NOT_FOUND"


def test_case_is_read_and_patched(fake: FakeSalesforce, sf: Salesforce) -> None:
    """A PATCH to a case answers 204 and changes its fields, IsClosed and LastModifiedDate."""
    contact_id, case_id = _case_with_contact(fake)
    before = sf.Case.get(case_id[:15])
    assert before["ContactId"] == contact_id and before["CaseNumber"] == "00001001"
    assert before["IsClosed"] is False and SALESFORCE_DATE.match(before["CreatedDate"])
    assert sf.Case.update(case_id, {"Status": "Closed"}) == 204
    after = sf.Case.get(case_id)
    assert after["Status"] == "Closed" and after["IsClosed"] is True
    assert after["LastModifiedDate"] > before["LastModifiedDate"]


def test_case_comment_is_created_private_on_its_case(fake: FakeSalesforce, sf: Salesforce) -> None:
    """POST sobjects/CaseComment/ answers 201 with the new 00a id and stores the comment."""
    _, case_id = _case_with_contact(fake)
    body = "é" * 2000  # 4,000 bytes in UTF-8: just within the limit
    created = sf.CaseComment.create(
        {"ParentId": case_id[:15], "CommentBody": body, "IsPublished": False}
    )
    assert created["success"] is True and created["errors"] == []
    assert created["id"].startswith("00a") and len(created["id"]) == 18
    [comment] = fake.comments(case_id)
    assert comment["Id"] == created["id"] and comment["ParentId"] == case_id
    assert comment["CommentBody"] == body and comment["IsPublished"] is False
    assert fake.requests_log[-1][1].endswith("/sobjects/CaseComment/")


@pytest.mark.parametrize(
    ("parent", "body", "code", "fields"),
    [
        ("unknown case", "hello", "INVALID_CROSS_REFERENCE_KEY", []),
        ("case", "   ", "REQUIRED_FIELD_MISSING", ["CommentBody"]),
        ("case", "é" * 2001, "STRING_TOO_LONG", ["CommentBody"]),
    ],
)
def test_case_comment_errors(
    fake: FakeSalesforce, sf: Salesforce, parent: str, body: str, code: str, fields: list
) -> None:
    """A comment on no case, a blank one and one over 4,000 bytes get Salesforce's 400s."""
    contact_id, case_id = _case_with_contact(fake)
    parent_id = case_id if parent == "case" else contact_id
    with pytest.raises(SalesforceMalformedRequest) as refused:
        sf.CaseComment.create({"ParentId": parent_id, "CommentBody": body})
    assert refused.value.status == 400
    [error] = refused.value.content
    assert error["errorCode"] == code and error["fields"] == fields
    assert fake.comments(case_id) == []


def test_soql_finds_the_comments_of_one_case(fake: FakeSalesforce, sf: Salesforce) -> None:
    """A format_soql query by ParentId (15 characters) returns that case's comments only."""
    _, case_id = _case_with_contact(fake)
    other_case = fake.add_case("Charger stopped working")
    quirky = 'It\'s a "quote", a \\ and\na new line'
    for parent, body in ((case_id, quirky), (other_case, "elsewhere"), (case_id, "second")):
        sf.CaseComment.create({"ParentId": parent, "CommentBody": body, "IsPublished": False})
    soql = format_soql(
        "SELECT Id, CommentBody FROM CaseComment WHERE ParentId = {} ORDER BY CreatedDate DESC",
        case_id[:15],
    )
    result = sf.query(soql)
    assert result["totalSize"] == 2 and result["done"] is True
    assert [record["CommentBody"] for record in result["records"]] == ["second", quirky]
    assert set(result["records"][0]) == {"attributes", "Id", "CommentBody"}
    assert result["records"][0]["attributes"]["type"] == "CaseComment"
    by_body = format_soql("SELECT Id FROM CaseComment WHERE CommentBody = {}", quirky)
    assert sf.query_all(by_body)["totalSize"] == 1


def test_unsupported_soql_gets_400_malformed_query(fake: FakeSalesforce, sf: Salesforce) -> None:
    """SOQL outside the supported subset gets 400 MALFORMED_QUERY."""
    with pytest.raises(SalesforceMalformedRequest) as refused:
        sf.query("SELECT Id FROM CaseComment WHERE CommentBody LIKE 'x%'")
    assert refused.value.content[0]["errorCode"] == "MALFORMED_QUERY"


def test_outbound_message_carries_the_case_fields(fake: FakeSalesforce) -> None:
    """An outbound message parses to the org, one notification and the case's fields."""
    contact_id, case_id = _case_with_contact(fake)
    fake.update_case(case_id, Subject="Refund <not> received & late")
    fields = fake.case_fields(case_id)
    root = ElementTree.fromstring(fake.outbound_message([("Case", fields)]))
    notifications = root.find(f"{SOAPENV}Body/{OUTBOUND}notifications")
    assert notifications is not None
    assert notifications.findtext(f"{OUTBOUND}OrganizationId") == "00D000000000001EAA"
    assert notifications.findtext(f"{OUTBOUND}ActionId", "").startswith("04k")
    assert notifications.find(f"{OUTBOUND}SessionId").get(f"{XSI}nil") == "true"
    assert notifications.findtext(f"{OUTBOUND}PartnerUrl") == (
        f"{fake.url}/services/Soap/u/59.0/00D000000000001"
    )
    [notification] = notifications.findall(f"{OUTBOUND}Notification")
    notification_id = notification.findtext(f"{OUTBOUND}Id", "")
    assert notification_id.startswith("04l") and len(notification_id) == 18
    sobject = notification.find(f"{OUTBOUND}sObject")
    assert sobject.get(f"{XSI}type") == "sf:Case"
    sent = {element.tag.removeprefix(SOBJECT): element.text for element in sobject}
    assert sent == fields
    assert sent["Subject"] == "Refund <not> received & late"
    assert sent["ContactId"] == contact_id and sent["IsClosed"] == "false"
    assert sent["CreatedDate"].endswith("Z") and "Description" not in sent


def test_outbound_message_batches_records_with_a_session(fake: FakeSalesforce) -> None:
    """Several records become notifications with distinct ids; a session id is sent as text."""
    contact_id, case_id = _case_with_contact(fake)
    records = [("Case", fake.case_fields(case_id)), ("Contact", fake.contact_fields(contact_id))]
    root = ElementTree.fromstring(fake.outbound_message(records, session_id=SESSION))
    notifications = root.find(f"{SOAPENV}Body/{OUTBOUND}notifications")
    assert notifications.findtext(f"{OUTBOUND}SessionId") == SESSION
    items = notifications.findall(f"{OUTBOUND}Notification")
    assert len({item.findtext(f"{OUTBOUND}Id") for item in items}) == 2
    contact = items[1].find(f"{OUTBOUND}sObject")
    assert contact.get(f"{XSI}type") == "sf:Contact"
    assert contact.findtext(f"{SOBJECT}Name") == "Ann Example"
    with pytest.raises(ValueError):
        fake.outbound_message([])
    with pytest.raises(ValueError):
        fake.outbound_message([("Case", {"Id": case_id})] * 101)


@responses.activate
def test_send_outbound_posts_soap_like_salesforce(fake: FakeSalesforce) -> None:
    """send_outbound POSTs the envelope as text/xml with an empty SOAPAction."""
    _, case_id = _case_with_contact(fake)
    responses.add(responses.POST, "https://carryover.example.com/hooks/salesforce", body=ACK)
    reply = fake.send_outbound(
        "https://carryover.example.com/hooks/salesforce", [("Case", fake.case_fields(case_id))]
    )
    assert is_ack(reply.content)
    sent = responses.calls[0].request
    assert sent.headers["Content-Type"] == "text/xml; charset=utf-8"
    assert sent.headers["SOAPAction"] == '""'
    assert b"<sf:Subject>Refund not received</sf:Subject>" in sent.body


@pytest.mark.parametrize(
    ("body", "acknowledged"),
    [
        (ACK, True),
        (ACK.replace(b"<Ack>true</Ack>", b"<Ack>false</Ack>"), False),
        (ACK.replace(b"2005/09/outbound", b"2005/09/other"), False),
        (b"<soapenv:Envelope xmlns:soapenv='http://schemas.xmlsoap.org/soap/envelope/'/>", False),
        (b"OK", False),
        (b"", False),
    ],
)
def test_is_ack_accepts_only_the_outbound_ack(body: bytes, acknowledged: bool) -> None:
    """is_ack is True only for a SOAP envelope holding notificationsResponse/Ack true."""
    assert is_ack(body) is acknowledged


# -- open_case: a new case announced to a real Carryover ----------------------------------


@pytest.fixture
def core(
    database_url: str, fake: FakeSalesforce, make_config: ConfigFactory
) -> Iterator[Installation]:
    """Build a Carryover connected to the fake org on its fixed session."""
    options = {"organization_id": fake.org_id, "instance_url": fake.url, "session_id": SESSION}
    built = build_installation(make_config(database_url, salesforce=options))
    yield built
    built.dispose()


def _stored_case(core: Installation, case_id: str) -> Any:
    query = select(interactions).where(
        interactions.c.kind == "case", interactions.c.external_id == case_id
    )
    with core.engine.connect() as conn:
        return conn.execute(query).one()


def test_open_case_sends_an_outbound_message_carryover_acknowledges(
    fake: FakeSalesforce, carryover_url: str, worker: Worker, core: Installation
) -> None:
    """open_case POSTs the case's outbound message; Carryover acks it and stores the case."""
    contact_id = fake.add_contact("Ann", "Example", email="ann.example@example.com")
    fake.subscribe(f"{carryover_url}/hooks/salesforce")
    case_id = fake.open_case(contact_id, "Refund not received", "Charged twice.", at=MONDAY)
    assert fake.case(case_id)["CreatedDate"] == "2025-01-06T09:00:00.000+0000"
    worker.drain()
    row = _stored_case(core, case_id)
    assert (row.channel, row.status, row.subject) == ("phone", "new", "Refund not received")
    assert row.customer_name == "Ann Example"  # read back from the fake's REST API
    assert row.occurred_at == MONDAY.replace(tzinfo=None)


def test_second_case_gets_a_private_comment_the_agent_view_shows(
    fake: FakeSalesforce, carryover_url: str, worker: Worker, core: Installation
) -> None:
    """Carryover's summary on a contact's second case shows in GET / as a private comment."""
    contact_id = fake.add_contact("Ann", "Example", email="ann.example@example.com")
    fake.subscribe(f"{carryover_url}/hooks/salesforce")
    fake.open_case(contact_id, "Refund not received", "Charged twice.", origin="Email")
    worker.drain()
    second = fake.open_case(contact_id, "Still no refund", "Called again.", origin="Phone")
    worker.drain()
    [comment] = fake.comments(second)
    assert comment["IsPublished"] is False and "Refund not received" in comment["CommentBody"]
    page = requests.get(fake.url + "/", timeout=5).text
    shown = page[page.index("Still no refund") : page.index("Refund not received</h2>")]
    assert "private comment (internal)" in shown
    assert f"<pre>{html.escape(comment['CommentBody'])}</pre>" in shown


@responses.activate
def test_open_case_raises_unless_the_endpoint_acks(fake: FakeSalesforce) -> None:
    """Without an endpoint nothing is created; a reply but the Ack raises, the case stays."""
    with pytest.raises(OutboundFailed, match="subscribe"):
        fake.open_case(None, "Refund", supplied_email="ann.example@example.com")
    responses.add_passthru(fake.url)
    responses.add(responses.POST, "https://carryover.example.com/hooks/salesforce", status=500)
    fake.subscribe("https://carryover.example.com/hooks/salesforce")
    with pytest.raises(OutboundFailed, match="answered 500 without the Ack"):
        fake.open_case(None, "Refund", supplied_email="ann.example@example.com")
    assert requests.get(fake.url + "/agent", timeout=5).text.count("<h2>Case ") == 1


def test_agent_view_lists_cases_newest_first_and_escapes_markup(
    fake: FakeSalesforce, sf: Salesforce
) -> None:
    """GET / shows each case with its contact, origin, status and comments, all escaped."""
    contact_id, refund = _case_with_contact(fake)
    fake.add_case("Opened <b>Monday</b> & co", contact_id, origin="Web", at=MONDAY)
    fake.update_case(refund, Description="Line 1\n<i>Line 2</i>")
    sf.CaseComment.create(
        {"ParentId": refund, "CommentBody": "Public <reply>", "IsPublished": True}
    )
    sf.CaseComment.create({"ParentId": refund, "CommentBody": "Seen before:\n<ok>"})
    logged = len(fake.requests_log)
    page = requests.get(fake.url + "/", timeout=5)
    assert page.status_code == 200
    assert page.headers["Content-Type"] == "text/html; charset=utf-8"
    text = page.text
    assert "<b>" not in text and "<i>" not in text and "<ok>" not in text
    assert "Opened &lt;b&gt;Monday&lt;/b&gt; &amp; co" in text
    assert text.index("Refund not received") < text.index("Opened &lt;b&gt;Monday")
    assert "Ann Example · Phone · New · " in text
    assert "<pre>Line 1\n&lt;i&gt;Line 2&lt;/i&gt;</pre>" in text
    public, private = text.index("Public &lt;reply&gt;"), text.index("Seen before:")
    assert public < private
    assert text.rindex("private comment (internal)", 0, private) > public
    assert "<pre>Seen before:\n&lt;ok&gt;</pre>" in text
    assert len(fake.requests_log) == logged
