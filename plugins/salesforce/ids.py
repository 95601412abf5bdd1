"""Salesforce record ids: 15 characters case-sensitive, or 18 with a case-folding suffix."""

from __future__ import annotations

import re

SALESFORCE_ID = re.compile(r"^[A-Za-z0-9]{15}([A-Za-z0-9]{3})?$")
# A CaseNumber as agents know it ("00001001"; an auto-number may carry a prefix).
CASE_NUMBER = re.compile(r"[A-Za-z0-9-]{1,30}")
SALESFORCE_SUFFIX = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"


def salesforce_id18(value: str) -> str | None:
    """Return the 18-character form of a 15- or 18-character Salesforce id."""
    if not SALESFORCE_ID.match(value):
        return None
    base = value[:15]
    suffix = ""
    for chunk in (base[0:5], base[5:10], base[10:15]):
        bits = sum(1 << i for i, ch in enumerate(chunk) if ch.isupper())
        suffix += SALESFORCE_SUFFIX[bits]
    return base + suffix


def normalise_contact(value: str) -> str | None:
    """Return a contact id in its 18-character form, or None when it names no contact."""
    found = salesforce_id18(value.strip())
    if found and not found[:15].strip("0"):
        return None  # 000000000000000AAA is Salesforce's empty key, not a contact
    return found
