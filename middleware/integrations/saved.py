"""Integrations connected from the admin UI: their settings, with secrets sealed, in the store.

An integration is configured either in the configuration file or here, never both: a section
in the file wins, and the admin UI shows it read-only. Settings saved here are validated like
the file's (every key checked against the plugin's schema, then the plugin built once), and
each process picks a change up within CHECK_EVERY_S, like mappings and templates.

Only the newest version of an integration's settings is kept: a replaced API token is gone
from the store, not kept as history.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, delete

from middleware.config import ConfigError, Setting, validate_section
from middleware.store.documents import DocumentVersions
from middleware.store.sealed import SealError, SecretBox
from middleware.store.tables import document_versions

if TYPE_CHECKING:
    from middleware.config import Config
    from middleware.integrations.plugin import Plugin

KIND = "integration"


@dataclass(frozen=True)
class Saved:
    """What the store holds for one integration: settings, none, or a reason they are unusable."""

    settings: dict[str, Any] | None = None
    problem: str | None = None


class IntegrationVersions(DocumentVersions[Saved]):
    """The integration settings saved in the admin UI, by plugin key."""

    def __init__(
        self,
        engine: Engine,
        classes: Mapping[str, type[Plugin]],
        config: Config,
        box: SecretBox | None,
    ) -> None:
        self.classes = classes
        self.config = config
        self.box = box
        super().__init__(engine, KIND, classes, lambda _key: "", self._parse)

    @property
    def generation(self) -> int | None:
        """Return an id that changes whenever any integration's settings change."""
        self.refresh_if_due()
        return self._seen

    def schema(self, key: str) -> Mapping[str, Setting]:
        """Return a plugin's settings schema."""
        return self.classes[key].settings

    def connect(self, key: str, settings: Mapping[str, Any], admin: str) -> dict[str, Any]:
        """Check settings, seal their secrets, and make them the integration's own.

        Raise ConfigError naming the key at fault, or when secrets cannot be sealed.
        """
        checked = self.check(key, settings)
        if self.box is None:
            raise ConfigError(
                "secret_key: required to store secrets in the database (PostgreSQL); set it "
                "in the configuration file, the same on every host"
            )
        schema = self.schema(key)
        document: dict[str, dict[str, Any]] = {"settings": {}, "sealed": {}}
        for name, value in checked.items():
            if value is None or value == schema[name].default:
                continue
            if schema[name].secret:
                document["sealed"][name] = self.box.seal(json.dumps(value))
            else:
                document["settings"][name] = value
        self._replace(key, json.dumps(document, sort_keys=True), admin, "connected")
        return checked

    def disconnect(self, key: str, admin: str) -> None:
        """Turn an integration connected here off, and forget its settings."""
        self._replace(key, json.dumps({"off": True}), admin, "disconnected")

    def check(self, key: str, settings: Mapping[str, Any]) -> dict[str, Any]:
        """Validate settings as the configuration file's are, then build the plugin once."""
        if key not in self.classes:
            raise ConfigError(f"integrations.{key}: unknown integration")
        if key in self.config.integrations:
            raise ConfigError(
                f"integrations.{key}: configured in the configuration file; change it there"
            )
        checked = validate_section(f"integrations.{key}", dict(settings), self.schema(key))
        for name, setting in self.schema(key).items():
            if setting.file_only and checked.get(name) not in (None, setting.default):
                raise ConfigError(
                    f"integrations.{key}.{name}: can be set in the configuration file only"
                )
        self.classes[key](checked, self.config)  # raises ConfigError for bad combinations
        return checked

    def _replace(self, key: str, document: str, admin: str, note: str) -> None:
        self.save(key, document, admin, note=note)
        newest = self.history(key, limit=1)[0].id
        with self.engine.begin() as conn:
            conn.execute(
                delete(document_versions).where(
                    document_versions.c.kind == KIND,
                    document_versions.c.name == key,
                    document_versions.c.id < newest,
                )
            )

    def _parse(self, key: str, text: str, origin: str) -> Saved:
        if not text:
            return Saved()
        document = json.loads(text)
        if document.get("off"):
            return Saved()
        settings = dict(document.get("settings", {}))
        for name, sealed in document.get("sealed", {}).items():
            if self.box is None:
                return Saved(problem="secret_key is not set, so the saved secrets cannot be read")
            try:
                settings[name] = json.loads(self.box.open(sealed))
            except SealError:
                return Saved(
                    problem=f"{name} was sealed under another secret_key: enter the secrets again"
                )
        try:
            return Saved(validate_section(f"integrations.{key}", settings, self.schema(key)))
        except ConfigError as exc:  # saved by another version of Carryover
            return Saved(problem=str(exc))
