"""Redaction of card numbers and secrets in customer text."""

from __future__ import annotations

import pytest

from middleware.customers.redaction import IdFields, luhn_valid, redact, redact_cards
from middleware.integrations.registry import PluginRegistry

# The id fields the installed plugins declare, as the webhook endpoint passes them.
IDS = IdFields(PluginRegistry.from_entry_points().id_fields())


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("card 4111 1111 1111 1111 please", "card [card ending 1111] please"),
        ("card 4111-1111-1111-1111.", "card [card ending 1111]."),
        ("amex 378282246310005", "amex [card ending 0005]"),
        ("order 4111 1111 1111 1112", "order 4111 1111 1111 1112"),  # fails the Luhn check
        ("my password is hunter2 thanks", "my password is [redacted] thanks"),
        ("PIN: 1234", "PIN: [redacted]"),
        # Candidates that overlap: the longest from a start fails, a card is still there.
        ("ref 0041 4111 1111 1111 1111", "ref 0041 [card ending 1111]"),
        ("call 555 4111 1111 1111 1111 now", "call 555 [card ending 1111] now"),
        ("4111111111111111 123 is my card and code", "[card ending 1111] 123 is my card and code"),
        ("\\u0041 4111 1111 1111 1111", "\\u0041 [card ending 1111]"),
    ],
)
def test_cards_and_secrets_are_redacted(text, expected):
    """Luhn-valid card numbers keep their last 4 digits; secret phrases lose their value."""
    assert redact(text) == expected


@pytest.mark.parametrize("phone", ["+4915110000002", "+49 151 1000 0002", "+4420794609582"])
def test_international_phone_numbers_are_not_taken_for_cards(phone):
    """A number written with + is a phone even when its digits pass the Luhn check."""
    assert redact(f"call me on {phone}") == f"call me on {phone}"


def test_xml_text_is_redacted_and_the_markup_stays_well_formed():
    """In an XML body (a case Description) only text is redacted; tags and CDATA survive."""
    from defusedxml.ElementTree import fromstring

    from middleware.customers.redaction import redact_body

    body = (
        b'<a xmlns:sf="urn:x"><sf:Id>5007000000OFL5FAAX</sf:Id>'
        b"<sf:Description>card 4111 1111 1111 1111, my pin is 1234</sf:Description>"
        b"<c><![CDATA[password: <secret> 4111111111111111]]></c></a>"
    )
    cleaned = redact_body(body, "text/xml", IDS)
    root = fromstring(cleaned)
    assert root.findtext("{urn:x}Id") == "5007000000OFL5FAAX"
    assert root.findtext("{urn:x}Description") == "card [card ending 1111], my pin is [redacted]"
    assert root.findtext("c") == "password: [redacted] [card ending 1111]"
    assert redact_body(b"<a>nothing to hide</a>", "text/xml", IDS) == b"<a>nothing to hide</a>"


def _random_digits(rng, count: int) -> str:
    """Digits with the odd space or dash between them, now and then a valid card number."""
    if rng.random() < 0.3:
        digits = [rng.choice("3456") + "".join(rng.choice("0123456789") for _ in range(14))]
        check = next(d for d in "0123456789" if luhn_valid(digits[0] + d))
        return digits[0] + check
    text = ""
    for _ in range(count):
        text += rng.choice("0123456789") + (rng.choice(" -") if rng.random() < 0.1 else "")
    return text.strip(" -")


def _random_value(rng):
    kind = rng.random()
    if kind < 0.4:
        prefix = rng.choice(["", "+", "card ", "call ", "-", "x", "ref:"])
        return prefix + _random_digits(rng, rng.randint(8, 22)) + rng.choice(["", " ok", "-", "."])
    if kind < 0.6:
        return int(_random_digits(rng, rng.randint(10, 19)).replace(" ", "").replace("-", ""))
    if kind < 0.7:
        return [_random_value(rng) for _ in range(rng.randint(0, 3))]
    if kind < 0.8:
        return {rng.choice(KEYS): _random_value(rng) for _ in range(rng.randint(0, 3))}
    return rng.choice(PHRASES)


PHRASES = [
    "ticket", "shipping", "pin 1234", "", "2025-01-08T10:12:07Z", "Hi,\nPassword: hunter2",
    "login\tpin: 4321", "my PIN\n: 4321", "pa\u017f\u017fword: x", "p\u0131n: 1234",
    "P\u0130N is 9876", "caf\u00e9 pin", 'say "pin: 1"',
]  # fmt: skip


KEYS = ["id", "requester_id", "custom_status", "body", "phone", "CallSid", "ContactId", "n"]


