"""The wheel: built from the checkout, installed alone, it migrates and serves every integration.

One wheel and one fresh virtual environment serve the module. The environment's path holds a
"%" (as some install paths do), and every command runs from a folder without the checkout,
so nothing can be read from the source tree by accident.
"""

from __future__ import annotations

import ast
import base64
import hashlib
import hmac
import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from urllib.parse import parse_qsl

import pytest
import requests
import yaml
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "plugins"
INDEX = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple/")
# Not the product's: the shipped wheel must hold none of these.
DEVELOPMENT = ("devkit", "tests", "bench")
SHIPPED = ("mappings", "middleware", "plugins", "webui")
# Left out of the copy the wheel is built from: local state, never part of a build.
NOT_COPIED = {".git", ".venv", "var", "build", "dist", "config.yaml"}
# The files the running service reads besides modules.
RUNTIME_FILES = (
    "mappings/*.yaml",
    "middleware/store/migrations/**/*.py",
    "middleware/store/migrations/script.py.mako",
    "middleware/*/templates/*.j2",
    "plugins/*/templates/*.j2",  # a plugin's own note templates, where it has some
    "plugins/*/fixtures/*.*",  # the admin's mapping preview
    "plugins/*/fixtures/history/*.json",  # pages of past records, in the preview too
    "webui/templates/**/*.html",
    "webui/static/**/*",  # the admin's styles and scripts, the editor's vendored files too
)
MAY_BE_NONE = {"plugins/*/templates/*.j2"}
PLUGINS = ("cti", "salesforce", "sipgate", "twilio", "zendesk")
ZENDESK_SECRET = "wheel-zendesk-webhook-secret"
TWILIO_TOKEN = "wheel-twilio-auth-token"
CTI_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SF_ORG = "00D70000000IVNp"  # the org of the Salesforce fixtures
COMMAND_S = 600  # installing the dependencies of a fresh environment can take minutes


# -- building and installing ---------------------------------------------------------------------
def free_port() -> int:
    """Return a port free on the loopback interface right now (closed once returned)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run(command: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run a command outside the checkout, its output kept for the assertion's message."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "CARRYOVER_CONFIG")}  # fmt: skip
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=COMMAND_S, check=False)  # fmt: skip


def succeeded(result: subprocess.CompletedProcess[str]) -> bool:
    """Tell whether a command exited 0; its output goes to the report when it did not."""
    if result.returncode:
        print(" ".join(result.args), result.stdout, result.stderr, sep="\n")
    return result.returncode == 0


def index_unreachable() -> str | None:
    """Return why the package index cannot be reached, or None when it answers."""
    try:
        with urllib.request.urlopen(INDEX.rstrip("/") + "/pip/", timeout=15):
            return None
    except (urllib.error.URLError, OSError) as exc:
        return f"the package index is unreachable ({INDEX}): {exc}"


def ignore_local_state(folder: str, names: list[str]) -> set[str]:
    """Leave out what a checkout holds besides its files: caches, builds, the venv."""
    top = Path(folder) == ROOT
    return {n for n in names if n == "__pycache__" or n.endswith(".egg-info")
            or (top and (n in NOT_COPIED or n.startswith(".")))}  # fmt: skip


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build the wheel from a copy of the checkout, as a release would."""
    reason = index_unreachable()  # the build's own setuptools comes from the index
    if reason:
        pytest.skip(reason)
    base = tmp_path_factory.mktemp("wheel")
    source, out = base / "source", base / "dist"
    shutil.copytree(ROOT, source, ignore=ignore_local_state)
    if importlib.util.find_spec("build"):
        command = [sys.executable, "-m", "build", "--wheel", "--outdir", str(out), str(source)]
    else:
        command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet",
                   "--wheel-dir", str(out), str(source)]  # fmt: skip
    assert succeeded(run(command, base))
    (built,) = out.glob("carryover-*.whl")
    return built


