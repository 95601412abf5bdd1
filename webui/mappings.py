"""Mappings in the admin UI: edit a plugin's YAML, preview it live, save versions, roll back."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
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

from middleware.errors import InboundError
from middleware.ingest.inbox import request_of
from middleware.integrations.plugin import Capability, InboundEvent, InboundRequest, Plugin
from middleware.process.mapping import MappingError, PluginMapping
from middleware.process.mapping_source import parse_document
from middleware.store.tables import reading, utcnow
from middleware.web.current import current_installation
from webui.audit import log_change
from webui.clock import local_time
from webui.editing import PlacedError

bp = Blueprint("mappings", __name__, url_prefix="/mappings")
RECENT_DELIVERIES = 5
HISTORY_PREVIEW_SINCE = datetime(2000, 1, 1)  # the fixtures' pages, whatever their dates
CONTENT_TYPES = {".json": "application/json", ".form": "application/x-www-form-urlencoded",
                 ".xml": "text/xml; charset=utf-8"}  # fmt: skip
SHOWN_FIELDS = ("kind", "external_id", "number", "channel", "direction", "status", "subject",
                "text", "said_by", "customer_name", "agent", "team", "occurred_at",
                "duration_s", "preferred_channels")  # fmt: skip


@dataclass
class Preview:
    """What one sample payload becomes under a mapping."""

    sample: str
    results: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None


def _plugin(key: str) -> Plugin:
    plugin = current_installation().registry.get(key)
    if plugin is None or key not in current_installation().mappings:
        abort(404, f"No integration {key!r} that receives webhooks is configured.")
    return plugin  # type: ignore[no-any-return]


@bp.get("/")
def listing() -> str:
    """List the mappings of the configured integrations."""
    core = current_installation()
    rows = []
    for key in sorted(core.registry.instances):
        if key in core.mappings:
            _, version = core.mappings.document(key)
            rows.append({"key": key, "title": core.registry.classes[key].title,
                         "version": version, "file": core.mappings.file_of(key)})  # fmt: skip
    return render_template("admin/mappings.html", rows=rows)


@bp.get("/<key>")
def editor(key: str) -> str:
    """Show the mapping in use, its live preview and its versions."""
    plugin = _plugin(key)
    document, version = current_installation().mappings.document(key)
    return _editor_page(plugin, document, version)


def _editor_page(plugin: Plugin, document: str, version: int | None,
                 error: PlacedError | None = None, note: str = "") -> str:  # fmt: skip
    previews, preview_error = _preview_of(plugin, document)
    return render_template(
        "admin/mapping.html", key=plugin.key, title=plugin.title, document=document,
        version=version, history=current_installation().mappings.history(plugin.key), error=error,
        previews=previews, preview_error=preview_error, note=note,
        file=current_installation().mappings.file_of(plugin.key), fields=SHOWN_FIELDS,
    )  # fmt: skip


@bp.post("/<key>/preview")
def preview(key: str) -> str:
    """Render the preview of a document being edited (the page's script asks as you type)."""
    plugin = _plugin(key)
    previews, error = _preview_of(plugin, request.form.get("document", ""))
    return render_template("admin/mapping_preview.html", previews=previews, preview_error=error,
                           fields=SHOWN_FIELDS)  # fmt: skip


@bp.post("/<key>")
def save(key: str) -> ResponseReturnValue:
    """Validate and save a new version of the mapping."""
    plugin = _plugin(key)
    document, note = request.form.get("document", ""), request.form.get("note", "")
    try:
        current_installation().mappings.save(key, document, g.admin.username, note)
    except MappingError as exc:
        _, version = current_installation().mappings.document(key)
        return _editor_page(plugin, document, version, error=PlacedError.of(exc), note=note), 400
    log_change("mapping.save", f"mapping {key}", note)
    flash(f"The {plugin.title} mapping is saved and in use.")
    return redirect(url_for("admin.mappings.editor", key=key))


@bp.post("/<key>/versions/<id:version_id>/rollback")
def rollback(key: str, version_id: int) -> ResponseReturnValue:
    """Put an earlier version back in use (as a new version)."""
    _plugin(key)
    try:
        current_installation().mappings.roll_back(key, version_id, g.admin.username)
    except ValueError as exc:  # no such version, or it no longer validates
        flash(f"Not rolled back: {exc}", "error")
        return redirect(url_for("admin.mappings.editor", key=key))
    log_change("mapping.restore", f"mapping {key}", f"version {version_id}")
    flash(f"Version {version_id} is in use again.")
    return redirect(url_for("admin.mappings.editor", key=key))


# -- the preview -------------------------------------------------------------------------------
def _preview_of(plugin: Plugin, document: str) -> tuple[list[Preview], PlacedError | None]:
    """Map the plugin's fixtures and its last real deliveries with a document."""
    try:
        mapping = parse_document(plugin.key, document, "mapping")
    except MappingError as exc:
        return [], PlacedError.of(exc)
    previews = [_preview_sample(plugin, mapping, name, req) for name, req in _samples(plugin)]
    return previews + _history_previews(plugin, mapping), None


def _shown(value: Any) -> Any:
    """Return a mapped value as the preview shows it (a list of names joined by commas)."""
    return ", ".join(value) if isinstance(value, tuple) else value


def _samples(plugin: Plugin) -> list[tuple[str, InboundRequest]]:
    """Return the plugin's fixtures and its newest stored deliveries, as inbound requests."""
    samples = []
    for path in sorted((plugin.folder() / "fixtures").glob("*.*")):
        headers = {
            "content-type": CONTENT_TYPES.get(path.suffix, "application/octet-stream"),
            **plugin.fixture_headers(path),
        }
        fixture = InboundRequest(path=f"/hooks/{plugin.key}", url="", headers=headers,
                                 body=path.read_bytes())  # fmt: skip
        samples.append((f"fixture {path.name}", fixture))
    core = current_installation()
    with reading(core.engine) as conn:
        rows = core.inbox.newest(conn, plugin.key, limit=RECENT_DELIVERIES)
    samples += [
        (f"delivery in:{row.id} ({local_time(row.received_at)})", request_of(row)) for row in rows
    ]
    return samples


def _preview_sample(plugin: Plugin, mapping: PluginMapping, name: str,
                    req: InboundRequest) -> Preview:  # fmt: skip
    result = Preview(name)
    try:
        events = plugin.parse(req)
    except InboundError as exc:
        result.error = f"not parsed: {exc}"
        return result
    return _preview_events(mapping, result, events)


def _history_previews(plugin: Plugin, mapping: PluginMapping) -> list[Preview]:
    """Map the pages of past records in the plugin's fixtures (what an import reads)."""
    if not plugin.has_capability(Capability.IMPORT_HISTORY):
        return []
    previews = []
    for path in sorted((plugin.folder() / "fixtures" / "history").glob("*.json")):
        page = plugin.history_page(json.loads(path.read_bytes()), HISTORY_PREVIEW_SINCE)
        result = Preview(f"fixture history/{path.name} (an import's page)")
        previews.append(_preview_events(mapping, result, list(page.events)))
    return previews


def _preview_events(mapping: PluginMapping, result: Preview, events: list[InboundEvent]) -> Preview:
    """Add what the mapping makes of each event (the first ten) to a preview."""
    for event in events[:10]:  # a batch of 100 notifications: the first ten show the mapping
        entry: dict[str, Any] = {"event": event.type}
        try:
            if not mapping.handles(event.type):
                entry["ignored"] = True
            elif mapping.describes_customer(event.type):
                record = mapping.apply_customer(event.type, event.payload)
                entry["customer"] = {"external_id": record.external_id,
                                     "customer_name": record.customer_name}  # fmt: skip
                entry["identities"] = record.identities
            else:
                interaction = mapping.apply(event.type, event.payload, utcnow())
                entry["interaction"] = {f: _shown(getattr(interaction, f)) for f in SHOWN_FIELDS}
                entry["identities"] = interaction.identities
        except MappingError as exc:
            entry["error"] = str(exc)
        result.results.append(entry)
    return result
