"""A plain-text note as a Zendesk comment's HTML body: escaped, with clickable links."""

from __future__ import annotations

import html
import re

# The size Zendesk accepts for one comment; a note whose HTML is larger goes as plain text.
COMMENT_MAX_BYTES = 64 * 1024
URL = re.compile(r"https?://[^\s<>\"']+")
TRAILING = ".,;:!?)]}'\""  # punctuation after a URL that belongs to the sentence


def note_html(text: str) -> str:
    """Write a note as HTML: each line a paragraph, "- " lines a list, URLs as links.

    A line indented under a list item (what the customer said) stays in that item.
    Everything but the links is escaped: the note quotes customers word for word.
    """
    parts: list[str] = []
    items: list[str] = []
    for line in text.splitlines():
        if line.startswith("- "):
            items.append(_inline(line[2:]))
        elif line.startswith("  ") and line.strip() and items:
            items[-1] += "<br>" + _inline(line.strip())
        else:
            if items:
                parts.append("<ul>" + "".join(f"<li>{i}</li>" for i in items) + "</ul>")
                items = []
            if line.strip():
                parts.append(f"<p>{_inline(line.strip())}</p>")
    if items:
        parts.append("<ul>" + "".join(f"<li>{i}</li>" for i in items) + "</ul>")
    return "".join(parts)


def _inline(text: str) -> str:
    out, at = [], 0
    for match in URL.finditer(text):
        url = match.group(0).rstrip(TRAILING)
        out.append(html.escape(text[at : match.start()]))
        link = html.escape(url, quote=True)
        out.append(f'<a href="{link}" rel="noopener noreferrer">{link}</a>')
        at = match.start() + len(url)
    out.append(html.escape(text[at:]))
    return "".join(out)


def fits(markup: str) -> bool:
    """Tell whether an HTML body is within Zendesk's size limit of one comment."""
    return len(markup.encode("utf-8")) <= COMMENT_MAX_BYTES
