"""Mappings in the admin UI: live preview, inline errors, saved versions, rollback."""

from __future__ import annotations

import re

from sqlalchemy import select

from middleware.process.mapping_source import MappingVersions
from middleware.store.tables import interactions
from tests.actions import AdminActions
from tests.payloads import fixture_bytes

EDITOR = "/admin/mappings/zendesk"


def shipped_document(client) -> str:
    """Return the YAML the editor shows (the shipped file at first)."""
    import html
    import re

    page = client.get(EDITOR).data.decode()
    return html.unescape(re.search(r"<textarea[^>]*>(.*?)</textarea>", page, re.DOTALL)[1])


def with_mail_as(document: str, channel: str) -> str:
    """Return the Zendesk mapping with Zendesk's `mail` channel mapped to another channel."""
    assert "    mail: email\n" in document
    return document.replace("    mail: email\n", f"    mail: {channel}\n", 1)


def post(client, path: str, **form) -> object:
    token = AdminActions.csrf(client.get(EDITOR).data)
    return client.post(path, data={"csrf_token": token, **form})


def channel_of_ticket(core, ticket: str) -> str:
    with core.engine.connect() as conn:
        return conn.execute(select(interactions.c.channel).where(
            interactions.c.external_id == ticket)).scalar()  # fmt: skip


def test_the_editor_shows_the_mapping_in_use_and_its_preview(admin_client):
    """The shipped file is shown with every fixture mapped, in the page itself."""
    page = admin_client.get(EDITOR).data.decode()
    assert "from " in page and "zendesk.yaml" in page
    assert "fixture ticket_created__mail.json" in page
    assert "ticket.created" in page and "Charged twice for my January invoice" in page
    assert "None saved here yet" in page
    assert "mapping.js" in page


def test_the_preview_shows_the_record_number_and_whose_words_the_text_is(admin_client):
    """Each mapped ticket shows its number and said_by; an edit that changes them shows too."""
    page = admin_client.get(EDITOR).data.decode()
    assert "<td>number</td><td>5141</td>" in page
    assert "<td>said_by</td><td>customer</td>" in page
    document = shipped_document(admin_client).replace('"true": customer', '"true": agent', 1)
    fragment = post(admin_client, f"{EDITOR}/preview", document=document).data.decode()
    assert "<td>said_by</td><td>agent</td>" in fragment
    assert "<td>said_by</td><td>customer</td>" not in fragment


def test_the_preview_follows_the_document_being_edited(admin_client):
    """Posting an edited document previews it: mail tickets now map to chat."""
    document = with_mail_as(shipped_document(admin_client), "chat")
    response = post(admin_client, f"{EDITOR}/preview", document=document)
    assert response.status_code == 200
    fragment = response.data.decode()
    assert "<td>channel</td><td>chat</td>" in fragment
    assert "<html" not in fragment  # a fragment for the page's script to put in place


def test_an_invalid_document_previews_and_saves_with_an_inline_error_naming_the_path(
    admin_client, core
):
    """A channel that is not canonical is an error naming where; nothing is saved."""
    document = with_mail_as(shipped_document(admin_client), "carrier-pigeon")
    preview = post(admin_client, f"{EDITOR}/preview", document=document).data.decode()
    assert "channel.table (channels.mail)" in preview and "carrier-pigeon" in preview
    saved = post(admin_client, EDITOR, document=document)
    assert saved.status_code == 400
    assert "Not saved:" in saved.data.decode()
    assert core.mappings.history("zendesk") == []
    broken = post(admin_client, EDITOR, document="events: [unclosed")
    assert broken.status_code == 400 and "not valid YAML" in broken.data.decode()


def test_a_saved_mapping_is_used_for_the_next_webhook(
    admin_client, worker, core, hooks, fake_zendesk
):
    """After saving, a mail ticket arriving maps to the channel the admin chose."""
    document = with_mail_as(shipped_document(admin_client), "chat")
    response = post(admin_client, EDITOR, document=document, note="mail is our chat bridge")
    assert response.status_code == 302
    page = admin_client.get(EDITOR).data.decode()
    assert "version 1" in page and "mail is our chat bridge" in page and "(in use)" in page
    hooks.zendesk(fixture_bytes("ticket_created__mail.json"))
    worker.drain()
    assert channel_of_ticket(core, "5141") == "chat"


def test_rolling_back_puts_an_earlier_version_in_use_as_a_new_one(
    admin_client, worker, core, hooks, fake_zendesk
):
    """Versions are kept: rolling back to version 1 makes it version 3, and it is used."""
    shipped = shipped_document(admin_client)
    post(admin_client, EDITOR, document=with_mail_as(shipped, "chat"))
    post(admin_client, EDITOR, document=with_mail_as(shipped, "web"))
    response = post(admin_client, f"{EDITOR}/versions/1/rollback")
    assert response.status_code == 302
    history = core.mappings.history("zendesk")
    assert [v.id for v in history] == [3, 2, 1]
    assert history[0].note == "rollback to version 1"
    hooks.zendesk(fixture_bytes("ticket_created__mail.json"))
    worker.drain()
    assert channel_of_ticket(core, "5141") == "chat"
    refused = post(admin_client, f"{EDITOR}/versions/99/rollback")
    assert refused.status_code == 302 and refused.headers["Location"].endswith(EDITOR)
    assert "Not rolled back:" in admin_client.get(EDITOR).data.decode()
    assert [v.id for v in core.mappings.history("zendesk")] == [3, 2, 1]


