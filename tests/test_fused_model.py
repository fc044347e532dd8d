"""Fused checkpoints (`model.fusion`): CROSS plus the speaker encoder, one vector per segment.

Real random CROSS weights fused with the installed GE2E weights; every figure is checked
against the two systems computed apart, from the same waveform cut by hand.
"""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from model.checkpoint import FUSED_VERSION, load_checkpoint, save_payload
from model.decode_pool import DecodePool
from model.embedding import Embedder, TrackEmbedding
from model.errors import AudioError, CheckpointError
from model.fusion import FUSION_KEY, SPEAKER, fuse_checkpoint
from model.speaker import WEIGHTS_ENV, SpeakerEncoder, export_weights, weights_digest, weights_path
from model.speaker_precision import served_precision
from model.vectors import l2_normalize, normalized_mean
from tests.support.live import render

WEIGHT = 0.25  # the conftest's fused_checkpoint
LENGTHS = [("mono", 3.5), ("mixed", 9.0), ("mono", 14.0), ("mixed", 6.2)]


@pytest.fixture(scope="module")
def plain(random_checkpoint) -> Embedder:
    return Embedder.from_checkpoint(random_checkpoint, "cpu")


@pytest.fixture(scope="module")
def fused(fused_checkpoint) -> Embedder:
    return Embedder.from_checkpoint(fused_checkpoint, "cpu")


@pytest.fixture(scope="module")
def speaker() -> SpeakerEncoder:
    """The packaged encoder at the precision the embedder serves it (`model.speaker_precision`:
    a bfloat16 LSTM on CPUs that multiply it natively)."""
    return SpeakerEncoder("cpu", precision=served_precision())


def test_fused_checkpoint_keeps_the_cross_weights_and_names_the_speaker(
    random_checkpoint, fused_checkpoint, fused
):
    payload = torch.load(fused_checkpoint, map_location="cpu", weights_only=True)
    original = torch.load(random_checkpoint, map_location="cpu", weights_only=True)
    assert payload["version"] == FUSED_VERSION > original["version"]
    assert payload["state_dict"].keys() == original["state_dict"].keys()
    assert all(torch.equal(v, payload["state_dict"][k]) for k, v in original["state_dict"].items())
    _, features, meta = load_checkpoint(fused_checkpoint)
    assert features.segment_audio
    assert meta[FUSION_KEY] == {"speaker": SPEAKER, "sha256": weights_digest(), "weight": WEIGHT}
    assert (fused.embed_dim, fused.fusion_weight) == (256 + 256, WEIGHT)


def test_fused_vector_is_the_weighted_concatenation_of_both_systems(plain, fused, speaker):
    """Same segments as the CROSS model; each segment's vector is [sqrt(w) c / |c|,
    sqrt(1 - w) s / |s|] with s the speaker encoder's embedding of the segment's waveform."""
    y = render(2, "mixed", seed=4, seconds=12.0)
    got = fused.embed_audio(y, "mixed")
    alone = plain.select(y, domain="mixed")
    np.testing.assert_array_equal(got.starts_s, alone.starts_s)
    sr, n = plain.features.sample_rate, plain.features.min_samples
    crops = [y[round(s * sr) : round(s * sr) + n] for s in got.starts_s]
    assert all(len(c) == n for c in crops)
    voices = np.stack([speaker.embed(c, sr) for c in crops])
    cross = l2_normalize(plain.embed_segments(alone.features, "mixed"))
    expected = np.concatenate([np.sqrt(WEIGHT) * cross, np.sqrt(1 - WEIGHT) * voices], axis=1)
    np.testing.assert_allclose(got.segment_vectors, expected, atol=1e-5)
    np.testing.assert_allclose(got.vector, normalized_mean(expected), atol=1e-5)
    # The score of two segments is the weighted sum of the two systems' cosines.
    a, b = got.segment_vectors[0], got.segment_vectors[-1]
    want = WEIGHT * cross[0] @ cross[-1] + (1 - WEIGHT) * voices[0] @ voices[-1]
    assert a @ b == pytest.approx(want, abs=1e-5)


def test_warm_up_runs_every_stage_on_silence_and_changes_nothing(fused):
    """`Embedder.warm_up` (the service's first step on CUDA) gets through both branches and
    the speaker encoder on silence, and what comes after is what came before."""
    y = render(1, "mono", seed=3, seconds=8.0)
    before = fused.embed_audio(y, "mono")
    fused.warm_up()
    np.testing.assert_array_equal(
        fused.embed_audio(y, "mono").segment_vectors, before.segment_vectors
    )


