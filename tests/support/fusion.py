"""Helpers for tests of a fused checkpoint's extras (`model.fusion`): random domain centres,
and a copy of a checkpoint with one of its fusion entries spoiled."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from model.domains import DOMAINS
from model.fusion import FUSION_KEY, DomainCentres
from model.vectors import l2_normalize


def random_centres(seed: int, scale: float = 0.7) -> DomainCentres:
    """Centres of norm `scale` (a mean of unit vectors) in random directions, 256-d parts."""
    rng = np.random.default_rng(seed)

    def mean() -> np.ndarray:
        return (scale * l2_normalize(rng.standard_normal(256))).astype(np.float32)

    return DomainCentres({d: mean() for d in DOMAINS}, {d: mean() for d in DOMAINS})


def spoiled(checkpoint: Path, key: str, spoil: Callable[[dict], object], out: Path) -> Path:
    """Write `out`: `checkpoint` with `spoil` applied in place to its fusion's `key` entry."""
    payload = torch.load(checkpoint, map_location="cpu", weights_only=True)
    spoil(payload["meta"][FUSION_KEY][key])
    torch.save(payload, out)
    return out
