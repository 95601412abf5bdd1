"""Integrations in the admin UI: connect one, see its state and setup steps, test it."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
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
    session,
    url_for,
)
from flask.typing import ResponseReturnValue

from middleware.admin.audit import changed_settings
from middleware.config import ConfigError, Setting, validate_section
from middleware.errors import UpstreamError, UpstreamPaused
from middleware.integrations.faults import UpstreamFaults, latest_error, read_faults, upstream_keys
from middleware.integrations.network import UpstreamRefused, check_url, parse_address
from middleware.integrations.plugin import UPSTREAM_CAPABILITIES, Capability, Plugin
from middleware.store.sealed import SealError
from middleware.store.tables import reading, utcnow
from middleware.web.current import current_installation
from webui.audit import log_change
from webui.history import history_section
from webui.refusals import refusals_last_day, refusals_section

bp = Blueprint("integrations", __name__, url_prefix="/integrations")
PASSED, FAILED, NOT_SENT = "passed", "failed", "not sent"  # how a connection test went
REVEAL = "revealed_secret"  # the session key of a new secret shown on the next page view
# Words that a setting's name abbreviates, as an admin reads them in a label.
LABEL_WORDS = {"api": "API", "url": "URL", "id": "ID", "sid": "SID", "cti": "CTI",
               "jwt": "JWT", "ttl": "TTL", "pbx": "PBX", "s": "(seconds)"}  # fmt: skip
# What a plugin can do, as the integration page says it (in this order).
CAPABILITY_WORDS = {
    Capability.RECEIVE: "receives its webhooks",
    Capability.ENRICH: "looks customers up",
    Capability.FIND_OPEN_ITEMS: "finds open tickets or cases",
    Capability.WRITE_NOTE: "writes notes",
    Capability.IMPORT_HISTORY: "imports past history",
}


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
    """Save settings entered in the browser, then test them against the upstream at once.

    Every field's error is shown at once, next to the field; nothing is saved then.
    """
    cls = _class(key)
    core = current_installation()
    if core.registry.source_of(key) == "file":
        return _back(key, _why_not_disconnected(cls))
    before = _saved_settings(key)
    settings, errors = read_form(key, cls.settings, request.form, _saved_settings(key))
    if errors:
        errors.update(_more_errors(key, cls, settings, errors))
    else:
        try:
            core.integrations.connect(key, settings, g.admin.username)
        except ConfigError as exc:
            errors = field_error(key, cls.settings, str(exc))
    if errors:
        return _page(cls, errors=errors, entered=request.form), 400
    current_app.logger.info("admin %s connected %s", g.admin.username, key)
    log_change(
        "integration.connect",
        f"integration {key}",
        changed_settings(before, settings, cls.settings),
    )
    status = core.health.status(key)
    if status is not None and status.failures:
        core.health.resume(key)  # new settings get a call now, not after the old backoff
    plugin = core.registry.get(key)
    outcome = run_connection_test(plugin) if plugin is not None else None
    if outcome is None:
        flash(f"Saved: {cls.title} is connected.")
    elif outcome[0] == PASSED:
        flash(f"Saved: {cls.title} is connected, and the connection test passed: {outcome[1]}")
    elif outcome[0] == NOT_SENT:
        flash(f"Saved, not checked yet: the connection test was not sent ({outcome[1]}); "
              "test the connection once the pause is over.", "error")  # fmt: skip
    else:
        flash(f"Saved, but {cls.title} is not working: the connection test failed: {outcome[1]}",
              "error")  # fmt: skip
    return redirect(url_for("admin.integrations.detail", key=key))


@bp.get("/<key>/disconnect")
def confirm_disconnect(key: str) -> ResponseReturnValue:
    """Ask before an integration connected in the browser is turned off."""
    cls = _class(key)
    if current_installation().registry.source_of(key) != "admin UI":
        return _back(key, _why_not_disconnected(cls))
    return render_template("admin/confirm.html", title=f"Disconnect {cls.title}?",
                           action=url_for("admin.integrations.disconnect", key=key),
                           button=f"Disconnect {cls.title}", danger=True,
                           cancel=url_for("admin.integrations.detail", key=key),
                           facts=_disconnect_facts(cls))  # fmt: skip


@bp.post("/<key>/disconnect")
def disconnect(key: str) -> ResponseReturnValue:
    """Turn off an integration connected in the browser and forget its settings."""
    cls = _class(key)
    core = current_installation()
    if core.registry.source_of(key) != "admin UI":
        return _back(key, _why_not_disconnected(cls))
    if request.form.get("confirmed") != "yes":  # not from the confirmation page: ask first
        return redirect(url_for("admin.integrations.confirm_disconnect", key=key))
    core.integrations.disconnect(key, g.admin.username)
    current_app.logger.info("admin %s disconnected %s", g.admin.username, key)
    log_change("integration.disconnect", f"integration {key}")
    flash(f"{cls.title} is disconnected; its webhooks now get 404.")
    return redirect(url_for("admin.integrations.detail", key=key))


@bp.get("/<key>/generate-secret")
def confirm_generate_secret(key: str) -> ResponseReturnValue:
    """Ask before a new webhook secret replaces the one the sender uses."""
    cls = _generating(key)
    if current_installation().registry.source_of(key) == "file":
        return _back(key, _why_not_disconnected(cls))
    name = cls.generated_secret
    facts = [f"Carryover makes a new {name}, saves it and shows it to you once, on the next page."]
    if (_saved_settings(key) or {}).get(str(name)):
        facts.append(f"The {name} saved now stops working at once: {cls.title} deliveries "
                     "signed with it get 401 until the sender has the new one.")  # fmt: skip
    return render_template("admin/confirm.html", title=f"Generate a new {cls.title} secret?",
                           action=url_for("admin.integrations.generate_secret", key=key),
                           button="Generate a new secret", danger=True,
                           cancel=url_for("admin.integrations.detail", key=key),
                           facts=facts)  # fmt: skip


@bp.post("/<key>/generate-secret")
def generate_secret(key: str) -> ResponseReturnValue:
    """Make a new webhook secret, save it, and show it once on the page this redirects to.

    The secret travels to that page in the session, sealed like the stored one, never in
    a URL; the page takes it out, so a reload shows it no more and makes no other.
    """
    cls = _generating(key)
    core = current_installation()
    if core.registry.source_of(key) == "file":
        return _back(key, _why_not_disconnected(cls))
    if request.form.get("confirmed") != "yes":
        return redirect(url_for("admin.integrations.confirm_generate_secret", key=key))
    value = cls.generate_secret()
    settings = {**(_saved_settings(key) or {}), str(cls.generated_secret): value}
    try:
        core.integrations.connect(key, settings, g.admin.username)
    except ConfigError as exc:
        return _back(key, f"No new secret: {_plain(key, str(exc))}")
    assert core.secret_box is not None  # connect() refuses to save without one
    session[REVEAL] = json.dumps({"key": key, "sealed": core.secret_box.seal(value)})
    current_app.logger.info("admin %s made a new %s secret", g.admin.username, key)
    log_change("integration.new_secret", f"integration {key}", f"replaced {cls.generated_secret}")
    return redirect(url_for("admin.integrations.detail", key=key))


@bp.post("/<key>/test")
def test_connection(key: str) -> ResponseReturnValue:
    """Call the upstream API once with the configured credentials and say how it went."""
    plugin: Plugin | None = current_installation().registry.get(key)
    if plugin is None:
        return _back(key, f"{_class(key).title} is not connected: there is nothing to test.")
    outcome = run_connection_test(plugin)
    if outcome is None:
        flash(f"{plugin.title} only sends webhooks: there is no API to test.")
    elif outcome[0] == PASSED:
        flash(outcome[1])
        log_change("integration.test", f"integration {key}", "passed")
    elif outcome[0] == NOT_SENT:
        flash(f"Not tested: {outcome[1]}.", "error")
    else:
        flash(f"Connection test failed: {outcome[1]}", "error")
        log_change("integration.test", f"integration {key}", f"failed: {outcome[1]}")
    return redirect(url_for("admin.integrations.detail", key=key))


def run_connection_test(plugin: Plugin) -> tuple[str, str] | None:
    """Call the upstream once, record how it answered; return (PASSED/FAILED/NOT_SENT, words).

    None when the plugin has no API. A call not sent (the upstream is paused) records
    nothing: it is not an answer.
    """
    try:
        answer = plugin.check_connection()
    except UpstreamPaused as exc:
        return NOT_SENT, str(exc)
    except UpstreamError as exc:
        current_installation().health.checked(plugin.key, str(exc))
        return FAILED, str(exc)
    if answer is None:
        return None
    current_installation().health.checked(plugin.key, None)
    return PASSED, answer


def read_form(
    key: str,
    schema: Mapping[str, Setting],
    form: Mapping[str, str],
    saved: Mapping[str, Any] | None,
) -> tuple[dict[str, Any], dict[str, str]]:
    """Read settings from the form, and every field's error in plain words, by setting.

    Blank is the default, and a blank secret keeps the saved one. Each value is checked as
    the configuration file's is, URLs by the rules of every upstream call (network.py).
    """
    settings: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for name, setting in schema.items():
        try:
            settings[name] = _form_value(setting, form, name, (saved or {}).get(name))
        except ValueError:
            kind = "a whole number, such as 30" if setting.type is int else "a number, such as 7.5"
            errors[name] = f"Enter {kind}; “{(form.get(name) or '').strip()}” is not one."
            continue
        path = f"integrations.{key}.{name}"
        try:
            validate_section(f"integrations.{key}", {name: settings[name]}, {name: setting})
            if _is_url(name) and settings[name] and not setting.file_only:
                allow_private = current_installation().config.allow_private_upstreams
                check_url(str(settings[name]), allow_private, path)
        except (ConfigError, UpstreamRefused) as exc:
            errors[name] = _plain(key, str(exc))
    return settings, errors


def _more_errors(
    key: str, cls: type[Plugin], settings: Mapping[str, Any], errors: Mapping[str, str]
) -> dict[str, str]:
    """Find the plugin's own error of another field, with the wrong ones left out if it can.

    The plugin checks formats and combinations (an org id, a complete login) one after the
    other; with an optional wrong field left blank it can still name a second field at fault.
    """
    if any(cls.settings[name].required for name in errors if name in cls.settings):
        return {}
    rest = {name: None if name in errors else value for name, value in settings.items()}
    try:
        current_installation().integrations.check(key, rest)
    except ConfigError as exc:
        found = field_error(key, cls.settings, str(exc))
        return {name: text for name, text in found.items() if name and name not in errors}
    return {}


def _form_value(setting: Setting, form: Mapping[str, str], name: str, saved: Any) -> Any:
    """Return one setting as typed; ValueError when a number is not one."""
    raw = (form.get(name) or "").strip()
    keep_saved = setting.secret and not raw and not form.get(f"clear-{name}")
    if setting.file_only or keep_saved:  # a file-only setting is never taken from a form
        return saved
    if setting.type is bool:
        return bool(form.get(name))
    if not raw:
        return None
    if setting.type is list:
        return [v.strip() for v in raw.replace("\n", ",").split(",") if v.strip()]
    if setting.type in (int, float):
        return setting.type(raw)
    return raw


def _is_url(name: str) -> bool:
    return name == "url" or name.endswith("_url")


def field_error(key: str, schema: Mapping[str, Setting], message: str) -> dict[str, str]:
    """Put an error of the whole section next to the field it names ("" for the form)."""
    prefix = f"integrations.{key}."
    if message.startswith(prefix):
        name = message[len(prefix) :].split(":", 1)[0]
        if name in schema:
            return {name: _plain(key, message)}
    return {"": _plain(key, message)}


def _plain(key: str, message: str) -> str:
    """Say a configuration error without the key path that the configuration file needs."""
    for prefix in (f"integrations.{key}.", f"integrations.{key}", "upstream URL"):
        if message.startswith(prefix):
            rest = message[len(prefix) :]
            message = rest.split(": ", 1)[1] if ": " in rest else rest.lstrip(": ")
            break
    if message == "required":
        return "Required: fill this in."
    return message[:1].upper() + message[1:]


def setting_label(name: str) -> str:
    """Name a setting in words ("api_token" → "API token", "timeout_s" → "Timeout (seconds)")."""
    words = [LABEL_WORDS.get(w, w) for w in name.split("_")]
    label = " ".join(words)
    return label[:1].upper() + label[1:]


def _class(key: str) -> type[Plugin]:
    cls = current_installation().registry.classes.get(key)
    if cls is None:
        abort(404, f"There is no integration {key!r}.")
    return cls


def _generating(key: str) -> type[Plugin]:
    cls = _class(key)
    if cls.generated_secret is None:
        abort(404, f"{cls.title} takes its secret from the tool that sends the webhooks.")
    return cls


def _back(key: str, message: str) -> ResponseReturnValue:
    """Go back to the integration's page with an error message."""
    flash(message, "error")
    return redirect(url_for("admin.integrations.detail", key=key))


