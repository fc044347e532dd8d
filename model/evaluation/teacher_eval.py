"""The distillation teacher as an evaluated system, beside checkpoints (reference row).

`TeacherEmbedder` offers the part of `model.embedding.Embedder` that the evaluation runner
uses: it selects the same 3-s segments as a checkpoint would (`select_segments` with the
default feature recipe), and embeds each segment's waveform with the teacher (GE2E utterance
embedding of the segment). The teacher has one encoder, so both domains go through it.
Pass `TEACHER_SPEC` instead of a checkpoint path to `runner.evaluate`.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from model.embedding import resolve_device
from model.features import FeatureConfig, select_segments

#: What `python -m model evaluate --checkpoint` takes for the teacher.
TEACHER_SPEC = "teacher:resemblyzer"


class TeacherEmbedder:
    """Resemblyzer's GE2E behind the runner's embedder interface."""

    def __init__(self, device: str | None = None, features: FeatureConfig | None = None):
        from model.training.teacher import Teacher, weights_path

        self.device = resolve_device(device)
        self.teacher = Teacher(self.device)
        self.features = features or FeatureConfig()
        self.net = SimpleNamespace(model_type="teacher")
        self.detector = None  # segments are chosen by the energy VAD, as without a detector
        digest = hashlib.sha256(Path(weights_path()).read_bytes()).hexdigest()[:12]
        self.checkpoint_id = f"ge2e-{digest}"
        self.meta: dict = {"source": "resemblyzer"}

    @property
    def embed_dim(self) -> int:
        from model.training.teacher import EMBED_DIM

        return EMBED_DIM

    def segments(
        self, y: np.ndarray, all_segments: bool = False, path: str | None = None
    ) -> torch.Tensor:
        """Waveform at features.sample_rate -> the selected segments' waveforms (n, samples)."""
        sel = select_segments(y, self.features, all_segments, path=path)
        sr = self.features.sample_rate
        n = self.features.min_samples
        starts = np.round(sel.starts_s * sr).astype(int)
        y = np.pad(np.asarray(y, np.float32), (0, n))
        return torch.from_numpy(np.stack([y[s : s + n] for s in starts]))

    def embed_segments(self, segs: torch.Tensor, domain: str) -> np.ndarray:
        """Segment waveforms (n, samples) -> (n, 256) teacher embeddings (domain unused)."""
        return self.teacher.embed_crops(segs.numpy(), self.features.sample_rate)
