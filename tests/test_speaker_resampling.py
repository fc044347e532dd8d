"""The speaker encoder's FFT resampler at FFT lengths of small primes (issue 38): the same
lengths, samples and speaker vectors as the reference formula it replaced (ten periods of
the rates' ratio of silence exactly, whatever the primes of the lengths)."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch

from model.audio import load_audio, resample
from model.features import FeatureConfig
from model.speaker import SAMPLE_RATE, SpeakerEncoder, fft_resample, resampled_length
from tests.support.synth import VOICES, sing


def reference_resample(wav: torch.Tensor, orig_sr: int, sr: int = SAMPLE_RATE) -> torch.Tensor:
    """`fft_resample` as it was before issue 38: padded to a multiple of the rates' ratio
    plus ten periods, whatever the prime factors of the FFT lengths."""
    g = math.gcd(orig_sr, sr)
    down, up = orig_sr // g, sr // g
    n = wav.shape[-1]
    padded = n + (-n) % down + 10 * down
    out = padded * up // down
    spectrum = torch.fft.rfft(wav, n=padded)[..., : out // 2 + 1]
    y = torch.fft.irfft(spectrum, n=out) * (out / padded)
    return y[..., : resampled_length(n, orig_sr, sr)]


@pytest.fixture(scope="module")
def encoder() -> SpeakerEncoder:
    pytest.importorskip(
        "resemblyzer", reason="the speaker encoder's weights: requirements/speaker.txt"
    )
    return SpeakerEncoder("cpu")


def mir1k_crops(shared_dir, n: int) -> np.ndarray:
    """`n` 2.97-s crops (the fused model's segment audio) of MIR-1K vocals at 22.05 kHz."""
    root = shared_dir / "data" / "mir1k"
    with (root / "index.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))[::97][:n]
    length = FeatureConfig().min_samples
    return np.stack(
        [load_audio(root / "vocals" / f"{r['clip']}.opus", 22050)[:length] for r in rows]
    )


@pytest.fixture(scope="module")
def phrases() -> np.ndarray:
    """Two sung phrases (2, samples) at 22.05 kHz."""
    return np.stack([sing(VOICES[0], 3.0, seed=1), sing(VOICES[2], 3.0)])


@pytest.mark.parametrize("orig_sr", [22050, 44100, 48000, 8000, 11025])
@pytest.mark.parametrize("n", [65536, 12345, 441, 1])
def test_lengths_and_samples_match_the_reference(phrases, orig_sr, n):
    """A sung phrase at several rates: the same length, and, from half a second on (a
    segment's crop is 3 s), samples within 0.1 % (RMS) of the reference: a longer stretch
    of silence moves the band-limited interpolation by a hair (at 22.05 kHz, the model's
    rate, 3-s crops need no longer one)."""
    voice = resample(phrases, 22050, orig_sr)
    wav = torch.from_numpy(np.ascontiguousarray(voice[:, :n], np.float32))
    ours, ref = fft_resample(wav, orig_sr), reference_resample(wav, orig_sr)
    assert ours.shape == ref.shape == (2, resampled_length(wav.shape[-1], orig_sr))
    rms = (ours - ref).square().mean().sqrt() / ref.square().mean().sqrt().clamp_min(1e-12)
    if wav.shape[-1] >= orig_sr // 2:
        assert rms < 1e-3


def test_speaker_vectors_match_the_reference_path(encoder, shared_dir):
    """Real sung crops and synthetic ones: vectors through the fast front end against the
    same crops resampled by the reference formula (16 kHz in: no resampling there)."""
    synth = np.stack([sing(v, 3.0, seed=i) for i, v in enumerate(VOICES)])
    crops = np.concatenate([mir1k_crops(shared_dir, 12), synth[:, : FeatureConfig().min_samples]])
    ours = encoder.embed_crops(crops, 22050)
    reference = reference_resample(torch.from_numpy(crops), 22050)
    ref = encoder.embed_crops(reference, SAMPLE_RATE)
    cosine = (ours * ref).sum(axis=1)
    assert cosine.min() > 1 - 1e-5, cosine.min()
    # The fast path is what the batch path gives one crop at a time, too.
    np.testing.assert_allclose(
        ours[:2], np.stack([encoder.embed(c, 22050) for c in crops[:2]]), atol=1e-5
    )
