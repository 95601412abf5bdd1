"""A note as a Zendesk comment's HTML body: escaped, its http(s) URLs links, lists as lists."""

from __future__ import annotations

from plugins.zendesk.rich import COMMENT_MAX_BYTES, fits, note_html


def test_a_note_becomes_paragraphs_lists_and_links():
    text = (
        "Carla Rossi — 2 contacts in 30 days: phone\n"
        "Open:\n"
        "- #2 · open · see https://acme.zendesk.com/agent/tickets/2.\n"
        '  "my card <b>was</b> charged & not refunded"\n'
        "\n"
        "[Carryover ref co-1-summary-0123456789ab]"
    )
    assert note_html(text) == (
        "<p>Carla Rossi — 2 contacts in 30 days: phone</p><p>Open:</p><ul><li>#2 · open · see "
        '<a href="https://acme.zendesk.com/agent/tickets/2" rel="noopener noreferrer">'
        "https://acme.zendesk.com/agent/tickets/2</a>.<br>&quot;my card &lt;b&gt;was&lt;/b&gt; "
        "charged &amp; not refunded&quot;</li></ul><p>[Carryover ref co-1-summary-0123456789ab]</p>"
    )


def test_only_http_urls_become_links_and_nothing_escapes_the_attribute():
    """What a customer typed stays text: no javascript: link, no attribute broken out of."""
    html = note_html('- javascript:alert(1) and https://x.example/a"onmouseover="x')
    assert "javascript:alert(1)" in html and 'href="javascript' not in html
    assert 'href="https://x.example/a"' in html and 'onmouseover="' not in html


def test_size_limit_is_zendesks_64_kb():
    assert fits("a" * COMMENT_MAX_BYTES) and not fits("ä" * (COMMENT_MAX_BYTES // 2 + 1))
