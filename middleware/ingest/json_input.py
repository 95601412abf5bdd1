"""JSON from outside: every object holds each key once, or the document is refused.

With Python's json module the last of two equal keys wins silently. In a Zendesk trigger
body, whose placeholders are pasted in as raw text, a customer's description can then
repeat a key that came before it ("link", "status", "id") and rewrite what Carryover
reads. A document with a repeated key is no document any sender means to send.
"""

from __future__ import annotations

import json
from typing import Any


class DuplicateKey(ValueError):
    """A JSON object names one key twice."""


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found = dict(pairs)
    if len(found) == len(pairs):
        return found
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            raise DuplicateKey(f"the key {key[:60]!r} appears twice in one object")
        seen.add(key)
    raise AssertionError("unreachable: fewer keys than pairs means a key repeats")


def loads(text: str, *, strict: bool = True) -> Any:
    """Parse JSON text, refusing an object with a repeated key (DuplicateKey, a ValueError)."""
    return json.loads(text, strict=strict, object_pairs_hook=_unique)
