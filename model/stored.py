"""Configuration dataclasses that checkpoints store as plain dicts."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, fields
from typing import Any, Self


class Stored:
    """Mixin for a dataclass kept in checkpoints. `to_dict` writes tuples as lists (plain
    JSON types); `from_dict` reads lists back as tuples and ignores keys it does not know,
    so a checkpoint written by a newer version with more fields still loads."""

    def to_dict(self) -> dict:
        values = asdict(self)  # type: ignore[call-overload]
        return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Self:
        known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        return cls(
            **{k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in known}
        )
