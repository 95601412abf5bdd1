"""A saved template that fails at run time falls back to the shipped file and is recorded."""

from __future__ import annotations

import logging

import pytest

from middleware.notes.summary import SummaryRenderer
from middleware.notes.template_checks import sample_calls, sample_contexts
from tests.payloads import fixture_bytes


def test_a_failing_included_template_is_the_one_recorded(core, worker, fake_zendesk, hooks, caplog):
    """A saved summary.txt.j2 failing inside the shipped zendesk.txt.j2 is named with its
    version and line; the note is written with the shipped templates; two failures log once."""
    core.renderer.saved.save("summary.txt.j2", "Who:\n{{ 1 // 0 }}\n", "ada")
    hooks.zendesk(fixture_bytes("ticket_created__mail.json"))
    hooks.zendesk(fixture_bytes("ticket_created__facebook_message.json"))
    with caplog.at_level(logging.ERROR, logger="middleware.notes.template_checks"):
        worker.drain()
        [(_, values), _] = sample_contexts(core.renderer)
        assert "Ann Example —" in core.renderer._render("zendesk.txt.j2", values)
    assert fake_zendesk.notes(5149)[0]["body"].startswith("Ann Example\nOpen:\n- #5141 · new")
    failure = core.renderer.failure("summary.txt.j2")
    assert failure is not None and failure.version == 1 and failure.count == 2
    assert failure.error == "line 2: ZeroDivisionError: integer division or modulo by zero"
    assert core.renderer.failure("zendesk.txt.j2") is None
    assert len([r for r in caplog.records if "summary.txt.j2" in r.getMessage()]) == 1


def test_a_failing_call_note_falls_back(core):
    """The call note falls back to the shipped one too."""
    core.renderer.saved.save("call_note.txt.j2", "{{ call.agnets }}", "ada")
    [(_, values), _] = sample_calls()
    assert "Phone call" in core.renderer.render_call(**values)
    assert "agnets" in core.renderer.failure("call_note.txt.j2").error


def test_the_shipped_templates_render_on_the_samples():
    """The samples fit the shipped templates (else no version could be saved)."""
    renderer = SummaryRenderer()
    for name in ("summary.txt.j2", "call_note.txt.j2"):
        shipped = renderer.file_source(name)
        samples = sample_calls() if name == "call_note.txt.j2" else sample_contexts(renderer)
        for _, values in samples:
            assert renderer.preview(name, shipped, values)


def test_a_failing_shipped_template_is_not_hidden(tmp_path):
    """Without a saved version there is nothing to fall back to: the error is raised."""
    (tmp_path / "summary.txt.j2").write_text("{{ nope }}")
    renderer = SummaryRenderer(override_dir=tmp_path)
    [(_, values), _] = sample_contexts(renderer)
    with pytest.raises(Exception, match="nope"):
        renderer._render("summary.txt.j2", values)
