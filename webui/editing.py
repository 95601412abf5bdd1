"""What the mapping and template editors share: an error placed in the text being edited."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PlacedError:
    """Why a text is refused, and the line and column (from 1) the editor marks, where known."""

    text: str
    line: int | None = None
    column: int | None = None

    @classmethod
    def of(cls, exc: ValueError) -> PlacedError:
        """Return the error a MappingError or DocumentError describes, with its place."""
        return cls(str(exc), getattr(exc, "line", None), getattr(exc, "column", None))