def _why_not_disconnected(cls: type[Plugin]) -> str:
    """Say why the browser cannot change or disconnect an integration."""
    if current_installation().registry.source_of(cls.key) == "file":
        return f"{cls.title} is configured in the configuration file; change it there."
    return f"{cls.title} is not connected."


def _disconnect_facts(cls: type[Plugin]) -> list[str]:
    facts = [
        f"Its webhooks get 404 from then on: {cls.title} may retry them for a while, then give up.",
        "Its saved settings are forgotten, secrets included: connecting it again means typing "
        "them again.",
        "Nothing already received is lost: customers, timelines and deliveries stay.",
    ]
    if any(c in cls.capabilities for c in UPSTREAM_CAPABILITIES):
        facts.insert(1, f"No more notes are written to {cls.title}; notes waiting for it wait "
                        "until it is connected again.")  # fmt: skip
    return facts


def _take_revealed(key: str) -> str | None:
    """Return the new secret kept for this page in the session, once; None if none."""
    kept = session.get(REVEAL)
    box = current_installation().secret_box
    if not isinstance(kept, str) or box is None:
        return None
    try:
        held = json.loads(kept)
        if held.get("key") != key:
            return None  # for another integration's page
        session.pop(REVEAL, None)
        return box.open(held["sealed"])
    except (ValueError, KeyError, AttributeError, SealError):
        session.pop(REVEAL, None)
        return None


