"""The mood says negative or positive only when it can be trusted, and nothing otherwise."""

from __future__ import annotations

import pytest

from bench.mood import figures, load_messages
from middleware.installation import build_installation
from middleware.notes.mood import covered, mood_of, text_mood
from middleware.notes.summary import CustomerContext
from middleware.process.worker import Worker
from middleware.reads.pop import pop_view
from middleware.store.tables import reading
from middleware.web.app import create_app
from tests.payloads import fixture_bytes
from tests.values import AGENT_KEY

BOB = "Hello, my card was charged $49 twice\u2026 Please refund"


@pytest.mark.parametrize(
    "text",
    [BOB, "my card was charged $49 twice… Please refund", "Hi! Please refund me. Thanks!"],
)
def test_a_polite_complaint_is_never_positive(text):
    """Greetings, please and thanks around a complaint never make it positive: it is negative."""
    assert text_mood(text) == "negative"


@pytest.mark.parametrize(
    "text",
    [
        "Meine Karte wurde zweimal mit 49 $ belastet. Bitte erstatten Sie den Betrag.",
        "Das ist wirklich schlecht, die App funktioniert nicht.",
        "Me cobraron dos veces, no funciona nada.",
        "Le colis n'est jamais arrivé.",
        "Il pacco è arrivato rotto, non funziona.",
        "注文した商品が壊れていました",
    ],
)
def test_text_in_another_language_abstains(text):
    """A text in a language the cues do not cover gets no mood."""
    assert not covered(text)
    assert text_mood(text) is None


@pytest.mark.parametrize(
    "text", ["Hello", "Hi there!", "Good morning", "Thanks", "Hello, thank you", "Please"]
)
def test_greetings_alone_abstain(text):
    """A greeting or a bare thanks carries no mood."""
    assert text_mood(text) is None


@pytest.mark.parametrize(
    ("text", "mood"),
    [
        ("I am not happy with this at all.", "negative"),
        ("The box was not damaged, great job.", "positive"),
        ("The app is great but the export is broken.", "negative"),
        ("The first one was broken, but the new one is perfect.", "positive"),
        ("It is still not working.", "negative"),
        ("The screen arrived cracked.", "negative"),
        ("When will the sync be fixed?", None),
        ("How long does a refund take?", None),
    ],
)
def test_negation_contrast_and_questions(text, mood):
    """A negator turns a cue, the last "but" decides a mixed text, a question is no praise."""
    assert text_mood(text) == mood


def test_the_newest_text_with_a_mood_decides():
    """Texts come newest first; the newest one with a clear mood is the customer's mood."""
    assert mood_of(["Thanks so much, it works now!", "The app is broken."]) == "positive"
    assert mood_of(["Hello?", "Die App ist kaputt.", "Still not working."]) == "negative"
    assert mood_of(["Hello", "Die App ist kaputt."]) is None
    assert mood_of([]) is None


def test_labelled_messages_keep_negative_trustworthy():
    """On bench/mood_messages.yaml, "negative" is right at least 9 times in 10."""
    messages = load_messages()
    assert len(messages) >= 120
    result = figures(messages, mood_of)
    assert result["negative_precision"] >= 0.9
    assert result["positive_on_complaint"] == 0
    assert result["abstained_not_english"] == 1.0
    assert result["negative_recall"] >= 0.5  # abstaining on everything would be no analyser


def test_rating_stays_linear_on_long_text():
    """A long text with many cues, negators and turns is rated at once."""
    text = "not great but broken, however fine? " * 20_000
    assert text_mood(text) in ("negative", "positive", None)


ANN_EMAIL = "ann.example@example.com"
ANN_PHONE = "+14155550142"
ANN_TICKETS = (
    "ticket_created__mail.json",
    "ticket_created__facebook_message.json",
    "ticket_comment_added.json",
    "trigger_ticket_created.json",
)


@pytest.mark.parametrize(("setting", "said"), [(True, "negative"), (False, None)])
def test_summary_mood_setting_reaches_notes_pop_and_context_api(
    database_url, fake_zendesk, make_config, hooks_for, monkeypatch, setting, said
):
    """summary.mood false leaves the mood None in the note's context, the pop and the API."""
    config = make_config(database_url, fake_zendesk.url, phone=True, summary={"mood": setting})
    core = build_installation(config)
    try:
        rendered: list[CustomerContext] = []
        render = core.renderer.render
        monkeypatch.setattr(
            core.renderer, "render", lambda key, ctx: rendered.append(ctx) or render(key, ctx)
        )
        client = create_app(core=core).test_client()
        hooks = hooks_for(client)
        for name in ANN_TICKETS:
            assert hooks.zendesk(fixture_bytes(name)).status_code == 200
        Worker(core, name="test-worker").drain()
        assert rendered and {ctx.mood for ctx in rendered} == {said}  # the notes' contexts
        answer = client.get(
            "/api/v1/context",
            query_string={"email": ANN_EMAIL},
            headers={"Authorization": f"Bearer {AGENT_KEY}"},
        ).get_json()
        assert answer["mood"] == said
        with reading(core.engine) as conn:
            view = pop_view(conn, ANN_PHONE, ANN_PHONE, 5, mood=setting)
        assert view.context is not None and view.context.mood == said
        page = client.get(
            "/pop",
            query_string={"phone": ANN_PHONE},
            headers={"Authorization": f"Bearer {AGENT_KEY}"},
        )
        assert page.status_code == 200
        assert ("mood negative</p>" in page.get_data(as_text=True)) == (said == "negative")
    finally:
        core.dispose()


@pytest.mark.parametrize("setting", [True, False])
def test_summary_mood_setting_reaches_the_admin_profile(
    core, admin_client, hooks, worker, fake_zendesk, setting
):
    """The admin's customer profile shows the mood only while summary.mood is on."""
    core.config.summary["mood"] = setting
    for name in ANN_TICKETS:
        assert hooks.zendesk(fixture_bytes(name)).status_code == 200
    worker.drain()
    customer_id = admin_client.get(
        "/api/v1/context",
        query_string={"email": ANN_EMAIL},
        headers={"Authorization": f"Bearer {AGENT_KEY}"},
    ).get_json()["customer"]["id"]
    page = admin_client.get(f"/admin/customers/{customer_id}").data.decode()
    assert "Ann" in page
    assert ("negative" in page) is setting
    assert "Mood unknown" not in page and "prefers unknown" not in page  # no filler
