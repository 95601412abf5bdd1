"""Local simulator of sipgate.io's push API: one call's events posted into Carryover, signed.

sipgate posts a form to the URL set in its console when a call starts (newCall), and the
later events only where the reply to it asks: answer to the <Response>'s onAnswer URL,
hangup to its onHangup URL; with no such attribute it sends nothing more. Every push carries
X-Sipgate-Signature, base64 of an RSA-SHA256 (PKCS#1 v1.5) signature over the raw body.

sipgate signs with its own private key; the simulator signs with the one it is given, so
Carryover's integrations.sipgate.public_key must be the matching public key (`keygen` makes
a pair and prints the public half). Carryover names its callback URLs on public_url; the
simulator posts them to --carryover instead when the two differ (a local port).

    python -m devkit.simulators.sipgate keygen --out sipgate-test-key.pem
    python -m devkit.simulators.sipgate --carryover http://127.0.0.1:8080 \\
        --private-key sipgate-test-key.pem call --from 4930609854180 --to 4930609854100
"""

from __future__ import annotations

import argparse
import base64
import secrets
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import defusedxml.ElementTree as SafeET
import requests
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

HOOK_PATH = "/hooks/sipgate"
Params = tuple[tuple[str, str], ...]


class RejectedPush(Exception):
    """Carryover answered a push with another status than 200."""

    def __init__(self, status_code: int, reply: str) -> None:
        super().__init__(f"Carryover answered {status_code}: {reply[:300]}")
        self.status_code = status_code
        self.reply = reply


@dataclass(frozen=True)
class Push:
    """One push as sent (its URL and form parameters, in order) and Carryover's reply."""

    url: str
    params: Params
    reply: str

    def __getitem__(self, name: str) -> str:
        """Return the value of one parameter."""
        return dict(self.params)[name]


def sign(private_key: rsa.RSAPrivateKey, body: bytes) -> str:
    """Return X-Sipgate-Signature for a body: base64 of its RSA-SHA256 PKCS#1 v1.5 signature."""
    return base64.b64encode(private_key.sign(body, padding.PKCS1v15(), hashes.SHA256())).decode()


def new_key() -> rsa.RSAPrivateKey:
    """Return a fresh 2048-bit RSA key pair to sign with in place of sipgate's."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_pem(private_key: rsa.RSAPrivateKey) -> str:
    """Return the public half of a key in PEM, as integrations.sipgate.public_key takes it."""
    return (
        private_key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def new_call_id() -> str:
    """Return a call id in sipgate's form: 22 upper-case hex digits."""
    return secrets.token_hex(11).upper()


def follow_ups(reply: str) -> dict[str, str]:
    """Return the event URLs a newCall reply subscribes to: {"answer": url, "hangup": url}."""
    try:
        root = SafeET.fromstring(reply)
    except SafeET.ParseError:
        return {}
    if root.tag != "Response":
        return {}
    urls = {"answer": root.get("onAnswer"), "hangup": root.get("onHangup")}
    return {event: url for event, url in urls.items() if url}


