"""The mapping each plugin uses: the newest version saved in the admin UI, else the file.

Every save is a new version (a rollback saves an old document again), so the history is
never lost. Each process notices versions saved by another within CHECK_EVERY_S.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from pathlib import Path

import yaml
from sqlalchemy import Engine, Row, Select, func, insert, select
from sqlalchemy.exc import SQLAlchemyError

from middleware.mapping import MappingError, PluginMapping, load_mapping, parse_mapping
from middleware.store import mapping_versions, utcnow

CHECK_EVERY_S = 5.0


class MappingVersions:
    """The mappings in use, by plugin key, kept current with the versions in the store."""

    def __init__(self, engine: Engine, mappings_dir: Path, keys: Iterable[str]) -> None:
        self.engine = engine
        self.mappings_dir = mappings_dir
        self._files = {key: load_mapping(key, self.file_of(key)) for key in keys}
        self._current = dict(self._files)
        self._seen_version: int | None = None
        self._checked_at = float("-inf")
        self._lock = threading.Lock()

    def file_of(self, key: str) -> Path:
        """Return the path of a plugin's shipped (or admin-provided) mapping file."""
        return self.mappings_dir / f"{key}.yaml"

    def __contains__(self, key: str) -> bool:
        return key in self._files

    def __getitem__(self, key: str) -> PluginMapping:
        """Return the mapping in use for a plugin."""
        if time.monotonic() - self._checked_at > CHECK_EVERY_S:
            self.refresh()
        return self._current[key]

    def refresh(self) -> None:
        """Load versions saved since the last look (by this process or another)."""
        with self._lock:
            self._checked_at = time.monotonic()
            try:
                with self.engine.connect() as conn:
                    newest = conn.execute(select(func.max(mapping_versions.c.id))).scalar()
                    if newest == self._seen_version:
                        return
                    rows = conn.execute(_newest_per_plugin()).all()
            except SQLAlchemyError:  # not migrated yet: the files are all there is
                return
            current = dict(self._files)
            for row in rows:
                if row.plugin in current:
                    try:
                        current[row.plugin] = parse_document(
                            row.plugin, row.document, f"version {row.id}"
                        )
                    except MappingError:  # validated when saved; a newer Carryover may differ
                        continue
            self._current, self._seen_version = current, newest

    def document(self, key: str) -> tuple[str, int | None]:
        """Return the YAML in use for a plugin and its version id (None: the file)."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(mapping_versions).where(mapping_versions.c.plugin == key)
                .order_by(mapping_versions.c.id.desc()).limit(1)
            ).first()  # fmt: skip
        if row is not None:
            return row.document, int(row.id)
        return self.file_of(key).read_text(encoding="utf-8"), None

    def history(self, key: str) -> list[Row]:
        """Return a plugin's saved versions, newest first."""
        with self.engine.connect() as conn:
            return list(conn.execute(
                select(mapping_versions).where(mapping_versions.c.plugin == key)
                .order_by(mapping_versions.c.id.desc())
            ))  # fmt: skip

    def save(self, key: str, document: str, admin: str, note: str = "") -> PluginMapping:
        """Validate a document and make it the plugin's mapping; raise MappingError if invalid."""
        mapping = parse_document(key, document, "mapping")
        with self.engine.begin() as conn:
            conn.execute(insert(mapping_versions).values(
                plugin=key, document=document, note=note[:255], created_by=admin,
                created_at=utcnow()))  # fmt: skip
        self.refresh()
        return mapping

    def roll_back(self, key: str, version_id: int, admin: str) -> PluginMapping:
        """Save an earlier version's document again, as the newest version."""
        with self.engine.connect() as conn:
            document = conn.execute(
                select(mapping_versions.c.document).where(
                    mapping_versions.c.id == version_id, mapping_versions.c.plugin == key)
            ).scalar()  # fmt: skip
        if document is None:
            raise MappingError(f"{key} has no version {version_id}")
        return self.save(key, document, admin, note=f"rollback to version {version_id}")


def _newest_per_plugin() -> Select:
    newest = (
        select(func.max(mapping_versions.c.id))
        .group_by(mapping_versions.c.plugin)
        .scalar_subquery()
    )
    return select(mapping_versions).where(mapping_versions.c.id.in_(newest))


def parse_document(key: str, document: str, origin: str) -> PluginMapping:
    """Parse a YAML mapping document, reporting YAML errors as mapping errors."""
    try:
        raw = yaml.safe_load(document)
    except yaml.YAMLError as exc:
        raise MappingError(f"{origin}: not valid YAML ({exc})") from None
    return parse_mapping(key, raw, origin=origin)
