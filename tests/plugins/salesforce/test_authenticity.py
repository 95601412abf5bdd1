"""Salesforce authenticity: what proves an Outbound Message, and what an unproven one can do.

Outbound Messages are unsigned and the org id is no secret. A message is proven by a
SessionId the org's API accepts, by its source network, or by a client certificate a
trusted proxy checked; one proven by none is read back from the API record by record.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import responses
from flask.testing import FlaskClient
from sqlalchemy import func, select

from devkit.simulators.salesforce import FakeSalesforce
from middleware.errors import PermanentUpstreamError
from middleware.installation import Installation, build_installation
from middleware.process.worker import Worker
from middleware.store.tables import deliveries, identities, interactions
from middleware.web.app import create_app
from plugins.salesforce.client import SalesforceClient
from plugins.salesforce.outbound import ACK
from tests.actions import ConfigFactory
from tests.payloads import salesforce_fixture

SESSION = "00D000000000001!AQ.fixed.session.for.tests"
VICTIM_EMAIL = "ann.example@example.com"
ATTACKER_PHONE = "+14155550177"


@pytest.fixture
def fake() -> Iterator[FakeSalesforce]:
    """Serve a fake org whose API Carryover logs in to with a fixed session."""
    with FakeSalesforce(session_id=SESSION) as running:
        yield running


@pytest.fixture
def installed(
    database_url: str, fake: FakeSalesforce, make_config: ConfigFactory
) -> Iterator[Callable[..., FlaskClient]]:
    """Build Carryover with Salesforce options over the defaults of an unproven setup."""
    built: list[Installation] = []

    def install(**options: Any) -> FlaskClient:
        top = options.pop("top", {})
        settings = {"organization_id": fake.org_id, "instance_url": fake.url,
                    "session_id": SESSION, "allowed_networks": [], **options}  # fmt: skip
        core = build_installation(make_config(database_url, salesforce=settings, **top))
        built.append(core)
        client = create_app(core=core).test_client()
        client.core = core  # type: ignore[attr-defined]
        return client

    yield install
    for core in built:
        core.dispose()


def stored(client: FlaskClient) -> list[Any]:
    with client.core.engine.connect() as conn:  # type: ignore[attr-defined]
        return conn.execute(select(deliveries)).all()


def linked(client: FlaskClient) -> set[tuple[str, str]]:
    with client.core.engine.connect() as conn:  # type: ignore[attr-defined]
        return {(r.type, r.value) for r in conn.execute(select(identities))}


def drain(client: FlaskClient) -> None:
    Worker(client.core, name="w").drain()  # type: ignore[attr-defined]


def contact_message(fake: FakeSalesforce, contact_id: str, session: str | None = None) -> bytes:
    """A Contact notification naming the victim's email with the attacker's phone."""
    fields = {"Id": contact_id, "Name": "Ann Example", "Email": VICTIM_EMAIL,
              "Phone": ATTACKER_PHONE}  # fmt: skip
    return fake.outbound_message([("Contact", fields)], session_id=session)


def proof_of(client: FlaskClient) -> str:
    [row] = stored(client)
    return str(json.loads(row.headers)["x-carryover-proof"])


# -- an unproven message is only a ping ------------------------------------------------------


def test_a_forged_contact_message_links_nobody(installed, fake, hooks_for):
    """A Contact the org does not have links nothing, whatever the message says."""
    client = installed()
    body = contact_message(fake, "0035g00000ZZZZZAAA")
    response = hooks_for(client).salesforce(body)
    assert response.status_code == 200 and response.data == ACK
    assert proof_of(client) == "unverified"
    drain(client)
    assert linked(client) == set()
    [row] = stored(client)
    assert "not found upstream" in row.trail


def test_a_forged_message_about_a_real_contact_links_only_what_the_api_says(
    installed, fake, hooks_for
):
    """The attacker's phone in a message about a real contact is never linked to her."""
    contact_id = fake.add_contact("Ann", "Example", email=VICTIM_EMAIL, phone="+14155550142")
    client = installed()
    hooks_for(client).salesforce(contact_message(fake, contact_id))
    drain(client)
    found = linked(client)
    assert ("email", VICTIM_EMAIL) in found and ("phone", "+14155550142") in found
    assert ("phone", ATTACKER_PHONE) not in found


def test_an_unproven_case_is_taken_as_the_api_has_it(installed, fake, hooks_for):
    """A case notification's subject and contact come from the API, not from the message."""
    contact_id = fake.add_contact("Ann", "Example", email=VICTIM_EMAIL)
    case_id = fake.add_case("Refund not received", contact_id, "Phone")
    forged = {**fake.case_fields(case_id), "Subject": "Call +1 555 0177 now", "ContactId": None,
              "SuppliedPhone": ATTACKER_PHONE}  # fmt: skip
    client = installed()
    hooks_for(client).salesforce(fake.outbound_message([("Case", forged)]))
    drain(client)
    with client.core.engine.connect() as conn:  # type: ignore[attr-defined]
        [case] = conn.execute(select(interactions).where(interactions.c.kind == "case")).all()
    assert case.subject == "Refund not received"
    assert case.link == f"{fake.url}/{case_id}"
    assert ("phone", ATTACKER_PHONE) not in linked(client)
    assert ("email", VICTIM_EMAIL) in linked(client)


