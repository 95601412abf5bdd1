"""Summarise the measurements: percentiles, the printed table, var/bench.json."""

from __future__ import annotations

import json
import math
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.environment import ROOT
from bench.mood import mood_lines

JSON_PATH = ROOT / "var" / "bench.json"
# Above this much CPU taken by other processes, the run is not trustworthy.
QUIET_CPUS = 0.2
SERVER_LABELS = {
    "bare": "bare Flask (200 only)",
    "carryover": "carryover /hooks/zendesk",
    "embedded": "  with its embedded worker",
}
SALESFORCE_LABELS = {"bare": "bare Flask (Ack only)", "carryover": "carryover /hooks/salesforce"}


def progress(message: str) -> None:
    """Tell the person waiting what is running (on stderr, apart from the report)."""
    print(f"bench: {message}", file=sys.stderr, flush=True)


def percentile(values: Sequence[float], p: float) -> float:
    """Return the nearest-rank p-th percentile (0 < p ≤ 100) of the values."""
    ordered = sorted(values)
    rank = max(1, math.ceil(len(ordered) * p / 100))
    return ordered[rank - 1]


def ms(seconds: float) -> float:
    """Return seconds as milliseconds rounded to 0.1."""
    return round(seconds * 1000, 1)


def latency_figures(latencies: Sequence[float]) -> dict[str, float]:
    """Return p50, p95, p99 and max of latencies given in seconds, in milliseconds."""
    return {
        "p50_ms": ms(percentile(latencies, 50)),
        "p95_ms": ms(percentile(latencies, 95)),
        "p99_ms": ms(percentile(latencies, 99)),
        "max_ms": ms(max(latencies)),
    }


def median(values: Sequence[float]) -> float:
    """Return the median, rounded to 0.01."""
    return round(statistics.median(values), 2)


def _verdict(met: bool) -> str:
    return "met" if met else "NOT MET"


def _quiet_warning(env: dict[str, Any]) -> str:
    if env["other_processes_cpus"] <= QUIET_CPUS:
        return " (quiet enough)"
    return ": the figures are disturbed, rerun on a quiet machine"


def _header(results: dict[str, Any]) -> list[str]:
    env, settings = results["environment"], results["settings"]
    changed = env["uncommitted_product_files"]
    tree = f" + uncommitted changes in {', '.join(changed)}" if changed else ""
    ingest = "throughput" in results or "salesforce" in results
    sharing = "server, load generator and fake Zendesk" if ingest else "server and client"
    if "salesforce" in results:
        sharing = "server, load generator and the fakes"
    servers = "for both servers" if ingest else "(`carryover serve`'s default)"
    store = "SQLite in a temp dir"
    if "faults" in results:
        sharing = "the processes, the sender and the fake Zendesk"
        store = (
            "PostgreSQL, a schema of its own" if len(results) == 3 else store + "; 8: PostgreSQL"
        )
    return [
        "Carryover benchmark",
        f"  {env['started_at']}  commit {env['commit']}{tree}",
        f"  {env['cpus']} CPUs ({sharing} share them), "
        f"load average {env['load_average_1m']} at start, {env['load_average_1m_end']} at end",
        f"  other processes kept {env['other_processes_cpus']:.2f} CPUs busy on average "
        f"during the run{_quiet_warning(env)}",
        f"  Python {env['python']}, SQLite {env['sqlite']}; waitress with "
        f"{settings['waitress_threads']} threads {servers}; store: {store}",
    ]


