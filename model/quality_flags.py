"""Quality flags of a selection: what a caller should know about how a recording was heard.

`low_voice` (little singing: the most voiced segments were kept), `short` (under two
segments), `clipped` (flat tops), `mostly_accompaniment` / `domain_mismatch` (the detector
hears the other domain than declared). See service/README.md, "quality".
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from model.devices import as_tensor
from model.features import FeatureConfig

if TYPE_CHECKING:
    from model.segment_selection import SegmentSelection

#: Quality flags a selection may carry, in this order (see `SegmentSelection.flags`).
QUALITY_FLAGS = ("low_voice", "short", "clipped", "mostly_accompaniment", "domain_mismatch")
#: A recording is `clipped` when this share of its samples sits within 1 % of its peak.
CLIPPED_SHARE = 0.005


def clipped_share(y: np.ndarray | torch.Tensor, chunk: int = 1 << 20) -> float:
    """Share of samples within 1 % of the recording's peak (flat tops of clipping)."""
    return float(clipped_shares([y], chunk)[0])


def clipped_shares(ys: Sequence[np.ndarray | torch.Tensor], chunk: int = 1 << 20) -> np.ndarray:
    """`clipped_share` of each waveform: (n,) float64.

    Computed where each waveform is, `chunk` samples at a time (no full-length temporary for
    a long file), and copied to the host once for all of them: on CUDA, a copy per recording
    stalled the thread that chooses segments for a whole batch.
    """
    ts = [as_tensor(y, None) for y in ys]
    if not ts:
        return np.zeros(0)
    counts = []
    for t in ts:
        n = int(t.numel())
        if n == 0:
            counts.append(torch.zeros(2, dtype=torch.float64, device=t.device))
            continue
        peak = torch.stack([t[i : i + chunk].abs().max() for i in range(0, n, chunk)]).max()
        # The threshold in float64, rounded once to the samples' float32, as a Python scalar is.
        limit = 0.99 * peak.double()
        near = torch.stack([(t[i : i + chunk].abs() >= limit).sum() for i in range(0, n, chunk)])
        counts.append(torch.stack([peak.double(), near.sum().double()]))
    host = torch.stack([c.to(ts[0].device) for c in counts]).cpu().numpy()
    sizes = np.array([max(int(t.numel()), 1) for t in ts], np.float64)
    return np.where(host[:, 0] > 0, host[:, 1] / sizes, 0.0)


def quality_flags(
    selection: SegmentSelection,
    clipped: float,
    cfg: FeatureConfig,
    low_voice: bool,
    domain: str | None,
    domain_threshold: float = 0.5,
) -> tuple[str, ...]:
    """Flags of `QUALITY_FLAGS` for a selection (see service/README.md, "quality");
    `clipped`: the recording's `clipped_share`."""
    flags = set()
    if low_voice:
        flags.add("low_voice")
    if selection.duration_s < 2 * cfg.segment_seconds:
        flags.add("short")
    if clipped >= CLIPPED_SHARE:
        flags.add("clipped")
    score = selection.domain_score
    if score is not None and domain == "mono" and score > domain_threshold:
        flags |= {"mostly_accompaniment", "domain_mismatch"}
    if score is not None and domain == "mixed" and score < 1.0 - domain_threshold:
        flags.add("domain_mismatch")
    return tuple(f for f in QUALITY_FLAGS if f in flags)
