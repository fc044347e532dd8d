"""CROSS singer embeddings (Lee & Nam, ISMIR 2019): features, networks, checkpoints, embedding."""

from pathlib import Path

#: The project's own CROSS checkpoint, trained on ../shared/data (see model/weights/MODEL_CARD.md).
DEFAULT_CHECKPOINT = Path(__file__).resolve().parent / "weights" / "cross-default.pt"
