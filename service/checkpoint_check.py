"""Whether the catalogue's vectors were all computed by the loaded checkpoint.

Scores between vectors of two checkpoints mean nothing, so queries and additions are refused
(409 `checkpoint_mismatch`) and `/readyz` is 503 while the catalogue holds another's.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from catalog import CatalogBackend, Track
from service.errors import ApiError

# Another process (the batch indexer) may write to the catalogue while the service runs; the
# checkpoints it holds are re-read at most this often on the query path, and on every /readyz.
RECHECK_S = 30.0

CatalogCall = Callable[..., Awaitable[Any]]


class CheckpointCheck:
    """The checkpoints other than `checkpoint_id` whose vectors `catalog` holds (`foreign`),
    re-read through `catalog_call` (blocking catalogue work off the event loop)."""

    def __init__(self, catalog: CatalogBackend, checkpoint_id: str, catalog_call: CatalogCall):
        self.catalog = catalog
        self.checkpoint_id = checkpoint_id
        self.catalog_call = catalog_call
        self.foreign: set[str] = set()
        self._read_at = 0.0

    def read(self) -> None:
        """Re-read the catalogue's checkpoints now (blocking)."""
        self._read_at = time.monotonic()
        self.foreign = self.catalog.checkpoint_ids() - {self.checkpoint_id}

    async def refresh(self, max_age_s: float = 0.0) -> None:
        """Re-read the catalogue's checkpoints if the last read is older than `max_age_s`."""
        if time.monotonic() - self._read_at >= max_age_s:
            await self.catalog_call(self.read)

    def message(self) -> str:
        return (
            f"the catalogue holds vectors computed by checkpoint(s) "
            f"{', '.join(sorted(self.foreign))}, not by the loaded checkpoint "
            f"{self.checkpoint_id}; scores across checkpoints are meaningless. "
            "Re-embed the catalogue with the loaded checkpoint (python -m indexer --rebuild ...), "
            "remove the stale tracks (python -m indexer remove --checkpoint-id ID, or DELETE "
            "/tracks/ID), or set SINGER_CHECKPOINT to the checkpoint that built it."
        )

    async def require_consistent(self) -> None:
        """Raises ApiError 409 `checkpoint_mismatch` while the catalogue holds another
        checkpoint's vectors (re-read at most every `RECHECK_S`)."""
        await self.refresh(RECHECK_S)
        if self.foreign:
            raise ApiError(
                409,
                "checkpoint_mismatch",
                self.message(),
                catalog_checkpoints=sorted(self.foreign),
                model_checkpoint=self.checkpoint_id,
            )

    async def track_removed(self, track: Track) -> None:
        """Keep the check current after a delete (it may remove the last stale track)."""
        if track.checkpoint_id in self.foreign:
            await self.refresh()