def _throughput(results: dict[str, Any]) -> list[str]:
    t, s = results["throughput"], results["settings"]
    lines = [
        "",
        "1. Ingest throughput (signed ticket.created deliveries per second)",
        f"   closed loop, {s['connections']} keep-alive connections, {s['warmup_s']:g} s warm-up, "
        f"then {s['repeats']} × {s['repeat_s']:g} s per server, servers taking turns",
        f"   {'server':<28} {'median/s':>9}  {'runs/s':<34} {'server CPU':>10} "
        f"{'client CPU':>10} {'errors':>6}",
    ]
    for name, label in SERVER_LABELS.items():
        row = t[name]
        runs = " ".join(f"{r:.0f}" for r in row["runs_per_s"])
        lines.append(
            f"   {label:<28} {row['median_per_s']:>9.0f}  {runs:<34} "
            f"{row['server_cpu_cores']:>8.2f} c {row['client_cpu_cores']:>8.2f} c "
            f"{row['errors']:>6}"
        )
    stored = t["carryover"]
    lines += [
        f"   ratio carryover/bare: {t['ratio']:.2f}   goal ≥ {t['goal_ratio']}: "
        f"{_verdict(t['met'])}",
        f"   stored deliveries: {stored['stored']} of {stored['acknowledged']} acknowledged "
        "(web-only process: worker.enabled false)",
        f"   with its embedded worker, as `make run` serves: ratio {t['embedded_ratio']:.2f} "
        "(for information: the worker",
        "   processes every delivery as it comes, in the same process)",
    ]
    return lines


def _ack_latency(results: dict[str, Any]) -> list[str]:
    a, s = results["ack_latency"], results["settings"]
    lines = [
        "",
        "2. Ack latency (time to the 200)",
        f"   open loop at {s['open_loop_rate']}/s for {s['open_loop_s']:g} s per server, "
        "measured from each request's scheduled send time",
        f"   {'server':<28} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'max ms':>8} "
        f"{'sent':>6} {'errors':>6}",
    ]
    for name, label in SERVER_LABELS.items():
        row = a[name]
        lines.append(
            f"   {label:<28} {row['p50_ms']:>8.1f} {row['p95_ms']:>8.1f} {row['p99_ms']:>8.1f} "
            f"{row['max_ms']:>8.1f} {row['sent']:>6} {row['errors']:>6}"
        )
    lines.append(f"   goal carryover p99 ≤ {a['goal_p99_ms']} ms (web-only): {_verdict(a['met'])}")
    return lines


def _notes(results: dict[str, Any]) -> list[str]:
    n = results["webhook_to_note"]
    return [
        "",
        "3. Webhook → note (a known requester's new ticket gets its private note)",
        f"   `carryover serve` with its embedded worker, fake Zendesk upstream, "
        f"{n['count']} new tickets one at a time",
        f"   {'':<28} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'max ms':>8}",
        f"   {'webhook sent → note PUT':<28} {n['p50_ms']:>8.1f} {n['p95_ms']:>8.1f} "
        f"{n['p99_ms']:>8.1f} {n['max_ms']:>8.1f}",
        f"   {'webhook sent → 200':<28} {n['ack']['p50_ms']:>8.1f} {n['ack']['p95_ms']:>8.1f} "
        f"{n['ack']['p99_ms']:>8.1f} {n['ack']['max_ms']:>8.1f}",
        f"   goal p95 ≤ {n['goal_p95_ms']} ms: {_verdict(n['met'])}  "
        f"(worker poll_interval_s {n['poll_interval_s']:g}; a delivery wakes it at once)",
    ]


def _store(phone: dict[str, Any]) -> str:
    store = phone["store"]
    made = (f"generated in {store['generation_s']:g} s by this run" if store["generated_now"]
            else "cached in var/, reused")  # fmt: skip
    return (
        f"   store: {store['customers']:,} customers, {store['interactions']:,} interactions "
        f"(customer {store['heavy_customer']}: {store['heavy_interactions']:,}), "
        f"{store['size_mb']} MB; {made}"
    )


