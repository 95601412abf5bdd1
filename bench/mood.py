"""Benchmark 9: how far the mood can be trusted, on the labelled messages of mood_messages.yaml.

Each message is rated alone, by the analyser (middleware/notes/mood.py) and by the lexicon it
replaced (VADER's compound score averaged, ±0.05, which always gave a mood, "neutral"
included). Measured: precision and recall of "negative", how often a positive mood is given
to a complaint, and how often each abstains, overall and on messages not in English.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from middleware.notes.mood import mood_of

MESSAGES = Path(__file__).resolve().parent / "mood_messages.yaml"
LABELS = ("negative", "positive", "neutral")


def load_messages(path: Path = MESSAGES) -> list[dict[str, str]]:
    """Return the labelled messages: text, label and lang of each."""
    messages: list[dict[str, str]] = yaml.safe_load(path.read_text(encoding="utf-8"))["messages"]
    for message in messages:
        if message["label"] not in LABELS or not message["text"] or not message["lang"]:
            raise ValueError(f"{path}: bad message {message!r}")
    return messages


@cache
def _vader() -> Any:
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()


def lexicon_mood(texts: Sequence[str]) -> str | None:
    """Rate texts as Carryover did before: VADER's compound score, averaged."""
    if not texts:
        return None
    average = sum(_vader().polarity_scores(t)["compound"] for t in texts) / len(texts)
    if average >= 0.05:
        return "positive"
    if average <= -0.05:
        return "negative"
    return "neutral"


def figures(
    messages: list[dict[str, str]], rate: Callable[[Sequence[str]], str | None]
) -> dict[str, Any]:
    """Rate each message alone and return the figures of one analyser."""
    rated = [(m, rate([m["text"]])) for m in messages]
    said_negative = [m for m, mood in rated if mood == "negative"]
    negative = [m for m in messages if m["label"] == "negative"]
    foreign = [(m, mood) for m, mood in rated if m["lang"] != "en"]
    hits = sum(1 for m in said_negative if m["label"] == "negative")
    return {
        "messages": len(messages),
        "said_negative": len(said_negative),
        "negative_precision": _share(hits, len(said_negative)),
        "negative_recall": _share(hits, len(negative)),
        "positive_on_complaint": sum(
            1 for m, mood in rated if m["label"] == "negative" and mood == "positive"
        ),
        "abstained": _share(sum(1 for _, mood in rated if mood is None), len(rated)),
        "abstained_not_english": _share(
            sum(1 for _, mood in foreign if mood is None), len(foreign)
        ),
        "not_english": len(foreign),
    }


def _share(part: int, whole: int) -> float | None:
    return round(part / whole, 3) if whole else None


def mood_benchmark() -> dict[str, Any]:
    """Benchmark 9: the analyser's figures beside the old lexicon's."""
    messages = load_messages()
    return {"analyser": figures(messages, mood_of), "lexicon": figures(messages, lexicon_mood)}


def mood_lines(results: dict[str, Any]) -> list[str]:
    """Return the report's section for benchmark 9."""
    new, old = results["analyser"], results["lexicon"]
    rows = [
        ("precision of negative", "negative_precision"),
        ("recall of negative", "negative_recall"),
        ("positive on a complaint", "positive_on_complaint"),
        ("abstains, all", "abstained"),
        ("abstains, not English", "abstained_not_english"),
    ]
    lines = [
        "",
        "9. Mood on labelled messages (bench/mood.py)",
        f"   {new['messages']} short support messages, {new['not_english']} not in English,"
        " each rated alone",
        f"   {'':26}{'analyser':>10}{'old lexicon':>13}",
    ]
    for title, key in rows:
        lines.append(f"   {title:26}{_shown(new[key]):>10}{_shown(old[key]):>13}")
    return lines


def _shown(value: float | int | None) -> str:
    if value is None:
        return "-"
    return f"{value:.0%}" if isinstance(value, float) else str(value)
