"""CROSS singer embeddings (Lee & Nam, ISMIR 2019): features, networks, checkpoints, embedding.

The public surface for library users:

    from model import load_model
    emb = load_model()                                   # the bundled default, CUDA when present
    vec = emb.embed_file("take.wav", domain="mono").vector   # float32 (embed_dim,), unit norm

`model.training` and `model.evaluation` are research code (training, mashups, Keras import,
the paper's evaluation) and are never imported by the inference core or the service.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

#: The project's own CROSS checkpoint, trained on ../shared/data (see model/weights/MODEL_CARD.md).
DEFAULT_CHECKPOINT = Path(__file__).resolve().parent / "weights" / "cross-default.pt"

if TYPE_CHECKING:
    from model.embedding import Embedder

__all__ = [
    "DEFAULT_CHECKPOINT",
    "Embedder",
    "FeatureConfig",
    "TrackEmbedding",
    "load_model",
]


def load_model(checkpoint: str | Path | None = None, device: str = "auto") -> Embedder:
    """A checkpoint ready for inference: `checkpoint` or the bundled default, on `device`
    ('auto': CUDA when available, else CPU). Loads with `torch.load(weights_only=True)`."""
    from model.embedding import Embedder

    return Embedder.from_checkpoint(checkpoint, device)


def __getattr__(name: str) -> object:
    # Lazy, so `import model` (e.g. for DEFAULT_CHECKPOINT) does not import torch.
    if name in ("Embedder", "TrackEmbedding"):
        from model import embedding

        return getattr(embedding, name)
    if name == "FeatureConfig":
        from model.features import FeatureConfig

        return FeatureConfig
    raise AttributeError(f"module 'model' has no attribute {name!r}")