class SipgateAccount:
    """A sipgate account whose push URL is Carryover's, signing with a given key."""

    def __init__(
        self,
        carryover_url: str,
        private_key: rsa.RSAPrivateKey,
        public_url: str | None = None,
        path: str = HOOK_PATH,
        on_sent: Callable[[Push], None] | None = None,
    ) -> None:
        self.carryover_url = carryover_url.rstrip("/")
        self.public_url = (public_url or carryover_url).rstrip("/")
        self.private_key = private_key
        self.push_url = self.carryover_url + path
        self.sent: list[Push] = []
        self.on_sent = on_sent

    def call(
        self,
        from_: str,
        to: str,
        direction: str = "in",
        users: Sequence[str] = ("Emma Taylor",),
        answered: bool = True,
        cause: str = "normalClearing",
    ) -> list[Push]:
        """Play a call: newCall, then answer and hangup where Carryover's reply asks for them."""
        call_id = new_call_id()
        common = [("from", from_), ("to", to), ("direction", direction), ("callId", call_id)]
        new_call = self.push(self.push_url, [
            ("event", "newCall"), *common, ("origCallId", call_id),
            *[("user[]", u) for u in users], *[("userId[]", f"w{i}") for i in range(len(users))],
            *[("fullUserId[]", f"1234567w{i}") for i in range(len(users))],
            ("xcid", secrets.token_hex(10)),
        ])  # fmt: skip
        pushes = [new_call]
        urls = follow_ups(new_call.reply)
        answering = to if direction == "in" else from_  # the line that picks up, or the callee
        if answered and "answer" in urls:
            who = [("user", users[0]), ("userId", "w0"), ("fullUserId", "1234567w0")]
            # sipgate names the user who answered on incoming calls only.
            answer = [("event", "answer"), ("callId", call_id),
                      *(who if direction == "in" and users else []), ("from", from_), ("to", to),
                      ("direction", direction), ("answeringNumber", answering)]  # fmt: skip
            pushes.append(self.push(self.local(urls["answer"]), answer))
        if "hangup" in urls:
            hangup = [("event", "hangup"), ("cause", cause if answered else "cancel"), *common]
            if answered:
                hangup.append(("answeringNumber", answering))
            pushes.append(self.push(self.local(urls["hangup"]), hangup))
        return pushes

    def push(self, url: str, params: list[tuple[str, str]]) -> Push:
        """Post one signed push; raise RejectedPush unless Carryover answers 200."""
        body = urlencode(params).encode()
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Sipgate-Signature": sign(self.private_key, body),
        }
        response = requests.post(url, data=body, headers=headers, timeout=10)
        if response.status_code != 200:
            raise RejectedPush(response.status_code, response.text)
        push = Push(url, tuple(params), response.text)
        self.sent.append(push)
        if self.on_sent:
            self.on_sent(push)
        return push

    def local(self, url: str) -> str:
        """Return a callback URL Carryover named on public_url as this simulator reaches it."""
        if not url.startswith(self.public_url + "/"):
            raise ValueError(f"the reply names {url!r}, outside public_url {self.public_url}")
        return self.carryover_url + url[len(self.public_url) :]


def describe(push: Push) -> str:
    """Say in one line what a push was about, for logs."""
    fields = dict(push.params)
    line = f"{fields['event']} {fields['callId']} {fields.get('from', '')}→{fields.get('to', '')}"
    return line + (f" ({fields['cause']})" if "cause" in fields else "")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m devkit.simulators.sipgate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--carryover", default="http://127.0.0.1:8080", help="where to post")
    parser.add_argument("--public-url", help="Carryover's public_url, if not --carryover")
    parser.add_argument("--private-key", type=Path, help="PEM file of the key to sign with")
    parser.add_argument("--path", default=HOOK_PATH, help="the push URL's path")
    journeys = parser.add_subparsers(dest="journey", required=True)
    call = journeys.add_parser("call", help="a call: newCall, answer, hangup")
    call.add_argument("--from", dest="from_", default="4930609854180")
    call.add_argument("--to", default="4930609854100")
    call.add_argument("--direction", choices=("in", "out"), default="in")
    call.add_argument("--user", action="append", help="a sipgate user's name (repeatable)")
    call.add_argument("--missed", action="store_true", help="nobody answers")
    keygen = journeys.add_parser("keygen", help="make a key pair; print the public key")
    keygen.add_argument("--out", type=Path, required=True, help="PEM file for the private key")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """Make a key pair, or play one call into Carryover printing each accepted push."""
    parser = _parser()
    options = parser.parse_args(argv)
    if options.journey == "keygen":
        key = new_key()
        options.out.touch(mode=0o600)  # a private key: readable by its owner only
        options.out.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                  serialization.PrivateFormat.PKCS8,
                                                  serialization.NoEncryption()))  # fmt: skip
        print(public_pem(key), end="")
        return
    if options.private_key is None:
        parser.error("--private-key is required (make one with keygen)")
    loaded = serialization.load_pem_private_key(options.private_key.read_bytes(), password=None)
    if not isinstance(loaded, rsa.RSAPrivateKey):
        parser.error("--private-key: expected an RSA private key")
    account = SipgateAccount(options.carryover, loaded, options.public_url, options.path,
                             on_sent=lambda push: print(describe(push), flush=True))  # fmt: skip
    try:
        account.call(options.from_, options.to, options.direction,
                     options.user or ["Emma Taylor"], answered=not options.missed)  # fmt: skip
    except requests.RequestException as error:
        print(f"simulator: cannot reach {account.push_url}: {error}", file=sys.stderr)
        raise SystemExit(1) from None
    except (RejectedPush, ValueError) as error:
        print(f"simulator: {error}", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
