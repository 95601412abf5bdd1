"""Summary templates in the admin UI: preview on a real customer, versions, rollback."""

from __future__ import annotations

from tests.actions import AdminActions
from tests.payloads import fixture_bytes, twilio_fields

EDITOR = "/admin/templates/zendesk.txt.j2"


def post(client, path: str, **form) -> object:
    token = AdminActions.csrf(client.get("/admin/templates/").data)
    return client.post(path, data={"csrf_token": token, **form})


def test_templates_are_listed_with_the_version_in_use(admin_client):
    """Every shipped template is listed; none is saved yet."""
    page = admin_client.get("/admin/templates/").data.decode()
    for name in ("zendesk.txt.j2", "salesforce.txt.j2", "summary.txt.j2", "call_note.txt.j2",
                 "update_note.txt.j2"):  # fmt: skip
        assert name in page
    assert "version" not in page.split("<table>")[1].replace("In use", "")


def test_the_preview_renders_for_the_customer_last_in_touch(
    admin_client, worker, hooks, fake_zendesk
):
    """The editor previews the note for a real customer, with their tickets."""
    hooks.zendesk(fixture_bytes("ticket_created__mail.json"))
    worker.drain()
    page = admin_client.get(EDITOR).data.decode()
    assert (
        "Ann Example\nOpen:\n- #5141 · new · Charged twice for my January invoice · "
        f"{fake_zendesk.url}/agent/tickets/5141\n"
    ) in page
    assert "Recognised by email, phone and facebook" in page


def test_a_syntax_error_is_shown_inline_and_not_saved(
    admin_client, core, worker, hooks, fake_zendesk
):
    """A template Jinja cannot compile is refused with the line; the old one stays in use."""
    hooks.zendesk(fixture_bytes("ticket_created__mail.json"))
    worker.drain()
    broken = "Hello {{ customer.name }\n"
    preview = post(admin_client, f"{EDITOR}/preview", document=broken).data.decode()
    assert "line 1" in preview
    response = post(admin_client, EDITOR, document=broken)
    assert response.status_code == 400 and "Not saved:" in response.data.decode()
    assert core.renderer.saved.history("zendesk.txt.j2") == []


def test_a_saved_template_writes_the_next_note(admin_client, worker, fake_zendesk, hooks):
    """After saving, the next note on a new ticket uses the admin's wording."""
    text = 'Seen before, from Carryover:\n\n{% include "summary.txt.j2" %}\n'
    assert post(admin_client, EDITOR, document=text, note="shorter intro").status_code == 302
    hooks.zendesk(fixture_bytes("ticket_created__mail.json"))
    hooks.zendesk(fixture_bytes("ticket_created__facebook_message.json"))
    worker.drain()
    [note] = fake_zendesk.notes(5149)
    assert note["body"].startswith("Seen before, from Carryover:")


def test_rolling_back_restores_the_earlier_wording(admin_client, worker, fake_zendesk, core, hooks):
    """Rollback puts version 1 back in use as version 3."""
    post(admin_client, EDITOR, document="First wording.\n")
    post(admin_client, EDITOR, document="Second wording.\n")
    assert post(admin_client, f"{EDITOR}/versions/1/rollback").status_code == 302
    assert [v.id for v in core.renderer.saved.history("zendesk.txt.j2")] == [3, 2, 1]
    hooks.zendesk(fixture_bytes("ticket_created__mail.json"))
    hooks.zendesk(fixture_bytes("ticket_created__facebook_message.json"))
    worker.drain()
    assert fake_zendesk.notes(5149)[0]["body"].startswith("First wording.")


def test_the_call_note_previews_with_the_customers_last_call(admin_client, worker, hooks):
    """call_note.txt.j2 is previewed with a real call of the customer."""
    hooks.twilio(twilio_fields("call_started__ringing.form"))
    hooks.twilio(twilio_fields("call_ended__completed.form"))
    worker.drain()
    page = admin_client.get("/admin/templates/call_note.txt.j2").data.decode()
    assert "Phone call" in page and "+14155550142" in page


