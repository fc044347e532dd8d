"""The distillation teacher as an evaluated system, beside checkpoints (reference row).

`TeacherEmbedder` is an `Embedder` whose segments are chosen by the energy rule, as a
checkpoint without a voice detector would (the default feature recipe), and whose encoder is
the teacher (GE2E utterance embedding of each segment's waveform) in both domains: the
runner embeds it through `Embedder.embed_batch`, like any checkpoint. Pass `TEACHER_SPEC`
instead of a checkpoint path to `runner.evaluate`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import torch

from model.concurrency import Split
from model.devices import resolve_device
from model.embedding import Embedder
from model.features import FeatureConfig
from model.segment_selection import SegmentSelection

#: What `python -m model evaluate --checkpoint` takes for the teacher.
TEACHER_SPEC = "teacher:resemblyzer"


class TeacherEmbedder(Embedder):
    """Resemblyzer's GE2E behind the embedder's interface (segments chosen on the CPU)."""

    def __init__(self, device: str | None = None, features: FeatureConfig | None = None):
        from model.speaker import SpeakerEncoder, weights_digest

        self.teacher = SpeakerEncoder(resolve_device(device))
        self.features = replace(features or FeatureConfig(), segment_audio=True)
        self.device = torch.device("cpu")  # where segments are chosen (the energy rule)
        self.net = SimpleNamespace(model_type="teacher")  # type: ignore[assignment]
        self.detector = None
        self.speaker = None
        self.checkpoint_id = f"ge2e-{weights_digest()[:12]}"
        self.meta: dict = {"source": "resemblyzer"}
        self.selects_in_batches = False

    @property
    def embed_dim(self) -> int:
        from model.speaker import EMBED_DIM

        return EMBED_DIM

    def encode(
        self,
        selections: Sequence[SegmentSelection],
        domain: str,
        batch_size: int = 256,
        split: Split | None = None,
    ) -> np.ndarray:
        """The selections' segments -> (n, 256) teacher embeddings in one run (domain and
        split unused: the evaluation embeds many files a pass)."""
        audio = torch.cat([s.audio for s in selections if s.audio is not None])
        return self.teacher.embed_crops(audio, self.features.sample_rate)
