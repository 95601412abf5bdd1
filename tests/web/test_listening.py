"""Where `carryover serve` listens, and who a request comes from behind a reverse proxy."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from sqlalchemy import select

from middleware.admin.accounts import create_admin
from middleware.cli import main
from middleware.config import ConfigError, parse_config
from middleware.installation import build_installation
from middleware.store.tables import login_failures, reading, utcnow
from middleware.web.app import create_app
from tests.actions import AdminActions
from tests.payloads import cti_body, cti_headers
from tests.values import ADMIN_PASSWORD

PROXY = "10.1.2.3"  # the reverse proxy, as the peer Carryover sees
CLIENT = "203.0.113.9"  # the browser or sender behind it
OTHER_CLIENT = "203.0.113.10"
STRANGER = "198.51.100.7"  # a peer that is no trusted proxy


# -- server.host and server.port ----------------------------------------------------------------
@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Catch what `carryover serve` would serve with, instead of serving."""
    calls: list[dict[str, Any]] = []

    def serve(app: Any, settings: dict[str, Any], host: str, port: int) -> None:
        calls.append({"host": host, "port": port, "threads": settings["threads"]})

    monkeypatch.setattr("middleware.web.serving.serve", serve)
    return calls


def write_config(tmp_path, database_url: str, **server: Any) -> str:
    """Write a configuration with no worker and these server settings; return its path."""
    raw = {"database_url": database_url, "worker": {"enabled": False}, "server": server}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return str(path)


def test_serve_listens_where_the_configuration_says(tmp_path, database_url, served, capsys):
    """server.host, server.port and server.threads are what serve uses without options."""
    config = write_config(tmp_path, database_url, host="0.0.0.0", port=8181, threads=12)
    assert main(["serve", "--config", config]) == 0
    assert served == [{"host": "0.0.0.0", "port": 8181, "threads": 12}]
    assert "serving on http://0.0.0.0:8181" in capsys.readouterr().out


def test_the_defaults_are_this_machine_only_on_8080(tmp_path, database_url, served):
    """With no server section serve listens on 127.0.0.1:8080 with 40 threads."""
    assert main(["serve", "--config", write_config(tmp_path, database_url)]) == 0
    assert served == [{"host": "127.0.0.1", "port": 8080, "threads": 40}]


def test_options_override_the_configuration(tmp_path, database_url, served, capsys):
    """--host, --port and --threads win over the configuration; an IPv6 host is bracketed."""
    config = write_config(tmp_path, database_url, host="0.0.0.0", port=8181, threads=12)
    argv = ["serve", "--config", config, "--host", "::1", "--port", "9090", "--threads", "16"]
    assert main(argv) == 0
    assert served == [{"host": "::1", "port": 9090, "threads": 16}]
    assert "serving on http://[::1]:9090" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("option", "said"),
    [(["--port", "0"], "--port: expected a port from 1 to 65535, got 0"),
     (["--port", "70000"], "--port: expected a port from 1 to 65535"),
     (["--host", " "], "--host: expected an address or name to listen on"),
     (["--threads", "0"], "--threads: must be at least 1")],
)  # fmt: skip
def test_a_bad_option_is_refused_before_serving(
    tmp_path, database_url, served, capsys, option, said
):
    """A port out of range, a blank host or no thread ends the command with status 2."""
    assert main(["serve", "--config", write_config(tmp_path, database_url), *option]) == 2
    assert said in capsys.readouterr().err and served == []


@pytest.mark.parametrize(
    ("server", "said"),
    [({"port": 0}, "server.port: expected a port from 1 to 65535, got 0"),
     ({"port": 65536}, "server.port: expected a port from 1 to 65535"),
     ({"host": "http://example.com"}, "server.host: expected an address or name"),
     ({"port": "80"}, "server.port: expected int")],
)  # fmt: skip
def test_a_bad_listening_address_in_the_configuration_names_its_key(server, said):
    """The configuration is refused at load time, naming server.host or server.port."""
    with pytest.raises(ConfigError, match=said):
        parse_config({"server": server}, {})


# -- the client behind a trusted proxy ---------------------------------------------------------
@pytest.fixture
def behind_proxy(database_url, make_config):
    """Build an installation behind the proxy 10.0.0.0/8 that locks an address out after 2."""
    throttle = {"failed_logins_per_address": 2, "failed_logins_per_username": 100}
    core = build_installation(make_config(database_url, phone=True, admin=throttle,
                                          trusted_proxies=["10.0.0.0/8"]))  # fmt: skip
    create_admin(core.engine, "ada", ADMIN_PASSWORD)
    yield core
    core.dispose()


def wrong_login(core, peer: str, forwarded: str | None = None) -> int:
    """Try a wrong password from peer (saying X-Forwarded-For); return the status."""
    client = create_app(core=core).test_client()
    headers = {"X-Forwarded-For": forwarded} if forwarded else {}
    client.environ_base.update(REMOTE_ADDR=peer)
    token = AdminActions.csrf(client.get("/admin/login", headers=headers).data)
    form = {"username": "ada", "password": "not the password", "csrf_token": token}
    return client.post("/admin/login", data=form, headers=headers).status_code


def failed_addresses(core) -> list[str]:
    with reading(core.engine) as conn:
        return list(conn.execute(select(login_failures.c.remote_addr)).scalars())


def test_the_login_lockout_counts_the_client_behind_a_trusted_proxy(behind_proxy):
    """Through a trusted proxy, one client's failures lock that client out, not the proxy."""
    assert [wrong_login(behind_proxy, PROXY, CLIENT) for _ in range(3)] == [401, 401, 429]
    assert wrong_login(behind_proxy, PROXY, OTHER_CLIENT) == 401  # another client of the proxy
    assert wrong_login(behind_proxy, PROXY, f"{OTHER_CLIENT}, 10.9.9.9") == 401  # two proxies
    assert set(failed_addresses(behind_proxy)) == {CLIENT, OTHER_CLIENT}


def test_the_login_lockout_ignores_what_an_untrusted_peer_forwards(behind_proxy):
    """A peer that is no trusted proxy cannot dodge the lockout by making up X-Forwarded-For."""
    statuses = [wrong_login(behind_proxy, STRANGER, f"192.0.2.{n}") for n in range(3)]
    assert statuses == [401, 401, 429]
    assert set(failed_addresses(behind_proxy)) == {STRANGER}


@pytest.mark.parametrize(
    ("peer", "forwarded", "recorded"),
    [(PROXY, CLIENT, CLIENT), (PROXY, f"{CLIENT}, 10.4.4.4", CLIENT),
     (STRANGER, CLIENT, STRANGER), (PROXY, "not-an-address", PROXY)],
)  # fmt: skip
def test_a_refused_webhook_is_recorded_from_the_client_a_trusted_proxy_names(
    behind_proxy, peer, forwarded, recorded
):
    """The refusal log shows the client behind a trusted proxy, else the peer itself."""
    from middleware.ingest.refusals import refusal_reports

    client = create_app(core=behind_proxy).test_client()
    body = cti_body("newCall.json")
    headers = {**cti_headers(body, secret="whsec_" + "B" * 32), "X-Forwarded-For": forwarded}
    response = client.post("/hooks/cti", data=body, headers=headers,
                           environ_base={"REMOTE_ADDR": peer})  # fmt: skip
    assert response.status_code == 401
    behind_proxy.refusals.flush()
    with reading(behind_proxy.engine) as conn:
        report = refusal_reports(conn, {}, utcnow())["cti"]
    assert [r.address for r in report.recent] == [recorded]