def test_the_update_note_previews_with_the_customers_latest_news(
    admin_client, worker, hooks, fake_zendesk
):
    """update_note.txt.j2 is previewed with the customer's latest ticket, named and linked."""
    hooks.zendesk(fixture_bytes("ticket_created__mail.json"))
    worker.drain()
    page = admin_client.get("/admin/templates/update_note.txt.j2").data.decode()
    assert "Ann Example opened Zendesk ticket #5141 by email" in page
    assert f"{fake_zendesk.url}/agent/tickets/5141" in page


def test_the_update_note_is_checked_on_the_sample_news(admin_client, core):
    """The update note is refused when it fails on a sample ticket, case or SMS."""
    typed = "{{ record }}{% if item.kind == 'message' %}{{ item.txet }}{% endif %}"
    response = post(admin_client, "/admin/templates/update_note.txt.j2", document=typed)
    assert response.status_code == 400 and "fails for a sample SMS" in response.data.decode()
    assert core.renderer.saved.history("update_note.txt.j2") == []


def test_an_unknown_template_is_a_404(admin_client):
    """Only the installation's templates can be edited."""
    assert admin_client.get("/admin/templates/evil.j2").status_code == 404


# A template that renders on the samples (whose customer said only SAMPLE_SAID) and fails on
# a real customer who said anything else.
SAMPLE_SAID = "I was charged twice for my January invoice."
FAILS_ON_REAL_WORDS = (
    "Hello.\n{% for s in said if s.text != '" + SAMPLE_SAID + "' %}{{ s.nmae }}{% endfor %}\n"
)


def test_a_misspelt_variable_is_refused_on_the_samples_and_the_text_kept(admin_client, core):
    """With no customer yet, the samples refuse `customer.nmae`; the editor keeps the text."""
    typed = "Hello {{ customer.nmae }}\n"
    response = post(admin_client, EDITOR, document=typed, note="greeting")
    page = response.data.decode()
    assert response.status_code == 400
    assert "Not saved: fails for the sample customer Ann Example" in page and "nmae" in page
    assert ">Hello {{ customer.nmae }}\n</textarea>" in page and 'value="greeting"' in page
    assert core.renderer.saved.history("zendesk.txt.j2") == []


def test_the_call_note_is_checked_on_the_sample_calls(admin_client, core):
    """The call note is refused when it fails on a sample call."""
    response = post(admin_client, "/admin/templates/call_note.txt.j2", document="{{ call.agnets }}")
    assert response.status_code == 400 and "fails for the sample call" in response.data.decode()
    assert core.renderer.saved.history("call_note.txt.j2") == []


def test_a_template_failing_on_a_real_customer_is_refused(
    admin_client, core, worker, hooks, fake_zendesk
):
    """A text the samples render but the previewed customer does not is not saved."""
    hooks.zendesk(fixture_bytes("ticket_created__mail.json"))
    worker.drain()
    response = post(admin_client, EDITOR, document=FAILS_ON_REAL_WORDS)
    page = response.data.decode()
    assert response.status_code == 400
    assert "Not saved: fails for customer #" in page and "nmae" in page
    assert core.renderer.saved.history("zendesk.txt.j2") == []


def test_a_failing_template_falls_back_to_the_shipped_one_and_is_shown(
    admin_client, core, worker, fake_zendesk, hooks
):
    """A saved version that fails on a later customer never blocks a note; the page and
    the overview name it, and the next note is written with the shipped template."""
    assert post(admin_client, EDITOR, document=FAILS_ON_REAL_WORDS).status_code == 302
    hooks.zendesk(fixture_bytes("ticket_created__mail.json"))
    hooks.zendesk(fixture_bytes("ticket_created__facebook_message.json"))
    worker.drain()
    [note] = fake_zendesk.notes(5149)
    assert note["body"].startswith("Ann Example\nOpen:") and not note["body"].startswith("Hello.")
    page = admin_client.get(EDITOR).data.decode()
    assert "Version 1 failed 1 time" in page and "line 2" in page and "nmae" in page
    listing = admin_client.get("/admin/templates/").data.decode()
    assert listing.count("failed: the shipped file writes") == 1
    overview = admin_client.get("/admin/").data.decode()
    assert 'Template <a href="/admin/templates/zendesk.txt.j2">zendesk.txt.j2</a>' in overview
    assert "(version 1) failed" in overview and "nmae" in overview


