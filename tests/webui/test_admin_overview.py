"""The admin overview: traffic, lag, failures and the cross-channel figures, as charts."""

from __future__ import annotations

from datetime import UTC, datetime

from middleware.admin.figures import overview_figures
from middleware.store.tables import reading
from tests.actions import Hooks
from tests.payloads import zendesk_event


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def ann_writes_on_two_channels(client, worker) -> None:
    """Ann emails, then writes on Facebook the same day: two tickets, the second noted."""
    Hooks(client).zendesk(zendesk_event("ticket_created__mail.json", created_at=now_iso()))
    worker.drain()
    Hooks(client).zendesk(zendesk_event("ticket_created__facebook_message.json",
                                       created_at=now_iso()))  # fmt: skip
    worker.drain()


def test_figures_count_repeat_contacts_channel_switches_and_context(
    client, worker, core, fake_zendesk
):
    """One customer back within 7 days on another channel, one of two new tickets noted."""
    ann_writes_on_two_channels(client, worker)
    with reading(core.engine) as conn:
        figures = overview_figures(conn)
    assert figures.customers_in_touch == 1
    assert figures.repeat_rate == 1.0
    assert figures.switches_per_customer == 1.0
    assert figures.context_share == 0.5
    assert figures.new_items[-1] == (1, 1)
    assert figures.traffic["zendesk"][-1] == 2 or sum(figures.traffic["zendesk"][-2:]) == 2
    assert figures.lag_median_s is not None and figures.backlog == 0
    assert figures.dead_in == figures.dead_out == 0


def test_an_empty_store_has_no_figures_to_show(core):
    """Without any contact the rates are unknown, not zero."""
    with reading(core.engine) as conn:
        figures = overview_figures(conn)
    assert figures.repeat_rate is None and figures.context_share is None
    assert figures.traffic == {} and len(figures.minutes) == 60 and len(figures.days) == 14


def test_the_overview_draws_its_charts_without_external_assets(admin_client, worker, fake_zendesk):
    """The page shows the figures and inline SVG charts; it loads nothing from elsewhere."""
    ann_writes_on_two_channels(admin_client, worker)
    page = admin_client.get("/admin/").data.decode()
    assert '<svg class="chart"' in page
    assert 'aria-label="Webhooks a minute, last hour, by integration"' in page
    assert "<polyline" in page and "<rect" in page
    assert "100 %" in page and "50 %" in page
    assert "http://" not in page.replace("http://127.0.0.1:8080/hooks", "").replace(
        'xmlns="http://www.w3.org/2000/svg"', "")  # fmt: skip
