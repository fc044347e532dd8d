import librosa
import numpy as np
import pytest
import torch

from model.concurrency import Split, pieces
from model.energy_vad import frame_voicing
from model.errors import AudioTooShortError, NoVoicedSegmentError
from model.features import FeatureConfig, log_mel, log_mel_chunked, segment
from model.segment_selection import extract_segments, select_segments
from tests.support.executors import CountingExecutor
from tests.support.synth import VOICES, sing

CFG = FeatureConfig()


def librosa_recipe(y: np.ndarray) -> np.ndarray:
    """The recipe of NOTES.md written with librosa, independently of model.features."""
    mag = np.abs(librosa.stft(y, n_fft=1024, hop_length=512, window="hann", center=True))
    mel = librosa.filters.mel(sr=22050, n_fft=1024, n_mels=128) @ mag
    return np.log10(1 + 10 * mel)


def test_log_mel_matches_librosa_recipe():
    rng = np.random.default_rng(0)
    y = (sing(VOICES[1], 4.0) + 0.05 * rng.standard_normal(88200)).astype(np.float32)
    ours = log_mel(y, CFG).numpy()
    ref = librosa_recipe(y)
    assert ours.shape == ref.shape == (128, 1 + len(y) // 512)
    assert np.max(np.abs(ours - ref)) <= 1e-4 * np.max(np.abs(ref))
    # elementwise relative error where there is energy
    big = ref > 1e-2
    assert np.max(np.abs(ours[big] - ref[big]) / ref[big]) < 1e-4


def test_log_mel_equals_librosa_melspectrogram():
    """The torch feature path (STFT, Slaney mel, log) against librosa's own melspectrogram
    with the same parameters: magnitude (power 1), Slaney-normalised filters, centred frames."""
    rng = np.random.default_rng(1)
    y = (sing(VOICES[2], 5.0, seed=3) + 0.02 * rng.standard_normal(110250)).astype(np.float32)
    mel = librosa.feature.melspectrogram(
        y=y,
        sr=CFG.sample_rate,
        n_fft=CFG.n_fft,
        hop_length=CFG.hop_length,
        window="hann",
        center=True,
        pad_mode=CFG.pad_mode,
        power=1.0,
        n_mels=CFG.n_mels,
        fmin=CFG.fmin,
        fmax=CFG.fmax,
        htk=False,
        norm="slaney",
    )
    ref = np.log10(1 + CFG.log_scale * mel)
    ours = log_mel(y, CFG).numpy()
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-5 * ref.max())


def test_log_mel_batch_equals_single():
    ys = np.stack([sing(v, 3.5, seed=i) for i, v in enumerate(VOICES)])
    batch = log_mel(ys, CFG)
    for i, y in enumerate(ys):
        torch.testing.assert_close(batch[i], log_mel(y, CFG), rtol=1e-5, atol=1e-6)


def test_segmentation_counts_and_hop():
    mel = torch.arange(128 * 400, dtype=torch.float32).reshape(128, 400)
    segs = segment(mel, CFG)
    assert segs.shape == (3, 128, 129)  # non-overlapping: starts 0, 129, 258
    torch.testing.assert_close(segs[1], mel[:, 129:258])
    assert segment(mel, CFG, hop=64).shape[0] == 1 + (400 - 129) // 64


def test_minimum_duration_is_one_segment():
    n = CFG.min_samples
    assert extract_segments(sing(VOICES[0], 3.0)[:n], CFG, all_segments=True).shape == (1, 128, 129)
    with pytest.raises(AudioTooShortError) as err:
        extract_segments(np.zeros(n - 1, np.float32), CFG)
    assert err.value.min_duration_s == pytest.approx(2.972, abs=1e-3)
    assert "2.97" in str(err.value)


