"""The converted checkpoints give the Keras network's outputs.

The reference below re-implements the Keras layers in numpy straight from the .h5 datasets
(no project model code): Conv1D 'same', BatchNormalization (eps 1e-3), LeakyReLU(0.2),
MaxPooling1D(3, 'valid'), GlobalAveragePooling1D; inputs in Keras order (batch, time, mel).
"""

import re

import h5py
import numpy as np
import pytest
import torch

from model.checkpoint import load_checkpoint
from model.training.keras_import import import_keras

pytestmark = pytest.mark.slow

FILES = {  # file: (model type, how its branches are stored)
    "cross_pretrained.h5": ("cross", "submodels"),
    "cross_scratch.h5": ("cross", "flat"),
    "mono_pretrained.h5": ("mono", "submodels"),
    "mix_pretrained.h5": ("mixed", "submodels"),
}
MEAN_STD = {"mono": (0.10185046, 0.21093594), "mixed": (0.22986141, 0.27396998)}


def keras_branches(path, layout):
    """[(kernels, biases, bn params)] per branch, read from the h5 by layer index."""
    f = h5py.File(path, "r")["model_weights"]
    num = lambda name: int(re.search(r"_(\d+)", name).group(1))
    groups = []
    if layout == "flat":
        convs = sorted([k for k in f if k.startswith("conv1d")], key=num)
        bns = sorted([k for k in f if k.startswith("batch_norm")], key=num)
        pairs = [(f[c][c], f[b][b]) for c, b in zip(convs, bns)]
        groups = [pairs[:5], pairs[5:]]
    else:
        for sub in sorted(k for k in f if k.startswith("model_")):
            g = f[sub]
            convs = sorted([k for k in g if k.startswith("conv1d")], key=num)
            bns = sorted([k for k in g if k.startswith("batch_norm")], key=num)
            groups.append([(g[c], g[b]) for c, b in zip(convs, bns)])
    return [
        [({k: v[()] for k, v in c.items()}, {k: v[()] for k, v in b.items()}) for c, b in br]
        for br in groups
    ]


def keras_forward(x, branch):
    """x: (batch, time, mel) standardised -> (batch, 256)."""
    for i, (conv, bn) in enumerate(branch):
        w, b = conv["kernel:0"], conv["bias:0"]  # (k, in, out)
        k = w.shape[0]
        pad = (k - 1) // 2
        xp = np.pad(x, ((0, 0), (pad, k - 1 - pad), (0, 0)))
        x = sum(xp[:, j : j + x.shape[1]] @ w[j] for j in range(k)) + b
        x = (x - bn["moving_mean:0"]) / np.sqrt(bn["moving_variance:0"] + 1e-3) * bn[
            "gamma:0"
        ] + bn["beta:0"]
        x = np.where(x > 0, x, 0.2 * x)
        if i < len(branch) - 1:
            t = x.shape[1] // 3
            x = x[:, : 3 * t].reshape(x.shape[0], t, 3, -1).max(axis=2)
    return x.mean(axis=1)


@pytest.mark.parametrize("name", sorted(FILES))
def test_import_parity(name, shared_dir, tmp_path):
    src = shared_dir / "reference" / "mono2mixed-singer" / name
    model_type, layout = FILES[name]
    net, feats, meta = load_checkpoint(import_keras(src, tmp_path / "c.pt"))
    assert net.model_type == model_type and feats.n_mels == 128 and meta["imported_from"] == name
    branches = keras_branches(src, layout)
    rng = np.random.default_rng(0)
    mel = rng.uniform(0, 1.2, size=(4, 128, 129)).astype(np.float64)  # log-mel range
    for domain in ("mono", "mixed"):
        branch = branches[0] if (len(branches) == 1 or domain == "mono") else branches[1]
        mean, std = MEAN_STD[domain]
        ref = keras_forward(((mel - mean) / std).transpose(0, 2, 1), branch)
        with torch.no_grad():
            ours = net(torch.from_numpy(mel).float(), domain).numpy()
        assert ours.shape == (4, 256)
        np.testing.assert_allclose(ours, ref, atol=1e-4 * max(1.0, np.abs(ref).max()), rtol=1e-4)
    if model_type == "cross":  # two genuinely different branches
        assert not torch.equal(net.mono.layers[0].weight, net.mixed.layers[0].weight)