def _reads(results: dict[str, Any]) -> list[str]:
    phone = results["phone"]
    r, s = phone["reads"], phone["settings"]
    lines = [
        "",
        "4. Context and pop latency (GET with the agent key, time to the whole answer)",
        "   `carryover serve` with its embedded worker on a copy of the generated store; one",
        f"   keep-alive client, {s['warmup_reads']} warm-up reads per endpoint, then one "
        "shuffled sequence of:",
        f"   {s['read_customers']:,} random customers per endpoint (each once), "
        f"{s['heavy_reads']} reads of the heavy customer, {s['healthz_reads']:,} of /healthz",
        _store(phone),
        f"   {'':<36} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'max ms':>8} {'count':>6}",
    ]
    rows = [("GET /healthz (baseline)", r["healthz"])]
    for endpoint, path in (("context", "/api/v1/context?phone="), ("pop", "/pop?phone=")):
        rows += [
            (f"GET {path} random", r[endpoint]["random"]),
            (f"GET {path} heavy", r[endpoint]["heavy"]),
            (f"GET {path} all", r[endpoint]["all"]),
        ]
    for label, row in rows:
        lines.append(
            f"   {label:<36} {row['p50_ms']:>8.1f} {row['p95_ms']:>8.1f} {row['p99_ms']:>8.1f} "
            f"{row['max_ms']:>8.1f} {row['count']:>6}"
        )
    for endpoint in ("context", "pop"):
        lines.append(
            f"   {endpoint} ÷ healthz: p50 × {r[endpoint]['ratio_p50']:g}, "
            f"p99 × {r[endpoint]['ratio_p99']:g}"
        )
    lines.append(f"   errors (not 200, or not the customer asked for): {r['errors']}")
    lines += [f"     {sample}" for sample in r["error_samples"]]
    c = r["context"]
    lines.append(
        f"   goal context p99 ≤ {c['goal_p99_ms']} ms (random, heavy and all; no errors): "
        f"{_verdict(c['met'])}"
    )
    return lines


def _ring(results: dict[str, Any]) -> list[str]:
    g = results["phone"]["ring_to_pop"]
    lines = [
        "",
        "5. Ring → pop (a CTI newCall reaches a connected screen-pop)",
        f"   one open /pop/events stream per call, {g['count']} known callers one at a time; "
        "from sending the webhook",
        "   to the `pop` event that shows the call ringing",
        f"   {'':<36} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'max ms':>8}",
    ]
    if "p50_ms" in g:
        lines.append(
            f"   {'newCall sent → ringing pop event':<36} {g['p50_ms']:>8.1f} {g['p95_ms']:>8.1f} "
            f"{g['p99_ms']:>8.1f} {g['max_ms']:>8.1f}"
        )
    a = g["ack"]
    lines += [
        f"   {'newCall sent → 200':<36} {a['p50_ms']:>8.1f} {a['p95_ms']:>8.1f} "
        f"{a['p99_ms']:>8.1f} {a['max_ms']:>8.1f}",
        f"   missed (no ringing event within {g['timeout_s']:g} s): {g['missed']}",
        f"   goal p95 ≤ {g['goal_p95_ms']} ms: {_verdict(g['met'])}  "
        f"(pop.poll_s {g['pop_poll_s']:g}, worker poll_interval_s "
        f"{g['worker_poll_interval_s']:g}; the webhook wakes the worker, which wakes the pop)",
    ]
    return lines


def _salesforce_ack(results: dict[str, Any]) -> list[str]:
    a, s = results["salesforce"]["ack_latency"], results["salesforce"]["settings"]
    lines = [
        "",
        "6. Salesforce ack latency (an Outbound Message of new cases → the SOAP Ack)",
        f"   open loop, {s['ack_connections']} keep-alive connections, measured from each "
        "request's scheduled send time;",
        f"   {s['ack_warmup_s']:g} s warm-up, then {s['ack_repeats']} × {s['ack_run_s']:g} s per "
        "size and server, servers taking turns, both sent",
        "   the same bodies; p50 to p99 and server CPU are medians of the runs, max is of all",
        f"   {'':<30} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'max ms':>8} "
        f"{'CPU ms/msg':>10} {'sent':>5} {'errors':>6}",
    ]
    for size in s["sizes"]:
        row = a[str(size)]
        plural = "s" if size > 1 else ""
        lines.append(
            f"   {size} notification{plural} per message, {row['rate_per_s']:g}/s, "
            f"{row['body_bytes'] / 1000:.1f} kB each"
        )
        for name, label in SALESFORCE_LABELS.items():
            r = row[name]
            lines.append(
                f"     {label:<28} {r['p50_ms']:>8.1f} {r['p95_ms']:>8.1f} {r['p99_ms']:>8.1f} "
                f"{r['max_ms']:>8.1f} {r['server_cpu_ms_per_message']:>10.1f} {r['sent']:>5} "
                f"{r['errors']:>6}"
            )
        lines.append(
            f"     carryover ÷ bare: p50 × {row['ratio_p50']:.1f}, p99 × {row['ratio_p99']:.1f}"
        )
    stored = a["stored"]
    lines += [
        f"   stored: {stored['messages']} of {stored['acknowledged_messages']} acknowledged "
        f"messages, {stored['notifications']} of {stored['acknowledged_notifications']} "
        "notifications",
        "   (web-only process: worker.enabled false)",
    ]
    return lines


