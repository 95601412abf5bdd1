"""Integrations in the admin UI: connect one, see its state and setup steps, test it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlsplit

from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    g,
    redirect,
    render_template,
    request,
    url_for,
)
from flask.typing import ResponseReturnValue

from middleware.admin.audit import changed_settings
from middleware.config import ConfigError, Setting
from middleware.errors import UpstreamError
from middleware.integrations.faults import UpstreamFaults, latest_error, read_faults, upstream_keys
from middleware.integrations.network import parse_address
from middleware.integrations.plugin import Capability, Plugin
from middleware.store.tables import reading, utcnow
from middleware.web.current import current_installation
from webui.audit import log_change
from webui.history import history_section
from webui.refusals import refusals_last_day, refusals_section

bp = Blueprint("integrations", __name__, url_prefix="/integrations")


def masked(value: Any) -> str:
    """Show that a secret is set without showing it: its length, and its end if long."""
    if not value:
        return "not set"
    text = str(value) if not isinstance(value, list) else ",".join(value)
    tail = f", ending …{text[-4:]}" if len(text) >= 16 else ""
    return f"set ({len(text)} characters{tail})"


@bp.get("/")
def listing() -> str:
    """List every installed integration with its state and last activity."""
    core = current_installation()
    with reading(core.engine) as conn:
        faults = read_faults(conn, upstream_keys(core.registry))
        rows = [_integration_row(conn, key, cls, faults.get(key))
                for key, cls in sorted(core.registry.classes.items())]  # fmt: skip
    titles = {key: cls.title for key, cls in core.registry.classes.items()}
    refused = {r.key: r for r in refusals_last_day(titles)}
    return render_template("admin/integrations.html", rows=rows, now=utcnow(), refused=refused)


@bp.get("/<key>")
def detail(key: str) -> str:
    """Show one integration: its settings (secrets masked), webhook URL, setup, activity."""
    return _page(_class(key))


@bp.post("/<key>")
def connect(key: str) -> ResponseReturnValue:
    """Save settings entered in the browser: checked, secrets sealed, in use within seconds."""
    cls = _class(key)
    core = current_installation()
    before = _saved_settings(key)
    try:
        settings = settings_from_form(key, cls.settings, request.form, _saved_settings(key))
        core.integrations.connect(key, settings, g.admin.username)
    except ConfigError as exc:
        return _page(cls, error=str(exc), entered=request.form), 400
    current_app.logger.info("admin %s connected %s", g.admin.username, key)
    log_change(
        "integration.connect",
        f"integration {key}",
        changed_settings(before, settings, cls.settings),
    )
    flash(f"Saved: {cls.title} is connected. Test the connection to check the credentials.")
    return redirect(url_for("admin.integrations.detail", key=key))


@bp.post("/<key>/disconnect")
def disconnect(key: str) -> ResponseReturnValue:
    """Turn off an integration connected in the browser and forget its settings."""
    cls = _class(key)
    core = current_installation()
    if core.registry.source_of(key) == "file":
        abort(409, f"{cls.title} is configured in the configuration file; change it there.")
    core.integrations.disconnect(key, g.admin.username)
    current_app.logger.info("admin %s disconnected %s", g.admin.username, key)
    log_change("integration.disconnect", f"integration {key}")
    flash(f"{cls.title} is disconnected; its webhooks now get 404.")
    return redirect(url_for("admin.integrations.detail", key=key))


@bp.post("/<key>/generate-secret")
def generate_secret(key: str) -> ResponseReturnValue:
    """Make a new webhook secret, save it, and show it this once to paste into the sender."""
    cls = _class(key)
    if cls.generated_secret is None:
        abort(404, f"{cls.title} takes its secret from the tool that sends the webhooks.")
    core = current_installation()
    value = cls.generate_secret()
    settings = {**(_saved_settings(key) or {}), cls.generated_secret: value}
    try:
        core.integrations.connect(key, settings, g.admin.username)
    except ConfigError as exc:
        return _page(cls, error=str(exc)), 400
    current_app.logger.info("admin %s made a new %s secret", g.admin.username, key)
    log_change("integration.new_secret", f"integration {key}", f"replaced {cls.generated_secret}")
    return _page(cls, revealed=value)


@bp.post("/<key>/test")
def test_connection(key: str) -> ResponseReturnValue:
    """Call the upstream API once with the configured credentials and say how it went."""
    plugin: Plugin | None = current_installation().registry.get(key)
    if plugin is None:
        abort(404, f"The integration {key!r} is not configured.")
    try:
        answer = plugin.check_connection()
    except UpstreamError as exc:
        flash(f"Connection test failed: {exc}", "error")
        log_change("integration.test", f"integration {key}", f"failed: {exc}")
    else:
        flash(answer or f"{plugin.title} only sends webhooks: there is no API to test.")
        log_change("integration.test", f"integration {key}", "passed")
    return redirect(url_for("admin.integrations.detail", key=key))


def settings_from_form(
    key: str,
    schema: Mapping[str, Setting],
    form: Mapping[str, str],
    saved: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """Read settings from the form: blank is the default, and a blank secret keeps the saved one.

    Raise ConfigError naming the key whose value is not of its type.
    """
    settings: dict[str, Any] = {}
    for name, setting in schema.items():
        raw = (form.get(name) or "").strip()
        keep_saved = setting.secret and not raw and not form.get(f"clear-{name}")
        if setting.file_only or keep_saved:  # a file-only setting is never taken from a form
            settings[name] = (saved or {}).get(name)
        elif setting.type is bool:
            settings[name] = bool(form.get(name))
        elif not raw:
            settings[name] = None
        elif setting.type is list:
            settings[name] = [v.strip() for v in raw.replace("\n", ",").split(",") if v.strip()]
        elif setting.type in (int, float):
            try:
                settings[name] = setting.type(raw)
            except ValueError:
                kind = "a whole number" if setting.type is int else "a number"
                path = f"integrations.{key}.{name}"
                raise ConfigError(f"{path}: expected {kind}, got {raw!r}") from None
        else:
            settings[name] = raw
    return settings


def _class(key: str) -> type[Plugin]:
    cls = current_installation().registry.classes.get(key)
    if cls is None:
        abort(404, f"There is no integration {key!r}.")
    return cls


def _saved_settings(key: str) -> dict[str, Any] | None:
    return current_installation().integrations.current(key).settings


def _page(
    cls: type[Plugin],
    error: str | None = None,
    entered: Mapping[str, str] | None = None,
    revealed: str | None = None,
) -> str:
    core = current_installation()
    key = cls.key
    with reading(core.engine) as conn:
        faults = read_faults(conn, upstream_keys(core.registry)).get(key)
        state = _integration_row(conn, key, cls, faults)
    plugin = core.registry.get(key)
    source = core.registry.source_of(key)
    settings = []
    for name, setting in cls.settings.items():
        value = plugin.options.get(name) if plugin else _saved_default(key, name)
        if value is None and setting.type is bool:
            value = setting.default  # an unsaved checkbox shows its default
        if entered is not None and not setting.secret:
            value = entered.get(name, "")
        shown = masked(value) if setting.secret else ("" if value is None else value)
        if isinstance(shown, list):
            shown = ", ".join(shown)
        settings.append({"name": name, "value": shown, "secret": setting.secret,
                         "set": bool(value), "required": setting.required,
                         "type": setting.type.__name__, "doc": setting.doc,
                         "default": setting.default if setting.default != [] else None,
                         "file_only": setting.file_only})  # fmt: skip
    setup = cls.setup_doc.replace("{public_url}", core.config.public_url)
    receives = Capability.RECEIVE in cls.capabilities
    saved = core.integrations.history(key, limit=1) if source != "file" else []
    return render_template(
        "admin/integration.html", state=state, settings=settings, setup=setup, source=source,
        editable=source != "file", error=error, revealed=revealed,
        revealed_path=quote(revealed, safe="") if revealed else None,
        saved=saved[0] if saved and source else None, generated=cls.generated_secret,
        can_seal=core.secret_box is not None, now=utcnow(), history=history_section(plugin),
        refusals=refusals_section(key, cls.title) if receives else None,
    )  # fmt: skip


def reach_warning(url: str, tool: str) -> str | None:
    """Say why the tool may not be able to send to public_url, or None when it looks right.

    The webhook URL is public_url + /hooks/<key>; the default, http://127.0.0.1:8080, is
    fine for trying Carryover out and reaches no vendor.
    """
    parts = urlsplit(url)
    host = (parts.hostname or "").rstrip(".").lower()
    address = parse_address(host)
    fix = ("set public_url to the https:// address at which the internet reaches this "
           "server (a reverse proxy in front of it)")  # fmt: skip
    if host == "localhost" or host.endswith(".localhost") or (address and address.is_loopback):
        return f"{host} is this machine only: {tool}'s servers cannot reach it; {fix}"
    if address is not None and (address.is_private or address.is_link_local):
        return f"{host} is a private network address: {tool}'s servers cannot reach it; {fix}"
    if parts.scheme != "https":
        return (f"it is not HTTPS: {tool} would send customers' messages unencrypted over the "
                f"internet; {fix}")  # fmt: skip
    return None


def _saved_default(key: str, name: str) -> Any:
    settings = _saved_settings(key)
    return settings.get(name) if settings else None


def _integration_row(
    conn: Any, key: str, cls: type[Plugin], faults: UpstreamFaults | None
) -> dict[str, Any]:
    """Describe one integration: its configuration, last webhook, latest error and pause."""
    core = current_installation()
    return {
        "key": key,
        "title": cls.title,
        "configured": key in core.registry.instances,
        "source": core.registry.source_of(key),
        "problem": core.registry.problems.get(key),
        "capabilities": sorted(str(c) for c in cls.capabilities),
        "webhook_url": f"{core.config.public_url}/hooks/{key}",
        "reach": reach_warning(core.config.public_url, cls.title),
        "last_delivery": core.inbox.last_received_at(conn, key),
        "last_error": latest_error(conn, key),  # the newest by time: of calls, webhooks, notes
        "upstream": faults,  # None when it never called an upstream
    }
