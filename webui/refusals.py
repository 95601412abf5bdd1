"""Refused deliveries on the admin pages: what was refused, why, and what to check.

The counts live in the store (see middleware/ingest/refusals.py), so every web process
shows the same figures, whichever process refused the deliveries.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from middleware.ingest.refusals import KEPT_DAYS, RefusalReport, refusal_reports
from middleware.store.tables import reading, utcnow
from middleware.web.current import current_installation
from webui.clock import local_time

RECENT_S = 3600  # a refusal this fresh makes the overview's line an alert


@dataclass(frozen=True)
class RefusalsShown:
    """One integration's refusals as a page shows them: times in the installation's zone."""

    key: str
    title: str
    report: RefusalReport | None
    recent: bool  # the newest refusal is under RECENT_S old: the setup is wrong right now
    kept_days: int = KEPT_DAYS

    def at(self, moment: datetime) -> str:
        """Return a stored (naive UTC) time in the installation's zone, to the second."""
        return local_time(moment, seconds=True)


def _hints() -> dict[str, dict[str, str]]:
    core = current_installation()
    return {key: dict(cls.refusal_hints) for key, cls in core.registry.classes.items()}


def _shown(key: str, title: str, report: RefusalReport | None, now: datetime) -> RefusalsShown:
    last = report.last_at if report else None
    recent = last is not None and (now - last).total_seconds() < RECENT_S
    return RefusalsShown(key, title, report, recent)


def refusals_section(key: str, title: str) -> RefusalsShown:
    """Describe an integration's refused deliveries for its page."""
    now = utcnow()
    with reading(current_installation().engine) as conn:
        report = refusal_reports(conn, _hints(), now, plugins=[key]).get(key)
    return _shown(key, title, report, now)


def refusals_last_day(titles: dict[str, str]) -> list[RefusalsShown]:
    """Return every integration that refused deliveries in the last 24 hours, newest first."""
    now = utcnow()
    with reading(current_installation().engine) as conn:
        reports = refusal_reports(conn, _hints(), now, recent=False)
    recent = sorted(
        (r for r in reports.values() if r.last_day), key=lambda r: r.by_reason[0].last_at
    )
    return [_shown(r.plugin, titles.get(r.plugin, r.plugin), r, now) for r in reversed(recent)]
