"""Loading what an `Embedder` is made of: the checkpoint, the voice detector and, for a fused
checkpoint, the speaker encoder with its domain centres and nuisance directions.

Every file loads with `torch.load(weights_only=True)`; loading changes no process-wide
setting (TF32 is switched off only around inference: `model.devices.full_float32`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from model.checkpoint import checkpoint_id, load_checkpoint
from model.errors import CheckpointError
from model.fusion import FUSION_KEY, load_centres, load_nuisance, load_speaker
from model.speaker import EMBED_DIM as SPEAKER_DIM
from model.voice import VoiceDetector


def load_embedder_parts(
    path: str | Path | None, device: torch.device, voice_detector: str | Path | None = None
) -> dict[str, Any]:
    """The keyword arguments of `Embedder(...)` for checkpoint `path` (None: the shipped
    default) and `voice_detector` (None: the shipped one), loaded on `device`.

    Raises CheckpointError when either cannot be loaded, or when they expect audio at
    different sample rates.
    """
    from model import DEFAULT_CHECKPOINT

    path = Path(path) if path else DEFAULT_CHECKPOINT
    net, features, meta = load_checkpoint(path, device)
    detector = VoiceDetector.load(voice_detector, device)
    if detector.features.sample_rate != features.sample_rate:
        raise CheckpointError(
            f"the voice detector expects {detector.features.sample_rate} Hz audio, the "
            f"checkpoint {features.sample_rate} Hz"
        )
    parts: dict[str, Any] = {
        "net": net,
        "features": features,
        "meta": meta,
        "device": device,
        "ckpt_id": checkpoint_id(path),
        "detector": detector,
    }
    if FUSION_KEY in meta:
        fusion = meta[FUSION_KEY]
        parts["speaker"], parts["fusion_weight"] = load_speaker(fusion, device, path)
        parts["centres"] = load_centres(fusion, net.dims.embed_dim)
        parts["nuisance"] = load_nuisance(fusion, net.dims.embed_dim + SPEAKER_DIM)
    return parts
