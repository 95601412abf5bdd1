"""Redact card numbers and other secrets from customer text before it is stored or shown."""

from __future__ import annotations

import re

# A run of 13-19 digits; one right after "+" is an international phone number, not a card.
CARD_CANDIDATE = re.compile(r"(?<![\d+-])\d(?:[ -]?\d){12,18}(?![\d-])")
SECRET_PHRASE = re.compile(
    r"\b(password|passcode|passwort|pwd|pin|cvv|cvc|security code)(\s*(?:is|:|=)\s*)(\S+)",
    re.IGNORECASE,
)


def luhn_valid(digits: str) -> bool:
    """Tell whether a digit string passes the Luhn check."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        n = int(ch)
        if i % 2 == 1:
            n = n * 2 - 9 if n > 4 else n * 2
        total += n
    return total % 10 == 0


def _card(match: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", match.group(0))
    if 13 <= len(digits) <= 19 and luhn_valid(digits):
        return f"[card ending {digits[-4:]}]"
    return match.group(0)


def redact(text: str | None) -> str | None:
    """Return the text with card numbers cut to their last 4 digits and secrets hidden."""
    if not text:
        return text
    text = CARD_CANDIDATE.sub(_card, text)
    return SECRET_PHRASE.sub(lambda m: f"{m.group(1)}{m.group(2)}[redacted]", text)
