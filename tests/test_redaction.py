"""Redaction of card numbers and secrets in customer text."""

from __future__ import annotations

import pytest

from middleware.redaction import redact


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("card 4111 1111 1111 1111 please", "card [card ending 1111] please"),
        ("card 4111-1111-1111-1111.", "card [card ending 1111]."),
        ("amex 378282246310005", "amex [card ending 0005]"),
        ("order 4111 1111 1111 1112", "order 4111 1111 1111 1112"),  # fails the Luhn check
        ("my password is hunter2 thanks", "my password is [redacted] thanks"),
        ("PIN: 1234", "PIN: [redacted]"),
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

    from middleware.redaction import redact_body

    body = (
        b'<a xmlns:sf="urn:x"><sf:Id>5007000000OFL5FAAX</sf:Id>'
        b"<sf:Description>card 4111 1111 1111 1111, my pin is 1234</sf:Description>"
        b"<c><![CDATA[password: <secret> 4111111111111111]]></c></a>"
    )
    cleaned = redact_body(body, "text/xml")
    root = fromstring(cleaned)
    assert root.findtext("{urn:x}Id") == "5007000000OFL5FAAX"
    assert root.findtext("{urn:x}Description") == "card [card ending 1111], my pin is [redacted]"
    assert root.findtext("c") == "password: [redacted] [card ending 1111]"
    assert redact_body(b"<a>nothing to hide</a>", "text/xml") == b"<a>nothing to hide</a>"