def _salesforce_comment(results: dict[str, Any]) -> list[str]:
    c = results["salesforce"]["message_to_comment"]
    s = results["salesforce"]["settings"]
    deliveries = ", ".join(f"{count} {status}" for status, count in sorted(c["deliveries"].items()))
    rows = [
        ("message sent → CaseComment POST", c),
        ("message sent → Ack (carryover)", c["ack"]),
        ("message sent → Ack (bare Flask)", c["bare_ack"]),
    ]
    lines = [
        "",
        "7. Salesforce message → CaseComment (a known customer's new case gets its comment)",
        "   `carryover serve` with its embedded worker, fake Salesforce and Zendesk upstream;",
        "   the contact's email is that of a Zendesk requester with one ticket; "
        f"{c['count']} new cases",
        f"   one at a time, {s['comment_gap_s']:g} s apart; each message is also posted to the "
        "bare baseline",
        f"   {'':<36} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'max ms':>8}",
    ]
    for label, row in rows:
        lines.append(
            f"   {label:<36} {row['p50_ms']:>8.1f} {row['p95_ms']:>8.1f} {row['p99_ms']:>8.1f} "
            f"{row['max_ms']:>8.1f}"
        )
    lines += [
        f"   CaseComment ÷ bare Ack: p50 × {c['ratio_p50']:.1f}, p95 × {c['ratio_p95']:.1f}",
        f"   deliveries: {deliveries}; comments written: {c['comments_written']} "
        f"(worker poll_interval_s {c['poll_interval_s']:g}; a message wakes it at once)",
    ]
    return lines


def fault_lines(f: dict[str, Any]) -> list[str]:
    """Return the lines of the fault scenario's figures (bench/faults.py, Figures.as_dict)."""
    s, ack = seconds_text, f["ack"]
    limited = f["windows"].get("429", {"seconds": 0, "requests": 0, "per_s": 0})
    lines = [
        f"   {f['sent']} deliveries sent ({f['unique_deliveries']} distinct, "
        f"{f['sent'] - f['unique_deliveries']} repeats), {f['acknowledged']} acknowledged",
        f"   ack latency p50 {ack.get('p50_ms', 0):g} ms, p99 {ack.get('p99_ms', 0):g} ms, "
        f"max {ack.get('max_ms', 0):g} ms; comment events of the notes not answered 2xx: "
        f"{f['echoes_unanswered']}",
        f"   takeover after kill -9: {s(f['takeover_s'])} until another worker finished a row "
        "the killed one held",
        f"     (first claimed after {s(f['takeover_claim_s'])}; rows it held: "
        f"{f['held_at_kill']}, all finished after {s(f['takeover_all_s'])})",
        f"   429 for {limited['seconds']:g} s (Retry-After {f['retry_after_s']:g} s): "
        f"{limited['requests']} requests reached Zendesk, {limited['per_s']:g}/s "
        f"(at most {f['rate_limited_allowed']} expected)",
    ]
    for name in ("late writes", "503", "stall"):
        if window := f["windows"].get(name):
            lines.append(
                f"   {name} for {window['seconds']:g} s: {window['requests']} requests "
                f"({window['per_s']:g}/s), {window['puts']} of them PUTs"
            )
    lines += [
        f"   drain after recovery: {s(f['drain_s'])}; whole run {f['total_s']:.1f} s",
        f"   deliveries {f['deliveries']}, tickets stored {f['tickets']}, writes {f['writes']}",
        f"   notes {f['notes']} for {f['expected_notes']} new tickets: "
        f"{f['tickets_with_a_marker_twice']} tickets with a marker twice "
        f"({f['duplicate_notes']} notes too many), {f['tickets_without_a_note']} without a note",
    ]
    if f["left_out_settings"]:
        left_out = ", ".join(f["left_out_settings"])
        lines.append(f"   worker settings this Carryover does not know, left out: {left_out}")
    lines.append("   all checks passed" if not f["failures"] else "   FAILED:")
    lines += [f"     - {failure}" for failure in f["failures"]]
    return lines


