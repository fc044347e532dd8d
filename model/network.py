"""The CROSS / MONO / MIXED networks of Lee & Nam (ISMIR 2019), section 3.2.

One `Encoder` class (the paper's 5-layer 1-D CNN "skeleton"); `SingerNet` holds a branch per
domain: two independent encoders for CROSS, one shared encoder for MONO and MIXED.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from model.domains import DOMAINS
from model.stored import Stored

MODEL_TYPES = ("cross", "mono", "mixed")


@dataclass(frozen=True)
class EncoderDims(Stored):
    """Architecture dimensions; saved in every checkpoint."""

    n_mels: int = 128  # input channels: convolutions run over time only
    channels: int = 128
    embed_dim: int = 256
    kernel: int = 3
    pool: int = 3
    n_blocks: int = 4
    dropout: float = 0.5
    bn_eps: float = 1e-3  # Keras' default, so imported weights give identical outputs
    leaky_slope: float = 0.2


class Encoder(nn.Module):
    """Standardised log-mel (batch, n_mels, frames) -> embedding (batch, embed_dim).

    n_blocks x [Conv1d(k, same) -> BN -> LeakyReLU -> MaxPool(pool)], then Conv1d(k=1) -> BN
    -> LeakyReLU -> Dropout -> mean over time. With 129 frames time goes 129-43-14-4-1.
    """

    def __init__(self, dims: EncoderDims = EncoderDims()):
        super().__init__()
        self.dims = dims
        layers: list[nn.Module] = []
        c_in = dims.n_mels
        for _ in range(dims.n_blocks):
            layers += [
                nn.Conv1d(c_in, dims.channels, dims.kernel, padding=dims.kernel // 2),
                nn.BatchNorm1d(dims.channels, eps=dims.bn_eps),
                nn.LeakyReLU(dims.leaky_slope),
                nn.MaxPool1d(dims.pool),
            ]
            c_in = dims.channels
        layers += [
            nn.Conv1d(c_in, dims.embed_dim, 1),
            nn.BatchNorm1d(dims.embed_dim, eps=dims.bn_eps),
            nn.LeakyReLU(dims.leaky_slope),
            nn.Dropout(dims.dropout),
        ]
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x).mean(dim=-1)  # global average pooling over time


class SingerNet(nn.Module):
    """A branch per domain plus the per-domain input standardisation.

    `forward(mel, domain)`: raw log-mel (batch, n_mels, frames) -> (batch, embed_dim).
    CROSS: `mono` and `mixed` are independent encoders. MONO / MIXED: one shared encoder.
    """

    def __init__(self, model_type: str = "cross", dims: EncoderDims = EncoderDims()):
        super().__init__()
        if model_type not in MODEL_TYPES:
            raise ValueError(f"model_type must be one of {MODEL_TYPES}, got {model_type!r}")
        self.model_type = model_type
        self.dims = dims
        if model_type == "cross":
            self.encoders = nn.ModuleDict({d: Encoder(dims) for d in DOMAINS})
        else:
            self.encoders = nn.ModuleDict({"shared": Encoder(dims)})
        # Global mean / std of the log-mel input per domain (index: DOMAINS order).
        self.norm_mean: torch.Tensor
        self.norm_std: torch.Tensor
        self.register_buffer("norm_mean", torch.zeros(len(DOMAINS)))
        self.register_buffer("norm_std", torch.ones(len(DOMAINS)))

    def branch(self, domain: str) -> Encoder:
        _check_domain(domain)
        key = "shared" if "shared" in self.encoders else domain
        encoder = self.encoders[key]
        assert isinstance(encoder, Encoder)
        return encoder

    @property
    def mono(self) -> Encoder:
        return self.branch("mono")

    @property
    def mixed(self) -> Encoder:
        return self.branch("mixed")

    def set_normalization(self, domain: str, mean: float, std: float) -> None:
        i = DOMAINS.index(_check_domain(domain))
        self.norm_mean[i] = float(mean)
        self.norm_std[i] = float(std)

    def normalize(self, mel: torch.Tensor, domain: str) -> torch.Tensor:
        i = DOMAINS.index(_check_domain(domain))
        return (mel - self.norm_mean[i]) / self.norm_std[i]

    def forward(self, mel: torch.Tensor, domain: str) -> torch.Tensor:
        return self.branch(domain)(self.normalize(mel, domain))


def _check_domain(domain: str) -> str:
    if domain not in DOMAINS:
        raise ValueError(f"domain must be one of {DOMAINS}, got {domain!r}")
    return domain
