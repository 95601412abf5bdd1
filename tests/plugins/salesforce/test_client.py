"""The Salesforce client against a fake org: every login, renewed sessions, base URLs."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from devkit.simulators.salesforce import FakeSalesforce
from middleware.config import validate_section
from middleware.errors import UpstreamError
from plugins.salesforce import SalesforcePlugin
from plugins.salesforce.client import SalesforceClient, SalesforceSession, login_domain


def private_key_pem() -> tuple[str, bytes]:
    """Return a fresh RSA key as PEM, and its public half."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public


KEY, PUBLIC_KEY = private_key_pem()


@pytest.fixture
def fake() -> Iterator[FakeSalesforce]:
    """Serve a fake org with one contact, whose JWT bearer logins verify with PUBLIC_KEY."""
    with FakeSalesforce(jwt_public_key=PUBLIC_KEY) as org:
        yield org


def client_for(fake: FakeSalesforce, **login: Any) -> SalesforceClient:
    """Build a client for the fake org from validated settings plus one login."""
    raw = {"organization_id": fake.org_id, "login_url": fake.url, "timeout_s": 5, **login}
    return SalesforceClient(validate_section("salesforce", raw, SalesforcePlugin.settings))


def logins(fake: FakeSalesforce) -> dict[str, dict[str, Any]]:
    """Return the three ways to log in to the fake org."""
    return {
        "password": {"username": fake.username, "password": fake.password,
                     "security_token": fake.security_token},
        "jwt": {"username": fake.username, "consumer_key": fake.consumer_key, "private_key": KEY},
        "session": {"session_id": fake.new_session(), "instance_url": fake.url},
    }  # fmt: skip


@pytest.mark.parametrize("login", ["password", "jwt", "session"])
def test_every_login_reads_contacts_and_writes_private_comments(fake, login):
    """Session id, username/password and JWT bearer all reach the REST API at an http:// URL."""
    contact = fake.add_contact("Ann", "Lee", email="ann.lee@example.com", phone="(415) 555-0142")
    case = fake.add_case("Refund not received", contact, origin="Phone")
    client = client_for(fake, **logins(fake)[login])

    assert client.contact(contact)["Email"] == "ann.lee@example.com"
    assert client.contact(contact[:15])["Name"] == "Ann Lee"
    client.add_case_comment(case, "Seen before on email.\n\n[Carryover ref co-1-summary]")
    [comment] = fake.comments(case)
    assert comment["IsPublished"] is False
    assert client.case_comment_bodies(case) == [comment["CommentBody"]]
    assert client.session.usage is not None and client.session.usage.allowed == 15000


@pytest.mark.parametrize("login", ["password", "jwt"])
def test_an_expired_session_is_renewed_by_logging_in_again(fake, login):
    """When Salesforce answers INVALID_SESSION_ID, the client logs in once more and goes on."""
    contact = fake.add_contact("Ann", "Lee", email="ann.lee@example.com")
    client = client_for(fake, **logins(fake)[login])
    client.contact(contact)
    assert fake.logins == 1
    fake.expire_sessions()
    assert client.contact(contact)["Email"] == "ann.lee@example.com"
    assert fake.logins == 2


def test_a_session_id_that_expired_is_an_error_that_says_what_to_do(fake):
    """A configured session_id cannot be renewed: the error names the fix."""
    client = client_for(fake, **logins(fake)["session"])
    fake.expire_sessions()
    with pytest.raises(UpstreamError, match="set a fresh one"):
        client.contact(fake.add_contact("Ann", "Lee"))


def test_a_wrong_password_is_a_login_error_retried_later(fake):
    """INVALID_LOGIN becomes an UpstreamError (retried with backoff), not a crash."""
    client = client_for(fake, username=fake.username, password="wrong", security_token="x")
    with pytest.raises(UpstreamError, match="login failed.*INVALID_LOGIN"):
        client.contact(fake.add_contact("Ann", "Lee"))


def test_a_deleted_contact_is_no_contact(fake):
    """A ContactId that no longer exists enriches nothing instead of failing the delivery."""
    client = client_for(fake, **logins(fake)["session"])
    assert client.contact("0035g00000AbCdEAAA") == {}


def test_login_urls_on_salesforce_are_used_as_domains_and_others_through_a_placeholder():
    """login, test and My Domain hosts are simple-salesforce domains; anything else is rebased."""
    assert login_domain("https://login.salesforce.com") == ("login", None)
    assert login_domain("https://test.salesforce.com/") == ("test", None)
    assert login_domain("https://acme.my.salesforce.com") == ("acme.my", None)
    assert login_domain("http://127.0.0.1:8302") == ("carryover-login", "http://127.0.0.1:8302")
    assert login_domain("https://sso.example.com") == ("carryover-login", "https://sso.example.com")


def test_the_session_sends_https_urls_to_configured_http_bases_only():
    """An http:// base is reached over http; every other URL is left exactly as built."""
    session = SalesforceSession(
        {"https://127.0.0.1:8302": "http://127.0.0.1:8302"}, timeout=1, limit_backoff_s=1
    )
    assert session.rebased("https://127.0.0.1:8302/services/data/v59.0/query/?q=x") == (
        "http://127.0.0.1:8302/services/data/v59.0/query/?q=x"
    )
    assert session.rebased("https://127.0.0.1:83020/x") == "https://127.0.0.1:83020/x"
    assert session.rebased("https://acme.my.salesforce.com/x") == "https://acme.my.salesforce.com/x"


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """Write a self-signed certificate for 127.0.0.1 and its key; return their paths."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "carryover test org")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(IPv4Address("127.0.0.1"))]), critical=False
        )  # fmt: skip
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "org.pem", directory / "org.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )  # fmt: skip
    )
    return cert_path, key_path


def test_https_instance_urls_trust_the_ca_bundle_given_in_requests_ca_bundle(tmp_path, monkeypatch):
    """An org behind a private CA is reached when REQUESTS_CA_BUNDLE names it, refused if not."""
    cert, key = self_signed_certificate(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    with FakeSalesforce(ssl_context=context) as fake:
        assert fake.url.startswith("https://127.0.0.1:")
        contact = fake.add_contact("Ann", "Lee", email="ann.lee@example.com")
        login = {"session_id": fake.new_session(), "instance_url": fake.url}

        monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
        monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
        with pytest.raises(UpstreamError, match="unreachable.*CERTIFICATE_VERIFY_FAILED"):
            client_for(fake, **login).contact(contact)

        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert))
        assert client_for(fake, **login).contact(contact)["Email"] == "ann.lee@example.com"


def test_the_connection_test_logs_in_and_names_the_instance(fake):
    """whoami() logs in, makes one REST call and names where it answered."""
    client = client_for(fake, **logins(fake)["password"])
    assert client.whoami() == f"{fake.url.split('//')[1]}, API v59.0"
