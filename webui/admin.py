"""The admin web UI: login, sessions with an idle timeout, CSRF checks, the overview.

Every admin page is in this blueprint or one nested in it, so the guard below covers them
all: a page needs a session that the store still holds (not logged out, not ended by a
password change, active within `admin.idle_timeout_s`), and a state-changing request needs
the session's CSRF token (form field or X-CSRF-Token header). The signed cookie carries only
the session's token and the CSRF token.
"""

from __future__ import annotations

import hmac
import secrets
from typing import Any
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import BadRequest, HTTPException

from middleware.admin.accounts import (
    Admin,
    LoginRefused,
    Throttle,
    end_session,
    log_in,
    renew_session,
)
from middleware.admin.figures import overview_figures
from middleware.customers.retention import PurgeRun, last_purge
from middleware.integrations.faults import upstream_keys
from middleware.integrations.network import client_address
from middleware.interaction import channel_word
from middleware.process.liveness import heartbeat_s, silent_after_s, workers_seen
from middleware.store.tables import reading, utcnow
from middleware.web.current import current_installation
from webui import admins as admin_pages
from webui import audit as audit_pages
from webui import customers as customer_pages
from webui import deliveries as deliveries_pages
from webui import history as history_pages
from webui import integrations as integration_pages
from webui import mappings as mapping_pages
from webui import summary_templates as template_pages
from webui.charts import line_chart, stacked_bars
from webui.clock import local_time
from webui.refusals import refusals_last_day

bp = Blueprint("admin", __name__, url_prefix="/admin", template_folder="templates",
               static_folder="static", static_url_path="/static")  # fmt: skip
# The pages of other modules, nested under /admin and so behind the guard below.
bp.register_blueprint(deliveries_pages.bp)
bp.register_blueprint(integration_pages.bp)
bp.register_blueprint(history_pages.bp)
bp.register_blueprint(customer_pages.bp)
bp.register_blueprint(mapping_pages.bp)
bp.register_blueprint(template_pages.bp)
bp.register_blueprint(admin_pages.bp)
bp.register_blueprint(audit_pages.bp)
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
OPEN_ENDPOINTS = frozenset({"admin.login", "admin.static"})


# -- the guard ---------------------------------------------------------------------------------
@bp.before_request
def guard() -> ResponseReturnValue | None:
    """Check the CSRF token of state-changing requests, and that an admin is logged in."""
    refuse_nul()
    if request.method in UNSAFE_METHODS:
        check_csrf()
    if request.endpoint in OPEN_ENDPOINTS:
        return None
    admin = current_admin()
    if admin is None:
        return redirect(url_for("admin.login", next=request.full_path.rstrip("?")))
    g.admin = admin
    return None


def refuse_nul() -> None:
    """Refuse a query or form value holding a NUL character (400).

    No name, identifier or setting holds one, and PostgreSQL refuses NUL in text: a search,
    a filter or a login holding one would fail in the store instead of finding nothing.
    """
    values = request.args.items(multi=True)
    if request.method in UNSAFE_METHODS:
        values = [*values, *request.form.items(multi=True)]
    if any("\x00" in value for _, value in values):
        raise BadRequest("A value in the request holds a NUL character.")


def current_admin() -> Admin | None:
    """Return the logged-in admin, or None when the store no longer holds the session."""
    token = session.get("admin_session")
    if not isinstance(token, str):
        return None
    admin = renew_session(current_installation().engine, token, _idle_timeout_s())
    if admin is None:  # logged out, idle too long, or ended by a password change or removal
        session.clear()
    # The cookie itself is left alone: one rewritten on every request lets a slow background
    # request (a mapping preview) put back a flash message already shown.
    return admin


def csrf_token() -> str:
    """Return this session's CSRF token, making one if needed (templates call it)."""
    token = session.get("csrf")
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        session["csrf"] = token
    return token


def check_csrf() -> None:
    """Refuse a state-changing request that lacks this session's CSRF token."""
    sent = request.form.get("csrf_token") or request.headers.get("X-CSRF-Token") or ""
    expected = session.get("csrf")
    if not isinstance(expected, str) or not hmac.compare_digest(sent.encode(), expected.encode()):
        raise BadRequest("The form's security token is missing or out of date: reload the page.")


def _idle_timeout_s() -> int:
    return int(current_installation().config.admin["idle_timeout_s"])


@bp.app_template_filter("channel")
def channel_filter(channel: str | None) -> str:
    """Say a channel as agents read it ("in person" for in_person)."""
    return channel_word(channel)


@bp.app_context_processor
def template_helpers() -> dict[str, Any]:
    """Give templates the CSRF token, the logged-in admin and local_time (stored times in the
    installation's zone)."""
    return {"csrf_token": csrf_token, "admin": g.get("admin"), "local_time": local_time}