@dataclass(frozen=True)
class Installed:
    """A fresh environment with the wheel installed, and a folder without the checkout."""

    bin: Path
    folder: Path

    def carryover(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run the installed `carryover` command in the folder."""
        return run([str(self.bin / "carryover"), *args], self.folder)


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """Install the wheel and its dependencies (from the index) into a new environment."""
    base = tmp_path_factory.mktemp("installed")
    venv, folder = base / "venv-100%", base / "work"
    folder.mkdir()
    assert succeeded(run([sys.executable, "-m", "venv", str(venv)], base))
    assert succeeded(run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet",
                          str(wheel)], base))  # fmt: skip
    return Installed(venv / "bin", folder)


def write_config(folder: Path, port: int) -> Path:
    """Configure every integration, their APIs at a closed port of this machine."""
    upstream = f"http://127.0.0.1:{free_port()}"
    config = {
        "public_url": f"http://127.0.0.1:{port}",  # what Twilio signs
        "database_url": f"sqlite:///{folder / 'var' / 'carryover.db'}",
        "allow_private_upstreams": True,
        "integrations": {
            "zendesk": {"url": upstream, "email": "bot@example.com", "api_token": "token",
                        "webhook_secret": ZENDESK_SECRET},
            "salesforce": {"organization_id": SF_ORG, "instance_url": upstream,
                           "session_id": f"{SF_ORG}!AQ4AQ.session", "timeout_s": 1,
                           "allowed_networks": ["127.0.0.1/32"]},
            "twilio": {"auth_token": TWILIO_TOKEN},
            "cti": {"secret": CTI_SECRET},
            "sipgate": {"public_key": sipgate_key().public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo,
            ).decode()},
        },
    }  # fmt: skip
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def served(installed: Installed) -> Iterator[str]:
    """Migrate with `carryover db upgrade`, then run `carryover serve`; yield its URL."""
    port = free_port()
    config = write_config(installed.folder, port)
    upgraded = installed.carryover("db", "upgrade", "--config", str(config))
    assert succeeded(upgraded) and "database created, at migration" in upgraded.stdout
    command = [str(installed.bin / "carryover"), "serve", "--config", str(config),
               "--port", str(port)]  # fmt: skip
    log = installed.folder / "serve.log"
    with log.open("wb") as output:
        server = subprocess.Popen(command, cwd=installed.folder, stdout=output,
                                  stderr=subprocess.STDOUT)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, server, log)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=15)


def wait_healthy(url: str, server: subprocess.Popen[bytes], log: Path) -> None:
    """Wait for /healthz, or fail with the server's log."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert server.poll() is None, f"carryover serve stopped:\n{log.read_text()}"
        try:
            if requests.get(f"{url}/healthz", timeout=1).json() == {"status": "ok"}:
                return
        except requests.ConnectionError:
            time.sleep(0.1)
    pytest.fail(f"carryover serve did not answer /healthz:\n{log.read_text()}")


# -- signing as each sender does, from the vendors' documented schemes --------------------------
def fixture(key: str, name: str) -> bytes:
    """Return a plugin's fixture exactly as stored."""
    return (FIXTURES / key / "fixtures" / name).read_bytes()


def zendesk_delivery(url: str) -> tuple[bytes, dict[str, str]]:
    """Sign a ticket.created event: base64(HMAC-SHA256(secret, timestamp + body))."""
    body = fixture("zendesk", "ticket_created.json")
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    digest = hmac.new(ZENDESK_SECRET.encode(), stamp.encode() + body, hashlib.sha256).digest()
    return body, {"Content-Type": "application/json",
                  "X-Zendesk-Webhook-Signature": base64.b64encode(digest).decode(),
                  "X-Zendesk-Webhook-Signature-Timestamp": stamp}  # fmt: skip


def salesforce_delivery(url: str) -> tuple[bytes, dict[str, str]]:
    """Send an Outbound Message as Salesforce does: unsigned, from an allowed network."""
    body = fixture("salesforce", "case_created.xml")
    return body, {"Content-Type": "text/xml; charset=utf-8", "SOAPAction": '""'}


def twilio_delivery(url: str) -> tuple[bytes, dict[str, str]]:
    """Sign a call's status callback: HMAC-SHA1 over the URL and the sorted parameters."""
    body = fixture("twilio", "call_started__ringing.form")
    params = sorted(parse_qsl(body.decode(), keep_blank_values=True))
    text = f"{url}/hooks/twilio" + "".join(name + value for name, value in params)
    digest = hmac.new(TWILIO_TOKEN.encode(), text.encode(), hashlib.sha1).digest()
    return body, {"Content-Type": "application/x-www-form-urlencoded",
                  "X-Twilio-Signature": base64.b64encode(digest).decode()}  # fmt: skip


def cti_delivery(url: str) -> tuple[bytes, dict[str, str]]:
    """Sign a newCall event as a Standard Webhooks sender: HMAC-SHA256 of id.timestamp.body."""
    body = fixture("cti", "newCall.json")
    webhook_id, stamp = f"msg_{uuid.uuid4().hex}", str(int(time.time()))
    key = base64.b64decode(CTI_SECRET.removeprefix("whsec_"))
    signed = f"{webhook_id}.{stamp}.".encode() + body
    signature = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return body, {"Content-Type": "application/json", "webhook-id": webhook_id,
                  "webhook-timestamp": stamp, "webhook-signature": f"v1,{signature}"}  # fmt: skip


@cache
def sipgate_key() -> rsa.RSAPrivateKey:
    """Return the key pair that signs in place of sipgate's (its public half is configured)."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def sipgate_delivery(url: str) -> tuple[bytes, dict[str, str]]:
    """Sign a newCall push as sipgate does: RSA-SHA256 (PKCS#1 v1.5) over the body."""
    body = fixture("sipgate", "newCall.form")
    signature = sipgate_key().sign(body, padding.PKCS1v15(), hashes.SHA256())
    return body, {"Content-Type": "application/x-www-form-urlencoded",
                  "X-Sipgate-Signature": base64.b64encode(signature).decode()}  # fmt: skip


def sipgate_ack(url: str) -> bytes:
    """Return the reply to a newCall: the URLs of its answer and hangup events."""
    hook = f"{url}/hooks/sipgate"
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n'
            f'<Response onAnswer="{hook}" onHangup="{hook}"/>').encode()  # fmt: skip


SOAP_ACK = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b'<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"'
    b' xmlns:xsd="http://www.w3.org/2001/XMLSchema"'
    b' xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">\n'
    b" <soapenv:Body>\n"
    b'  <notificationsResponse xmlns="http://soap.sforce.com/2005/09/outbound">\n'
    b"   <Ack>true</Ack>\n"
    b"  </notificationsResponse>\n"
    b" </soapenv:Body>\n"
    b"</soapenv:Envelope>\n"
)
# Each sender's delivery and the acknowledgement it takes as delivered (a function of the
# served URL where the reply names URLs).
Ack = bytes | Callable[[str], bytes]
DELIVERIES: dict[str, tuple[Callable[[str], tuple[bytes, dict[str, str]]], Ack, str]] = {
    "zendesk": (zendesk_delivery, b"{}", "application/json"),
    "salesforce": (salesforce_delivery, SOAP_ACK, "text/xml; charset=utf-8"),
    "twilio": (twilio_delivery, b'<?xml version="1.0" encoding="UTF-8"?><Response/>', "text/xml"),
    "cti": (cti_delivery, b"{}", "application/json"),
    "sipgate": (sipgate_delivery, sipgate_ack, "application/xml"),
}


