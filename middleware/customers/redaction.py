"""Redact card numbers and other secrets from customer text before it is stored or shown."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from typing import Any
from urllib.parse import parse_qsl, unquote_plus, urlencode

from middleware.ingest import json_input

# The longest card number candidate from a start: 13-19 digits, none of a digit, "+" or
# "-" right before (one right after "+" is an international phone number). (The
# lookbehind follows the first digit so that the engine only tries at digits.)
CARD_CANDIDATE = re.compile(r"\d(?<![\d+-]\d)(?:[ -]?\d){12,18}(?![\d-])")
DIGIT = re.compile(r"\d")
# Where a card number can be: 13 or more digits, spaces and dashes, from digit to digit.
CARD_RUN = re.compile(r"\d[\d -]{11,}\d")
ASCII_CARD_RUN = re.compile(CARD_RUN.pattern, re.ASCII)  # the same on ASCII text, sooner
CDATA_OPEN, CDATA_CLOSE = "<![CDATA[", "]]>"
XML_TYPES = frozenset({"text/xml", "application/xml", "application/soap+xml"})
# The words a secret phrase starts with: a cheap test that clears most bodies. The phrase's
# IGNORECASE also takes these letters for s, i and k, which lower() leaves as they are.
SECRET_WORDS = ("pass", "pwd", "pin", "cvv", "cvc", "security code")
IGNORECASE_LOOKALIKES = ("\u017f", "\u0131", "\u0130", "\u212a")  # ſ ı İ K
SECRET_PHRASE = re.compile(
    r"\b(password|passcode|passwort|pwd|pin|cvv|cvc|security code)(\s*(?:is|:|=)\s*)(\S+)",
    re.IGNORECASE,
)


class IdFields:
    """The fields whose values are the senders' ids, never redacted (the plugins declare them).

    An id of 13-19 digits passes the Luhn check one time in ten and would be taken for a
    card number. A name is kept as declared; "*_id" stands for every name ending in "_id".
    """

    def __init__(self, names: Iterable[str] = ()) -> None:
        names = sorted(set(names))
        self.names = frozenset(n for n in names if not n.startswith("*"))
        self.suffixes = tuple(n[1:] for n in names if n.startswith("*"))
        # A JSON id value ("id": "…", "requester_id": 123): what comes right before one
        # (searched for in the 64 characters before a run of digits). A key's quote follows
        # "{", "," or JSON whitespace, never a backslash.
        keys = [re.escape(n) for n in self.names]
        keys += ["[A-Za-z0-9]*" + re.escape(suffix) for suffix in self.suffixes]
        self.key_before = (
            re.compile(rf'(?<=[{{,\s])"(?:{"|".join(keys)})"[ \t\r\n]*:[ \t\r\n]*"?\Z')
            if keys
            else None
        )

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and (name in self.names or name.endswith(self.suffixes))


NO_ID_FIELDS = IdFields()


_DOUBLED = (0, 2, 4, 6, 8, 1, 3, 5, 7, 9)  # each digit doubled, digits of the result summed
_DOUBLE = str.maketrans("0123456789", "".join(map(str, _DOUBLED)))


def luhn_valid(digits: str) -> bool:
    """Tell whether a digit string passes the Luhn check."""
    if digits.isascii():  # the common case, in C: a digit's code is 48 + its value
        doubled = digits[-2::-2].translate(_DOUBLE)
        total = sum(digits[-1::-2].encode()) + sum(doubled.encode()) - 48 * len(digits)
        return total % 10 == 0
    total = sum(map(int, digits[-1::-2])) + sum(_DOUBLED[int(d)] for d in digits[-2::-2])
    return total % 10 == 0


def is_card_number(candidate: str) -> bool:
    """Tell whether a run of digits (with spaces or dashes) is a card number."""
    digits = candidate.replace(" ", "").replace("-", "")
    return 13 <= len(digits) <= 19 and luhn_valid(digits)


def redact(text: str | None) -> str | None:
    """Return the text with card numbers cut to their last 4 digits and secrets hidden."""
    if not text:
        return text
    text = redact_cards(text)
    return SECRET_PHRASE.sub(lambda m: f"{m.group(1)}{m.group(2)}[redacted]", text)


def redact_cards(text: str) -> str:
    """Cut each card number in the text to its last 4 digits.

    A card number is 13-19 digits with at most one space or dash between two of them, no
    digit or dash right after it, no digit, dash or "+" right before it, and it passes the
    Luhn check. The longest candidate from a start (CARD_CANDIDATE, in C) is almost always
    the answer. When it fails the check, candidates may overlap: "ref 0041 4111 1111 1111
    1111" holds one from "0041" that fails and the card after it, "4111111111111111 123"
    (a card, then its code) one of 19 digits that fails and the card inside it. Then the
    rest of that run of digits is scanned exactly (_cards_in_run): linear in the text.
    """
    parts, done, position = [], 0, 0
    while match := CARD_CANDIDATE.search(text, position):
        if is_card_number(match.group(0)):
            found: Iterable[tuple[int, int]] = [match.span()]
            position = match.end()
        else:
            run = CARD_RUN.match(text, match.start())
            position = run.end() if run else match.end()
            found = _cards_in_run(text, match.start(), position)
        for start, end in found:
            parts += [text[done:start], f"[card ending {text[end - 4 : end]}]"]
            done = end
    return "".join(parts) + text[done:] if parts else text


def _cards_in_run(text: str, first: int, last: int) -> Iterator[tuple[int, int]]:
    """Yield (start, end) of each card number in text[first:last], left to right."""
    places = [match.start() for match in DIGIT.finditer(text, first, last)]
    count = len(places)
    # chain[k]: where the digits joined to digit k (by nothing, a space or a dash) end.
    chain = [count] * (count + 1)
    for k in range(count - 2, -1, -1):
        gap = places[k + 1] - places[k]
        joined = gap == 1 or (gap == 2 and text[places[k] + 1] in " -")
        chain[k] = chain[k + 1] if joined else k + 1
    # Luhn sums of the digits before k: plain at even k and doubled at odd k, and the
    # other way round; a card whose last digit has an even k sums the first kind.
    evens, odds = [0], [0]
    for k, place in enumerate(places):
        value = int(text[place])
        plain, doubled = (value, _DOUBLED[value]) if k % 2 == 0 else (_DOUBLED[value], value)
        evens.append(evens[-1] + plain)
        odds.append(odds[-1] + doubled)
    k = 0
    while k < count:
        if chain[k] - k < 13:
            k = chain[k]  # no start before the chain's end has 13 digits after it
            continue
        place = places[k]
        if place > 0 and (text[place - 1].isdecimal() or text[place - 1] in "+-"):
            k += 1
            continue
        for end in range(min(chain[k], k + 19), k + 12, -1):
            after = places[end - 1] + 1
            if after < len(text) and (text[after].isdecimal() or text[after] == "-"):
                continue
            sums = evens if (end - 1) % 2 == 0 else odds
            if (sums[end] - sums[k]) % 10 == 0:
                yield place, after
                k = end
                break
        else:
            k += 1


def redact_body(body: bytes, content_type: str = "", ids: IdFields = NO_ID_FIELDS) -> bytes:
    """Return a raw webhook body as it may be stored: card numbers and secrets redacted.

    The values of the `ids` fields stay as sent.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return body
    if content_type == "application/x-www-form-urlencoded":
        return _redact_form(body, text, ids)
    if content_type in XML_TYPES or text.lstrip().startswith("<"):
        return _redact_xml(body, text, ids)
    if not _may_hold_secrets(text, ids.key_before):
        return body  # the common case, decided without parsing the JSON
    try:
        # Inside JSON strings only: on the raw text a secret phrase would swallow the closing
        # quote, and an id passing the Luhn check would be taken for a card.
        payload = json_input.loads(text, strict=False)  # a repeated key: the text path
        cleaned = _redact_values(payload, ids)
    except (ValueError, RecursionError):  # not JSON, or nested deeper than the walk goes
        return _redact_text(body, text)
    return body if cleaned == payload else json.dumps(cleaned).encode()


