"""The sipgate simulator, played over HTTP into a real Carryover served on a local port."""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import select

from devkit.simulators.sipgate import (
    RejectedPush,
    SipgateAccount,
    follow_ups,
    main,
    new_key,
    public_pem,
)
from middleware.installation import Installation, build_installation
from middleware.store.tables import interactions
from plugins.sipgate import load_public_key
from tests.values import PUBLIC_URL

TOKEN = "simulated-sipgate-path-token"
ANN = "4930609854180"
LINE = "4930609854100"


@pytest.fixture(scope="module")
def sipgate_key() -> rsa.RSAPrivateKey:
    """Return a throwaway key pair that signs in place of sipgate's."""
    return new_key()


@pytest.fixture
def core(database_url: str, make_config, sipgate_key) -> Iterator[Installation]:
    """Build an installation connected to sipgate with the test key's public half."""
    sipgate = {"public_key": public_pem(sipgate_key), "path_token": TOKEN}
    built = build_installation(
        make_config(database_url, phone=True, integrations={"sipgate": sipgate})
    )
    yield built
    built.dispose()


def calls(core: Installation) -> list[Any]:
    with core.engine.connect() as conn:
        return list(conn.execute(select(interactions).where(interactions.c.kind == "call")))


def test_a_call_follows_the_urls_of_carryovers_reply(carryover_url, sipgate_key, worker, core):
    """newCall goes to the push URL; answer and hangup to the URLs the reply named."""
    account = SipgateAccount(carryover_url, sipgate_key, public_url=PUBLIC_URL)
    pushes = account.call(ANN, LINE, users=["Emma Taylor", "Bob Billing"])
    assert [p["event"] for p in pushes] == ["newCall", "answer", "hangup"]
    assert {p.url for p in pushes} == {carryover_url + "/hooks/sipgate"}
    assert len({p["callId"] for p in pushes}) == 1
    assert dict(pushes[1].params)["user"] == "Emma Taylor"
    worker.drain()
    [call] = calls(core)
    assert (call.external_id, call.status, call.agent) == (
        pushes[0]["callId"], "completed", "Emma Taylor",
    )  # fmt: skip
    assert json.loads(call.identities) == [["phone", "+" + ANN]]


def test_through_the_path_token_every_push_carries_it(carryover_url, sipgate_key, worker, core):
    """Set up with /hooks/sipgate/<token>, the later pushes are sent there too."""
    path = "/hooks/sipgate/" + quote(TOKEN, safe="")
    account = SipgateAccount(carryover_url, sipgate_key, public_url=PUBLIC_URL, path=path)
    pushes = account.call(LINE, ANN, direction="out", answered=False)
    assert [(p["event"], p.url) for p in pushes] == [
        ("newCall", carryover_url + path), ("hangup", carryover_url + path),
    ]  # fmt: skip
    worker.drain()
    [call] = calls(core)
    assert (call.direction, call.status) == ("outbound", "canceled")


def test_another_key_is_refused(carryover_url, core):
    """A push signed with a key Carryover does not know gets 401."""
    account = SipgateAccount(carryover_url, new_key(), public_url=PUBLIC_URL)
    with pytest.raises(RejectedPush) as refused:
        account.call(ANN, LINE)
    assert refused.value.status_code == 401
    assert calls(core) == []


def test_follow_ups_are_only_what_the_reply_asks_for():
    """No onAnswer or onHangup, or no XML at all, and sipgate sends nothing more."""
    assert follow_ups('<Response onHangup="https://a.example/h"/>') == {
        "hangup": "https://a.example/h"
    }
    assert follow_ups('<?xml version="1.0"?><Response/>') == {}
    assert follow_ups("{}") == {}
    assert follow_ups('<Other onAnswer="https://a.example/a"/>') == {}


def test_keygen_writes_a_private_key_and_prints_the_public_one(tmp_path: Path, capsys):
    """keygen: a private key only its owner reads, and the PEM that public_key takes."""
    out = tmp_path / "key.pem"
    main(["keygen", "--out", str(out)])
    printed = capsys.readouterr().out
    private = serialization.load_pem_private_key(out.read_bytes(), password=None)
    assert isinstance(private, rsa.RSAPrivateKey)
    assert printed == public_pem(private)
    assert load_public_key(printed).public_numbers() == private.public_key().public_numbers()
    assert stat.S_IMODE(out.stat().st_mode) == 0o600


def test_cli_plays_a_call_and_prints_each_push(carryover_url, sipgate_key, worker, core, capsys,
                                               tmp_path: Path):  # fmt: skip
    """The command line signs with the key file and prints one line per accepted push."""
    key_file = tmp_path / "key.pem"
    key_file.write_bytes(sipgate_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))  # fmt: skip
    main(["--carryover", carryover_url, "--public-url", PUBLIC_URL, "--private-key",
          str(key_file), "call", "--from", ANN, "--to", LINE])  # fmt: skip
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == ["newCall", "answer", "hangup"]
    assert lines[-1].endswith(f"{ANN}→{LINE} (normalClearing)")
