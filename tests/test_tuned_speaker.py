"""The speaker encoder's copy tuned for finished songs (model.training.speaker_tune) and how a
fused checkpoint carries it (model.fusion): mixed segments through the tuned weights, mono
segments through the packaged ones, both read from the checkpoint file and pinned by digest;
the tuner's split network is the same function, and its runs resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.checkpoint import save_payload
from model.embedding import Embedder
from model.errors import CheckpointError
from model.fusion import FUSION_KEY, MIXED_SPEAKER_KEY, SPEAKER_STATES, fuse_checkpoint
from model.speaker import GE2E, SpeakerEncoder, model_state, state_digest
from model.speaker_precision import served_precision
from model.training.speaker_tune import (
    Pair,
    SplitGE2E,
    TuneConfig,
    TunePairs,
    partial_mels,
    segment_length,
    tune_speaker,
)
from model.vectors import l2_normalize
from tests.support.live import render


@pytest.fixture(scope="module")
def tuned_weights(tmp_path_factory):
    """A file of speaker weights unlike the packaged ones (every LSTM weight nudged)."""
    gen = torch.Generator().manual_seed(0)
    state = {
        k: v + 0.05 * torch.randn(v.shape, generator=gen) if k.startswith("lstm") else v
        for k, v in model_state().items()
    }
    return save_payload({"model_state": state}, tmp_path_factory.mktemp("w") / "tuned.pt")


@pytest.fixture(scope="module")
def tuned_checkpoint(random_checkpoint, tuned_weights, tmp_path_factory):
    out = tmp_path_factory.mktemp("fused") / "tuned.pt"
    return fuse_checkpoint(random_checkpoint, out, 0.1, mixed_speaker=tuned_weights)


def test_mixed_segments_use_the_tuned_weights_and_mono_ones_the_packaged(
    tuned_checkpoint, tuned_weights
):
    emb = Embedder.from_checkpoint(tuned_checkpoint, "cpu")
    # at the served precision (model.speaker_precision), as the embedder's encoder runs
    precision = served_precision()
    packaged = SpeakerEncoder("cpu", precision=precision)
    tuned = SpeakerEncoder("cpu", tuned_weights, precision=precision)
    y = render(1, "mixed", seed=3, seconds=9.0)
    sr = emb.features.sample_rate
    for domain, reference in (("mono", packaged), ("mixed", tuned)):
        sel = emb.select(y, all_segments=True)
        got = emb.speaker.embed_crops(sel.audio, sr, domain=domain)
        want = reference.embed_crops(sel.audio, sr)
        np.testing.assert_allclose(got, want, atol=1e-6)
    mono = emb.speaker.embed_crops(sel.audio, sr, domain="mono")
    mixed = emb.speaker.embed_crops(sel.audio, sr, domain="mixed")
    assert np.abs(mono - mixed).max() > 1e-3  # the two domains really differ
    # And the served vectors: the speaker half of a mixed segment is the tuned encoder's.
    vec = emb.embed_audio(y, "mixed", all_segments=True)
    assert vec.segment_vectors.shape == (len(sel), 512)


def test_the_tuned_weights_live_in_the_checkpoint_and_are_pinned(
    tuned_checkpoint, tuned_weights, tmp_path
):
    payload = torch.load(tuned_checkpoint, map_location="cpu", weights_only=True)
    state = payload[SPEAKER_STATES]["mixed"]
    assert payload["meta"][FUSION_KEY][MIXED_SPEAKER_KEY]["sha256"] == state_digest(state)
    assert state_digest(state) == state_digest(model_state(tuned_weights))
    # Tampered weights are refused, not served.
    payload[SPEAKER_STATES]["mixed"] = {k: v * 1.01 for k, v in state.items()}
    bad = save_payload(payload, tmp_path / "tampered.pt")
    with pytest.raises(CheckpointError, match="mixed-domain speaker weights"):
        Embedder.from_checkpoint(bad, "cpu")
    del payload[SPEAKER_STATES]
    with pytest.raises(CheckpointError):
        Embedder.from_checkpoint(save_payload(payload, tmp_path / "missing.pt"), "cpu")


def test_refusing_keeps_the_tuned_weights_and_weight_one_drops_them(tuned_checkpoint, tmp_path):
    again = fuse_checkpoint(tuned_checkpoint, tmp_path / "again.pt", 0.2)
    payload = torch.load(again, map_location="cpu", weights_only=True)
    assert MIXED_SPEAKER_KEY in payload["meta"][FUSION_KEY] and SPEAKER_STATES in payload
    Embedder.from_checkpoint(again, "cpu")
    alone = torch.load(fuse_checkpoint(tuned_checkpoint, tmp_path / "alone.pt", 1.0))
    assert SPEAKER_STATES not in alone and FUSION_KEY not in alone["meta"]


@pytest.mark.parametrize("layers", [1, 2, 3])
def test_split_network_is_ge2e_with_the_same_weights(layers):
    state = model_state()
    ge2e = GE2E()
    ge2e.load_state_dict(state)
    split = SplitGE2E(state, layers).eval()
    x = torch.rand(3, 160, 40)
    with torch.no_grad():
        torch.testing.assert_close(split(x), ge2e.eval()(x), atol=1e-6, rtol=0)
    assert all(torch.equal(v, state[k]) for k, v in split.ge2e_state().items())
    trainable = {n for n, p in split.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(("top.", "linear.")) for n in trainable)


def test_training_partials_are_the_served_partials():
    """The tuner's mel of partial k of a segment is what `embed_crops` averages over."""
    enc = SpeakerEncoder("cpu")
    seg = torch.from_numpy(render(0, "mono", seed=1, seconds=4.0)[:65536])
    from model.speaker import fft_resample

    seg16 = fft_resample(seg, 22050)[None]
    assert seg16.shape[1] == segment_length()
    mels = partial_mels(seg16.repeat(3, 1), np.array([0, 1, 2]))
    with torch.no_grad():
        mean = l2_normalize(enc.net(mels).mean(0).numpy())
    np.testing.assert_allclose(mean, enc.embed_crops(seg[None].numpy(), 22050)[0], atol=1e-5)