def seconds_text(seconds: float | None) -> str:
    """Return seconds to one decimal, or say that the wait gave up."""
    return "never (gave up waiting)" if seconds is None else f"{seconds:.1f} s"


def _faults(results: dict[str, Any]) -> list[str]:
    return [
        "",
        "8. Faults across the topology (bench/faults.py)",
        "   a web process and two `carryover worker` processes on PostgreSQL, the fake Zendesk in",
        "   the benchmark; kill -9 of a worker, then Zendesk writing late, answering 429, 503,",
        "   stalling, and recovering",
        *fault_lines(results["faults"]),
    ]


def _calls(count: int) -> str:
    return f"{count} API call{'' if count == 1 else 's'}"


def history_lines(results: dict[str, Any]) -> list[str]:
    """Return the report's lines for benchmark 10."""
    seeded = results["history"]
    lines = [
        "",
        "10. History import (bench/history.py): `carryover backfill` against the fakes, no latency",
        f"   {seeded['tickets']:,} Zendesk tickets of {seeded['requesters']} requesters, "
        f"{seeded['cases']} Salesforce cases, {seeded['calls']} Twilio call records (calls and "
        "their agents' legs); "
        f"median of {results['repeats']} runs, each on a fresh store; baseline: "
        f"{results['webhooks']} ticket.created webhooks processed by the worker",
        f"   {'store':<11} {'records/s':>9} {'ms/record':>9} {'webhook ms':>10} "
        f"{'webhook ÷ record':>16}  per tool (records/s, API calls)",
    ]
    for store in ("sqlite", "postgresql"):
        if store not in results:
            continue
        r = results[store]
        tools = ", ".join(f"{key} {t['per_s']:,.0f}/s {_calls(t['api_calls'])}"
                          for key, t in r["tools"].items())  # fmt: skip
        lines.append(f"   {store:<11} {r['per_s']:>9,.0f} {r['ms_per_record']:>9.2f} "
                     f"{r['webhook_ms_per_delivery']:>10.2f} {r['webhook_over_record']:>15.1f}×"
                     f"  {tools}")  # fmt: skip
    sqlite = results["sqlite"]
    verdict = "met" if sqlite["met"] else "NOT MET"
    lines.append(f"   goal: ≥ {sqlite['goal_per_s']:,.0f} records/s on SQLite: {verdict}")
    return lines


def across_lines(results: dict[str, Any]) -> list[str]:
    """Return the report's lines for this benchmark."""
    a, t = results["across"], results["together"]
    return [
        "",
        "Ring → pop with the worker in another process (PostgreSQL)",
        f"  {results['rounds']} rounds × {results['calls_per_round']} calls per layout; "
        "medians of the rounds",
        f"  across processes: p50 {a['p50_ms']} ms, p95 {a['p95_ms']} ms, max {a['max_ms']} ms, "
        f"{a['missed']} missed",
        f"  one process (baseline): p50 {t['p50_ms']} ms, p95 {t['p95_ms']} ms, "
        f"max {t['max_ms']} ms, {t['missed']} missed",
        f"  p95 across ÷ one process: {results['ratio_p95']}; goal p95 ≤ "
        f"{results['goal_p95_ms']:g} ms (aim ≤ {results['aim_p95_ms']:g} ms): "
        f"{'met' if results['met'] else 'NOT met'}",
    ]


