"""Carryover's core, one subpackage per stage of the pipeline.

A delivery goes `ingest` (verify, store durably, reply) → `process` (map, enrich, resolve the
customer, append to the timeline, queue notes) → `customers` (identity and timeline) → `notes`
(render the summary, queue it in the outbox) → written upstream by the worker; `reads` serve
the agent's pops and the context API. `integrations` holds the plugin interface and each
installed integration's state, `store` the tables and queues, `web` the app factory and the
server, `admin` what the admin UI needs beyond pages. The core names no vendor: each plugin
declares what the core must know about its tool.
"""
