"""The mixed branch's front end: a mix's repeating accompaniment taken out (REPET-SIM).

Against reference computations: the repeating spectrum against a brute-force loop over
frames, the soft mask against librosa's, the selection's features against the log-mel of
the filtered waveform; and on a band that loops under a voice that does not, the voice is
kept and the band lowered.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from model.checkpoint import load_checkpoint, make_random_checkpoint
from model.errors import CheckpointError
from model.features import FeatureConfig, log_mel
from model.repeating_background import (
    neighbour_count,
    remove_repeating_background,
    repeating_spectrum,
    soft_mask,
)
from model.segment_selection import select_many
from model.voice import VoiceDetector
from tests.support.synth import VOICES, backing, chord_progression, sing

CFG = FeatureConfig(mix_background_margin=4.0)
SR = CFG.sample_rate


def test_repeating_spectrum_is_the_mean_log_spectrum_of_the_nearest_frames_outside_the_width():
    rng = np.random.default_rng(0)
    loop = rng.random((40, 25))
    mag = np.tile(loop, (1, 6))[:, :140] * (1 + 0.2 * rng.random((40, 140))) + 0.1 * rng.random(
        (40, 140)
    )
    width = 7
    got = repeating_spectrum(torch.from_numpy(mag.astype(np.float32)), width).numpy()
    unit = mag / np.linalg.norm(mag, axis=0)
    sim = unit.T @ unit
    k = neighbour_count(140, width)
    want = np.empty_like(mag)
    for i in range(140):
        outside = [j for j in np.argsort(-sim[i], kind="stable") if abs(j - i) >= width]
        want[:, i] = np.exp(np.log(mag[:, outside[:k]] + 1e-8).mean(axis=1)) - 1e-8
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=1e-6)
    with pytest.raises(ValueError):
        repeating_spectrum(torch.from_numpy(mag[:, :15].astype(np.float32)), width)


def test_the_soft_mask_is_librosas():
    import librosa

    rng = np.random.default_rng(1)
    x = rng.random((30, 50)).astype(np.float32) * (rng.random((30, 50)) > 0.2)
    ref = rng.random((30, 50)).astype(np.float32) * (rng.random((30, 50)) > 0.2)
    got = soft_mask(torch.from_numpy(x), torch.from_numpy(4 * ref)).numpy()
    np.testing.assert_allclose(got, librosa.util.softmask(x, 4 * ref, power=2), atol=1e-6)


def _gliding_voice(seconds: float) -> np.ndarray:
    """A voice that never repeats itself within `seconds`: its pitch glides on two slow
    sines of incommensurate rates (with vibrato), its formant wanders on a third."""
    t = np.arange(int(seconds * SR)) / SR
    semitones = (
        3 * np.sin(2 * np.pi * 0.13 * t)
        + 2 * np.sin(2 * np.pi * 0.31 * t + 1)
        + 0.3 * np.sin(2 * np.pi * 5.5 * t)
    )
    f0 = 247 * 2 ** (semitones / 12)
    phase = 2 * np.pi * np.cumsum(f0) / SR
    formant = 900 + 300 * np.sin(2 * np.pi * 0.23 * t)
    y = sum(
        np.sin(h * phase) / h * (1 + 2 * np.exp(-(((h * f0 - formant) / 250) ** 2)))
        for h in range(1, 30)
    )
    return (0.5 * y / np.abs(y).max()).astype(np.float32)


def _band_and_voice(seconds: float = 16.0) -> tuple[np.ndarray, np.ndarray]:
    """A 2-s band loop (chords and clicks) repeated, and a voice that does not repeat, 5 dB
    under the band (RMS), as on a record."""
    loop = chord_progression([[48, 52, 55], [45, 48, 52], [41, 45, 48], [43, 47, 50]], 0.5)
    loop = loop + 0.5 * backing(2.0, seed=3)
    band = np.tile(loop, int(np.ceil(seconds / 2.0)))[: int(seconds * SR)]
    voice = _gliding_voice(seconds)
    voice = voice * (np.sqrt(np.mean(band**2) / np.mean(voice**2)) * 10 ** (-5 / 20))
    return band.astype(np.float32), voice.astype(np.float32)


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def test_a_looping_band_is_taken_out_and_the_voice_kept():
    """The mix resembles its band (cosine 0.87) more than its voice (0.49); what the front
    end leaves resembles the voice (0.57) and hardly the band (0.05). The band alone is
    taken out, silence stays silence."""
    band, voice = _band_and_voice()
    mix = band + voice
    out = remove_repeating_background(mix, CFG).numpy()
    assert out.shape == mix.shape
    assert _cos(mix, band) > _cos(mix, voice)
    assert _cos(out, voice) > _cos(mix, voice) and _cos(out, voice) > 5 * abs(_cos(out, band))
    assert np.sum(remove_repeating_background(band, CFG).numpy() ** 2) < 0.05 * np.sum(band**2)
    assert not np.any(remove_repeating_background(np.zeros(SR * 5, np.float32), CFG).numpy())


def test_blocks_are_filtered_on_their_own_and_too_short_ones_kept_whole():
    """A block's output does not depend on the audio of the next block (its frames are
    searched among its own), and a recording too short for the width comes back unchanged."""
    band, voice = _band_and_voice(24.0)
    mix = band + voice
    blocks = replace(CFG, mix_background_block_s=12.0)
    frames = round(12.0 * SR / CFG.hop_length)  # the first block's frames
    changed = mix.copy()
    # past the samples any frame of the first block reads (centred frames: n_fft / 2 on)
    cut = (frames - 1) * CFG.hop_length + CFG.n_fft // 2
    changed[cut:] = np.random.default_rng(0).normal(0, 0.1, len(mix) - cut)
    a = remove_repeating_background(mix, blocks)
    b = remove_repeating_background(changed, blocks)
    # output samples that only frames of the first block overlap
    last = (frames - 1) * CFG.hop_length - CFG.n_fft // 2
    torch.testing.assert_close(a[:last], b[:last], atol=1e-6, rtol=0)
    assert not torch.allclose(a[last + CFG.n_fft :], b[last + CFG.n_fft :], atol=1e-3)
    wide = replace(CFG, mix_background_width_s=30.0)  # no repeat fits: the mix unchanged
    np.testing.assert_allclose(remove_repeating_background(mix, wide), mix, atol=1e-4)


def _whole_recording_reference(y: np.ndarray, cfg: FeatureConfig) -> torch.Tensor:
    """The separation of the module docstring done at once: the STFT of the whole recording,
    each block's mask, `torch.istft` of the masked whole."""
    window = torch.hann_window(cfg.n_fft)
    spec = torch.stft(
        torch.from_numpy(y),
        cfg.n_fft,
        cfg.hop_length,
        window=window,
        center=True,
        pad_mode=cfg.pad_mode,
        return_complex=True,
    )
    mag, t = spec.abs(), spec.shape[1]
    frame_s = cfg.hop_length / SR
    width = max(1, round(cfg.mix_background_width_s / frame_s))
    block = max(1, round(cfg.mix_background_block_s / frame_s))
    edges = list(range(0, t, block))
    if len(edges) > 1 and t - edges[-1] < block // 2:
        edges.pop()
    mask = torch.ones_like(mag)
    for a, b in zip(edges, [*edges[1:], t], strict=True):
        if width < (b - a - 1) // 2:
            part = mag[:, a:b]
            bg = torch.minimum(part, repeating_spectrum(part, width))
            mask[:, a:b] = soft_mask(part - bg, cfg.mix_background_margin * bg)
    return torch.istft(
        spec * mask, cfg.n_fft, cfg.hop_length, window=window, center=True, length=len(y)
    )