def _pairs(n: int = 3) -> TunePairs:
    pairs = TunePairs()
    rng = np.random.default_rng(0)
    for i in range(n):
        dry = render(i, "mono", seed=i, seconds=5.0)
        mix = render(i, "mixed", seed=i, seconds=5.0)  # the same take over a backing
        pair = pairs._pair(dry, mix, None)
        assert pair is not None
        pairs.studio.append(pair)
        kar = pairs._pair(dry, None, rng.standard_normal(len(dry)).astype(np.float32) * 0.05)
        assert isinstance(kar, Pair)
        pairs.karaoke.append(kar)
    return pairs


def test_a_tuning_run_resumes_where_it_stopped(tmp_path):
    pairs = _pairs()
    cfg = TuneConfig(steps=4, batch_size=4, save_every=2, lr=1e-3)
    whole = tune_speaker(pairs, cfg, tmp_path / "whole")
    # The same run stopped after 2 steps (its state saved), then resumed to 4.
    tune_speaker(pairs, TuneConfig(steps=2, batch_size=4, save_every=2, lr=1e-3), tmp_path / "cut")
    state = torch.load(tmp_path / "cut" / "state.pt", weights_only=True)
    state["config"] = cfg.to_dict()  # as if the 4-step run had been killed at step 2
    save_payload(state, tmp_path / "cut" / "state.pt")
    resumed = tune_speaker(pairs, cfg, tmp_path / "cut")
    a, b = model_state(whole), model_state(resumed)
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert any(not torch.equal(a[k], model_state()[k]) for k in a)  # it learnt something
