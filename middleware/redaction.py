"""Redact card numbers and other secrets from customer text before it is stored or shown."""

from __future__ import annotations

import re

# A run of 13-19 digits; one right after "+" is an international phone number, not a card.
CARD_CANDIDATE = re.compile(r"(?<![\d+-])\d(?:[ -]?\d){12,18}(?![\d-])")
SECRET_PHRASE = re.compile(
    r"\b(password|passcode|passwort|pwd|pin|cvv|cvc|security code)(\s*(?:is|:|=)\s*)(\S+)",
    re.IGNORECASE,
)


_DOUBLED = (0, 2, 4, 6, 8, 1, 3, 5, 7, 9)  # each digit doubled, digits of the result summed


def luhn_valid(digits: str) -> bool:
    """Tell whether a digit string passes the Luhn check."""
    total = sum(map(int, digits[-1::-2])) + sum(_DOUBLED[int(d)] for d in digits[-2::-2])
    return total % 10 == 0


def is_card_number(candidate: str) -> bool:
    """Tell whether a run of digits (with spaces or dashes) is a card number."""
    digits = candidate.replace(" ", "").replace("-", "")
    return 13 <= len(digits) <= 19 and luhn_valid(digits)


def _card(match: re.Match[str]) -> str:
    candidate = match.group(0)
    if is_card_number(candidate):
        return f"[card ending {candidate[-4:]}]"
    return candidate


def redact(text: str | None) -> str | None:
    """Return the text with card numbers cut to their last 4 digits and secrets hidden."""
    if not text:
        return text
    text = CARD_CANDIDATE.sub(_card, text)
    return SECRET_PHRASE.sub(lambda m: f"{m.group(1)}{m.group(2)}[redacted]", text)
