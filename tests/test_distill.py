"""Distillation from the Resemblyzer teacher: parity with the package, crop targets, the
training term, channel augmentation, and the evaluation figures that come with it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.features import FeatureConfig
from model.manifest import ManifestRow
from model.network import EncoderDims
from model.speaker import SAMPLE_RATE, SpeakerEncoder, partial_starts
from model.training.augment import codec_round_trip, random_channel, telephone
from model.training.data import MixConfig, Recording, TrainingPool
from model.training.distill import attach_targets, batch_targets, crop_target
from model.training.train import TrainConfig, Trainer
from tests.support.synth import SR, VOICES, backing, sing, write


@pytest.fixture(scope="module")
def teacher() -> SpeakerEncoder:
    """Needs the `train` extra: the teacher's weights ship in the resemblyzer package."""
    pytest.importorskip("resemblyzer", reason="pip install '.[train]'")
    return SpeakerEncoder("cpu")


def test_teacher_matches_the_package(teacher):
    from resemblyzer import VoiceEncoder
    from resemblyzer.audio import normalize_volume

    from model.audio import resample

    y = resample(sing(VOICES[1], 5.0, seed=3), SR, SAMPLE_RATE)
    ref = VoiceEncoder("cpu", verbose=False).embed_utterance(
        normalize_volume(y, -30, increase_only=True)
    )
    ours = teacher.embed(y, SAMPLE_RATE)
    np.testing.assert_allclose(ours, ref, atol=1e-4)
    _, slices = VoiceEncoder.compute_partial_slices(len(y), 1.3, 0.75)
    assert list(partial_starts(len(y))) == [s.start for s in slices]
    crops = np.stack([sing(v, 3.0, seed=i) for i, v in enumerate(VOICES)])
    one_by_one = np.stack([teacher.embed(c, SR) for c in crops])
    np.testing.assert_allclose(teacher.embed_crops(crops, SR), one_by_one, atol=1e-5)


