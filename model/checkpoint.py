"""Checkpoint files: weights plus everything needed to use them.

A checkpoint is a `torch.save`d dict of plain types and tensors, so it loads with
`torch.load(weights_only=True)` (no unpickling of arbitrary objects):

    {"format": "singer-retrieval", "version": 1, "model_type": "cross" | "mono" | "mixed",
     "dims": EncoderDims dict, "features": FeatureConfig dict, "meta": JSON-able dict,
     "state_dict": {name: tensor}}    # includes the per-domain normalisation buffers

Version 2 is a fused checkpoint (`model.fusion`): `meta["fusion"]` names a speaker encoder.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from model.errors import CheckpointError
from model.features import FeatureConfig
from model.files import atomic_write
from model.network import EncoderDims, SingerNet

FORMAT = "singer-retrieval"
VERSION = 1
#: A fused checkpoint (`model.fusion`): version 2, so that readers without fusion refuse it.
FUSED_VERSION = 2


def save_checkpoint(
    net: SingerNet, path: str | Path, features: FeatureConfig, meta: dict | None = None
) -> Path:
    """Write atomically (temp file + rename): a crash never leaves a half-written checkpoint."""
    meta = json.loads(json.dumps(meta or {}))  # plain types only, so weights_only loading works
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "model_type": net.model_type,
        "dims": net.dims.to_dict(),
        "features": features.to_dict(),
        "meta": meta,
        "state_dict": {k: v.detach().cpu().clone() for k, v in net.state_dict().items()},
    }
    return save_payload(payload, path)


def save_payload(payload: dict, path: str | Path) -> Path:
    """`torch.save` through a temp file and a rename, so no reader sees half a file."""
    path = Path(path)
    with atomic_write(path, durable=True) as fh:
        torch.save(payload, fh)
    return path


def load_checkpoint(
    path: str | Path, device: str | torch.device = "cpu"
) -> tuple[SingerNet, FeatureConfig, dict]:
    """Load a checkpoint into an eval-mode SingerNet on `device`. Raises CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a corrupt or foreign file
        raise CheckpointError(
            f"{path}: not a readable checkpoint ({err.__class__.__name__}: {err})"
        ) from err
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(
            f"{path}: not a {FORMAT} checkpoint (convert Keras .h5 files with "
            "`python -m model import-keras`)"
        )
    if payload.get("version", 0) > FUSED_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint version {payload['version']} is newer than {FUSED_VERSION}"
        )
    try:
        net = SingerNet(payload["model_type"], EncoderDims.from_dict(payload["dims"]))
        net.load_state_dict(payload["state_dict"])
        features = FeatureConfig.from_dict(payload["features"])
    except (KeyError, RuntimeError, TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: inconsistent checkpoint: {err}") from err
    return net.to(device).eval(), features, dict(payload.get("meta") or {})


def checkpoint_id(path: str | Path) -> str:
    """Short content hash of the file: which weights produced a stored embedding."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def make_random_checkpoint(
    path: str | Path, model_type: str = "cross", seed: int = 0, dims: EncoderDims | None = None
) -> Path:
    """A random-weight model with realistic BN statistics, for tests and benchmarks."""
    gen = torch.Generator().manual_seed(seed)
    net = SingerNet(model_type, dims or EncoderDims())
    with torch.no_grad():
        for name, t in net.state_dict().items():
            if name.endswith("weight") and t.ndim == 3:
                t.copy_(torch.randn(t.shape, generator=gen) / (t.shape[1] * t.shape[2]) ** 0.5)
            elif name.endswith("running_var"):
                t.copy_(0.5 + torch.rand(t.shape, generator=gen))
            elif name.endswith(("running_mean", "bias")):
                t.copy_(0.1 * torch.randn(t.shape, generator=gen))
    net.set_normalization("mono", 0.10185046, 0.21093594)
    net.set_normalization("mixed", 0.22986141, 0.27396998)
    return save_checkpoint(net, path, FeatureConfig(), {"source": "random", "seed": seed})