def test_restoring_the_shipped_template_saves_it_as_a_new_version(
    admin_client, core, worker, fake_zendesk, hooks
):
    """Restore saves the shipped text as version 2 (version 1 stays) and clears the warning."""
    assert post(admin_client, EDITOR, document=FAILS_ON_REAL_WORDS).status_code == 302
    hooks.zendesk(fixture_bytes("ticket_created__mail.json"))
    hooks.zendesk(fixture_bytes("ticket_created__facebook_message.json"))
    worker.drain()
    assert admin_client.post(f"{EDITOR}/restore").status_code in (400, 403)  # CSRF
    response = post(admin_client, f"{EDITOR}/restore")
    assert response.status_code == 302 and response.location.endswith(EDITOR)
    saved = core.renderer.saved
    assert [v.id for v in saved.history("zendesk.txt.j2")] == [2, 1]
    assert saved.document("zendesk.txt.j2") == (saved.read_default("zendesk.txt.j2"), 2)
    assert saved.history("zendesk.txt.j2")[0].note == "restored the shipped template"
    page = admin_client.get(EDITOR).data.decode()
    assert "The shipped zendesk.txt.j2 is in use again." in page and "failed" not in page
    assert "zendesk.txt.j2</a> (version" not in admin_client.get("/admin/").data.decode()


def test_a_rollback_to_a_failing_version_is_refused(
    admin_client, core, worker, hooks, fake_zendesk
):
    """Rolling back to a version that now fails on the customer is refused too."""
    assert post(admin_client, EDITOR, document=FAILS_ON_REAL_WORDS).status_code == 302
    assert post(admin_client, EDITOR, document="Fine.\n").status_code == 302
    hooks.zendesk(fixture_bytes("ticket_created__mail.json"))
    worker.drain()
    response = post(admin_client, f"{EDITOR}/versions/1/rollback")
    assert response.status_code == 302 and response.headers["Location"].endswith(EDITOR)
    page = admin_client.get(EDITOR).data.decode()
    assert "Not rolled back:" in page and "nmae" in page
    assert [v.id for v in core.renderer.saved.history("zendesk.txt.j2")] == [2, 1]


def test_a_syntax_error_is_placed_at_its_line(admin_client, core, worker, hooks, fake_zendesk):
    """A tag never closed is placed where the template ends; a bad "}" on its own line."""
    hooks.zendesk(fixture_bytes("ticket_created__mail.json"))
    worker.drain()
    broken = "Hello.\n\n{% if customer.name %}\n{{ customer.name }}\n"
    preview = post(admin_client, f"{EDITOR}/preview", document=broken).data.decode()
    assert (
        'role="alert" data-line="4"' in preview and "line 4: Unexpected end of template" in preview
    )
    response = post(admin_client, EDITOR, document="Hello {{ customer.name }\n")
    page = response.data.decode()
    assert response.status_code == 400
    assert '<p class="error placed" role="alert" data-line="1">Not saved: ' in page
    assert "line 1: unexpected &#39;}&#39;" in page
    assert core.renderer.saved.history("zendesk.txt.j2") == []


def test_a_template_failing_when_rendered_is_placed_at_its_line(admin_client, core):
    """An unknown variable on line 2 is refused with line 2 for the editor to mark."""
    response = post(admin_client, EDITOR, document="Hello.\n{{ nmae }}\n")
    page = response.data.decode()
    assert response.status_code == 400
    assert '<p class="error placed" role="alert" data-line="2">Not saved: ' in page
    assert "&#39;nmae&#39; is undefined" in page
    assert (
        'data-mode="jinja2"' in page and 'src="/admin/static/vendor/codemirror/jinja2.js"' in page
    )