@pytest.mark.parametrize(
    ("seconds", "pad_mode", "block_s", "hop"),
    [
        (24.0, "constant", 12.0, 512),
        (23.3, "reflect", 5.0, 512),
        (6.1, "constant", 20.0, 512),
        (0.3, "reflect", 20.0, 512),
        (14.2, "constant", 5.0, 384),  # a hop that does not divide the window
    ],
)
def test_block_by_block_is_the_whole_recordings_inverse_stft(seconds, pad_mode, block_s, hop):
    """Blocks are transformed, masked and overlap-added one at a time (bounded memory): the
    same samples as the inverse STFT of the whole masked spectrogram, across block edges,
    at both ends (either padding), for lengths that are no multiple of the hop."""
    band, voice = _band_and_voice(24.0)
    mix = (band + voice)[: int(seconds * SR) + 77]
    cfg = replace(CFG, pad_mode=pad_mode, mix_background_block_s=block_s, hop_length=hop)
    got = remove_repeating_background(mix, cfg)
    want = _whole_recording_reference(mix, cfg)
    assert got.shape == want.shape == mix.shape
    torch.testing.assert_close(got, want, atol=2e-5, rtol=0)
    if seconds > 5:  # the mask did change the mix
        assert not torch.allclose(got, torch.from_numpy(mix), atol=1e-2)


