"""The energy rule of voice activity: a frame is voiced when it is loud enough.

What selection falls back on without a voice detector (the paper's 70 % rule), and what the
training data uses to find sung passages in clean vocal stems.
"""

from __future__ import annotations

import numpy as np
import torch

from model.devices import as_tensor
from model.features import FeatureConfig, segment_shares


def frame_voicing(y: np.ndarray | torch.Tensor, cfg: FeatureConfig) -> np.ndarray:
    """Energy-based voice activity per STFT frame: bool (frames,), aligned with `log_mel`."""
    y = as_tensor(y, None).cpu()
    pad = cfg.n_fft // 2
    frames = torch.nn.functional.pad(y[None, None], (pad, pad)).reshape(-1)
    frames = frames.unfold(0, cfg.n_fft, cfg.hop_length)  # (frames, n_fft)
    rms_db = 10.0 * torch.log10(frames.pow(2).mean(dim=1) + 1e-20)
    voiced = (rms_db > cfg.vad_floor_db) & (rms_db > rms_db.max() - cfg.vad_top_db)
    return voiced.numpy()


def voiced_shares(
    y: np.ndarray | torch.Tensor, cfg: FeatureConfig, hop: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(start frames (n_segments,) int64, share of voiced frames in each segment (n_segments,))."""
    return segment_shares(frame_voicing(y, cfg), cfg, hop)


def voiced_segment_starts(
    y: np.ndarray | torch.Tensor, cfg: FeatureConfig, hop: int | None = None
) -> np.ndarray:
    """Start frames (int64) of the segments the energy rule keeps: at least `vad_min_voiced`
    of their frames voiced (`model.segment_selection` without a detector keeps the same)."""
    if int(y.shape[-1]) < cfg.min_samples:
        return np.zeros(0, dtype=np.int64)
    starts, share = voiced_shares(y, cfg, hop)
    return starts[share >= cfg.vad_min_voiced]