def test_front_end_resampler_agrees_with_soxr(teacher):
    """The torch resampler (on the encoder's device) against soxr_hq on the host: the same
    length, the same samples up to the filters' difference, and the same speaker vectors."""
    from model.audio import resample
    from model.speaker import fft_resample

    crops = np.stack([sing(v, 3.0, seed=i) for i, v in enumerate(VOICES)])
    ours = fft_resample(torch.from_numpy(crops), SR).numpy()
    ref = resample(crops, SR, SAMPLE_RATE)
    assert ours.shape == ref.shape
    # Away from the ends (each filter's edge), they differ only where their transition bands
    # do, just under 8 kHz: about 1 % of the signal's RMS for these bright synthetic voices.
    inner = slice(SAMPLE_RATE // 10, -SAMPLE_RATE // 10)
    error = np.sqrt(np.mean((ours - ref)[:, inner] ** 2, axis=1) / np.mean(ref**2, axis=1))
    assert error.max() < 0.03
    odd = fft_resample(torch.from_numpy(crops[:, :12345]), SR).shape[-1]
    assert odd == resample(crops[:, :12345], SR, SAMPLE_RATE).shape[-1]
    via_soxr = teacher.embed_crops(ref, SAMPLE_RATE)  # 16 kHz already: no resampling
    cosine = (teacher.embed_crops(crops, SR) * via_soxr).sum(axis=1)
    assert cosine.min() > 0.9999


def test_crop_target_averages_the_partials_inside_the_crop():
    emb = np.eye(4, 256, dtype=np.float32)
    rec = Recording(0, np.zeros(10 * SR, np.float32))
    rec.teacher, rec.teacher_starts = emb, np.arange(4) * SR  # partials of 1.6 s, 1 s apart
    target = crop_target(rec, 0, 3 * SR, 1.0, SR)  # partials at 0 s and 1 s fit inside
    np.testing.assert_allclose(target[:4], [2**-0.5, 2**-0.5, 0, 0], atol=1e-6)
    assert crop_target(rec, 0, 3 * SR, 1.12, SR) is None  # the teacher never heard that voice
    whole = crop_target(rec, int(2.2 * SR), SR, 1.0, SR)  # none inside: the utterance's mean
    np.testing.assert_allclose(whole[:4], [0.5] * 4, atol=1e-6)


def _tiny_pool(tmp_path, teacher) -> TrainingPool:
    rows = []
    for i, voice in enumerate(VOICES):
        for take in range(2):
            path = write(tmp_path / f"s{i}_{take}.wav", sing(voice, 4.0, seed=10 * i + take))
            rows.append(ManifestRow(singer=f"s{i}", path=str(path), domain="mono"))
    bg = write(tmp_path / "bg.wav", backing(8.0))
    mix = MixConfig(snr_db=(-5.0, 10.0), channel_augment=0.5)
    pool = TrainingPool(FeatureConfig(), (0.89, 1.0), mix).load(rows, [str(bg)])
    attach_targets(pool, teacher, tmp_path / "teacher")
    return pool


def test_distillation_pulls_both_branches_towards_the_teacher(tmp_path, teacher):
    pool = _tiny_pool(tmp_path, teacher)
    pool.sample_mixed(np.arange(pool.n_classes), np.random.default_rng(0))
    _, mask = batch_targets(pool)
    assert mask.tolist() == [c % 2 == 1 for c in range(pool.n_classes)]  # speed 1.0 only
    cfg = TrainConfig(
        batch_size=8,
        negatives="in-batch",
        pretrain_epochs=0,
        epochs=1,
        steps_per_epoch=1,
        speeds=(0.89, 1.0),
        distill_weight=1.0,
        dims=EncoderDims(channels=16, embed_dim=32),
        lr=3e-3,
    )
    torch.manual_seed(0)
    trainer = Trainer(cfg, pool, None, [], tmp_path / "run")
    trainer.set_normalization(32)

    def distill_only() -> float:
        """The distillation term alone on fixed mono and mixed batches."""
        trainer.net.eval()
        rng, labels = np.random.default_rng(7), np.arange(pool.n_classes)
        with torch.no_grad():
            for domain in ("mono", "mixed"):
                trainer._embed(pool, labels, domain, rng, augment=False)
            value = float(trainer._distill)
        trainer._distill = 0.0
        trainer.net.train()
        return value

    before = distill_only()
    rng = np.random.default_rng(1)
    for _ in range(15):
        loss = trainer.metric_loss(pool, rng)
        trainer.opt.zero_grad()
        loss.backward()
        trainer.opt.step()
    after = distill_only()
    assert after < 0.85 * before, (before, after)  # 2.10 -> 1.56 when written


def test_channel_augmentation_keeps_length_and_telephone_removes_the_low_band():
    y = sing(VOICES[0], 3.0, seed=1)
    out = random_channel(y, SR, np.random.default_rng(0))
    assert out.shape == y.shape and out.dtype == np.float32 and np.isfinite(out).all()
    band = telephone(y, SR)
    freqs = np.fft.rfftfreq(len(y), 1 / SR)
    low = freqs < 150
    power = np.abs(np.fft.rfft(y)) ** 2
    power_t = np.abs(np.fft.rfft(band)) ** 2
    assert power_t[low].sum() < 0.01 * power[low].sum()


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_codec_round_trip_is_aligned_lossy_and_same_length(seed):
    y = 0.5 * sing(VOICES[1], 3.0, seed=seed)
    y[:100] = 1.5  # over full scale: scaled into range for the encoder and back
    out = codec_round_trip(y, SR, np.random.default_rng(seed))
    assert out.shape == y.shape and out.dtype == np.float32 and np.isfinite(out).all()
    body = slice(2000, -2000)
    corr = np.corrcoef(y[body], out[body])[0, 1]
    err = np.sqrt(np.mean((y[body] - out[body]) ** 2)) / np.sqrt(np.mean(y[body] ** 2))
    assert corr > 0.9 and 0.005 < err < 0.5, (corr, err)  # aligned (no codec delay), lossy


def test_bootstrap_interval_and_eer():
    from model.evaluation.retrieval_metrics import bootstrap_ci
    from model.evaluation.verification import equal_error_rate

    hits = np.r_[np.ones(60), np.zeros(40)]
    lo, hi = bootstrap_ci(hits)
    assert lo < 0.6 < hi and 0.07 < hi - lo < 0.25  # about +-1.96 sqrt(.24 / 100)
    assert equal_error_rate(np.array([0.9, 0.8]), np.array([0.1, 0.2, 0.3])) == 0.0
    rng = np.random.default_rng(0)
    same = equal_error_rate(rng.normal(size=2000), rng.normal(size=2000))
    assert abs(same - 0.5) < 0.05


def test_acappella_takes_are_one_identity_each_and_20_percent_held_out(shared_dir):
    from model.training.datasets import acappella_rows, split_acappella

    rows = acappella_rows(shared_dir / "data" / "acappella")
    assert len({r.singer for r in rows}) == len(rows) == 282  # index.csv lists one file twice
    train, held = split_acappella(rows)
    assert len(held) == 57 and not {r.singer for r in train} & {r.singer for r in held}
    assert [r.singer for r in split_acappella(rows)[1]] == [r.singer for r in held]  # seeded
