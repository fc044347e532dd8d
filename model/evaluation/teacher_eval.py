"""The distillation teacher as an evaluated system, beside checkpoints (reference row).

`TeacherEmbedder` offers the part of `model.embedding.Embedder` that the evaluation runner
uses: it selects the same 3-s segments as a checkpoint would (`select_segments` with the
default feature recipe), and embeds each segment's waveform with the teacher (GE2E utterance
embedding of the segment). The teacher has one encoder, so both domains go through it.
Pass `TEACHER_SPEC` instead of a checkpoint path to `runner.evaluate`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import torch

from model.embedding import resolve_device
from model.features import FeatureConfig, SegmentSelection, select_segments

#: What `python -m model evaluate --checkpoint` takes for the teacher.
TEACHER_SPEC = "teacher:resemblyzer"


class TeacherEmbedder:
    """Resemblyzer's GE2E behind the runner's embedder interface."""

    def __init__(self, device: str | None = None, features: FeatureConfig | None = None):
        from model.speaker import SpeakerEncoder, weights_digest

        self.device = resolve_device(device)
        self.teacher = SpeakerEncoder(self.device)
        self.features = replace(features or FeatureConfig(), segment_audio=True)
        self.net = SimpleNamespace(model_type="teacher")
        self.detector = None  # segments are chosen by the energy VAD, as without a detector
        digest = weights_digest()[:12]
        self.checkpoint_id = f"ge2e-{digest}"
        self.meta: dict = {"source": "resemblyzer"}

    @property
    def embed_dim(self) -> int:
        from model.speaker import EMBED_DIM

        return EMBED_DIM

    def select(
        self, y: np.ndarray, all_segments: bool = False, path: str | None = None
    ) -> SegmentSelection:
        """Waveform at features.sample_rate -> the selected segments, with their waveforms."""
        return select_segments(y, self.features, all_segments, path=path)

    def encode(self, selections: Sequence[SegmentSelection], domain: str) -> np.ndarray:
        """The selections' segments -> (n, 256) teacher embeddings (domain unused)."""
        audio = torch.cat([s.audio for s in selections if s.audio is not None])
        return self.teacher.embed_crops(audio, self.features.sample_rate)
