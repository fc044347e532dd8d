"""What one committed SQLite transaction changes in the catalogue's in-memory FAISS indexes."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class IndexDelta:
    """Filled by a write transaction, applied to the indexes once it has committed."""

    upserts: dict[str, dict[int, np.ndarray]] = field(default_factory=dict)  # domain -> id -> vec
    stale: dict[str, set[int]] = field(default_factory=dict)  # domain -> ids that existed before
    # (singer id, domain) touched -> the vectors that joined (+1) or left (-1) its tracks
    moves: dict[tuple[int, str], list[tuple[int, np.ndarray]]] = field(default_factory=dict)
    models: dict[tuple[int, str], np.ndarray | None] = field(default_factory=dict)  # None: gone
    sums: dict[tuple[int, str], tuple[np.ndarray, int]] = field(default_factory=dict)

    def upsert(self, domain: str, track_id: int, vector: np.ndarray, existed: bool) -> None:
        self.upserts.setdefault(domain, {})[track_id] = vector
        if existed:
            self.stale.setdefault(domain, set()).add(track_id)

    def drop(self, domain: str, track_id: int) -> None:
        self.upserts.get(domain, {}).pop(track_id, None)
        self.stale.setdefault(domain, set()).add(track_id)

    def move(self, singer_id: int, domain: str, vector: np.ndarray, sign: int) -> None:
        """A track vector joins (+1) or leaves (-1) a singer's tracks in `domain`."""
        self.moves.setdefault((singer_id, domain), []).append((sign, vector))
