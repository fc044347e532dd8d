"""Fused checkpoints: the CROSS encoders with a pretrained speaker encoder beside them.

A fused checkpoint is a CROSS checkpoint whose `meta["fusion"]` names the speaker encoder
(`model.speaker`, Resemblyzer's GE2E, weights read from the installed package and pinned by
the SHA-256 of their tensors) and the CROSS share `weight` of the score. Its feature recipe
keeps each segment's waveform (`FeatureConfig.segment_audio`) for the speaker encoder's own
front end.
A segment's vector is then `model.vectors.fuse(cross, speaker, weight)`, (256 + 256,) and of
unit norm: the cosine of two is weight x the CROSS cosine + (1 - weight) x the speaker cosine.
Format version 2 (`FUSED_VERSION`): older readers refuse the file instead of serving half of it.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from model.checkpoint import FUSED_VERSION, VERSION, load_checkpoint, save_payload
from model.errors import CheckpointError
from model.speaker import SpeakerEncoder, weights_digest, weights_path

#: `meta` key of a fused checkpoint, and the speaker encoder it names.
FUSION_KEY = "fusion"
SPEAKER = "resemblyzer-ge2e"


def fuse_checkpoint(cross: str | Path, out: str | Path, weight: float) -> Path:
    """Write `out`: the CROSS checkpoint `cross` fused with the installed speaker encoder,
    CROSS weighing `weight` in [0, 1] of every cosine (a fused `cross` is re-weighted).
    Weight 1 writes the CROSS model alone, unfused (no speaker encoder to run).
    Raises CheckpointError."""
    if not 0.0 <= weight <= 1.0:
        raise CheckpointError(f"fusion weight {weight} is outside [0, 1]")
    net, features, meta = load_checkpoint(cross)
    if net.model_type != "cross":
        raise CheckpointError(f"{cross}: a {net.model_type} checkpoint; fusion needs CROSS")
    payload = torch.load(cross, map_location="cpu", weights_only=True)
    meta.pop(FUSION_KEY, None)
    if weight == 1.0:
        payload.update(
            version=VERSION, features=replace(features, segment_audio=False).to_dict(), meta=meta
        )
        return save_payload(payload, out)
    payload["version"] = FUSED_VERSION
    payload["features"] = replace(features, segment_audio=True).to_dict()
    payload["meta"] = {
        **meta,
        FUSION_KEY: {"speaker": SPEAKER, "sha256": weights_digest(), "weight": float(weight)},
    }
    return save_payload(payload, out)


def load_speaker(spec: dict, device: torch.device) -> tuple[SpeakerEncoder, float]:
    """The speaker encoder a fused checkpoint's `meta["fusion"]` names, on `device`, and the
    CROSS weight. Raises CheckpointError when it is not installed or not the same weights."""
    if spec.get("speaker") != SPEAKER:
        raise CheckpointError(f"unknown speaker encoder {spec.get('speaker')!r} in the fusion")
    try:
        path = weights_path()
    except (ModuleNotFoundError, FileNotFoundError) as err:
        raise CheckpointError(f"this checkpoint fuses a speaker encoder: {err}") from err
    try:
        encoder = SpeakerEncoder(device, path)  # reads the weights once, digest included
    except Exception as err:  # torch raises many types for a corrupt or foreign file
        raise CheckpointError(
            f"the speaker encoder's weights at {path} are not readable ({type(err).__name__})"
        ) from err
    if encoder.digest != spec.get("sha256"):
        raise CheckpointError(
            f"the speaker encoder's weights at {path} are not the ones this checkpoint was "
            "fused with (another resemblyzer version?); install requirements/speaker.txt"
        )
    weight = float(spec["weight"])
    if not 0.0 <= weight <= 1.0:
        raise CheckpointError(f"fusion weight {weight} is outside [0, 1]")
    return encoder, weight
