"""Import the authors' published Keras 2 weights (HDF5) into this project's checkpoints.

Three layouts occur in `../shared/reference/mono2mixed-singer/`:
- sub-models `model_1` (monophonic branch) and `model_2` (mixed branch): cross_pretrained.h5;
- one sub-model `model_1` shared by both domains: mono_pretrained.h5, mix_pretrained.h5;
- flat layers, `conv1d_1..5` / `batch_normalization_1..5` monophonic and `conv1d_6..10` /
  `batch_normalization_6..10` mixed: cross_scratch.h5.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model.checkpoint import save_checkpoint
from model.errors import CheckpointError
from model.features import FeatureConfig
from model.network import Encoder, EncoderDims, SingerNet

# The authors' global input statistics per domain (from their training data), NOTES.md.
AUTHORS_NORMALIZATION = {"mono": (0.10185046, 0.21093594), "mixed": (0.22986141, 0.27396998)}

# One conv layer + its batch norm: kernel (k, in, out), bias, gamma, beta, mean, var.
LayerWeights = dict[str, np.ndarray]
# h5py's File/Group (h5py comes with the `eval` extra, imported when reading).
H5Group = Any


def _index(name: str) -> int:
    found = re.match(r"[a-z_0-9]*?_(\d+)", name.split("/")[0])
    assert found is not None, name  # Keras names its layers and sub-models <kind>_<N>
    return int(found.group(1))


def _read_submodel(group: H5Group) -> list[tuple[LayerWeights, LayerWeights]]:
    """Conv/BN pairs of one Keras sub-model group, in layer order."""
    names = [n.decode() for n in group.attrs["weight_names"]]
    convs = sorted({n.split("/")[0] for n in names if n.startswith("conv1d")}, key=_index)
    bns = sorted(
        {n.split("/")[0] for n in names if n.startswith("batch_normalization")}, key=_index
    )
    return [(_layer(group, c), _layer(group, b)) for c, b in zip(convs, bns, strict=True)]


def _layer(group: H5Group, layer: str) -> LayerWeights:
    g = group[layer]
    if layer in g and isinstance(g[layer], type(group)):  # flat files nest layer/layer/...
        g = g[layer]
    return {k.split(":")[0]: np.asarray(v) for k, v in g.items()}


def _read_flat(weights: H5Group) -> list[list[tuple[LayerWeights, LayerWeights]]]:
    convs = sorted((n for n in weights if n.startswith("conv1d")), key=_index)
    bns = sorted((n for n in weights if n.startswith("batch_normalization")), key=_index)
    pairs = [(_layer(weights, c), _layer(weights, b)) for c, b in zip(convs, bns, strict=True)]
    half = len(pairs) // 2
    return [pairs[:half], pairs[half:]]


def read_keras_branches(path: str | Path) -> list[list[tuple[LayerWeights, LayerWeights]]]:
    """The branches stored in a Keras file: [monophonic, mixed] or [shared]."""
    import h5py

    try:
        fh = h5py.File(path, "r")
    except OSError as err:
        raise CheckpointError(f"{path}: not an HDF5 file ({err})") from err
    with fh:
        weights = fh.get("model_weights", fh)
        subs = sorted((n for n in weights if re.fullmatch(r"model_\d+", n)), key=_index)
        if subs:
            return [_read_submodel(weights[n]) for n in subs]
        if any(n.startswith("conv1d") for n in weights):
            _check_flat_inputs(fh)
            return _read_flat(weights)
    raise CheckpointError(f"{path}: no conv1d layers or model_N sub-models found")


def _check_flat_inputs(fh: H5Group) -> None:
    """In flat files the first conv must read the anchor input (the monophonic branch)."""
    if "model_config" not in fh.attrs:
        return
    raw = fh.attrs["model_config"]
    layers = json.loads(raw.decode() if isinstance(raw, bytes) else raw)["config"]["layers"]
    first = next(layer for layer in layers if layer["class_name"] == "Conv1D")
    if first["inbound_nodes"][0][0][0] != "input_1":
        raise CheckpointError("unexpected flat layout: the first Conv1D does not read input_1")


def _load_branch(encoder: Encoder, pairs: list[tuple[LayerWeights, LayerWeights]]) -> None:
    convs = [m for m in encoder.layers if isinstance(m, torch.nn.Conv1d)]
    bns = [m for m in encoder.layers if isinstance(m, torch.nn.BatchNorm1d)]
    if len(pairs) != len(convs):
        raise CheckpointError(f"expected {len(convs)} conv layers per branch, found {len(pairs)}")
    with torch.no_grad():
        for (conv_w, bn_w), conv, bn in zip(pairs, convs, bns):
            kernel = torch.from_numpy(conv_w["kernel"].transpose(2, 1, 0).copy())  # (out, in, k)
            if kernel.shape != conv.weight.shape:
                raise CheckpointError(
                    f"kernel shape {tuple(kernel.shape)} != {tuple(conv.weight.shape)}"
                )
            conv.weight.copy_(kernel)
            assert conv.bias is not None and bn.running_mean is not None  # the net's layers
            assert bn.running_var is not None
            conv.bias.copy_(torch.from_numpy(conv_w["bias"]))
            bn.weight.copy_(torch.from_numpy(bn_w["gamma"]))
            bn.bias.copy_(torch.from_numpy(bn_w["beta"]))
            bn.running_mean.copy_(torch.from_numpy(bn_w["moving_mean"]))
            bn.running_var.copy_(torch.from_numpy(bn_w["moving_variance"]))


def import_keras(src: str | Path, dst: str | Path, model_type: str | None = None) -> Path:
    """Convert a Keras .h5 file to a checkpoint at `dst`.

    model_type: "cross" for two branches; for one shared branch "mono" or "mixed", guessed from
    the file name (mix* -> mixed) when not given.
    """
    src = Path(src)
    branches = read_keras_branches(src)
    if len(branches) == 2:
        model_type = model_type or "cross"
        if model_type != "cross":
            raise CheckpointError(f"{src}: two branches make a CROSS model, not {model_type}")
    elif len(branches) == 1:
        model_type = model_type or ("mixed" if src.name.lower().startswith("mix") else "mono")
        if model_type == "cross":
            raise CheckpointError(f"{src}: one shared branch cannot be a CROSS model")
    else:
        raise CheckpointError(f"{src}: {len(branches)} branches; expected 1 or 2")
    net = SingerNet(model_type, EncoderDims())
    _load_branch(net.branch("mono"), branches[0])
    if model_type == "cross":
        _load_branch(net.branch("mixed"), branches[1])
    for domain, (mean, std) in AUTHORS_NORMALIZATION.items():
        net.set_normalization(domain, mean, std)
    meta = {
        "source": f"keras:{src.name}",
        "imported_from": str(src.name),
        "note": "weights published by Lee & Nam (mono2mixed-singer); research use only",
    }
    return save_checkpoint(net, dst, FeatureConfig(), meta)
