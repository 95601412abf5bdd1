"""Documents admins edit in the web UI — mappings and summary templates — kept as versions.

Every save is a new version (a rollback saves an old document again), so no version is lost.
The newest version of a name is in use; with none saved, the shipped file is. Each process
notices versions saved by another within CHECK_EVERY_S.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

from sqlalchemy import Engine, Row, Select, func, insert, select
from sqlalchemy.exc import SQLAlchemyError

from middleware.store.tables import document_versions, reading, utcnow

T = TypeVar("T")
CHECK_EVERY_S = 5.0


class DocumentError(ValueError):
    """A document is not valid for its kind; the message says where and why.

    `line` (from 1) places the error in the text, where it has a place, for an editor to mark.
    """

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.line = line


class DocumentVersions(Generic[T]):
    """The documents of one kind in use, by name, kept current with the saved versions.

    `read_default(name)` returns the shipped text; `parse(name, text, origin)` checks a text
    and returns what it means (a PluginMapping, a template's source), raising DocumentError
    or the kind's own ValueError subclass.
    """

    def __init__(
        self,
        engine: Engine,
        kind: str,
        names: Iterable[str],
        read_default: Callable[[str], str],
        parse: Callable[[str, str, str], T],
    ) -> None:
        self.engine = engine
        self.kind = kind
        self.read_default = read_default
        self.parse = parse
        self._defaults = {name: parse(name, read_default(name), self.default_origin(name))
                          for name in names}  # fmt: skip
        self._current = dict(self._defaults)
        self._versions: dict[str, int] = {}
        self._seen: int | None = None
        self._checked_at = float("-inf")
        self._lock = threading.Lock()

    def default_origin(self, name: str) -> str:
        """Name where the shipped text of a name comes from, for error messages."""
        return f"the shipped {self.kind} {name}"

    def __contains__(self, name: object) -> bool:
        return name in self._defaults

    def names(self) -> list[str]:
        """Return the names of this kind, sorted."""
        return sorted(self._defaults)

    def __getitem__(self, name: str) -> T:
        """Return what is in use for a name (refreshed at most every CHECK_EVERY_S)."""
        self.refresh_if_due()
        return self._current[name]

    def current(self, name: str) -> T:
        """Return what is in use for a name, as of the last refresh."""
        return self._current[name]

    def refresh_if_due(self) -> None:
        """Refresh when the last look is older than CHECK_EVERY_S."""
        if time.monotonic() - self._checked_at > CHECK_EVERY_S:
            self.refresh()

    def version_of(self, name: str) -> int | None:
        """Return the version in use for a name, or None when the shipped file is."""
        return self._versions.get(name)

    def refresh(self) -> None:
        """Load versions saved since the last look (by this process or another)."""
        with self._lock:
            self._checked_at = time.monotonic()
            mine = document_versions.c.kind == self.kind
            try:
                # Read-only: a note is rendered inside the pipeline's write transaction.
                with reading(self.engine) as conn:
                    newest = conn.execute(select(func.max(document_versions.c.id)).where(mine))
                    newest_id = newest.scalar()
                    if newest_id == self._seen:
                        return
                    rows = conn.execute(self._newest_per_name()).all()
            except SQLAlchemyError:  # not migrated yet: the files are all there is
                return
            current, versions = dict(self._defaults), {}
            for row in rows:
                if row.name not in current:
                    continue
                try:
                    current[row.name] = self.parse(row.name, row.document, f"version {row.id}")
                except ValueError:  # checked when saved; a newer Carryover may read it otherwise
                    continue
                versions[row.name] = int(row.id)
            self._current, self._versions, self._seen = current, versions, newest_id

    def _newest_per_name(self) -> Select:
        newest = (
            select(func.max(document_versions.c.id))
            .where(document_versions.c.kind == self.kind)
            .group_by(document_versions.c.name)
            .scalar_subquery()
        )
        return select(document_versions).where(document_versions.c.id.in_(newest))

    def document(self, name: str) -> tuple[str, int | None]:
        """Return the text in use for a name and its version (None: the shipped file)."""
        history = self.history(name, limit=1)
        if history:
            return history[0].document, int(history[0].id)
        return self.read_default(name), None

    def history(self, name: str, limit: int | None = None) -> list[Row]:
        """Return the saved versions of a name, newest first."""
        query = (
            select(document_versions)
            .where(document_versions.c.kind == self.kind, document_versions.c.name == name)
            .order_by(document_versions.c.id.desc())
            .limit(limit)
        )
        with reading(self.engine) as conn:
            return list(conn.execute(query))

    def save(self, name: str, text: str, admin: str, note: str = "") -> T:
        """Check a text and make it the one in use; raise the kind's ValueError if invalid."""
        if name not in self._defaults:
            raise DocumentError(f"there is no {self.kind} {name!r}")
        parsed = self.parse(name, text, self.kind)
        with self.engine.begin() as conn:
            conn.execute(insert(document_versions).values(
                kind=self.kind, name=name, document=text, note=note[:255], created_by=admin,
                created_at=utcnow()))  # fmt: skip
        self.refresh()
        return parsed

    def roll_back(self, name: str, version_id: int, admin: str) -> T:
        """Save an earlier version's text again, as the newest version."""
        old = [row for row in self.history(name) if row.id == version_id]
        if not old:
            raise DocumentError(f"{self.kind} {name} has no version {version_id}")
        return self.save(name, old[0].document, admin, note=f"rollback to version {version_id}")