def test_require_verified_refuses_an_unproven_message(installed, fake, hooks_for):
    """With require_verified, a message nothing proves gets a SOAP Fault and is not stored."""
    client = installed(require_verified=True)
    response = hooks_for(client).salesforce(contact_message(fake, "0035g00000ZZZZZAAA"))
    assert response.status_code == 401 and b"faultcode" in response.data
    assert stored(client) == []


# -- the session the message carries ---------------------------------------------------------


def test_a_working_session_of_the_org_proves_the_message_and_is_never_stored(
    installed, fake, hooks_for
):
    """A SessionId the org's API accepts proves the sender; the stored body has no session."""
    session = fake.new_session()
    client = installed()
    contact_id = "0035g00000YYYYYAAA"  # not in the org: a proven message is taken as sent
    response = hooks_for(client).salesforce(contact_message(fake, contact_id, session))
    assert response.data == ACK
    assert proof_of(client) == "session id"
    assert session.encode() not in bytes(stored(client)[0].body)
    drain(client)
    assert ("phone", ATTACKER_PHONE) in linked(client)


def test_a_session_the_org_does_not_know_is_refused(installed, fake, hooks_for):
    """A made-up SessionId gets 401 with a SOAP Fault, and nothing is stored."""
    client = installed()
    body = contact_message(fake, "0035g00000ZZZZZAAA", "00D000000000001!AQ.made.up")
    response = hooks_for(client).salesforce(body)
    assert response.status_code == 401
    assert b"soapenv:Client" in response.data and b"SessionId" in response.data
    assert stored(client) == []


def test_a_session_is_checked_once_and_then_remembered(installed, fake, hooks_for):
    """Two messages with one session cost one call to the org's API."""
    session = fake.new_session()
    client = installed()
    for contact in ("0035g00000YYYYYAAA", "0035g00000XXXXXAAA"):
        assert hooks_for(client).salesforce(contact_message(fake, contact, session)).data == ACK
    checks = [r for r in fake.requests_log if "Organization" in r[1]]
    assert len(checks) == 1


def test_a_session_cannot_be_checked_while_salesforce_is_down_so_it_is_retried(
    installed, fake, hooks_for
):
    """The org's API unreachable: 503 with Retry-After (Salesforce retries), nothing stored."""
    client = installed(instance_url="http://127.0.0.1:9")
    response = hooks_for(client).salesforce(contact_message(fake, "0035g00000YYYYYAAA", "00D!AQ.x"))
    assert response.status_code == 503 and response.headers["Retry-After"]
    assert stored(client) == []


def test_the_session_is_checked_at_the_configured_instance_never_the_messages(
    installed, fake, hooks_for
):
    """A PartnerUrl pointing elsewhere is never called with the session."""
    client = installed()
    body = contact_message(fake, "0035g00000YYYYYAAA", fake.new_session())
    body = body.replace(fake.url.encode(), b"http://127.0.0.1:9")
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.add_passthru(fake.url)
        assert hooks_for(client).salesforce(body).data == ACK
        assert all(call.request.url.startswith(fake.url) for call in mock.calls)


# -- networks and client certificates --------------------------------------------------------


def test_allowed_networks_refuse_any_other_source(installed, fake, hooks_for):
    """A message from outside allowed_networks gets 401 and is not stored."""
    client = installed(allowed_networks=["13.108.0.0/14"])
    response = hooks_for(client).salesforce(contact_message(fake, "0035g00000ZZZZZAAA"))
    assert response.status_code == 401 and b"allowed_networks" in response.data
    assert stored(client) == []


@pytest.mark.parametrize(
    ("trusted", "forwarded", "accepted"),
    [
        (["127.0.0.1"], "13.108.1.1", True),  # the proxy says Salesforce sent it
        (["127.0.0.1"], "13.108.1.1, 10.9.9.9", False),  # the last hop outside is 10.9.9.9
        ([], "13.108.1.1", False),  # no trusted proxy: the header is not believed
        (["10.0.0.1"], "13.108.1.1", False),  # the peer is not the trusted proxy
    ],
)
def test_the_source_address_comes_from_trusted_proxies_only(
    installed, fake, trusted, forwarded, accepted
):
    """X-Forwarded-For is believed only from trusted_proxies, read from the right."""
    client = installed(allowed_networks=["13.108.0.0/14"], top={"trusted_proxies": trusted})
    body = contact_message(fake, "0035g00000ZZZZZAAA")
    response = client.post(
        "/hooks/salesforce", data=body,
        headers={"Content-Type": "text/xml", "X-Forwarded-For": forwarded},
    )  # fmt: skip
    assert (response.status_code == 200) is accepted
    if accepted:
        assert proof_of(client) == "source network"