@pytest.fixture(scope="module")
def detector() -> VoiceDetector:
    return VoiceDetector.load()


def test_the_mixed_branch_also_reads_the_same_segments_without_their_repeating_band(detector):
    """Chosen, refused and flagged on the mix itself (the same selection as without the
    front end); a song's selection carries the same segments from the filtered waveform
    (`without_band`), a vocal take's none, and `auto` follows its branch."""
    band, voice = _band_and_voice()
    take = sing(VOICES[2], 9.0, seed=6)
    waves = [band + voice, take, band + voice, take]
    domains = ["mixed", "mono", "auto", "auto"]
    plain = select_many(
        waves, replace(CFG, mix_background_margin=0.0), detector=detector, domains=domains
    )
    front = select_many(waves, CFG, detector=detector, domains=domains)
    for p, f, y, d in zip(plain, front, waves, domains, strict=True):
        assert torch.equal(f.features, p.features)
        np.testing.assert_array_equal(f.starts_s, p.starts_s)
        assert (f.flags, f.voiced_fraction, f.domain_score) == (
            p.flags,
            p.voiced_fraction,
            p.domain_score,
        )
        if not (d == "mixed" or "mostly_accompaniment" in p.flags):
            assert f.without_band is None
            continue
        assert f.without_band is not None and f.without_band.without_band is None
        mel = log_mel(remove_repeating_background(y, CFG), CFG)
        starts = np.rint(p.starts_s * SR / CFG.hop_length).astype(int)
        want = torch.stack([mel[:, s : s + CFG.segment_frames] for s in starts])
        torch.testing.assert_close(f.without_band.features, want, atol=1e-5, rtol=1e-5)
        np.testing.assert_array_equal(f.without_band.starts_s, p.starts_s)
    assert front[0].without_band is not None


def test_a_songs_segment_vectors_are_its_two_views_summed(tmp_path, detector):
    """Blend: each segment of a song is embedded from the mix and from the mix without its
    band, and its vector is the normalised sum of the two; a vocal take is embedded once."""
    from model.embedding import Embedder
    from model.vectors import l2_normalize, normalized_mean

    path = make_random_checkpoint(tmp_path / "cross.pt")
    payload = torch.load(path, weights_only=True)
    payload["features"] = replace(
        FeatureConfig.from_dict(payload["features"]), mix_background_margin=4.0
    ).to_dict()
    torch.save(payload, tmp_path / "front.pt")
    emb = Embedder.from_checkpoint(tmp_path / "front.pt", "cpu")
    band, voice = _band_and_voice()
    song = emb.select(band + voice, domain="mixed")
    assert song.without_band is not None
    both = l2_normalize(emb.encode([song], "mixed") + emb.encode([song.without_band], "mixed"))
    got = emb.embed_audio(band + voice, "mixed")
    np.testing.assert_allclose(got.vector, normalized_mean(both), atol=1e-5)
    take = sing(VOICES[2], 9.0, seed=6)
    alone = emb.encode([emb.select(take, domain="mono")], "mono")
    np.testing.assert_allclose(
        emb.embed_audio(take, "mono").vector, normalized_mean(alone), atol=1e-5
    )


def test_fuse_sets_the_front_end_and_keeps_the_rest(tmp_path):
    from model.fusion import fuse_checkpoint

    cross = make_random_checkpoint(tmp_path / "cross.pt")
    fused = fuse_checkpoint(cross, tmp_path / "fused.pt", 0.5)
    on = fuse_checkpoint(fused, tmp_path / "on.pt", 0.5, mix_background_margin=3.0)
    _, f_fused, m_fused = load_checkpoint(fused)
    _, f_on, m_on = load_checkpoint(on)
    assert f_fused.mix_background_margin == 0.0 and f_on.mix_background_margin == 3.0
    assert replace(f_on, mix_background_margin=0.0) == f_fused and m_on == m_fused
    _, f_kept, _ = load_checkpoint(fuse_checkpoint(on, tmp_path / "kept.pt", 0.5))
    assert f_kept.mix_background_margin == 3.0  # None keeps the checkpoint's own
    with pytest.raises(CheckpointError):
        fuse_checkpoint(fused, tmp_path / "bad.pt", 0.5, mix_background_margin=-1.0)
    # a recipe stored before the front end reads as without it
    old = {k: v for k, v in f_on.to_dict().items() if not k.startswith("mix_background")}
    assert FeatureConfig.from_dict(old).mix_background_margin == 0.0