def _redact_form(body: bytes, text: str, ids: IdFields) -> bytes:
    """Redact the values of a form body (an SMS's Body); the ids stay as sent."""
    if not _may_hold_secrets(unquote_plus(text)):
        return body
    try:
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=True)
    except ValueError:  # not a form after all: the verifier refuses it anyway
        return _redact_text(body, text)
    cleaned = [(name, value if name in ids else redact(value) or "") for name, value in pairs]
    return body if cleaned == pairs else urlencode(cleaned).encode()


def _redact_xml(body: bytes, text: str, ids: IdFields) -> bytes:
    """Redact the text of an XML body (a case's Description) and leave its markup intact."""
    if not _may_hold_secrets(text):
        return body
    parts, done = [], 0
    for start, end, element in xml_text_runs(text):
        if element.rpartition(":")[2] in ids:
            continue  # <ns:Id>500700000000000002</ns:Id> is a record id, not a card
        parts += [text[done:start], redact(text[start:end]) or ""]
        done = end
    cleaned = "".join(parts) + text[done:]
    return body if cleaned == text else cleaned.encode("utf-8")


def xml_text_runs(text: str) -> Iterator[tuple[int, int, str]]:
    """Yield (start, end, element name) of each run of text and CDATA in an XML document.

    One pass with str.find, each search starting where the last ended: linear in the
    length of the text, whatever it holds (a regular expression that looks for the end
    of each unclosed CDATA section again is quadratic). A run is named after the tag
    before it; markup that is not well-formed ends the scan (the parser refuses it anyway).
    """
    position, element = 0, ""
    while True:
        opening = text.find("<", position)
        if opening < 0:
            return
        if opening > position:
            yield position, opening, element
        if text.startswith(CDATA_OPEN, opening):
            closing = text.find(CDATA_CLOSE, opening + len(CDATA_OPEN))
            if closing < 0:
                return
            yield opening + len(CDATA_OPEN), closing, element
            position = closing + len(CDATA_CLOSE)
            continue
        closing = text.find(">", opening)
        if closing < 0:
            return
        element = _start_tag_name(text[opening + 1 : closing])
        position = closing + 1