def test_fused_batch_paths_equal_one_recording_at_a_time(fused, tmp_path):
    """embed_many in threads and in worker processes that choose segments (the selection's
    waveforms travel back from the process) give what embed_audio gives each file alone."""
    takes = [render(i, d, seed=i, seconds=s) for i, (d, s) in enumerate(LENGTHS)]
    paths = []
    for i, y in enumerate(takes):
        paths.append(tmp_path / f"take-{i}.wav")
        sf.write(paths[-1], y, 22050, subtype="FLOAT")
    embedded = 0
    for domain in ("mono", "mixed"):
        alone = [_embed_or_error(fused, y, domain) for y in takes]
        threads = dict(fused.embed_many(paths, domain, workers=2, batch_size=8))
        with DecodePool(2, fused.features, fused.detector) as pool:
            workers = dict(fused.embed_many(paths, domain, batch_size=8, pool=pool))
        for i, ref in enumerate(alone):
            for got in (threads[i], workers[i]):
                if isinstance(ref, AudioError):  # refused alone: refused the same way in a batch
                    assert type(got) is type(ref), got
                    continue
                assert not isinstance(got, Exception), got
                embedded += 1
                np.testing.assert_allclose(got.segment_vectors, ref.segment_vectors, atol=1e-5)
                np.testing.assert_allclose(got.vector, ref.vector, atol=1e-5)
    assert embedded >= 12  # most takes are embedded in both domains, so the vectors are compared


def _embed_or_error(embedder: Embedder, y: np.ndarray, domain: str) -> TrackEmbedding | AudioError:
    try:
        return embedder.embed_audio(y, domain)
    except AudioError as err:
        return err


def test_a_fused_checkpoint_refuses_other_speaker_weights(fused_checkpoint, tmp_path):
    payload = torch.load(fused_checkpoint, map_location="cpu", weights_only=True)
    payload["meta"][FUSION_KEY]["sha256"] = "0" * 64
    other = save_payload(payload, tmp_path / "other-speaker.pt")
    with pytest.raises(CheckpointError, match="not the ones this checkpoint was fused with"):
        Embedder.from_checkpoint(other, "cpu")


def test_fusion_weight_outside_the_unit_interval_is_refused(random_checkpoint, tmp_path):
    with pytest.raises(CheckpointError, match="outside"):
        fuse_checkpoint(random_checkpoint, tmp_path / "bad.pt", 1.5)
    assert not (tmp_path / "bad.pt").exists()


def test_weight_one_writes_the_cross_model_alone_again(random_checkpoint, fused_checkpoint, plain):
    """Unfusing gives back the original checkpoint: same payload, same vectors, no speaker."""
    out = fuse_checkpoint(fused_checkpoint, fused_checkpoint.with_name("unfused.pt"), 1.0)
    got = torch.load(out, map_location="cpu", weights_only=True)
    original = torch.load(random_checkpoint, map_location="cpu", weights_only=True)
    assert {k: v for k, v in got.items() if k != "state_dict"} == {
        k: v for k, v in original.items() if k != "state_dict"
    }
    unfused = Embedder.from_checkpoint(out, "cpu")
    assert unfused.speaker is None and unfused.embed_dim == 256
    y = render(1, "mono", seed=2, seconds=7.0)
    np.testing.assert_array_equal(
        unfused.embed_audio(y, "mono").vector, plain.embed_audio(y, "mono").vector
    )


def test_fuse_command_writes_a_loadable_checkpoint_or_exits_2(random_checkpoint, tmp_path):
    from model.__main__ import main

    out = tmp_path / "cli-fused.pt"
    assert (
        main(["fuse", "--checkpoint", str(random_checkpoint), "--weight", "0.3", "--out", str(out)])
        == 0
    )
    assert Embedder.from_checkpoint(out, "cpu").fusion_weight == 0.3
    bad = tmp_path / "bad.pt"
    assert (
        main(["fuse", "--checkpoint", str(random_checkpoint), "--weight", "-1", "--out", str(bad)])
        == 2
    )
    assert not bad.exists()


def test_exported_weights_stand_in_for_the_package(fused_checkpoint, fused, tmp_path, monkeypatch):
    """$SINGER_SPEAKER_WEIGHTS: the encoder's tensors alone, a third of the package's file,
    pin to the same digest and give the same vectors; a missing file is a CheckpointError."""
    package = weights_path()
    out = export_weights(tmp_path / "ge2e.pt")
    assert out.stat().st_size < package.stat().st_size / 2
    monkeypatch.setenv(WEIGHTS_ENV, str(out))
    assert weights_path() == out and weights_digest() == weights_digest(package)
    y = render(3, "mono", seed=1, seconds=8.0)
    np.testing.assert_array_equal(
        Embedder.from_checkpoint(fused_checkpoint, "cpu").embed_audio(y, "mono").segment_vectors,
        fused.embed_audio(y, "mono").segment_vectors,
    )
    monkeypatch.setenv(WEIGHTS_ENV, str(tmp_path / "missing.pt"))
    with pytest.raises(CheckpointError, match="no such file"):
        Embedder.from_checkpoint(fused_checkpoint, "cpu")