def _saved_settings(key: str) -> dict[str, Any] | None:
    return current_installation().integrations.current(key).settings


def _page(
    cls: type[Plugin],
    errors: Mapping[str, str] | None = None,
    entered: Mapping[str, str] | None = None,
) -> str:
    core = current_installation()
    key = cls.key
    errors = errors or {}
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
        settings.append({"name": name, "label": setting_label(name), "value": shown,
                         "secret": setting.secret, "set": bool(value),
                         "required": setting.required, "type": setting.type.__name__,
                         "doc": setting.doc, "error": errors.get(name),
                         # a secret typed into a form that comes back is not sent back
                         "retype": bool(entered and setting.secret and entered.get(name)),
                         "default": setting.default if setting.default != [] else None,
                         "file_only": setting.file_only})  # fmt: skip
    setup = cls.setup_doc.replace("{public_url}", core.config.public_url)
    receives = Capability.RECEIVE in cls.capabilities
    saved = core.integrations.history(key, limit=1) if source != "file" else []
    revealed = _take_revealed(key)
    return render_template(
        "admin/integration.html", state=state, settings=settings, setup=setup, source=source,
        editable=source != "file", error=errors.get(""),
        wrong=[s for s in settings if s["error"]], revealed=revealed,
        revealed_path=quote(revealed, safe="") if revealed and cls.secret_in_path else None,
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
        return f"{host} is this machine only: nothing outside it can send here; {fix}"
    if address is not None and (address.is_private or address.is_link_local):
        return (f"{host} is a private network address: nothing outside that network can send "
                f"here; {fix}")  # fmt: skip
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
    source = core.registry.source_of(key)
    return {
        "key": key,
        "title": cls.title,
        "configured": key in core.registry.instances,
        "connection": connection_of(cls, faults),
        "source": source,
        "problem": core.registry.problems.get(key),
        "capabilities": [words for c, words in CAPABILITY_WORDS.items() if c in cls.capabilities],
        "webhook_url": f"{core.config.public_url}/hooks/{key}",
        "reach": reach_warning(core.config.public_url, cls.title),
        "last_delivery": core.inbox.last_received_at(conn, key),
        "last_error": latest_error(conn, key),  # the newest by time: of calls, webhooks, notes
        "upstream": faults,  # None when it never called an upstream
    }


def connection_of(cls: type[Plugin], faults: UpstreamFaults | None) -> tuple[str, str]:
    """Say whether an integration works (see connection_state), looking up when it was saved."""
    core = current_installation()
    saved = []
    if core.registry.source_of(cls.key) == "admin UI":
        saved = core.integrations.history(cls.key, limit=1)
    configured = cls.key in core.registry.instances
    return connection_state(cls, configured, faults, saved[0].created_at if saved else None)


def connection_state(
    cls: type[Plugin], configured: bool, faults: UpstreamFaults | None, saved_at: datetime | None
) -> tuple[str, str]:
    """Say whether an integration works, from the last real answer of its upstream.

    Returns (the CSS class, the words). Settings saved in the browser are "not checked yet"
    until the upstream has answered since; a refused token or a failing upstream is "not
    working" until a later call succeeds. An integration with no API to call is connected
    once configured: only its webhooks can tell more (see its refusals).
    """
    if not configured:
        return "muted", "not connected"
    if not any(c in cls.capabilities for c in UPSTREAM_CAPABILITIES):
        return "ok", "connected"
    status = faults.status if faults is not None else None
    state = faults.state if faults is not None else "ok"
    if state == "paused":
        return "error", "paused"
    if state in ("failing", "refused"):
        return "error", "not working"
    answered = status.last_answer_at if status is not None else None
    testable = cls.check_connection is not Plugin.check_connection  # else no save is tested
    if testable and saved_at is not None and (answered is None or answered < saved_at):
        return "caution", "not checked yet"
    return "ok", "connected"
