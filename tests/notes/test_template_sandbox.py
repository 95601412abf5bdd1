"""Admin-edited templates render in Jinja's sandbox, see only their variables, and stay fresh."""

from __future__ import annotations

import pytest

from middleware.notes.summary import MAX_OUTPUT_CHARS, SummaryRenderer
from middleware.store.documents import DocumentError
from tests.actions import AdminActions
from tests.payloads import fixture_bytes

EDITOR = "/admin/templates/zendesk.txt.j2"
ESCAPES = [
    "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    "{{ joiner.__init__.__globals__ }}",
    "{{ lipsum.__globals__['os'].getcwd() }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ customer.__class__.__init__.__globals__ }}",
    "{{ (customer.items | list)[0].__class__ }}",
    "{% for x in range(3) %}{{ x }}{% endfor %}",
    "{{ self._TemplateReference__context }}",
    "{{ config }}",
]


def post(client, path: str, **form) -> object:
    token = AdminActions.csrf(client.get("/admin/templates/").data)
    return client.post(path, data={"csrf_token": token, **form})


@pytest.mark.parametrize("source", ESCAPES)
def test_a_preview_cannot_reach_python(admin_client, worker, source, hooks):
    """A template that reaches for Python's internals or a global gets an error, never output."""
    hooks.zendesk(fixture_bytes("ticket_created__mail.json"))
    worker.drain()
    page = post(admin_client, f"{EDITOR}/preview", document=source).data.decode()
    assert "uid=" not in page and "subclasses" not in page.replace(source, "")
    assert 'class="error"' in page or "error" in page.lower()
    assert "<built-in" not in page and "module" not in page.replace(source, "")


def test_a_saved_template_that_reaches_for_os_writes_no_output_of_it(
    admin_client, core, worker, fake_zendesk, hooks
):
    """A template that tries code execution is refused; saved anyway, the worker runs nothing."""
    evil = "{{ cycler.__init__.__globals__.os.popen('id').read() }}\n"
    assert post(admin_client, EDITOR, document=evil).status_code == 400
    core.renderer.saved.save("zendesk.txt.j2", evil, "someone")  # as an older release allowed
    hooks.zendesk(fixture_bytes("ticket_created__mail.json"))
    hooks.zendesk(fixture_bytes("ticket_created__facebook_message.json"))
    worker.drain()
    [note] = fake_zendesk.notes(5149)
    assert "uid=" not in note["body"] and note["body"].startswith("Ann Example\nOpen:")


@pytest.mark.parametrize(
    "source",
    ["{{ 'x' * 100000000 }}", "{{ [1] * 100000000 }}", "{{ 9 ** 999999 }}",
     "{{ 2 ** 64 ** 64 ** 64 ** 64 }}",
     "{% for i in customer.identities * 5000 %}{{ 'y' * 9000 }}{% endfor %}"],
)  # fmt: skip
def test_a_template_cannot_build_huge_values(source):
    """Repetition, powers and output are bounded, so a template cannot stall the worker."""
    renderer = SummaryRenderer()
    with pytest.raises(DocumentError):
        renderer.preview("zendesk.txt.j2", source, {"customer": {"identities": [1]}})


def test_output_up_to_the_bound_renders():
    """A long but bounded template still renders."""
    text = SummaryRenderer().preview("zendesk.txt.j2", "{{ 'z' * 9000 }}", {})
    assert text == "z" * 9000 and len(text) < MAX_OUTPUT_CHARS


def test_a_saved_version_replaces_the_shipped_file_already_compiled(core, admin_client):
    """A process that rendered the shipped template renders a newly saved version at once."""
    renderer = core.renderer
    call = {"source": "cti", "external_id": "1", "direction": "inbound", "status": "completed",
            "ended": True, "started_at": None, "duration_s": 5, "phone": None, "agents": [],
            "team": None, "transfers": []}  # fmt: skip
    assert renderer.render_call(call).startswith("Phone call")  # compiled from the file
    renderer.saved.save("call_note.txt.j2", "Call note v2.\n", "ada")
    assert renderer.render_call(call) == "Call note v2."
    renderer.saved.roll_back("call_note.txt.j2", renderer.saved.history("call_note.txt.j2")[0].id,
                             "ada")  # fmt: skip
    assert renderer.render_call(call) == "Call note v2."


def test_an_included_template_follows_its_saved_version(core):
    """A note that includes summary.txt.j2 shows the newly saved summary wording."""
    from middleware.notes.summary import CustomerContext

    context = CustomerContext(
        customer={"id": 1, "name": "Ann", "identities": [], "preferred_channels": []},
        open_items=[], interactions=[], said=[], preferred_channels=[], mood=None,
        repeat_contacts_7d=0,
    )  # fmt: skip
    assert core.renderer.render("zendesk", context) == "Ann"
    core.renderer.saved.save("summary.txt.j2", "Short: {{ customer.name }}\n", "ada")
    assert core.renderer.render("zendesk", context).endswith("Short: Ann")


def test_a_template_error_on_save_is_refused_with_its_line():
    """The renderer still refuses templates Jinja cannot compile."""
    with pytest.raises(DocumentError, match="line 1"):
        SummaryRenderer().check_source("zendesk.txt.j2", "{{ x }", "template")
