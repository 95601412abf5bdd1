"""Times on the admin pages: stored as naive UTC, shown in the installation's time zone."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from middleware.web.current import current_installation


def local_time(moment: datetime | str, *, seconds: bool = False) -> str:
    """Return a stored (naive UTC) time, or an ISO 8601 one of a context, as the
    installation's zone tells it, to the minute."""
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment).astimezone(UTC).replace(tzinfo=None)
    zone = ZoneInfo(current_installation().config.timezone)
    shape = "%Y-%m-%d %H:%M:%S %Z" if seconds else "%Y-%m-%d %H:%M %Z"
    return moment.replace(tzinfo=UTC).astimezone(zone).strftime(shape)
