"""Importing an integration's history from its admin page: start, watch, stop.

The import runs in a thread of the web process (or in `carryover backfill`, in a process of
its own); either way its progress lives in the store, so the page shows it wherever it runs.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

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

from middleware.errors import UpstreamError
from middleware.integrations.plugin import Capability, Plugin
from middleware.process.backfill import (
    HistoryImport,
    ImportBusy,
    ImportState,
    latest_import,
    parse_since,
)
from middleware.store.tables import reading
from middleware.terminal import duration
from middleware.web.current import current_installation
from webui.audit import log_change
from webui.clock import local_time

log = logging.getLogger(__name__)
bp = Blueprint("history", __name__, url_prefix="/integrations")
DEFAULT_SINCE = "90d"
MAX_SINCE_CHARS = 40


def history_section(plugin: Plugin | None) -> dict[str, Any] | None:
    """Describe an integration's imports for its page, None when it cannot import."""
    if plugin is None or not plugin.has_capability(Capability.IMPORT_HISTORY):
        return None
    core = current_installation()
    with reading(core.engine) as conn:
        state = latest_import(conn, plugin.key)
    live = bool(state and state.is_live)
    job = _jobs().get(plugin.key)  # runs in this process: it can be stopped from here
    # What the import waits for (a rate limit) is known only to the process that runs it.
    waiting = job.state.waiting if job is not None and job.state is not None else None
    left = state.eta_s if state and not waiting else None
    return {
        "key": plugin.key,
        "title": plugin.short_title or plugin.title,
        "state": state,
        "live": live,
        "here": job is not None,
        "waiting": waiting,
        "rate": f"{state.rate:,.0f}" if state and state.rate and not waiting else None,
        "left": duration(left) if left is not None and left >= 1 else None,
        "took": duration(state.elapsed_s) if state else None,
        "at": local_time,
        "reasons": sorted(state.reasons.items(), key=lambda r: -r[1]) if state else [],
        # A "since" that was refused comes back for the admin to correct, not replaced.
        "since": request.args.get("since", DEFAULT_SINCE)[:MAX_SINCE_CHARS],
        # Asked for once the page is there: a plan may cost calls (Salesforce counts the
        # cases), and an upstream that does not answer must not hold the page up.
        "plan": _plan(plugin, asked=False),
    }


def _plan(plugin: Plugin, *, asked: bool) -> dict[str, Any]:
    """Say what an import over the default period will read (and cost), or why it cannot;
    asked=False: only the period, the plan to be fetched by the page."""
    since = parse_since(DEFAULT_SINCE)
    plan = {
        "key": plugin.key, "title": plugin.short_title or plugin.title, "since": since,
        "period": f"the last {DEFAULT_SINCE.removesuffix('d')} days", "asked": asked,
        "text": None, "error": None,
    }  # fmt: skip
    if asked:
        try:
            plan["text"] = plugin.history_plan(since)
        except UpstreamError as exc:
            plan["error"] = str(exc)
    return plan


@bp.get("/<key>/history")
def progress(key: str) -> str:
    """Return the history section alone, for the page to refresh while an import runs."""
    section = history_section(current_installation().registry.get(key))
    if section is None:
        abort(404, "This integration does not import history.")
    return render_template("admin/_history.html", history=section)


@bp.get("/<key>/history/plan")
def plan(key: str) -> str:
    """Return what an import over the default period will read, as the upstream says it."""
    plugin = current_installation().registry.get(key)
    if plugin is None or not plugin.has_capability(Capability.IMPORT_HISTORY):
        abort(404, "This integration does not import history.")
    return render_template("admin/_history_plan.html", plan=_plan(plugin, asked=True))


@bp.post("/<key>/history")
def start(key: str) -> ResponseReturnValue:
    """Start importing the integration's history since the given date, in the background."""
    core = current_installation()
    plugin = core.registry.get(key)
    if plugin is None or not plugin.has_capability(Capability.IMPORT_HISTORY):
        flash("Not started: this integration is not connected, or does not import history.",
              "error")  # fmt: skip
        return redirect(url_for("admin.integrations.detail", key=key))
    back = redirect(url_for("admin.integrations.detail", key=key) + "#history")
    typed = request.form.get("since") or DEFAULT_SINCE
    try:
        since = parse_since(typed)
    except ValueError as exc:
        flash(f"Not started: since: {exc}", "error")
        kept = typed[:MAX_SINCE_CHARS]
        return redirect(url_for("admin.integrations.detail", key=key, since=kept) + "#history")
    job = HistoryImport(core, plugin, since, stopping=threading.Event())
    try:
        job.begin()
    except ImportBusy as exc:
        flash(f"Not started: {exc}.", "error")
        return back
    jobs = _jobs()
    jobs[key] = job
    thread = threading.Thread(target=_run, args=(job, jobs, key), daemon=True,
                              name=f"carryover-history-{key}")  # fmt: skip
    thread.start()
    current_app.logger.info("admin %s started a %s history import since %s",
                            g.admin.username, key, since.date())  # fmt: skip
    log_change("history.start", f"integration {key}", f"since {since:%Y-%m-%d}")
    verb = "Continuing the import of" if job.resumed else "Importing"
    flash(f"{verb} {plugin.title} history since {since:%Y-%m-%d}; nothing is written to it.")
    return back


@bp.post("/<key>/history/stop")
def stop(key: str) -> ResponseReturnValue:
    """Stop an import this process runs after its current page (it can be continued)."""
    job = _jobs().get(key)
    if job is None:
        flash("Nothing to stop: no import of this integration runs in this web process (one "
              "started with `carryover backfill` stops with Ctrl-C).", "error")  # fmt: skip
        return redirect(url_for("admin.integrations.detail", key=key) + "#history")
    job.stopping.set()
    log_change("history.stop", f"integration {key}")
    flash("Stopping after the current page; start it again to continue where it stopped.")
    return redirect(url_for("admin.integrations.detail", key=key) + "#history")


def _run(job: HistoryImport, jobs: dict[str, HistoryImport], key: str) -> ImportState | None:
    """Run an import to its end, and forget it then."""
    try:
        return job.run()
    except Exception:  # the store failed under it: its row says running until it goes stale
        log.exception("the %s history import failed", key)
        return None
    finally:
        jobs.pop(key, None)


def _jobs() -> dict[str, HistoryImport]:
    """Return the imports running in this process, by integration."""
    jobs: dict[str, HistoryImport] = current_app.extensions.setdefault("history.jobs", {})
    return jobs