def pops_lines(pops: dict[str, Any]) -> list[str]:
    """Return the report's lines for benchmark 11."""
    verdict = "met" if pops["met"] else "NOT MET"
    return [
        "",
        f"11. Ack latency with {pops['streams']} open pops on one web process ({pops['store']}; "
        f"open loop {pops['rate']}/s, medians of {len(pops['runs'])} runs)",
        f"    no stream open (baseline): p50 {pops['baseline_p50_ms']} ms, "
        f"p99 {pops['baseline_p99_ms']} ms",
        f"    {pops['streams']} streams open:        p50 {pops['p50_ms']} ms, "
        f"p99 {pops['p99_ms']} ms (× {pops['p99_ratio']} the baseline); goal p99 ≤ "
        f"{pops['goal_p99_ms']:g} ms: {verdict}",
        f"    memory: {pops['kib_per_stream']} KiB RSS per open stream; "
        f"{pops['errors']} webhook(s) not answered 200",
    ]


def fanout_lines(results: dict[str, Any]) -> list[str]:
    """Return the report's lines for benchmark 12."""
    late, at_once = results["late"], results["at_once"]
    concurrency = results["upstream_concurrency"] or "none (one call at a time)"
    verdict = "met" if results["met"] else "NOT MET"
    late_label = f"{results['late_ms']:.0f} ms late"
    return [
        "",
        "12. Upstream latency (bench/fanout.py): one `carryover worker`, a burst of "
        f"{results['burst']:,} ticket.created (a lookup and a note each) on {results['store']}",
        f"   median of {results['repeats']} runs each; worker.upstream_concurrency "
        f"{concurrency}; baseline: the same burst with Zendesk answering at once",
        f"   {'Zendesk answers':<18} {'deliveries/s':>12} {'notes/s':>8}",
        f"   {'at once':<18} {at_once['deliveries_per_s']:>12.1f} {at_once['notes_per_s']:>8.1f}",
        f"   {late_label:<18} {late['deliveries_per_s']:>12.1f} {late['notes_per_s']:>8.1f}",
        f"   late ÷ at once: {results['late_over_at_once']:.2f}; goal ≥ "
        f"{results['goal_per_s']:.0f} deliveries/s at {results['late_ms']:.0f} ms: {verdict}",
    ]


def drain_lines(results: dict[str, Any]) -> list[str]:
    """Render benchmark 13: the drain rate, and the worker's CPU against a bare request's."""
    title = f"13. Drain of a {results['burst']:,}-delivery burst (bench/drain.py)"
    lines = ["", f"{title}, medians of {results['runs']} runs",
             "   store       workers  deliveries/s  worker CPU ms/delivery  bare ms/request"
             "  ratio"]  # fmt: skip
    for name, row in results.items():
        if not isinstance(row, dict):
            continue
        store, workers = name.rsplit("_", 1)
        lines.append(f"   {store:<11} {workers[:-1]:>7}  {row['median_per_s']:>12.1f}  "
                     f"{row['median_cpu_ms']:>22.2f}  {row['median_bare_cpu_ms']:>15.3f}  "
                     f"{row['median_cpu_ratio']:>4.1f}×")  # fmt: skip
    lines.append(f"   goal: worker CPU ≤ {results['goal_ratio']:g}× a bare request's")
    return lines


def render_report(results: dict[str, Any]) -> str:
    """Return the printed report: the header, then the benchmarks that were run."""
    lines = _header(results)
    if "throughput" in results:
        lines += _throughput(results) + _ack_latency(results) + _notes(results)
    if "phone" in results:
        lines += _reads(results) + _ring(results)
    if "salesforce" in results:
        lines += _salesforce_ack(results) + _salesforce_comment(results)
    if "across" in results:
        lines += across_lines(results["across"])
    if "faults" in results:
        lines += _faults(results)
    if "mood" in results:
        lines += mood_lines(results["mood"])
    if "history" in results:
        lines += history_lines(results["history"])
    if "pops" in results:
        lines += pops_lines(results["pops"])
    if "fanout" in results:
        lines += fanout_lines(results["fanout"])
    if "drain" in results:
        lines += drain_lines(results["drain"])
    lines += ["", f"Figures written to {JSON_PATH.relative_to(ROOT)}"]
    return "\n".join(lines)


def write_json(results: dict[str, Any], path: Path = JSON_PATH) -> None:
    """Write the results as JSON (var/ is ignored by git)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
