"""Catalogues filled with given vectors: one track per vector, for tests of scoring."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def add_tracks(
    catalog, vectors: np.ndarray, singers: Sequence[str], domain: str, checkpoint_id: str = "ck"
) -> None:
    """Add one 3-s track of one segment per row of `vectors` (N, dim), sung by `singers[i]`."""
    for i, (v, s) in enumerate(zip(vectors, singers, strict=True)):
        catalog.add_track(
            v,
            singer=s,
            domain=domain,
            content_hash=f"{i:064x}",
            checkpoint_id=checkpoint_id,
            duration_s=3.0,
            n_segments=1,
        )
