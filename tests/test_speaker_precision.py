"""The served speaker encoder's LSTM in bfloat16 on CPUs that have it (issue 38): the
shipped default's vectors against the float32 reference path on real songs, the same vector
for a crop alone or in a batch, tuned domain weights lowered too, and the switch."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from model.audio import load_audio
from model.embedding import Embedder
from model.errors import CheckpointError
from model.features import FeatureConfig
from model.speaker import SpeakerEncoder
from model.speaker_precision import PRECISION_ENV, lstm_dtype, native_bfloat16, served_precision

pytest.importorskip("resemblyzer", reason="the speaker encoder's weights: requirements/speaker.txt")

#: issue 38: a faster path keeps every vector within this cosine of today's
MAX_COSINE_LOSS = 1e-3


def mir1k_songs(shared_dir, n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """`n` MIR-1K clips at 22.05 kHz, spread over the singers: (vocals, vocals + backing)."""
    root = shared_dir / "data" / "mir1k"
    with (root / "index.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))[::83][:n]
    out = []
    for r in rows:
        voice = load_audio(root / "vocals" / f"{r['clip']}.opus", 22050)
        backing = load_audio(root / "accompaniment" / f"{r['clip']}.opus", 22050)
        m = min(len(voice), len(backing))
        out.append((voice, voice[:m] + backing[:m]))
    return out


def test_the_switch(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert lstm_dtype(cpu, "float32") == lstm_dtype(cuda, "auto") == torch.float32
    assert lstm_dtype(cpu, "auto") == (torch.bfloat16 if native_bfloat16() else torch.float32)
    with pytest.raises(ValueError):
        lstm_dtype(cpu, "float16")
    monkeypatch.delenv(PRECISION_ENV, raising=False)
    assert served_precision() == "auto"
    monkeypatch.setenv(PRECISION_ENV, "float32")
    assert served_precision() == "float32"
    monkeypatch.setenv(PRECISION_ENV, "int8")
    with pytest.raises(CheckpointError, match=PRECISION_ENV):
        Embedder.from_checkpoint(None, "cpu")  # a fused default: refused, not served


def test_served_vectors_are_within_1e3_of_the_float32_path(shared_dir, monkeypatch):
    """The shipped default, mono takes and the same takes over their backing, as served
    (`embed_audio`: voice detector, both encoders, centres, fusion, projection)."""
    monkeypatch.delenv(PRECISION_ENV, raising=False)
    served = Embedder.from_checkpoint(None, "cpu")
    monkeypatch.setenv(PRECISION_ENV, "float32")
    reference = Embedder.from_checkpoint(None, "cpu")
    assert reference.speaker is not None and served.speaker is not None
    assert reference.speaker.lstm_dtype == torch.float32
    assert served.speaker.lstm_dtype == lstm_dtype(torch.device("cpu"), "auto")
    cosines = []
    for voice, song in mir1k_songs(shared_dir, 6):
        for y, domain in ((voice, "mono"), (song, "mixed")):
            a, b = served.embed_audio(y, domain), reference.embed_audio(y, domain)
            assert a.domain == b.domain and np.array_equal(a.starts_s, b.starts_s)
            cosines.append(float(a.vector @ b.vector))
    assert min(cosines) > 1 - MAX_COSINE_LOSS, min(cosines)
    if served.speaker.lstm_dtype == torch.bfloat16:
        assert min(cosines) < 1 - 1e-6  # the bfloat16 path really ran


def test_a_crop_has_one_vector_alone_or_in_a_batch(shared_dir):
    """bfloat16 turns the front end's 1e-7 differences into 1e-3 ones: a crop alone must be
    computed as it is inside a batch (`fft_resample`), whatever the batch."""
    length = FeatureConfig().min_samples
    crops = np.stack([voice[:length] for voice, _ in mir1k_songs(shared_dir, 7)])
    encoder = SpeakerEncoder("cpu", precision="auto")
    together = encoder.embed_crops(crops, 22050)
    alone = np.concatenate([encoder.embed_crops(c[None], 22050) for c in crops])
    in_pairs = np.concatenate([encoder.embed_crops(crops[i : i + 2], 22050) for i in (0, 2, 4)])
    np.testing.assert_allclose(alone, together, atol=1e-6)
    np.testing.assert_allclose(in_pairs, together[:6], atol=1e-6)


def test_tuned_domain_weights_run_at_the_same_precision(shared_dir):
    """A checkpoint's own mixed-domain weights (`domain_states`) are lowered as the packaged
    ones are: close to their float32 selves, and still their own weights."""
    length = FeatureConfig().min_samples
    crops = np.stack([song[:length] for _, song in mir1k_songs(shared_dir, 4)])
    packaged = SpeakerEncoder("cpu").net.state_dict()
    gen = torch.Generator().manual_seed(0)
    tuned = {
        k: v + 0.02 * v.std() * torch.randn(v.shape, generator=gen) for k, v in packaged.items()
    }
    fast = SpeakerEncoder("cpu", domain_states={"mixed": tuned}, precision="auto")
    exact = SpeakerEncoder("cpu", domain_states={"mixed": tuned})
    got, want = (
        fast.embed_crops(crops, 22050, domain="mixed"),
        exact.embed_crops(crops, 22050, domain="mixed"),
    )
    assert ((got * want).sum(axis=1)).min() > 1 - MAX_COSINE_LOSS
    assert np.abs(got - fast.embed_crops(crops, 22050, domain="mono")).max() > 1e-2