# -- the tests -----------------------------------------------------------------------------------
def test_the_wheel_holds_the_runtime_and_none_of_the_development_packages(wheel):
    """The wheel has every file the service reads, and no devkit, tests or bench."""
    names = set(zipfile.ZipFile(wheel).namelist())
    assert not {n for n in names if n.split("/")[0] in DEVELOPMENT}
    files = {pattern: {p.relative_to(ROOT).as_posix() for p in ROOT.glob(pattern)
                       if p.is_file() and "__pycache__" not in p.parts}
             for pattern in RUNTIME_FILES}  # fmt: skip
    assert all(files[p] for p in RUNTIME_FILES if p not in MAY_BE_NONE), "a pattern found nothing"
    assert set().union(*files.values()) <= names
    assert {f"mappings/{key}.yaml" for key in PLUGINS} <= names


def imported(module: Path) -> Iterator[str]:
    """Name each module a source file imports."""
    for node in ast.walk(ast.parse(module.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module


def test_the_shipped_packages_never_import_the_development_ones():
    """No module of the wheel imports devkit, tests or bench (the demo is loaded at run time)."""
    modules = (p for package in SHIPPED for p in (ROOT / package).rglob("*.py"))
    found = [f"{m.relative_to(ROOT)}: {name}" for m in modules for name in imported(m)
             if name.split(".")[0] in DEVELOPMENT]  # fmt: skip
    assert found == []


def test_the_installed_command_runs_the_wheel_not_the_checkout(installed):
    """The environment imports Carryover from site-packages and has no devkit."""
    probe = ("import importlib.util, mappings, middleware; "
             "print(middleware.__file__); print(mappings.__file__); "
             "print(importlib.util.find_spec('devkit'))")  # fmt: skip
    result = run([str(installed.bin / "python"), "-c", probe], installed.folder)
    assert succeeded(result)
    middleware, mappings, devkit = result.stdout.splitlines()
    assert "site-packages" in middleware and "site-packages" in mappings
    assert devkit == "None"


def test_the_demo_asks_for_a_source_checkout(installed):
    """`carryover demo` from a wheel exits 2 and says where the demo runs."""
    result = installed.carryover("demo", "--exit")
    assert result.returncode == 2
    assert result.stderr == "carryover demo: the demo runs from a source checkout: make demo\n"


def test_serve_starts_with_every_integration(served):
    """The served wheel reads the shipped mappings and is ready with every integration."""
    ready = requests.get(f"{served}/readyz", timeout=5).json()
    assert ready["migrations"] == "applied"
    assert ready["integrations"] == sorted(PLUGINS)


def test_the_admin_pages_are_served_with_their_styles(served):
    """The admin login page renders from the shipped templates, its stylesheet and the editor's
    vendored script from static."""
    login = requests.get(f"{served}/admin/login", timeout=5)
    assert login.status_code == 200 and 'name="csrf_token"' in login.text
    style = requests.get(f"{served}/admin/static/admin.css", timeout=5)
    assert style.status_code == 200 and style.text.strip()
    editor = requests.get(f"{served}/admin/static/vendor/codemirror/codemirror.js", timeout=5)
    assert editor.status_code == 200 and "CodeMirror" in editor.text


@pytest.mark.parametrize("key", sorted(DELIVERIES))
def test_a_signed_webhook_gets_its_acknowledgement(served, key):
    """A real delivery of each sender, signed as it signs, gets the exact reply it expects."""
    build, ack, content_type = DELIVERIES[key]
    body, headers = build(served)
    response = requests.post(f"{served}/hooks/{key}", data=body, headers=headers, timeout=10)
    expected = ack(served) if callable(ack) else ack
    assert (response.status_code, response.content) == (200, expected), response.text
    assert response.headers["Content-Type"] == content_type
