"""Segments chosen for many recordings at once equal those chosen for each alone.

`select_many` (one copy to the device, one voice-detector pass over every recording's windows)
is what CUDA indexing and cross-request batching use; here it runs on the CPU against
`select_segments` of each recording, with the shipped detector, errors included.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import numpy as np
import pytest
import torch

from model.concurrency import Split
from model.embedding import Embedder, TrackEmbedding
from model.errors import AudioError, AudioTooShortError, NoVoicedSegmentError
from model.features import FeatureConfig, log_mel
from model.segment_selection import SegmentSelection, select_many, select_segments
from model.voice import VoiceDetector
from tests.support.executors import CountingExecutor
from tests.support.live import render
from tests.support.synth import VOICES, sing, write

CFG = FeatureConfig()
T = TypeVar("T")


@pytest.fixture(scope="module")
def detector() -> VoiceDetector:
    return VoiceDetector.load()


def recordings() -> list[np.ndarray]:
    """Takes and mixes of several lengths, a too-short clip and silence."""
    rng = np.random.default_rng(3)
    return [
        render(0, "mono", seed=1, seconds=4.0),
        render(1, "mixed", seed=2, seconds=11.5),
        sing(VOICES[2], 2.0),  # under one segment
        render(3, "mono", seed=4, seconds=25.0),
        np.zeros(22050 * 5, np.float32),  # no singing
        (0.01 * rng.standard_normal(22050 * 7)).astype(np.float32),
        render(2, "mixed", seed=5, seconds=6.4),
    ]


def outcome(fn: Callable[..., T], *args, **kw) -> T | AudioError:
    """What `fn` returns, or the AudioError it raises."""
    try:
        return fn(*args, **kw)
    except AudioError as err:
        return err


def same_error(got: object, ref: object) -> bool:
    """Whether `ref` is an AudioError, then asserting `got` is the same error."""
    if isinstance(ref, AudioError):
        assert type(got) is type(ref) and str(got) == str(ref)
        return True
    return False


def assert_same(got: SegmentSelection | AudioError, ref: SegmentSelection | AudioError) -> None:
    if same_error(got, ref):
        return
    assert isinstance(got, SegmentSelection) and isinstance(ref, SegmentSelection)
    torch.testing.assert_close(got.features, ref.features, atol=1e-6, rtol=0)
    np.testing.assert_array_equal(got.starts_s, ref.starts_s)
    np.testing.assert_array_equal(got.voice, ref.voice)
    assert (got.flags, got.voiced_fraction, got.duration_s) == (
        ref.flags,
        ref.voiced_fraction,
        ref.duration_s,
    )
    if ref.domain_score is None:
        assert got.domain_score is None
    else:
        assert got.domain_score == pytest.approx(ref.domain_score, abs=1e-6)


def alone(y: np.ndarray, **kw) -> SegmentSelection | AudioError:
    return outcome(select_segments, y, CFG, **kw)


def test_frame_probs_of_many_equal_each_alone(detector):
    # Lengths around the window (32 frames) and the hop; batches of 7 windows cross recordings.
    mels = [
        log_mel(sing(VOICES[i % 4], s, seed=i), CFG) for i, s in enumerate([0.5, 0.8, 3.3, 9.0])
    ]
    many = detector.frame_probs_many(mels, batch_size=7)
    for mel, got in zip(mels, many, strict=True):
        assert got.shape == (mel.shape[-1], 4)
        np.testing.assert_allclose(got, detector.frame_probs(mel), atol=1e-6, rtol=0)


def test_frame_probs_in_pieces_on_other_threads_equal_one_pass(detector):
    mels = [log_mel(sing(VOICES[i], s, seed=i), CFG) for i, s in enumerate([0.5, 9.0, 21.0])]
    whole = detector.frame_probs_many(mels)
    with CountingExecutor(2) as helpers:
        for parts in (2, 3):
            got = detector.frame_probs_many(mels, Split(parts, helpers))
            for a, b in zip(got, whole, strict=True):
                np.testing.assert_allclose(a, b, atol=1e-6, rtol=0)
        assert helpers.submitted >= 1 + 2


@pytest.mark.parametrize("all_segments", [False, True])
def test_select_many_with_the_detector_equals_each_alone(detector, all_segments):
    ys = recordings()
    domains = ["mono", "mixed", "mono", "mono", "mono", "mixed", "mixed"]
    paths = [f"take-{i}.wav" for i in range(len(ys))]
    got = select_many(ys, CFG, all_segments, paths=paths, detector=detector, domains=domains)
    assert len(got) == len(ys)
    for y, g, d, p in zip(ys, got, domains, paths, strict=True):
        assert_same(g, alone(y, all_segments=all_segments, detector=detector, domain=d, path=p))
    assert isinstance(got[2], AudioTooShortError) and "take-2.wav" in str(got[2])
    if not all_segments:
        assert isinstance(got[4], NoVoicedSegmentError) and "take-4.wav" in str(got[4])


def test_select_many_with_the_energy_rule_equals_each_alone():
    ys = recordings()
    for y, g in zip(ys, select_many(ys, CFG), strict=True):
        assert_same(g, alone(y))


def test_select_many_with_a_detector_of_another_recipe_equals_each_alone(detector):
    """A detector whose frames are not the model's (hop 256): its own features, mapped."""
    other = VoiceDetector(detector.net, FeatureConfig(hop_length=256), detector.rule, {})
    ys = recordings()
    for y, g in zip(ys, select_many(ys, CFG, detector=other), strict=True):
        assert_same(g, alone(y, detector=other))


def test_embed_many_choosing_in_batches_equals_one_by_one(random_checkpoint, tmp_path):
    """The CUDA indexing path (waveforms back from the decoding threads, segments chosen
    many at a time beside the encoder), run on the CPU."""
    embedder = Embedder.from_checkpoint(random_checkpoint, "cpu")
    embedder.selects_in_batches = True
    paths = [write(tmp_path / f"{i}.wav", y) for i, y in enumerate(recordings())]
    many = dict(embedder.embed_many(paths, "mono", workers=3, batch_size=8))
    assert sorted(many) == list(range(len(paths)))
    for i, path in enumerate(paths):
        ref, got = outcome(embedder.embed_file, path, "mono"), many[i]
        if same_error(got, ref):
            continue
        assert isinstance(got, TrackEmbedding) and isinstance(ref, TrackEmbedding)
        np.testing.assert_allclose(got.vector, ref.vector, atol=1e-5, rtol=0)
        np.testing.assert_array_equal(got.starts_s, ref.starts_s)
        assert got.flags == ref.flags
