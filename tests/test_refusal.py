"""The refusal rule (#33 item 3): a finished song is refused only when it is not music; a
vocal take keeps its refusal of non-singing; steady signals are refused either way.

Real decoding (16-bit WAV at 16, 22.05 and 44.1 kHz), the shipped voice detector, real
MIR-1K music from ../shared/data; the rule itself against hand-made detector verdicts.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.detector_frames import FrameVerdict
from model.embedding import Embedder
from model.errors import AudioError, NotMusicError, NoVoicedSegmentError
from model.evaluation.refusal_rates import music_corpus, steady_corpus
from model.features import FeatureConfig, log_mel, segment_starts
from model.refusal import (
    BLOCK,
    BLOCKS_PER_READING,
    STEADY_BAND_DB,
    STEADY_FLUX,
    STEADY_SHORT_DB,
    STEADY_SONG_DB,
    STEADY_TAKE_DB,
    STEADY_TONE_SHORT_DB,
    SignalStats,
    refusal,
    signal_stats,
)
from model.segment_selection import SegmentSelection, select_many
from model.track_embedding import TrackEmbedding
from model.voice import DetectorRule, VoiceDetector
from tests.support.synth import backing, write

CFG = FeatureConfig()
FRAME_S = CFG.hop_length / CFG.sample_rate
RULE = DetectorRule()
MUSIC = SignalStats(rms_db=-20.0, spread_db=5.0)  # loud enough, moving: the guard lets it be


def _refused(result: object) -> bool:
    return isinstance(result, AudioError)


@pytest.fixture(scope="module")
def detector() -> VoiceDetector:
    return VoiceDetector.load()


@pytest.fixture(scope="module")
def steady() -> list[tuple[str, np.ndarray]]:
    return list(steady_corpus(CFG.sample_rate))


def verdict(seconds: float, voice: float, music: float) -> FrameVerdict:
    """A recording of `seconds` whose first `voice` seconds are sung and first `music`
    seconds are music (voice or instruments); the rest is silence to the detector."""
    n = int(seconds / FRAME_S)
    t = np.arange(n) * FRAME_S
    return FrameVerdict(
        voice=np.where(t < voice, 0.9, 0.05),
        mixture=np.full(n, 0.5),
        music=np.where(t < music, 0.95, 0.02),
    )


def test_old_detector_files_get_the_music_rule():
    rule = DetectorRule.from_dict({"threshold": 0.5, "singing_threshold": 0.7})
    assert (rule.music_threshold, rule.min_music_s, rule.min_music_share) == (0.5, 1.0, 0.5)


@pytest.mark.parametrize("domain", ["mono", "auto", None])
def test_a_take_without_singing_is_refused_as_before(domain):
    got = refusal(domain, verdict(10.0, voice=0.5, music=10.0), MUSIC, RULE, CFG, True)
    assert type(got) is NoVoicedSegmentError and "0.5 s of the 10.0-s" in str(got)
    assert refusal(domain, verdict(10.0, voice=1.2, music=10.0), MUSIC, RULE, CFG, True) is None


def test_a_song_with_little_singing_is_music_and_kept():
    assert refusal("mixed", verdict(10.0, voice=0.0, music=10.0), MUSIC, RULE, CFG, False) is None


@pytest.mark.parametrize(
    ("music_s", "refused"),
    [(4.9, True), (5.1, False), (0.9, True)],  # 50 % of 10 s, and 1 s of a short one
)
def test_a_song_is_refused_when_the_detector_hears_too_little_music(music_s, refused):
    seconds = 10.0 if music_s > 1 else 1.5
    got = refusal("mixed", verdict(seconds, voice=0.0, music=music_s), MUSIC, RULE, CFG, False)
    assert (type(got) is NotMusicError) == refused
    if refused:
        assert "not music" in str(got) and "microphone" not in str(got)


@pytest.mark.parametrize(
    ("stats", "song", "take"),
    [
        (SignalStats(-70.0, 3.0), True, True),  # DC less its mean: silent
        (SignalStats(-10.0, STEADY_SONG_DB - 0.01), True, False),  # white-noise steady
        (SignalStats(-10.0, STEADY_TAKE_DB - 0.01), True, True),  # tone steady
        (SignalStats(-10.0, STEADY_SONG_DB + 0.01), False, False),
        # level over quarter seconds (a limiter's work) but moving within them: music (as a
        # take, steady: takes are judged by the quarter-second spread alone)
        (SignalStats(-10.0, STEADY_TAKE_DB - 0.1, STEADY_SHORT_DB + 0.1, 0.05), False, True),
        # level, and level within quarter seconds too: white noise, squares
        (SignalStats(-10.0, STEADY_TAKE_DB - 0.1, STEADY_SHORT_DB - 0.1, 0.05), True, True),
        # beating (a chord of sines) but one spectrum throughout
        (SignalStats(-10.0, STEADY_TAKE_DB - 0.1, 1.7, STEADY_FLUX / 2), True, True),
        # as level within quarter seconds as white noise, but its bands move: a brick-walled
        # master; its bands as steady as noise's: noise
        (SignalStats(-10.0, 0.3, STEADY_SHORT_DB - 0.1, 0.05, STEADY_BAND_DB + 0.1), False, True),
        (SignalStats(-10.0, 0.3, STEADY_SHORT_DB - 0.1, 0.05, STEADY_BAND_DB - 0.1), True, True),
        # level even over 23 ms (a tone, a square sweep): steady whatever its bands do
        (SignalStats(-10.0, 0.3, STEADY_TONE_SHORT_DB - 0.1, 0.05, 20.0), True, True),
    ],
)
def test_steady_or_silent_signals_are_refused_whatever_the_detector_hears(stats, song, take):
    heard = verdict(10.0, voice=10.0, music=10.0)  # the detector fooled: singing throughout
    assert (refusal("mixed", heard, stats, RULE, CFG, True) is not None) == song
    assert (refusal("mono", heard, stats, RULE, CFG, True) is not None) == take


def test_signal_stats_against_a_reference_and_batch_against_single():
    rng = np.random.default_rng(0)
    t = np.arange(5 * CFG.sample_rate) / CFG.sample_rate
    ys = [
        (0.5 * np.sin(2 * np.pi * 3 * t) * rng.standard_normal(len(t))).astype(np.float32),
        np.full(3 * CFG.sample_rate + 77, 0.25, np.float32),
        (0.1 * rng.standard_normal(4 * CFG.sample_rate)).astype(np.float32),
    ]
    mels = [log_mel(y, CFG) for y in ys]
    together = signal_stats([torch.from_numpy(y) for y in ys], mels, CFG.log_scale)
    for y, mel, got in zip(ys, mels, together, strict=True):
        assert signal_stats([torch.from_numpy(y)], [mel], CFG.log_scale) == [got]
        blocks = y[: len(y) - len(y) % BLOCK].astype(np.float64).reshape(-1, BLOCK)
        energy = (blocks**2).mean(1)
        readings = np.convolve(energy, np.ones(BLOCKS_PER_READING), "valid") / BLOCKS_PER_READING
        assert got.spread_db == pytest.approx(_spread(readings), abs=1e-3)
        assert got.short_spread_db == pytest.approx(_spread(energy), abs=1e-3)
        m = mel.numpy().astype(np.float64)
        assert got.flux == pytest.approx(np.abs(np.diff(m, axis=1)).mean(), abs=1e-5)
        assert got.band_spread_db == pytest.approx(_band_spread(m), abs=1e-3)
        assert got.rms_db == pytest.approx(
            10 * np.log10(np.var(y.astype(np.float64)) + 1e-20), abs=0.01
        )


def _spread(energy: np.ndarray) -> float:
    db = 10 * np.log10(energy + 1e-20)
    kept = db[db >= db.max() - 40.0]
    return float(np.quantile(kept, 0.9) - np.quantile(kept, 0.1))


def _band_spread(mel: np.ndarray) -> float:
    """Each mel band's magnitude (the features' log undone) read over successive quarter
    seconds, the range of each band's readings in dB, the median (lower middle) over the
    bands within 80 dB of the loudest band."""
    magnitude = np.maximum(10.0**mel - 1.0, 0.0) / CFG.log_scale
    k = min(BLOCKS_PER_READING, magnitude.shape[1])
    n = magnitude.shape[1] // k * k
    readings = magnitude[:, :n].reshape(len(magnitude), -1, k).mean(axis=2)
    level = 20 * np.log10(magnitude.mean(1) + 1e-20)
    db = 20 * np.log10(readings[level >= level.max() - 80.0] + 1e-20)
    spreads = np.sort(np.quantile(db, 0.9, axis=1) - np.quantile(db, 0.1, axis=1))
    return float(spreads[(len(spreads) - 1) // 2])


def test_a_melody_as_level_as_noise_is_music_and_the_noise_is_not(detector):
    """A brick-walled master can be as level as white noise even over 23 ms (both between
    the tone bar and STEADY_SHORT_DB here). Its notes still move the level of each mel band
    from one quarter second to the next; noise's bands stay level. So the melody is music
    and the noise is refused, whatever the detector hears; and through the selection with
    the shipped detector, the melody is embedded and the noise refused as steady."""
    sr = CFG.sample_rate
    t = np.arange(8 * sr) / sr
    rng = np.random.default_rng(3)
    notes = 220.0 * 2 ** (rng.choice([0, 2, 4, 5, 7, 9, 11, 12], size=32) / 12)
    phase = 2 * np.pi * np.cumsum(notes[np.minimum((t * 4).astype(int), 31)]) / sr
    tremolo = 1 + 0.03 * np.sin(2 * np.pi * 6 * t)  # a new note every 1/4 s, one loudness
    melody = sum(np.sin(k * phase) / k for k in range(1, 6)) * tremolo
    noise = rng.standard_normal(len(t)) * tremolo
    heard = verdict(8.0, voice=8.0, music=8.0)
    ys = [(0.5 * y / np.abs(y).max()).astype(np.float32) for y in (melody, noise)]
    for y, steady in zip(ys, (False, True), strict=True):
        stats = signal_stats([torch.from_numpy(y)], [log_mel(y, CFG)], CFG.log_scale)[0]
        assert stats.spread_db < STEADY_SONG_DB, stats
        assert STEADY_TONE_SHORT_DB < stats.short_spread_db < STEADY_SHORT_DB, stats
        assert (refusal("mixed", heard, stats, RULE, CFG, True) is not None) == steady, stats
    kept, refused = select_many(ys, CFG, detector=detector, domains=["mixed", "mixed"])
    assert isinstance(kept, SegmentSelection) and len(kept.features) > 0
    assert isinstance(refused, NotMusicError) and "steady tone or noise" in str(refused)


def test_a_song_mastered_level_is_not_a_steady_signal():
    """A band levelled as a mastering limiter levels a record (its quarter-second loudness
    spread under both bars) is not a steady song: its beats still move the 23-ms reads and
    the spectrum. A chord of sines levelled the same way stays steady. As vocal takes, both
    are steady (a take is judged by the quarter-second spread alone)."""
    rng = np.random.default_rng(3)
    t = np.arange(8 * CFG.sample_rate) / CFG.sample_rate
    band = 0.3 * np.sin(2 * np.pi * 55.0 * t) + 0.2 * np.sin(2 * np.pi * 220 * t * (1 + (t % 1)))
    for start in range(0, len(t), CFG.sample_rate // 8):  # a hi-hat every 1/8 s
        k = min(1500, len(t) - start)
        band[start : start + k] += rng.standard_normal(k) * np.exp(-np.arange(k) / 200)
    chord = sum(np.sin(2 * np.pi * f * t) for f in (220.0, 277.2, 329.6)) / 3
    heard = verdict(8.0, voice=8.0, music=8.0)  # the detector hears music and singing
    for y, steady in ((band, False), (chord, True)):
        y = _levelled(y).astype(np.float32)
        stats = signal_stats([torch.from_numpy(y)], [log_mel(y, CFG)], CFG.log_scale)[0]
        assert stats.spread_db < STEADY_TAKE_DB, stats  # level over quarter seconds
        assert (refusal("mixed", heard, stats, RULE, CFG, True) is not None) == steady, stats
        assert refusal("mono", heard, stats, RULE, CFG, True) is not None


def _levelled(y: np.ndarray) -> np.ndarray:
    """`y` scaled to one loudness over every reading of `BLOCKS_PER_READING` blocks (a
    slow limiter), peak 0.5."""
    n = len(y) - len(y) % BLOCK
    energy = (y[:n].reshape(-1, BLOCK) ** 2).mean(1)
    smooth = np.convolve(energy, np.ones(BLOCKS_PER_READING) / BLOCKS_PER_READING, "same")
    out = y[:n] / np.sqrt(np.interp(np.arange(n) / BLOCK - 0.5, np.arange(len(smooth)), smooth))
    return 0.5 * out / np.abs(out).max()


@pytest.mark.parametrize("domain", ["mixed", "mono"])
def test_steady_signals_at_every_rate_are_refused(detector, steady, domain):
    """Silence, DC, sines, squares, sawtooth, chords, sweeps, white noise, each from 16, 22.05
    and 44.1 kHz WAV files: the shipped detector hears some of these as music or singing."""
    got = select_many(
        [y for _, y in steady], CFG, detector=detector, domains=[domain] * len(steady)
    )
    kept = [name for (name, _), g in zip(steady, got, strict=True) if not _refused(g)]
    assert kept == []
    wanted = NotMusicError if domain == "mixed" else NoVoicedSegmentError
    assert all(isinstance(g, wanted) for g in got)
    assert len(steady) == 3 * (4 + 4 + 7)  # every kind and pitch at every rate was tried


@pytest.mark.slow
def test_music_is_never_refused_as_a_song_and_weak_singing_is_flagged(detector, shared_dir):
    """MIR-1K 0 dB karaoke mixes, its accompaniments alone and crops of instrumental
    tracks, as finished songs: every one embedded. Every backing track that a vocal take's
    rule refuses (under 1 s of singing) is kept as a song, flagged `low_voice`."""
    corpus = list(music_corpus(CFG.sample_rate, limit=30, shared=shared_dir))
    ys = [y for *_, y in corpus]
    as_song = select_many(ys, CFG, detector=detector, domains=["mixed"] * len(ys))
    as_take = select_many(ys, CFG, detector=detector, domains=["mono"] * len(ys))
    refused = [(n, str(s)) for (_, n, _), s in zip(corpus, as_song, strict=True) if _refused(s)]
    assert refused == []
    no_singing = [
        song
        for (group, *_), song, take in zip(corpus, as_song, as_take, strict=True)
        if group == "accompaniment" and _refused(take)
    ]
    assert len(no_singing) >= 10  # most backing tracks hold no singing
    assert all("low_voice" in s.flags and 0 <= s.voiced_fraction < 1 for s in no_singing)


def test_a_song_without_singing_is_embedded_through_the_primitive(random_checkpoint):
    """`embed_batch`: a band with no voice (generated backing) declared `mixed` is a track
    flagged `low_voice` with the voiced share heard (none: every segment is embedded);
    declared `mono`, the vocal take's refusal; a steady tone beside it, refused as not
    music. One batch, each recording's own answer."""
    emb = Embedder.from_checkpoint(random_checkpoint, device="cpu")
    band = backing(8.0, seed=1).astype(np.float32)
    tone = (0.5 * np.sign(np.sin(2 * np.pi * 220 * np.arange(8 * 22050) / 22050))).astype(
        np.float32
    )
    song, take, beep = emb.embed_batch([band, band, tone], ["mixed", "mono", "mixed"])
    assert isinstance(song, TrackEmbedding) and song.domain == "mixed"
    assert "low_voice" in song.flags and song.voiced_fraction == 0.0
    assert song.n_segments == len(segment_starts(1 + len(band) // CFG.hop_length, CFG))
    assert isinstance(take, NoVoicedSegmentError) and not isinstance(take, NotMusicError)
    assert isinstance(beep, NotMusicError)


def test_the_indexer_keeps_a_song_without_singing_and_says_so(random_checkpoint, tmp_path):
    """A finished song with no voice is indexed, and the run's report lists it as
    `low_voice` with its voiced share; a steady tone beside it is refused as not music."""
    from catalog import Catalog
    from indexer.run import index_source

    emb = Embedder.from_checkpoint(random_checkpoint, device="cpu")
    band = write(tmp_path / "songs" / "a band" / "instrumental.wav", backing(8.0, seed=2))
    t = np.arange(8 * CFG.sample_rate) / CFG.sample_rate
    write(tmp_path / "songs" / "a band" / "tone.wav", 0.5 * np.sin(2 * np.pi * 440 * t))
    with Catalog.open(tmp_path / "index", dim=emb.embed_dim) as catalog:
        report = index_source(catalog, emb, tmp_path / "songs", domain="mixed")
        assert [t.path for t in catalog.iter_tracks()] == [str(band)]
    assert report.low_voice == [(str(band), 0.0)]
    assert [f.path.endswith("tone.wav") and "not music" in f.reason for f in report.failures] == [
        True
    ]
    assert "1 indexed files hold little singing" in report.summary()
