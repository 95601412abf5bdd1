"""Summary templates in the admin UI: edit each target's template, previewed on a real customer."""

from __future__ import annotations

from typing import Any

from flask import (
    Blueprint,
    abort,
    flash,
    g,
    redirect,
    render_template,
    request,
    url_for,
)
from flask.typing import ResponseReturnValue

from middleware.customers.edits import customer_name, live_customer
from middleware.customers.timeline import latest_customer
from middleware.notes.summary import build_context
from middleware.process.calls import call_facts, latest_call
from middleware.store.documents import DocumentError, DocumentVersions
from middleware.store.tables import reading
from middleware.web.current import current_installation

bp = Blueprint("templates", __name__, url_prefix="/templates")
CALL_NOTE = "call_note.txt.j2"
# When no customer has called yet, the call note is previewed with this call.
SAMPLE_CALL = {
    "source": "twilio", "external_id": "CA00000000000000sample", "direction": "inbound",
    "status": "completed", "ended": True, "started_at": "2025-02-03T09:30:00Z",
    "updated_at": "2025-02-03T09:36:40Z", "duration_s": 400, "phone": "+14155550142",
    "agents": ["emma", "bob"], "team": "billing",
    "transfers": [{"at": "2025-02-03T09:33:00Z", "from": "emma", "to": "bob", "team": "billing",
                   "text": "Transferred from emma to bob"}],
}  # fmt: skip


def _saved_templates() -> DocumentVersions[str]:
    saved = current_installation().renderer.saved
    assert saved is not None, "the renderer of an installation always has its saved templates"
    return saved  # type: ignore[no-any-return]


def _known_template(name: str) -> str:
    if name not in _saved_templates():
        abort(404, f"There is no template {name!r}.")
    return name


@bp.get("/")
def listing() -> str:
    """List the templates, and which version of each is in use."""
    saved = _saved_templates()
    rows = [{"name": n, "version": saved.version_of(n)} for n in saved.names()]
    return render_template("admin/templates.html", rows=rows)


@bp.get("/<name>")
def editor(name: str) -> str:
    """Show a template, its preview on a real customer and its versions."""
    text, version = _saved_templates().document(_known_template(name))
    return _editor_page(name, text, version, _customer_arg())


def _customer_arg() -> int | None:
    value = request.values.get("customer", "")
    return int(value) if value.isdigit() else None


def _editor_page(name: str, text: str, version: int | None, customer_id: int | None,
                 error: str | None = None, note: str = "") -> str:  # fmt: skip
    customer_id, preview, preview_error = _preview(name, text, customer_id)
    return render_template(
        "admin/template.html", name=name, text=text, version=version, error=error, note=note,
        history=_saved_templates().history(name), customer_id=customer_id, preview=preview,
        preview_error=preview_error,
    )  # fmt: skip


@bp.post("/<name>/preview")
def preview(name: str) -> str:
    """Render the text being edited (the page's script asks as you type)."""
    _, rendered, error = _preview(
        _known_template(name), request.form.get("document", ""), _customer_arg()
    )
    return render_template("admin/template_preview.html", preview=rendered, preview_error=error)


@bp.post("/<name>")
def save(name: str) -> ResponseReturnValue:
    """Check and save a new version of the template."""
    text, note = request.form.get("document", ""), request.form.get("note", "")
    try:
        _saved_templates().save(_known_template(name), text, g.admin.username, note)
    except DocumentError as exc:
        _, version = _saved_templates().document(name)
        return _editor_page(name, text, version, _customer_arg(), error=str(exc), note=note), 400
    flash(f"{name} is saved and in use.")
    return redirect(url_for("admin.templates.editor", name=name, customer=_customer_arg()))


@bp.post("/<name>/versions/<id:version_id>/rollback")
def rollback(name: str, version_id: int) -> ResponseReturnValue:
    """Put an earlier version back in use (as a new version)."""
    try:
        _saved_templates().roll_back(_known_template(name), version_id, g.admin.username)
    except DocumentError as exc:
        abort(409, str(exc))
    flash(f"Version {version_id} of {name} is in use again.")
    return redirect(url_for("admin.templates.editor", name=name))


def _preview(name: str, text: str, customer_id: int | None
             ) -> tuple[int | None, str | None, str | None]:  # fmt: skip
    """Render a text for a real customer (the one asked for, else the last one in touch)."""
    renderer = current_installation().renderer
    with reading(current_installation().engine) as conn:
        customer_id = _pick_customer(conn, customer_id)
        if customer_id is None:
            return None, None, "No customer yet: the preview needs one customer in the timeline."
        if name == CALL_NOTE:
            call = latest_call(conn, customer_id)
            values = {"call": call_facts(conn, call) if call else SAMPLE_CALL,
                      "customer_name": customer_name(conn, customer_id)}  # fmt: skip
        else:
            settings = current_installation().config.summary
            context = build_context(
                conn, customer_id, settings["recent_limit"], mood=settings["mood"]
            )
            values = renderer.variables(context)
    try:
        return customer_id, renderer.preview(name, text, values), None
    except DocumentError as exc:
        return customer_id, None, str(exc)


def _pick_customer(conn: Any, customer_id: int | None) -> int | None:
    if customer_id is not None:
        return live_customer(conn, customer_id)
    return latest_customer(conn)
