"""One Carryover installation: configuration, store, plugins, mappings, queues, renderer."""

from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass, field
from functools import cached_property

from sqlalchemy import Engine

from middleware.config import Config
from middleware.customers.identity import IdentityTypes
from middleware.customers.redaction import IdFields
from middleware.ingest.inbox import DeliveryInbox
from middleware.ingest.refusals import RefusalRecorder
from middleware.integrations.lookups import LookupStore
from middleware.integrations.plugin import Capability, InboundEvent, Plugin
from middleware.integrations.registry import PluginRegistry
from middleware.integrations.saved import IntegrationVersions
from middleware.integrations.upstreams import UpstreamHealth
from middleware.metrics import Metrics
from middleware.notes.outbox import NoteMarkers, Outbox
from middleware.notes.summary import SummaryRenderer
from middleware.process.mapping_source import MappingVersions
from middleware.reads.live import LiveUpdates
from middleware.store.sealed import SecretBox, installation_key
from middleware.store.tables import make_engine
from middleware.store.wakeups import Wakeups


@dataclass
class Installation:
    """Everything the web app and the worker share; built once per process."""

    config: Config
    engine: Engine
    registry: PluginRegistry
    mappings: MappingVersions
    renderer: SummaryRenderer
    inbox: DeliveryInbox
    outbox: Outbox
    integrations: IntegrationVersions
    secret_box: SecretBox | None
    health: UpstreamHealth
    # What the installed plugins declare: their identity types and the fields holding ids.
    identity_types: IdentityTypes
    id_fields: IdFields
    refusals: RefusalRecorder  # deliveries refused before they were stored, by reason
    live: LiveUpdates  # the board open screen-pops wait on
    metrics: Metrics  # what GET /metrics shows (its own registry)
    # The other processes on the same PostgreSQL store, woken by work_arrived and changed.
    wakeups: Wakeups
    wake: threading.Event = field(default_factory=threading.Event)
    # When this process last received a webhook (time.monotonic()); its embedded worker
    # gives way to the web threads while webhooks arrive (see Worker.give_way).
    webhook_seen_at: float = float("-inf")
    # Signs agent links and admin sessions: the installation's secret key (see sealed.py),
    # else, on PostgreSQL without secret_key, a key of this process only (links made by a
    # page of this process for itself, such as a pop's live stream, still work).
    link_secret: str = field(default_factory=lambda: secrets.token_urlsafe(32))

    @cached_property
    def markers(self) -> NoteMarkers:
        """Return the markers that sign Carryover's notes (keyed with link_secret)."""
        return NoteMarkers(self.link_secret, self.engine)

    def work_arrived(self) -> None:
        """Wake the workers (this process's, and on PostgreSQL every process's): work is due."""
        self.wake.set()
        self.wakeups.work()

    def changed(self, topics: set[str] | frozenset[str]) -> None:
        """Wake the open pops showing these topics, in this process and every other one."""
        self.live.publish(topics)
        self.wakeups.topics(topics)

    def is_own_note(self, plugin: Plugin, event: InboundEvent) -> bool:
        """Tell whether an event is one of Carryover's own notes coming back."""
        comment = plugin.comment_of(event)
        if comment is None:
            return False
        return any(
            self.markers.is_own_note(plugin.key, comment.thread_ref, t) for t in comment.texts
        )

    def dispose(self) -> None:
        """Write the refusals gathered, and close the store's connections."""
        self.wakeups.stop()
        self.refusals.close()
        self.inbox.close()
        self.engine.dispose()


def build_installation(config: Config, registry: PluginRegistry | None = None) -> Installation:
    """Connect the store, configure plugins and load their mappings."""
    registry = registry or PluginRegistry.from_entry_points()
    engine = make_engine(config.database_url)
    health = UpstreamHealth(engine, config.worker["upstream_pause_max_s"])
    registry.health = health
    registry.lookup_store = LookupStore(engine)
    key = installation_key(config)
    box = SecretBox(key) if key else None
    integrations = IntegrationVersions(engine, registry.classes, config, box)
    registry.configure(config, integrations)
    # Every plugin that receives webhooks has its mapping loaded, so that one connected
    # later from the admin UI has it; a plugin without a mapping file must be configured.
    receiving = [
        key
        for key, cls in registry.classes.items()
        if Capability.RECEIVE in cls.capabilities
        and (key in registry.instances or (config.mappings_dir / f"{key}.yaml").exists())
    ]
    mappings = MappingVersions(engine, config.mappings_dir, receiving)
    live = LiveUpdates()
    wake = threading.Event()
    wakeups = Wakeups(engine, on_work=wake.set, on_topics=live.publish)
    core = Installation(
        config=config,
        engine=engine,
        registry=registry,
        mappings=mappings,
        renderer=SummaryRenderer(
            config.templates_dir,
            engine,
            registry.templates_folders(),
            timezone=config.timezone,
            records=registry.describe_record,
            system_ids={t.type for t in registry.identity_types() if t.system_id},
        ),
        inbox=DeliveryInbox(engine),
        outbox=Outbox(engine),
        integrations=integrations,
        secret_box=box,
        health=health,
        identity_types=IdentityTypes(registry.identity_types()),
        id_fields=IdFields(registry.id_fields()),
        refusals=RefusalRecorder(engine),
        live=live,
        metrics=Metrics(engine, health, live, wakeups),
        wakeups=wakeups,
        wake=wake,
    )
    if core.wakeups.enabled:
        core.inbox.announce = core.wakeups.work_in
    if key:
        core.link_secret = key
    return core