def test_the_quick_check_never_skips_what_the_full_redaction_would_change(monkeypatch):
    """Bodies cleared by the cheap test come out exactly as the full redaction makes them."""
    import json
    import random

    from middleware.customers import redaction

    rng = random.Random(20261123)
    bodies = [
        json.dumps(
            {rng.choice(KEYS): _random_value(rng) for _ in range(rng.randint(1, 8))}
        ).encode()
        for _ in range(3000)
    ]
    quick = [redaction.redact_body(body, "application/json", IDS) for body in bodies]
    monkeypatch.setattr(redaction, "_may_hold_secrets", lambda text, json_ids=False: True)
    full = [redaction.redact_body(body, "application/json", IDS) for body in bodies]
    assert quick == full
    assert sum(q != b for q, b in zip(quick, bodies, strict=True)) > 300  # cards were there to find


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b'{"comment": "Hi,\\nPassword: hunter2"}', "application/json"),
        (b'{"comment": "my PIN\\n: 4321"}', "application/json"),
        ('{"comment": "pa\u017f\u017fword: hunter2"}'.encode(), "application/json"),
        (b'{"a\\"id": "4111111111111111"}', "application/json"),
        (b"Body=%22order_id%22%3A+4111111111111111", "application/x-www-form-urlencoded"),
        (b'<n><d>{"order_id": "4111111111111111"}</d></n>', "text/xml"),
    ],
)
def test_escapes_lookalike_letters_and_id_like_text_do_not_hide_secrets(body, content_type):
    """A phrase behind a JSON escape or spelt with ſ, and an id key outside JSON, are seen."""
    from middleware.customers.redaction import redact_body

    cleaned = redact_body(body, content_type, IDS)
    assert b"hunter2" not in cleaned and b"4321" not in cleaned and b"41111111" not in cleaned


def test_the_declared_id_fields_are_kept_and_nothing_else():
    """A Luhn-valid id stays as sent in a declared id field, and is redacted in any other."""
    from middleware.customers.redaction import redact_body

    card = "4111111111111111"
    kept = f'{{"requester_id": "{card}", "n": "{card}"}}'.encode()
    assert redact_body(kept, "application/json", IdFields(["*_id"])) == (
        f'{{"requester_id": "{card}", "n": "[card ending 1111]"}}'.encode()
    )
    form = f"CallSid={card}&Body={card}".encode()
    assert redact_body(form, "application/x-www-form-urlencoded", IdFields(["*Sid"])) == (
        f"CallSid={card}&Body=%5Bcard+ending+1111%5D".encode()
    )
    assert card.encode() not in redact_body(form, "application/x-www-form-urlencoded")


@pytest.mark.parametrize(
    "digits", ["4111111111111111", "378282246310005", "6011000990139424", "79927398713"]
)
def test_the_luhn_check_agrees_with_the_textbook_one(digits):
    """The translate-and-sum Luhn check gives the textbook verdict, Unicode digits too."""

    def textbook(number: str) -> bool:
        total = 0
        for position, digit in enumerate(reversed([int(d) for d in number])):
            doubled = digit * 2 if position % 2 else digit
            total += doubled - 9 if doubled > 9 else doubled
        return total % 10 == 0

    for variant in (digits, digits[:-1] + str((int(digits[-1]) + 1) % 10)):
        unicode = variant.translate(str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩"))
        assert luhn_valid(variant) == luhn_valid(unicode) == textbook(variant)


def every_card(text: str) -> str:
    """Redact cards the slow, obvious way: from each start, every length, longest first."""
    parts, done, start = [], 0, 0
    while start < len(text):
        before = text[start - 1] if start else ""
        if not text[start].isdecimal() or before.isdecimal() or before in ("+", "-"):
            start += 1
            continue
        digits, end, position = "", None, start
        while len(digits) < 19:
            digits += text[position]
            position += 1
            after = text[position : position + 1]
            if len(digits) >= 13 and not after.isdecimal() and after != "-":
                end = position if luhn_valid(digits) else end
            if after.isdecimal():
                continue
            if after in (" ", "-") and text[position + 1 : position + 2].isdecimal():
                position += 1
                continue
            break
        if end is None:
            start += 1
            continue
        parts += [text[done:start], f"[card ending {text[end - 4 : end]}]"]
        done = start = end
    return "".join(parts) + text[done:]


def test_every_card_is_found_however_candidates_overlap():
    """On random runs of digits, spaces, dashes and plus signs, redaction finds every card."""
    import random

    rng = random.Random(20261206)
    texts = [
        "".join(rng.choice("0123456789 -+x") for _ in range(rng.randint(10, 90)))
        for _ in range(5000)
    ]
    found = [redact_cards(text) for text in texts]
    assert found == [every_card(text) for text in texts]
    assert sum("[card ending" in text for text in found) > 100  # there were cards to find
