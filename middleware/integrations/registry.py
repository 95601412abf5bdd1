"""The registry: plugins found by entry point, and the configured instance of each."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any

from middleware.config import ConfigError, Setting
from middleware.integrations.plugin import Capability, IdentityType, Plugin

if TYPE_CHECKING:
    from middleware.config import Config
    from middleware.integrations.lookups import LookupStore
    from middleware.integrations.saved import IntegrationVersions
    from middleware.integrations.upstreams import UpstreamHealth

ENTRY_POINT_GROUP = "carryover.plugins"


def discover_plugin_classes() -> dict[str, type[Plugin]]:
    """Find installed plugins through the carryover.plugins entry points."""
    found: dict[str, type[Plugin]] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        cls = ep.load()
        if ep.name != cls.key:
            raise RuntimeError(f"entry point {ep.name} loads plugin with key {cls.key}")
        found[ep.name] = cls
    return found


class PluginRegistry:
    """The plugins known to one app, and the configured instances of them.

    An integration is configured by its section in the configuration file or, failing
    that, by the settings saved in the admin UI (`saved`); instances follow changes to the
    saved settings within a few seconds, in every process.
    """

    def __init__(self, classes: Mapping[str, type[Plugin]]) -> None:
        self.classes = dict(classes)
        self._instances: dict[str, Plugin] = {}
        self._config: Config | None = None
        self._saved: IntegrationVersions | None = None
        self._generation: int | None = None
        self.problems: dict[str, str] = {}  # why a saved integration is not running
        # Shared upstream pauses; the plugins' calls go through it once attached.
        self.health: UpstreamHealth | None = None
        # The look-ups every process shares; the plugins' look-ups go through it once attached.
        self.lookup_store: LookupStore | None = None

    @classmethod
    def from_entry_points(cls) -> PluginRegistry:
        """Build a registry of every installed plugin."""
        return cls(discover_plugin_classes())

    def schemas(self) -> dict[str, Mapping[str, Setting]]:
        """Return each plugin's settings schema, for config validation."""
        return {key: plugin.settings for key, plugin in self.classes.items()}

    def identity_types(self) -> tuple[IdentityType, ...]:
        """Return the identity types every installed plugin declares; refuse one declared twice."""
        found: dict[str, tuple[str, IdentityType]] = {}
        for key, plugin in self.classes.items():
            for declared in plugin.identity_types:
                if declared.type in found:
                    raise RuntimeError(f"plugins {found[declared.type][0]} and {key} both "
                                       f"declare the identity type {declared.type}")  # fmt: skip
                found[declared.type] = (key, declared)
        return tuple(declared for _, declared in found.values())

    def id_fields(self) -> frozenset[str]:
        """Return the id fields every installed plugin declares (never redacted)."""
        return frozenset(name for plugin in self.classes.values() for name in plugin.id_fields)

    def templates_folders(self) -> list[Path]:
        """Return the installed plugins' template folders that exist, in key order."""
        folders = (self.classes[key].templates_folder() for key in sorted(self.classes))
        return [folder for folder in folders if folder.is_dir()]

    def configure(self, config: Config, saved: IntegrationVersions | None = None) -> None:
        """Instantiate every plugin that has a section in the file or saved settings.

        A bad section in the file raises ConfigError; bad saved settings only keep that
        integration off, with the reason in `problems`.
        """
        self._config, self._saved = config, saved
        self._instances = {
            key: self._made(key, section, config) for key, section in config.integrations.items()
        }
        self._follow_saved()

    def _made(self, key: str, settings: Mapping[str, Any], config: Config) -> Plugin:
        plugin = self.classes[key](settings, config)
        plugin.upstream_guard.health = self.health
        plugin.lookups.store = self.lookup_store
        return plugin

    @property
    def instances(self) -> dict[str, Plugin]:
        """Return the configured plugins by key, current with the saved settings."""
        if self._saved is not None and self._saved.generation != self._generation:
            self._follow_saved()
        return self._instances

    def source_of(self, key: str) -> str | None:
        """Say where an integration is configured: "file", "admin UI", or None (off)."""
        if self._config is not None and key in self._config.integrations:
            return "file"
        return "admin UI" if key in self.instances else None

    def get(self, key: str) -> Plugin | None:
        """Return the configured plugin with that key, or None."""
        return self.instances.get(key)

    def describe_record(self, item: Mapping[str, Any]) -> tuple[str, str | None]:
        """Return how agents name a record and where they open it, by its plugin's rules."""
        source = str(item.get("source") or "")
        cls = self.classes.get(source, Plugin)
        configured = self.instances.get(source)
        settings = configured.options if configured is not None else {}
        return cls.record_label(item), cls.record_url(item, settings)

    def with_capability(self, capability: Capability) -> Iterable[Plugin]:
        """Yield configured plugins that declare the capability."""
        return (p for p in self.instances.values() if p.has_capability(capability))

    def _follow_saved(self) -> None:
        if self._saved is None or self._config is None:
            return
        generation = self._saved.generation
        from_file = self._config.integrations
        instances = {key: p for key, p in self._instances.items() if key in from_file}
        problems = {}
        for key in self.classes.keys() - from_file.keys():
            saved = self._saved.current(key)
            if saved.problem:
                problems[key] = saved.problem
            if saved.settings is None:
                continue
            running = self._instances.get(key)
            if running is not None and running.options == saved.settings:
                instances[key] = running  # unchanged: keep its caches and budgets
                continue
            try:
                instances[key] = self._made(key, saved.settings, self._config)
            except (ConfigError, ValueError) as exc:
                problems[key] = str(exc)
        self._instances, self.problems, self._generation = instances, problems, generation