def test_a_client_certificate_the_proxy_checked_proves_the_message(installed, fake):
    """The proxy's header proves the sender; without it the message is refused."""
    client = installed(client_cert_header="X-Client-Verify",
                       top={"trusted_proxies": ["127.0.0.1"]})  # fmt: skip
    body = contact_message(fake, "0035g00000ZZZZZAAA")
    refused = client.post("/hooks/salesforce", data=body, headers={"Content-Type": "text/xml"})
    assert refused.status_code == 401
    headers = {"Content-Type": "text/xml", "X-Client-Verify": "SUCCESS"}
    assert client.post("/hooks/salesforce", data=body, headers=headers).data == ACK
    assert proof_of(client) == "client certificate"


def test_the_certificate_header_is_not_believed_from_anyone_but_a_trusted_proxy(installed, fake):
    """A sender that sets the header itself, past no trusted proxy, is refused."""
    client = installed(client_cert_header="X-Client-Verify",
                       top={"trusted_proxies": ["10.0.0.1"]})  # fmt: skip
    headers = {"Content-Type": "text/xml", "X-Client-Verify": "SUCCESS"}
    body = contact_message(fake, "0035g00000ZZZZZAAA")
    assert client.post("/hooks/salesforce", data=body, headers=headers).status_code == 401


def test_a_certificate_header_without_trusted_proxies_is_a_configuration_error(
    database_url, fake, make_config
):
    """client_cert_header needs trusted_proxies: the start stops naming both."""
    from middleware.config import ConfigError

    options = {"organization_id": fake.org_id, "instance_url": fake.url, "session_id": SESSION,
               "client_cert_header": "X-Client-Verify"}  # fmt: skip
    with pytest.raises(ConfigError, match="trusted_proxies"):
        build_installation(make_config(database_url, salesforce=options))


# -- ids never go into a URL unchecked --------------------------------------------------------


@pytest.mark.parametrize(
    "contact_id",
    ["http://127.0.0.1:9/x", "//evil.example/x", "../../../../services/data/v59.0/sobjects/User/"
     "005000000000001", "0037000000xicp7AAA/../../x", "0037000000xicp7AAA?q=1"],
)  # fmt: skip
def test_an_id_that_is_not_a_salesforce_id_is_refused_at_the_door(installed, contact_id, hooks_for):
    """A notification whose ContactId is a URL or a path is refused with 400, not stored."""
    client = installed(allowed_networks=["127.0.0.1"], organization_id="00D70000000IVNp")
    body = salesforce_fixture("case_created.xml").replace(
        b"<sf:ContactId>0037000000xicp7AAA</sf:ContactId>",
        f"<sf:ContactId>{contact_id}</sf:ContactId>".encode(),
    )
    response = hooks_for(client).salesforce(body)
    assert response.status_code == 400 and "ContactId" in response.get_json()["error"]
    assert stored(client) == []


@pytest.mark.parametrize("record_id", ["http://127.0.0.1:9/x", "//h/x", "../User/005", "", "a b"])
def test_the_client_never_builds_a_url_from_a_bad_id(record_id):
    """Every client call refuses a bad id before any request is sent."""
    client = SalesforceClient({
        "instance_url": "https://acme.my.salesforce.com", "session_id": "s", "timeout_s": 1.0,
        "limit_backoff_s": 1.0, "api_version": "59.0", "login_url": "https://login.salesforce.com",
    })  # fmt: skip
    with responses.RequestsMock() as mock:  # any request would fail the test
        for call in (lambda: client.contact(record_id),
                     lambda: client.record("Case", record_id),
                     lambda: client.add_case_comment(record_id, "note"),
                     lambda: client.case_comment_bodies(record_id)):  # fmt: skip
            with pytest.raises(PermanentUpstreamError):
                call()
        assert len(mock.calls) == 0


def test_nothing_half_stored_when_one_notification_of_a_batch_is_bad(installed, fake, hooks_for):
    """A batch with one bad id is refused whole: no delivery, no key."""
    client = installed(allowed_networks=["127.0.0.1"])
    good = fake.case_fields(fake.add_case("Refund", None, "Phone"))
    bad = {**good, "Id": "javascript:alert(1)"}
    response = hooks_for(client).salesforce(fake.outbound_message([("Case", good), ("Case", bad)]))
    assert response.status_code == 400
    with client.core.engine.connect() as conn:  # type: ignore[attr-defined]
        assert conn.execute(select(func.count()).select_from(deliveries)).scalar() == 0
