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
from middleware.customers.timeline import history, latest_customer
from middleware.notes.summary import (
    CALL_NOTE_TEMPLATE,
    UPDATE_NOTE_TEMPLATE,
    build_context,
    item_of,
    update_variables,
)
from middleware.notes.template_checks import SAMPLE_CALL, sample_updates, samples_for
from middleware.process.calls import call_facts, latest_call
from middleware.process.updates import NEWS_KINDS
from middleware.store.documents import DocumentError, DocumentVersions
from middleware.store.tables import reading
from middleware.web.current import current_installation
from webui.audit import log_change
from webui.editing import PlacedError

bp = Blueprint("templates", __name__, url_prefix="/templates")
NO_CUSTOMER = "No customer yet: the preview needs one customer in the timeline."


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
    failure = current_installation().renderer.failure
    rows = [{"name": n, "version": saved.version_of(n), "failure": failure(n)}
            for n in saved.names()]  # fmt: skip
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
                 error: PlacedError | None = None, note: str = "") -> str:  # fmt: skip
    customer_id, preview, preview_error = _preview(name, text, customer_id)
    return render_template(
        "admin/template.html", name=name, text=text, version=version, error=error, note=note,
        history=_saved_templates().history(name), customer_id=customer_id, preview=preview,
        preview_error=preview_error, failure=current_installation().renderer.failure(name),
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
        _check_renders(_known_template(name), text, _customer_arg())
        _saved_templates().save(name, text, g.admin.username, note)
    except DocumentError as exc:
        _, version = _saved_templates().document(name)
        error = PlacedError.of(exc)
        return _editor_page(name, text, version, _customer_arg(), error=error, note=note), 400
    current_installation().renderer.failures.forget(name)
    log_change("template.save", f"template {name}", note)
    flash(f"{name} is saved and in use.")
    return redirect(url_for("admin.templates.editor", name=name, customer=_customer_arg()))


@bp.post("/<name>/versions/<id:version_id>/rollback")
def rollback(name: str, version_id: int) -> ResponseReturnValue:
    """Put an earlier version back in use (as a new version)."""
    old = [v for v in _saved_templates().history(_known_template(name)) if v.id == version_id]
    try:
        if old:  # else roll_back says there is no such version
            _check_renders(name, old[0].document, None)
        _saved_templates().roll_back(name, version_id, g.admin.username)
    except DocumentError as exc:
        flash(f"Not rolled back: {exc}", "error")
        return redirect(url_for("admin.templates.editor", name=name))
    current_installation().renderer.failures.forget(name)
    log_change("template.restore", f"template {name}", f"version {version_id}")
    flash(f"Version {version_id} of {name} is in use again.")
    return redirect(url_for("admin.templates.editor", name=name))


@bp.post("/<name>/restore")
def restore(name: str) -> ResponseReturnValue:
    """Put the shipped template back in use, as a new version (the others stay)."""
    saved = _saved_templates()
    saved.save(_known_template(name), saved.read_default(name), g.admin.username,
               note="restored the shipped template")  # fmt: skip
    current_installation().renderer.failures.forget(name)
    log_change("template.restore", f"template {name}", "the shipped template")
    flash(f"The shipped {name} is in use again.")
    return redirect(url_for("admin.templates.editor", name=name))


def _check_renders(name: str, text: str, customer_id: int | None) -> None:
    """Raise DocumentError unless a text renders on the samples and on a real customer.

    Undefined variables fail (the sandbox's StrictUndefined): a misspelt name would
    otherwise fail every note of a returning customer.
    """
    renderer = current_installation().renderer
    for label, values in samples_for(name, renderer):
        try:
            renderer.preview(name, text, values)
        except DocumentError as exc:
            raise DocumentError(f"fails for {label}: {exc}", exc.line) from None
    customer_id, _, error = _preview(name, text, customer_id)
    if customer_id is not None and error is not None:
        raise DocumentError(f"fails for customer #{customer_id}: {error.text}", error.line)


def _preview(name: str, text: str, customer_id: int | None
             ) -> tuple[int | None, str | None, PlacedError | None]:  # fmt: skip
    """Render a text for a real customer (the one asked for, else the last one in touch)."""
    renderer = current_installation().renderer
    with reading(current_installation().engine) as conn:
        customer_id = _pick_customer(conn, customer_id)
        if customer_id is None:
            return None, None, PlacedError(NO_CUSTOMER)
        if name == CALL_NOTE_TEMPLATE:
            call = latest_call(conn, customer_id)
            values = {"call": call_facts(conn, call) if call else SAMPLE_CALL,
                      "customer_name": customer_name(conn, customer_id)}  # fmt: skip
        elif name == UPDATE_NOTE_TEMPLATE:
            values = _latest_news(conn, customer_id)
        else:
            settings = current_installation().config.summary
            context = build_context(
                conn, customer_id, settings["recent_limit"], mood=settings["mood"]
            )
            values = renderer.variables(context)
    try:
        return customer_id, renderer.preview(name, text, values), None
    except DocumentError as exc:
        return customer_id, None, PlacedError.of(exc)


def _latest_news(conn: Any, customer_id: int) -> dict[str, Any]:
    """Return the update note's variables for the customer's latest ticket, case or message
    (else for the sample ticket)."""
    core = current_installation()
    latest = history(conn, customer_id, limit=1, kinds=NEWS_KINDS)
    if not latest:
        return sample_updates(core.renderer)[0][1]
    item = item_of(latest[0])
    plugin = core.registry.get(item["source"])
    tool = plugin.tool_name() if plugin is not None else item["source"]
    return update_variables(core.renderer.named(item), tool, customer_name(conn, customer_id))


def _pick_customer(conn: Any, customer_id: int | None) -> int | None:
    if customer_id is not None:
        return live_customer(conn, customer_id)
    return latest_customer(conn)
