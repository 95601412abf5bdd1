"""The Placetel simulator, played over HTTP into a real Carryover served on a local port."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select

from devkit.simulators.placetel import PlacetelPbx, RejectedNotification, main
from middleware.installation import Installation, build_installation
from middleware.store.tables import interactions
from plugins.placetel import ACKNOWLEDGEMENT
from tests.actions import ConfigFactory

SECRET = "placetel-shared-secret-for-tests"
TOKEN = "placetel-path-token-for-tests-0123456789"
CUSTOMER = "030609854180"
LINE = "030600000000"
PEER = "7777abcdefg@example.com"


@pytest.fixture
def core(database_url: str, make_config: ConfigFactory) -> Iterator[Installation]:
    """Build an installation with Placetel connected (secret and token) in Germany."""
    settings = {"secret": SECRET, "token": TOKEN}
    config = make_config(database_url, integrations={"placetel": settings}, default_region="DE")
    built = build_installation(config)
    yield built
    built.dispose()


def calls(core: Installation) -> list[Any]:
    with core.engine.connect() as conn:
        return list(conn.execute(select(interactions).where(interactions.c.kind == "call")))


def test_signed_incoming_call_is_one_completed_call_answered_by_the_peer(
    carryover_url, worker, core
):
    """IncomingCall, CallAccepted and HungUp, signed: all 200, one call of the caller."""
    pbx = PlacetelPbx(carryover_url, secret=SECRET)
    call_id = pbx.incoming_call(CUSTOMER, LINE, peer=PEER, duration_s=95)
    assert re.fullmatch(r"[0-9a-f]{64}", call_id)
    assert [n["event"] for n in pbx.sent] == ["IncomingCall", "CallAccepted", "HungUp"]
    assert {n.reply.encode() for n in pbx.sent} == {ACKNOWLEDGEMENT}
    assert pbx.sent[-1].params == (
        ("call_id", call_id), ("direction", "in"), ("duration", "95"), ("event", "HungUp"),
        ("from", CUSTOMER), ("to", LINE), ("type", "accepted"),
    )  # fmt: skip
    worker.drain()
    [call] = calls(core)
    assert (call.source, call.external_id, call.direction, call.status) == (
        "placetel", call_id, "inbound", "completed",
    )  # fmt: skip
    assert (call.agent, call.duration_s, json.loads(call.identities)) == (
        PEER, 95, [["phone", "+4930609854180"]],
    )  # fmt: skip


def test_token_only_pbx_plays_an_outgoing_busy_call(carryover_url, worker, core):
    """Without a secret the simulator posts to the token URL; a busy call ends busy, 0 s."""
    pbx = PlacetelPbx(carryover_url, token=TOKEN)
    assert pbx.hook_url == carryover_url.rstrip("/") + f"/hooks/placetel/{TOKEN}"
    pbx.outgoing_call(PEER, LINE, CUSTOMER, ending="busy", duration_s=30)
    assert [n["event"] for n in pbx.sent] == ["OutgoingCall", "HungUp"]
    worker.drain()
    [call] = calls(core)
    assert (call.direction, call.status, call.agent, call.duration_s) == (
        "outbound", "busy", PEER, 0,
    )  # fmt: skip


def test_a_wrong_secret_is_refused_with_401(carryover_url, core):
    """Carryover refuses a notification signed with another secret; the simulator says so."""
    pbx = PlacetelPbx(carryover_url, secret="another-secret")
    with pytest.raises(RejectedNotification) as refused:
        pbx.incoming_call(CUSTOMER, LINE, peer=PEER)
    assert refused.value.status_code == 401
    assert pbx.sent == []
    assert calls(core) == []


def test_command_line_plays_a_missed_call_and_prints_each_event(carryover_url, worker, core,
                                                                capsys):  # fmt: skip
    """`call --ending missed` sends IncomingCall and HungUp, prints them, and the call is missed."""
    main(["--carryover", carryover_url, "--secret", SECRET, "call", "--from", CUSTOMER,
          "--to", LINE, "--peer", PEER, "--ending", "missed"])  # fmt: skip
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == ["IncomingCall", "HungUp"]
    assert all(line.endswith("200") for line in lines)
    worker.drain()
    [call] = calls(core)
    assert (call.status, call.agent, call.duration_s) == ("no-answer", None, 0)