def test_another_process_notices_a_saved_version(admin_client, core):
    """A process that did not save (a worker elsewhere) uses the new version after a refresh."""
    other = MappingVersions(core.engine, core.config.mappings_dir, ["zendesk"])
    assert other["zendesk"].tables["channels"]["mail"] == "email"
    post(admin_client, EDITOR, document=with_mail_as(shipped_document(admin_client), "chat"))
    other.refresh()
    assert other["zendesk"].tables["channels"]["mail"] == "chat"


def test_the_preview_includes_the_last_real_deliveries(admin_client, hooks):
    """Stored deliveries are previewed beside the fixtures, named with their local time."""
    hooks.zendesk(fixture_bytes("ticket_created__facebook_message.json"))
    page = admin_client.get(EDITOR).data.decode()
    assert re.search(r"delivery in:1 \(\d{4}-\d\d-\d\d \d\d:\d\d UTC\)", page)


def test_saving_needs_the_csrf_token_and_an_unknown_plugin_is_a_404(admin_client, core):
    """A forged save is refused; a plugin that is not configured has no editor."""
    response = admin_client.post(EDITOR, data={"document": "events: {}"})
    assert response.status_code == 400
    assert core.mappings.history("zendesk") == []
    assert admin_client.get("/admin/mappings/salesforce").status_code == 404


def alert_of(page: str) -> tuple[str, dict[str, str]]:
    """Return the text of the page's placed error and its data attributes (line, column)."""
    import html
    import re

    found = re.search(r'<p class="error placed" role="alert"([^>]*)>(.*?)</p>', page, re.DOTALL)
    assert found, "no error shown"
    return html.unescape(found[2]), dict(re.findall(r'data-(\w+)="(\d+)"', found[1]))


def test_a_yaml_error_is_said_in_plain_words_at_its_line_and_column(admin_client, core):
    """A misplaced colon is named by line and column, in the preview and when saving."""
    document = shipped_document(admin_client).replace(
        "    mail: email\n", "    mail: email: sms\n", 1
    )
    line = document.splitlines().index("    mail: email: sms") + 1
    said = (
        f"not valid YAML at line {line}, column 16: a “key: value” is not allowed here "
        "(check this line's indentation, and put a value that holds “: ” in quotes)"
    )
    preview = post(admin_client, f"{EDITOR}/preview", document=document).data.decode()
    assert alert_of(preview) == (f"mapping: {said}", {"line": str(line), "column": "16"})
    saved = post(admin_client, EDITOR, document=document)
    assert saved.status_code == 400
    assert alert_of(saved.data.decode()) == (
        f"Not saved: mapping: {said}",
        {"line": str(line), "column": "16"},
    )
    assert "ScannerError" not in saved.data.decode() and "<unicode string>" not in preview
    assert core.mappings.history("zendesk") == []


def test_an_unclosed_list_is_placed_where_it_opens(admin_client):
    """A "[" never closed is reported at the bracket, not at the end of the text."""
    document = "tables: {}\nevents:\n  ticket.created: [creates\n\n"
    preview = post(admin_client, f"{EDITOR}/preview", document=document).data.decode()
    assert alert_of(preview) == (
        "mapping: not valid YAML at line 3, column 19: the “[” here is never closed by a “]”, "
        "or a comma is missing between its items",
        {"line": "3", "column": "19"},
    )


def test_an_error_of_the_mapping_itself_has_no_place(admin_client):
    """A valid YAML text that is not a valid mapping names the path, with no line to mark."""
    document = with_mail_as(shipped_document(admin_client), "carrier-pigeon")
    text, place = alert_of(post(admin_client, f"{EDITOR}/preview", document=document).data.decode())
    assert "channel.table (channels.mail)" in text and place == {}


def test_the_editor_is_the_textarea_upgraded_by_the_vendored_editor(admin_client):
    """The page posts a plain textarea and loads the editor from Carryover's own files."""
    page = admin_client.get(EDITOR).data.decode()
    assert '<textarea name="document" id="document"' in page and 'data-mode="yaml"' in page
    for script in ("vendor/codemirror/codemirror.js", "vendor/codemirror/yaml.js", "editor.js"):
        assert f'src="/admin/static/{script}"' in page
    for script in ("codemirror.js", "yaml.js", "jinja2.js"):
        with admin_client.get(f"/admin/static/vendor/codemirror/{script}") as served:
            assert served.status_code == 200 and b"CodeMirror" in served.data