@bp.errorhandler(HTTPException)
def error_page(exc: HTTPException) -> tuple[str, int]:
    """Show errors of admin pages as a page, not JSON."""
    return render_template("admin/error.html", error=exc), exc.code or 500


# -- login and logout --------------------------------------------------------------------------
@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    """Show the login form, or log in."""
    target = _local_target(request.values.get("next"))
    if request.method == "GET":
        return render_template("admin/login.html", next=target)
    throttle = Throttle.from_options(current_installation().config.admin)
    username, password = request.form.get("username", ""), request.form.get("password", "")
    try:
        opened = log_in(current_installation().engine, username, password, _client_address(),
                        throttle, _idle_timeout_s())  # fmt: skip
    except LoginRefused as exc:
        status = 429 if exc.retry_after_s else 401
        page = render_template("admin/login.html", next=target, error=str(exc), username=username)
        headers = {"Retry-After": str(exc.retry_after_s)} if exc.retry_after_s else {}
        return page, status, headers
    _end_this_session()  # a new session on login: nothing set before it carries over
    session.update(admin_session=opened.token, csrf=secrets.token_urlsafe(32))
    return redirect(target)


@bp.post("/logout")
def logout() -> ResponseReturnValue:
    """End the admin's session, on the server as well as in this browser."""
    _end_this_session()
    return redirect(url_for("admin.login"))


def _end_this_session() -> None:
    token = session.get("admin_session")
    if isinstance(token, str):
        end_session(current_installation().engine, token)
    session.clear()


def _client_address() -> str:
    """Return the client's address: behind trusted_proxies, the one they report."""
    proxies = current_installation().config.trusted_proxies
    return client_address(request.remote_addr, request.headers.get("X-Forwarded-For"), proxies)


def _local_target(value: str | None) -> str:
    """Return where to go after login: a path of the admin UI, never another site."""
    fallback = url_for("admin.overview")
    # A line break cannot go into the Location header (werkzeug refuses it: a 500), and a
    # path the admin UI links to is printable ASCII, percent-encoded where need be.
    if not value or not (value.isascii() and value.isprintable()):
        return fallback
    parts = urlsplit(value)
    if parts.scheme or parts.netloc or not parts.path.startswith("/admin") or "\\" in value:
        return fallback
    return value


# -- the overview ------------------------------------------------------------------------------
@bp.get("/")
def overview() -> str:
    """Show traffic, lag, upstream faults, cross-channel figures, integrations and workers."""
    core = current_installation()
    with reading(core.engine) as conn:
        figures = overview_figures(conn, upstream_keys(core.registry))
        inbound = core.inbox.count_by_status(conn)
        outbound = core.outbox.count_by_status(conn)
        purged = last_purge(conn)
        seen = workers_seen(conn)
    faults = {u.key: u for u in figures.upstreams}
    plugins = [
        {"key": key, "title": cls.title, "configured": key in core.registry.instances,
         "connection": integration_pages.connection_of(cls, faults.get(key)),
         "webhook_url": f"{core.config.public_url}/hooks/{key}"}
        for key, cls in sorted(core.registry.classes.items())
    ]  # fmt: skip
    titles = {key: cls.title for key, cls in core.registry.classes.items()}
    by_title = {titles.get(key, key): counts for key, counts in figures.traffic.items()}
    traffic = line_chart(figures.minutes, by_title or {"none": [0] * len(figures.minutes)},
                         "Webhooks a minute, last hour, by integration")  # fmt: skip
    context = stacked_bars([d[5:] for d in figures.days], figures.new_items,
                           ("with context", "without (first contact)"),
                           "New tickets and cases a day, last 14 days")  # fmt: skip
    titles = {key: cls.title for key, cls in core.registry.classes.items()}
    names = core.renderer.saved.names() if core.renderer.saved else []
    failures = [f for f in map(core.renderer.failure, names) if f is not None]
    refused = refusals_last_day(titles)
    lease_s = core.config.worker["lease_s"]
    return render_template("admin/overview.html", plugins=plugins, inbound=inbound,
                           outbound=outbound, figures=figures, traffic_chart=traffic,
                           context_chart=context, titles=titles, now=utcnow(),
                           template_failures=failures, refused=refused,
                           refused_by_key={r.key: r for r in refused},
                           retention=core.config.retention, purged=purged,
                           purged_parts=_purged_parts(purged), workers=seen,
                           beat_s=heartbeat_s(lease_s), silent_s=silent_after_s(lease_s),
                           local_time=local_time)  # fmt: skip


def _purged_parts(run: PurgeRun | None) -> list[str]:
    """Say what the last purge removed, kind by kind, leaving out the kinds it removed none of."""
    if run is None:
        return []
    kinds = (("raw webhook", run.purged.deliveries), ("timeline item", run.purged.timeline_items),
             ("note", run.purged.notes), ("customer", run.purged.customers))  # fmt: skip
    return [f"{n:,} {kind}{'' if n == 1 else 's'}" for kind, n in kinds if n]
