"""The generic inbound simulator, played over HTTP into a real Carryover on a local port."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import func, select

from devkit.simulators.generic import Customer, GenericSender, RejectedEvent, main
from middleware.installation import Installation, build_installation
from middleware.store.tables import deliveries
from tests.values import AGENT_KEY, GENERIC_SECRET

ANN = Customer(email="ann.example@example.com", name="Ann Example")
AUTH = {"Authorization": f"Bearer {AGENT_KEY}"}


@pytest.fixture
def core(database_url: str, zendesk_api_url: str, make_config) -> Iterator[Installation]:
    """Build the test installation with the generic inbound integration connected too."""
    built = build_installation(make_config(database_url, zendesk_api_url, phone=True,
                                           generic=True))  # fmt: skip
    yield built
    built.dispose()


@pytest.fixture
def sender(carryover_url: str) -> GenericSender:
    """Return a sender posting to the local server with the test secret."""
    return GenericSender(carryover_url, GENERIC_SECRET)


def test_a_chat_with_the_bot_reaches_the_customer_with_only_their_lines(
    sender, client, core, worker
):
    """The fourth journey: Ann chats with the bot; her two lines, not the bot's, are said."""
    sent = sender.chat(ANN, ["Where is my refund?", "Please call me instead."], topic="Refund")
    assert (sent.status, sent.reply) == (200, {})
    worker.drain()
    context = client.get("/api/v1/context", query_string={"email": ANN.email},
                         headers=AUTH).get_json()  # fmt: skip
    assert context["customer"]["name"] == "Ann Example"
    assert [s["text"] for s in context["said"]] == ["Where is my refund? Please call me instead."]


def test_a_retry_sends_the_same_webhook_id_and_is_stored_once(sender, core):
    """Sending one event twice with its webhook-id stores one delivery."""
    first = sender.visit(ANN, "Market Street store", "Returned a blender", staff="Ben Carter")
    sender.send("store.visit", {"id": "visit-again", "customer": ANN.data()}, first.webhook_id)
    with core.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(deliveries)).scalar_one() == 1


def test_a_survey_sets_the_preferred_channels(sender, client, core, worker):
    """A survey answer sent by the simulator makes phone the preferred channel, from a survey."""
    sender.survey(ANN, ["phone"], "Call me, please")
    worker.drain()
    customer = client.get("/api/v1/context", query_string={"email": ANN.email},
                          headers=AUTH).get_json()["customer"]  # fmt: skip
    assert (customer["preferred_channels"], customer["preferred_channels_source"]) == (
        ["phone"], "survey")  # fmt: skip


def test_a_wrong_secret_is_refused_with_the_reason(carryover_url, core):
    """Signed with another secret, the event is refused: the sender raises with the 401."""
    wrong = GenericSender(carryover_url, "whsec_QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB")
    with pytest.raises(RejectedEvent, match="chatbot.conversation: 401"):
        wrong.chat(ANN, ["Hello?"])


def test_the_command_line_sends_one_event(carryover_url, core, capsys):
    """python -m devkit.simulators.generic … chat prints the event's answer."""
    main(["--carryover", carryover_url, "--secret", GENERIC_SECRET, "--email", ANN.email or "",
          "chat", "--say", "Hello"])  # fmt: skip
    assert capsys.readouterr().out.startswith("chatbot.conversation msg_")
