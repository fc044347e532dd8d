"""The repeating accompaniment of a mix, taken out before its singer is embedded (REPET-SIM).

In a song the band repeats and the voice varies (Rafii & Pardo, "Music/voice separation
using the similarity matrix", ISMIR 2012). For each STFT frame, the magnitude spectra of its
k most similar frames elsewhere in the recording (cosine similarity, at least `width_s`
apart) estimate the repeating background; a soft mask keeps what stands `margin` times above
it, and the masked STFT is turned back into a waveform. No weights: it works on any band. It
is the mixed branch's front end when a checkpoint's feature recipe asks for it
(`FeatureConfig.mix_background_margin`).

The steps are those of librosa's vocal-separation example (`librosa.decompose.nn_filter` with
`metric="cosine"`, then `librosa.util.softmask`), in torch, so that they run on the
embedding device in a few matrix products per block instead of a Python loop over frames;
the neighbours' geometric mean stands in for their median (`repeating_spectrum`). A frame's
neighbours are searched within its block of about `block_s` seconds: the similarity matrix
grows with the square of the frames searched.
"""

from __future__ import annotations

import math
import warnings
from itertools import pairwise

import numpy as np
import torch

from model.devices import as_tensor
from model.features import FeatureConfig, hann_window

#: Added to magnitudes before their logarithm (silent bins).
_FLOOR = 1e-8


def neighbour_count(n_frames: int, width: int) -> int:
    """librosa's default k for `n_frames` frames `width` apart: 2 ceil(sqrt(t - 2 w + 1))."""
    return int(2 * math.ceil(math.sqrt(max(1, n_frames - 2 * width + 1))))


def repeating_spectrum(mag: torch.Tensor, width: int) -> torch.Tensor:
    """The repeating part of a magnitude spectrogram (bins, t): per frame, the geometric mean
    (per bin) of its k most similar frames by cosine similarity (`neighbour_count`), not
    itself nor within `width` frames of it. Raises ValueError when t is too short for the
    width (librosa's bound, width < (t - 1) // 2, which leaves every frame neighbours).

    REPET-SIM takes the median of the neighbours: a voice present in a few of them does not
    lift the estimate. The geometric mean is almost as deaf to a few loud outliers (it
    averages logs) and is one matrix product instead of a sort per bin and frame: the
    held-out studio figures were the same within 0.03 (model card) at a fraction of the CPU.
    """
    t = mag.shape[1]
    if not 1 <= width < (t - 1) // 2:
        raise ValueError(f"{t} frames are too few for neighbours {width} frames apart")
    frames = mag.T  # (t, bins)
    unit = frames / frames.norm(dim=1, keepdim=True).clamp_min(1e-12)
    sim = unit @ unit.T
    ones = torch.ones(t, t, dtype=torch.bool, device=mag.device)
    sim.masked_fill_(~(ones.triu(width) | ones.tril(-width)), -math.inf)  # |i - j| < width
    k = min(neighbour_count(t, width), t - 1)
    top = sim.topk(k, dim=1)
    cols, order = top.indices.sort(dim=1)
    valid = torch.isfinite(top.values.gather(1, order)).to(sim)
    weights = valid / valid.sum(dim=1, keepdim=True)
    # Each row has k neighbours of t frames: a sparse product costs a third of the dense one
    # (t x t weights) on a 20-s block, with the same sums to float rounding.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        rows = torch.sparse_csr_tensor(
            torch.arange(0, t * k + 1, k, device=mag.device),
            cols.flatten(),
            weights.flatten(),
            size=(t, t),
            check_invariants=False,
        )
        log_mean = rows @ torch.log(frames + _FLOOR)
    return (torch.exp(log_mean) - _FLOOR).clamp_min(0).T


def soft_mask(x: torch.Tensor, x_ref: torch.Tensor, power: float = 2.0) -> torch.Tensor:
    """librosa.util.softmask: x^p / (x^p + x_ref^p), computed scaled by the larger of the two
    for range; 0 where both are below the smallest normal float (silence)."""
    z = torch.maximum(x, x_ref)
    silent = z < torch.finfo(x.dtype).tiny
    z = torch.where(silent, torch.ones_like(z), z)
    xp, rp = (x / z) ** power, (x_ref / z) ** power
    return torch.where(silent, torch.zeros_like(x), xp / (xp + rp))