def test_voice_activity_keeps_voiced_segments_only():
    voice = sing(VOICES[2], 6.1)
    y = np.concatenate([voice, np.zeros(len(voice), np.float32)])
    voiced = frame_voicing(y, CFG)
    assert voiced[:200].mean() > 0.9 and voiced[-200:].mean() == 0.0
    kept = extract_segments(y, CFG)
    every = extract_segments(y, CFG, all_segments=True)
    assert len(every) == 4 and len(kept) == 2
    torch.testing.assert_close(kept, every[:2])


def test_silence_has_no_voiced_segment():
    with pytest.raises(NoVoicedSegmentError):
        extract_segments(np.zeros(22050 * 5, np.float32), CFG)
    # the switch keeps every segment, silent or not
    assert len(extract_segments(np.zeros(22050 * 5, np.float32), CFG, all_segments=True)) == 1


def test_config_round_trip():
    cfg = FeatureConfig(vad_top_db=20.0, segment_hop=64)
    assert FeatureConfig.from_dict(cfg.to_dict() | {"unknown_future_field": 1}) == cfg


@pytest.mark.parametrize("pad_mode", ["constant", "reflect"])
def test_chunked_log_mel_equals_one_shot(pad_mode):
    cfg = FeatureConfig(pad_mode=pad_mode)
    rng = np.random.default_rng(3)
    y = (sing(VOICES[3], 7.3) + 0.01 * rng.standard_normal(int(7.3 * 22050))).astype(np.float32)
    whole = log_mel(y, cfg)
    for chunk in (2, 37, 100, whole.shape[-1] - 1):
        torch.testing.assert_close(log_mel_chunked(y, cfg, chunk_frames=chunk), whole)


@pytest.mark.parametrize("parts", [2, 3, 7])
def test_log_mel_in_pieces_on_other_threads_equals_one_shot(parts):
    y = sing(VOICES[2], 6.1, seed=4)
    whole = log_mel(y, CFG)
    with CountingExecutor(parts - 1) as helpers:
        for chunk in (None, 40):  # pieces, and chunks smaller than a piece
            got = log_mel_chunked(y, CFG, chunk_frames=chunk, split=Split(parts, helpers))
            assert torch.equal(got, whole)
        assert helpers.submitted >= 2 * (parts - 1)


def test_pieces_cover_every_item_once_in_near_equal_runs():
    helpers = CountingExecutor(1)
    for n, parts in [(10, 3), (2, 8), (1, 2), (0, 2), (129, 1)]:
        runs = pieces(n, Split(parts, helpers))
        assert [i for a, b in runs for i in range(a, b)] == list(range(n))
        assert len(runs) == max(1, min(parts, n))
        assert max(b - a for a, b in runs) - min(b - a for a, b in runs) <= 1
    assert pieces(5, None) == [(0, 5)]
    # The first call runs here, the others on the executor, results in order.
    assert Split(3, helpers).run(lambda a, b: a * b, [(1, 2), (3, 4), (5, 6)]) == [2, 12, 30]
    assert helpers.submitted == 2
    helpers.shutdown()


def test_select_segments_over_chunks_equals_one_shot():
    y = np.concatenate([sing(VOICES[1], 5.0), np.zeros(30000, np.float32), sing(VOICES[0], 6.0)])
    one = select_segments(y, CFG, chunk_frames=None)
    small = select_segments(y, CFG, chunk_frames=50)
    torch.testing.assert_close(small.features, one.features)
    np.testing.assert_array_equal(small.starts_s, one.starts_s)
    np.testing.assert_array_equal(small.voice, one.voice)
    assert (small.flags, small.voiced_fraction) == (one.flags, one.voiced_fraction)


def test_quality_flags_short_and_clipped():
    y = sing(VOICES[2], 4.0)
    assert select_segments(y, CFG).flags == ("short",)
    clipped = np.clip(4 * sing(VOICES[2], 8.0), -0.5, 0.5)
    assert select_segments(clipped, CFG).flags == ("clipped",)
    assert select_segments(sing(VOICES[2], 8.0), CFG).flags == ()
