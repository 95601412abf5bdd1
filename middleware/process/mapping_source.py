"""The mapping each plugin uses: the newest version saved in the admin UI, else the file."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import yaml
from sqlalchemy import Engine

from middleware.process.mapping import MappingError, PluginMapping, not_yaml, parse_mapping
from middleware.store.documents import DocumentVersions


def parse_document(key: str, document: str, origin: str) -> PluginMapping:
    """Parse a YAML mapping document, reporting YAML errors as mapping errors."""
    try:
        raw = yaml.safe_load(document)
    except yaml.YAMLError as exc:
        raise not_yaml(origin, exc) from None
    return parse_mapping(key, raw, origin=origin)


class MappingVersions(DocumentVersions[PluginMapping]):
    """The mappings in use, by plugin key: the newest saved version, else mappings/<key>.yaml."""

    def __init__(self, engine: Engine, mappings_dir: Path, keys: Iterable[str]) -> None:
        self.mappings_dir = mappings_dir
        super().__init__(engine, "mapping", keys, self._read_file, parse_document)

    def file_of(self, key: str) -> Path:
        """Return the path of a plugin's mapping file."""
        return self.mappings_dir / f"{key}.yaml"

    def default_origin(self, key: str) -> str:
        """Name the mapping file, for error messages."""
        return str(self.file_of(key))

    def _read_file(self, key: str) -> str:
        try:
            return self.file_of(key).read_text(encoding="utf-8")
        except OSError as exc:
            raise MappingError(f"{self.file_of(key)}: cannot read ({exc.strerror})") from exc