def remove_repeating_background(
    y: np.ndarray | torch.Tensor, cfg: FeatureConfig, device: str | torch.device | None = None
) -> torch.Tensor:
    """Waveform (samples,) at cfg.sample_rate -> the same length with its repeating
    background taken out: STFT of the features' n_fft and hop (centred, as the features'),
    each block of about cfg.mix_background_block_s seconds filtered on its own (a last block
    shorter than half of one joins the one before; a block too short for the width is kept
    whole), the soft mask of S - B against margin x B where B = min(S, `repeating_spectrum`),
    inverse STFT. float32 on `device` (None: where y is).

    The same as `torch.istft(stft(y) * mask)` of the whole recording, block by block: a
    30-minute track never holds its whole spectrogram (about 1 GB at once), only one block's
    and the output."""
    y_t = as_tensor(y, device)
    n_fft, hop = cfg.n_fft, cfg.hop_length
    window = hann_window(n_fft, y_t.device)
    t = 1 + y_t.shape[-1] // hop  # frames of a centred STFT
    frame_s = hop / cfg.sample_rate
    width = max(1, round(cfg.mix_background_width_s / frame_s))
    block = max(1, round(cfg.mix_background_block_s / frame_s))
    edges = list(range(0, t, block))
    if len(edges) > 1 and t - edges[-1] < block // 2:
        edges.pop()
    edges.append(t)
    pad = n_fft // 2
    out = torch.empty(y_t.shape[-1] + 2 * pad, device=y_t.device)  # the padded signal's span
    overlap = n_fft - hop  # samples a block's last frames share with the next block's first
    carry = torch.zeros(2, overlap, device=y_t.device)  # (sum, window^2 sum) carried over
    squares: dict[int, torch.Tensor] = {}  # frames -> their squared windows overlap-added
    for a, b in pairwise(edges):
        spec = torch.stft(
            _padded_span(y_t, a * hop - pad, (b - 1) * hop + n_fft - pad, cfg.pad_mode),
            n_fft,
            hop,
            window=window,
            center=False,
            return_complex=True,
        )
        if width < (b - a - 1) // 2:  # else too short to hold a repeat: kept whole
            mag = spec.abs()
            background = torch.minimum(mag, repeating_spectrum(mag, width))
            spec = spec * soft_mask(mag - background, cfg.mix_background_margin * background)
        frames = torch.fft.irfft(spec, n=n_fft, dim=0) * window[:, None]
        n = b - a
        if n not in squares:  # every block but the last has the same number of frames
            squares[n] = _overlap_add((window**2)[:, None].expand(n_fft, n), hop)
        added = torch.stack([_overlap_add(frames, hop), squares[n]])
        added[:, :overlap] += carry
        done = added.shape[1] - (overlap if b < t else 0)
        # istft's normalisation: the sum of the squared windows over each sample's frames
        out[a * hop : a * hop + done] = added[0, :done] / added[1, :done].clamp_min(1e-11)
        carry = added[:, done:]
    return out[pad : pad + y_t.shape[-1]]


def _padded_span(y: torch.Tensor, start: int, stop: int, pad_mode: str) -> torch.Tensor:
    """y[start:stop] where the span may reach past either end by less than one frame: the
    missing samples as a centred STFT pads them (`pad_mode`)."""
    before, after = max(0, -start), max(0, stop - y.shape[-1])
    span = y[max(0, start) : min(stop, y.shape[-1])]
    if not before and not after:
        return span
    return torch.nn.functional.pad(span[None, None], (before, after), mode=pad_mode)[0, 0]


def _overlap_add(frames: torch.Tensor, hop: int) -> torch.Tensor:
    """(n_fft, n) frames `hop` apart -> ((n - 1) hop + n_fft,), summed where they overlap."""
    n_fft, n = frames.shape
    length = (n - 1) * hop + n_fft
    if n_fft % hop:
        return torch.nn.functional.fold(
            frames[None], output_size=(1, length), kernel_size=(1, n_fft), stride=(1, hop)
        ).reshape(length)
    # hop-long pieces: the j-th piece of every frame lands j hops on (n_fft / hop vector adds,
    # where fold's general scatter took 3x the time)
    out = frames.new_zeros(length)
    for j in range(n_fft // hop):
        out[j * hop : j * hop + n * hop] += frames[j * hop : (j + 1) * hop].T.reshape(-1)
    return out