def _start_tag_name(tag: str) -> str:
    """Return the element name of a start tag's inside ("sf:Id" of "sf:Id a='b'"), else ""."""
    if tag.startswith(("/", "!", "?")) or not tag.strip():
        return ""
    return tag.split(None, 1)[0].rstrip("/")


def _redact_text(body: bytes, text: str) -> bytes:
    cleaned = redact(text)
    return body if cleaned == text else (cleaned or "").encode("utf-8")


def _may_hold_secrets(text: str, json_ids: re.Pattern[str] | None = None) -> bool:
    """Tell cheaply whether a body may hold a card number or secret (most hold neither).

    It may say yes wrongly (the full path then finds nothing), never no wrongly. With
    json_ids (what comes right before a JSON id value), a JSON id value is no card, as the
    JSON path judges it.
    """
    if "\\u" in text:
        return True  # JSON escapes can hide digits: the full path decodes them
    lowered = text.lower()
    may_have_phrase = any(word in lowered for word in SECRET_WORDS) or (
        not text.isascii() and any(letter in text for letter in IGNORECASE_LOOKALIKES)
    )
    # An escape (\n, \t) reads differently raw and decoded: then the full path decides.
    if may_have_phrase and ("\\" in text or SECRET_PHRASE.search(text)):
        return True
    return _may_hold_card(text, json_ids)


def _may_hold_card(text: str, json_ids: re.Pattern[str] | None) -> bool:
    """Tell whether a card number may be in the text: a run of 13 or more digits, spaces
    and dashes, unless it is a plain number of at most 19 digits that fails the Luhn check
    or (json_ids) is a JSON id value: ids of 13 digits are common, one in ten passes.

    A plain run holds no other candidate: a candidate has no digit on either side, so in
    a plain run it is the whole run.
    """
    cleared: set[str] = set()  # plain runs that failed the check (ids come back often)
    for run in (ASCII_CARD_RUN if text.isascii() else CARD_RUN).finditer(text):
        chars = run.group(0)
        if chars in cleared:
            continue
        if not (chars.isdigit() and len(chars) <= 19):
            return True  # spaces, dashes or a long run: the full path decides
        if not luhn_valid(chars):
            cleared.add(chars)
        elif not (json_ids and json_ids.search(text, max(0, run.start() - 64), run.start())):
            return True
    return False


def _redact_values(value: Any, ids: IdFields, key: str = "") -> Any:
    if isinstance(value, str):
        return value if key in ids else redact(value)
    if isinstance(value, list):
        return [_redact_values(v, ids, key) for v in value]
    if isinstance(value, dict):
        return {k: _redact_values(v, ids, str(k)) for k, v in value.items()}
    return value
