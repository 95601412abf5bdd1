"""Whom integrations may call: http(s) only, never link-local or metadata, private on request."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator

import pytest
import responses
from flask.testing import FlaskClient

from middleware.admin.accounts import create_admin
from middleware.config import ConfigError
from middleware.errors import PermanentUpstreamError
from middleware.installation import Installation, build_installation
from middleware.integrations.network import (
    UpstreamGuard,
    UpstreamRefused,
    check_url,
    client_address,
)
from middleware.integrations.network import parse_networks as networks
from middleware.web.app import create_app
from plugins.zendesk.client import ZendeskClient
from tests.actions import AdminActions, ConfigFactory
from tests.values import ADMIN_PASSWORD, ZENDESK_EMAIL, ZENDESK_SECRET, ZENDESK_TOKEN

SECRET_BODY = "root:x:0:0:the upstream's own secret page"


@pytest.fixture
def installed(make_config: ConfigFactory) -> Callable[..., Installation]:
    """Return the factory of installations that allow, or not, private upstreams."""

    def build(database_url: str, allow_private: bool) -> Installation:
        return build_installation(make_config(database_url, allow_private_upstreams=allow_private))

    return build


@pytest.fixture
def browser(
    database_url: str, admin_for: type[AdminActions], installed: Callable[..., Installation]
) -> Iterator[FlaskClient]:
    """A logged-in admin of an installation that does not allow private upstreams."""
    core = installed(database_url, allow_private=False)
    client = create_app(core=core).test_client()
    create_admin(core.engine, "ada", ADMIN_PASSWORD)
    admin_for(client).log_in()
    client.core = core  # type: ignore[attr-defined]
    yield client
    core.dispose()


def connect_zendesk(client: FlaskClient, url: str, **extra: str):
    token = AdminActions.csrf(client.get("/admin/integrations/zendesk").data)
    form = {"url": url, "email": ZENDESK_EMAIL, "api_token": ZENDESK_TOKEN,
            "webhook_secret": ZENDESK_SECRET, "csrf_token": token, **extra}  # fmt: skip
    return client.post("/admin/integrations/zendesk", data=form)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://acme.zendesk.com", "only http:// and https:// URLs can be called"),
        ("file:///etc/passwd", "only http:// and https:// URLs can be called"),
        ("gopher://acme.zendesk.com", "only http:// and https:// URLs can be called"),
        ("acme.zendesk.com", "lacks its scheme: write https://acme.zendesk.com"),
        ("https://user:pw@acme.zendesk.com", "Credentials do not belong in the URL"),
        ("http://169.254.169.254/latest/meta-data", "link-local"),
        ("http://[fe80::1]/", "link-local"),
        ("http://[::ffff:169.254.169.254]/", "link-local"),
        ("http://[fd00:ec2::254]/", "metadata"),
        ("http://metadata.google.internal/computeMetadata/v1", "metadata"),
        ("http://100.100.100.200/", "metadata"),
        ("http://127.0.0.1:8080", "loopback"),
        ("http://10.0.0.8", "private"),
        ("http://192.168.1.1", "private"),
        ("http://0.0.0.0:80", "not an address of a server"),
    ],
)
def test_the_admin_ui_refuses_urls_carryover_may_not_call(browser, url, reason):
    """Each refused URL gets the form back with the reason, and nothing is connected."""
    response = connect_zendesk(browser, url)
    assert response.status_code == 400
    assert reason in response.data.decode()
    assert browser.core.registry.get("zendesk") is None  # type: ignore[attr-defined]


def test_private_addresses_are_allowed_when_the_operator_allows_them(database_url):
    """allow_private_upstreams lets loopback and private URLs through, never link-local."""
    check_url("http://127.0.0.1:8080", True, "url")
    check_url("http://10.0.0.8", True, "url")
    with pytest.raises(UpstreamRefused, match="link-local"):
        check_url("http://169.254.169.254", True, "url")


def test_a_file_configuration_with_a_metadata_url_does_not_start(database_url, make_config):
    """The configuration file is held to the same policy: the start stops, naming the key."""
    with pytest.raises(ConfigError, match="integrations.zendesk.url"):
        build_installation(make_config(database_url, "http://169.254.169.254"))


def test_a_name_that_resolves_to_a_forbidden_address_is_refused_at_call_time(monkeypatch):
    """DNS that answers a link-local address stops the call before it is made."""

    def resolve(host, *args, **kwargs):
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("169.254.169.254", 0))]

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    client = ZendeskClient("https://acme.zendesk.com", ZENDESK_EMAIL, ZENDESK_TOKEN, 1.0,
                           UpstreamGuard(allow_private=False))  # fmt: skip
    with responses.RequestsMock() as mock:  # any request would fail the test
        with pytest.raises(PermanentUpstreamError, match="169.254.169.254"):
            client.whoami()
        assert len(mock.calls) == 0


def test_redirects_are_not_followed():
    """A 302 toward another host is an error, not a second request."""
    client = ZendeskClient("https://acme.zendesk.com", ZENDESK_EMAIL, ZENDESK_TOKEN, 1.0,
                           UpstreamGuard(allow_private=True))  # fmt: skip
    with responses.RequestsMock() as mock:
        mock.get("https://acme.zendesk.com/api/v2/users/me.json", status=302,
                 headers={"Location": "http://169.254.169.254/latest/meta-data"})  # fmt: skip
        with pytest.raises(Exception):  # noqa: B017 - any refusal; what matters is one call
            client.whoami()
        assert len(mock.calls) == 1  # the Location was never asked for


def test_the_connection_test_shows_only_the_status_never_the_body(
    database_url, make_config, admin_for
):
    """An upstream that answers with its own page is reported by status and error name only."""
    core = build_installation(make_config(database_url, "https://acme.zendesk.com"))
    try:
        client = create_app(core=core).test_client()
        create_admin(core.engine, "ada", ADMIN_PASSWORD)
        admin_for(client).log_in()
        token = admin_for.csrf(client.get("/admin/integrations/zendesk").data)
        with responses.RequestsMock() as mock:
            mock.get("https://acme.zendesk.com/api/v2/users/me.json", status=403,
                     json={"error": "Forbidden", "description": SECRET_BODY})  # fmt: skip
            page = client.post("/admin/integrations/zendesk/test", data={"csrf_token": token},
                               follow_redirects=True).data.decode()  # fmt: skip
        assert "Zendesk answered 403 (Forbidden)" in page
        assert "root:x" not in page and "secret page" not in page
    finally:
        core.dispose()


def test_a_private_key_file_cannot_be_set_from_the_browser(browser, admin_for):
    """private_key_file is for the configuration file only: the form cannot set it."""
    token = admin_for.csrf(browser.get("/admin/integrations/salesforce").data)
    form = {"csrf_token": token, "organization_id": "00D70000000IVNp",
            "username": "carryover@example.com", "consumer_key": "3MVG9",
            "private_key_file": "/etc/shadow"}  # fmt: skip
    response = browser.post("/admin/integrations/salesforce", data=form)
    assert response.status_code == 400
    assert "private_key" in response.data.decode()
    assert browser.core.registry.get("salesforce") is None  # type: ignore[attr-defined]
    page = browser.get("/admin/integrations/salesforce").data.decode()
    assert "in the configuration file only" in page


def test_a_private_key_file_from_the_form_is_refused_even_when_forced(database_url, installed):
    """Settings saved around the form with private_key_file are refused by the check."""
    core = installed(database_url, allow_private=False)
    try:
        settings = {"organization_id": "00D70000000IVNp", "username": "u@example.com",
                    "consumer_key": "k", "private_key_file": "/etc/shadow"}  # fmt: skip
        with pytest.raises(ConfigError, match="configuration file only"):
            core.integrations.connect("salesforce", settings, "ada")
    finally:
        core.dispose()


@pytest.mark.parametrize(
    ("peer", "forwarded", "trusted", "expected"),
    [
        ("127.0.0.1", "203.0.113.7", [], "127.0.0.1"),
        ("127.0.0.1", "203.0.113.7", ["127.0.0.1"], "203.0.113.7"),
        ("127.0.0.1", "198.51.100.1, 203.0.113.7", ["127.0.0.1"], "203.0.113.7"),
        ("127.0.0.1", "198.51.100.1, 10.0.0.2", ["127.0.0.1", "10.0.0.0/8"], "198.51.100.1"),
        ("127.0.0.1", "junk, 203.0.113.7", ["127.0.0.1", "203.0.113.0/24"], "203.0.113.7"),
        ("203.0.113.9", "198.51.100.1", ["127.0.0.1"], "203.0.113.9"),
    ],
)
def test_the_client_address_comes_from_trusted_proxies_only(peer, forwarded, trusted, expected):
    """X-Forwarded-For is read from the right, and believed only as far as trusted hops go."""
    assert client_address(peer, forwarded, networks(trusted, "t")) == expected
