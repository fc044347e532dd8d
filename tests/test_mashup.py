"""Mashup generation (model/training/mashup.py) on synthetic singing and click-track backgrounds.

Vocals: harmonic tones with vibrato and a formant, one note every 0.5 s (120 bpm), melodies in
a known key. Backgrounds: a click every 0.5 s over a sustained C major chord (key C major,
tempo 120 bpm). Every check compares against a computation from the known signals.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from model.audio import rms
from model.energy_vad import voiced_segment_starts
from model.features import FeatureConfig
from model.manifest import ManifestRow, read_manifest, write_manifest
from model.mixing import mix_segment
from model.segment_selection import extract_segments
from model.training.mashup import MashupConfig, make_mashups, nearest_beat_offset
from tests.support.synth import SR, harmonic_tone, midi_hz

pytestmark = pytest.mark.slow

BEAT_S = 0.5  # 120 bpm
VOCAL_OFFSET_S = 0.23  # first note onset of every vocal
CLICK_OFFSET_S = 0.11  # first click of every background


def melody(notes: list[int], formant_hz: float, seconds: float = 7.5) -> np.ndarray:
    """Notes (MIDI, cycled) one per beat from VOCAL_OFFSET_S on; silence before."""
    y = np.zeros(int(seconds * SR), dtype=np.float32)
    n_notes = int((seconds - VOCAL_OFFSET_S) / BEAT_S)
    for i in range(n_notes):
        a = int((VOCAL_OFFSET_S + i * BEAT_S) * SR)
        tone = harmonic_tone(
            midi_hz(notes[i % len(notes)]), BEAT_S, vibrato_cents=25, formant_hz=formant_hz
        )
        y[a : a + len(tone)] += tone
    return y


def click_background(seconds: float, chord: list[int], seed: int) -> np.ndarray:
    """A click each beat from CLICK_OFFSET_S on, over a sustained chord and a little noise."""
    n = int(seconds * SR)
    y = sum(harmonic_tone(midi_hz(m), seconds) for m in chord) / len(chord)
    y = y + 0.005 * np.random.default_rng(seed).standard_normal(n)
    click = np.exp(-np.arange(256) / 30.0) * np.sin(2 * np.pi * 2000 * np.arange(256) / SR)
    for t in np.arange(CLICK_OFFSET_S, seconds - 0.1, BEAT_S):
        a = int(t * SR)
        y[a : a + 256] += 0.8 * click
    return y.astype(np.float32)


C_MAJOR_MELODY = [60, 64, 67, 72, 67, 64, 60, 62, 64, 65, 67, 60]


def _write(path, y):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), y, SR, subtype="FLOAT")
    return str(path)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Vocals (2 C-major singers, 1 F#-major singer, 1 silent), 2 C-major backgrounds."""
    root = tmp_path_factory.mktemp("mashup")
    vocals = {
        "alice": melody(C_MAJOR_MELODY, 800.0),
        "bob": melody([n - 12 for n in C_MAJOR_MELODY], 500.0),
        "carol": melody([n + 6 for n in C_MAJOR_MELODY], 1100.0),  # F# major: no background
        "dave": np.zeros(4 * SR, dtype=np.float32),  # silence: no voiced segment
    }
    rows = [
        ManifestRow(
            singer=s,
            path=_write(root / "vocals" / s / f"{s}_song.wav", y),
            domain="mono",
            song=f"{s}_song",
        )
        for s, y in vocals.items()
    ]
    write_manifest(root / "vocals.csv", rows)
    for i, chord in enumerate([[48, 60, 64, 67], [36, 55, 60, 64]]):
        _write(root / "bg" / f"bg{i}.wav", click_background(20.0, chord, seed=i))
    return root, vocals


@pytest.fixture(scope="module")
def mashed(corpus):
    root, _ = corpus
    cfg = MashupConfig(snr_db=(-6.0, 6.0), mixes_per_segment=2)
    res = make_mashups(
        root / "vocals.csv",
        root / "bg",
        root / "out",
        cfg,
        seed=7,
        workers=2,
        progress=False,
        cache_dir=root / "cache",
    )
    return res, cfg


def test_mixes_only_voiced_segments_in_matching_keys_and_reports_the_rest(corpus, mashed):
    root, vocals = corpus
    res, cfg = mashed
    f = cfg.features
    singers = {r.singer for r in res.rows}
    assert singers == {"alice", "bob"}
    for singer in ("alice", "bob"):
        voiced = voiced_segment_starts(vocals[singer], f)
        # The voice-activity rule is extract_segments' own: same number of segments kept.
        assert len(voiced) == len(extract_segments(vocals[singer], f)) >= 2
        mixes = [r for r in res.rows if r.singer == singer]
        starts = sorted({int(r.extra["vocal_start"]) for r in mixes})
        assert starts == [int(s) * f.hop_length for s in voiced]
        assert len(mixes) == 2 * len(voiced)  # two different backgrounds per segment
        assert all(r.extra["vocal_key"] == r.extra["background_key"] == "C major" for r in mixes)
    carol = str(root / "vocals" / "carol" / "carol_song.wav")
    assert res.unmatched_vocals == [carol]
    assert {u.source for u in res.unmatched} == {carol}
    assert all(u.key == "F# major" for u in res.unmatched)
    assert [p for p, _ in res.unvoiced] == [str(root / "vocals" / "dave" / "dave_song.wav")]
    report = json.loads(res.report.read_text())
    assert report["unmatched_vocals"] == [carol]
    assert report["n_mixes"] == len(res.rows) and report["failed"] == []
    assert report["n_mashed_segments"] == res.n_voiced_segments - len(res.unmatched)


def test_manifest_links_each_mix_to_its_source_and_the_audio_is_that_mix(corpus, mashed):
    root, vocals = corpus
    res, cfg = mashed
    rows = read_manifest(res.manifest)
    assert [r.path for r in rows] == [r.path for r in res.rows]
    L = cfg.clip_samples
    for r in rows:
        assert r.domain == "mixed"
        assert r.source == str(root / "vocals" / r.singer / f"{r.singer}_song.wav")
        assert r.song == f"{r.singer}_song"
        mix, sr = sf.read(r.path, dtype="float32")
        assert sr == SR and len(mix) == L
        # Reference: the mix rebuilt from the two sources with the recorded starts and gains.
        v0 = int(r.extra["vocal_start"])
        b0 = int(r.extra["background_start"])
        bg, _ = sf.read(r.extra["background"], dtype="float32")
        expected = (
            float(r.extra["vocal_gain"]) * vocals[r.singer][v0 : v0 + L]
            + float(r.extra["background_gain"]) * bg[b0 : b0 + L]
        )
        np.testing.assert_allclose(mix, expected, atol=2e-4)  # 16-bit FLAC + 5-digit gains


def test_vocal_onsets_land_on_the_background_beats(mashed):
    res, cfg = mashed
    L = cfg.clip_samples
    for r in res.rows:
        v0 = int(r.extra["vocal_start"]) / SR
        b0 = int(r.extra["background_start"]) / SR
        onsets = VOCAL_OFFSET_S + BEAT_S * np.arange(40) - v0  # note onsets, in mix time
        clicks = CLICK_OFFSET_S + BEAT_S * np.arange(60) - b0  # beats, in mix time
        onsets = onsets[(onsets >= 0) & (onsets < L / SR)]
        assert len(onsets) >= 5
        miss = np.min(np.abs(onsets[:, None] - clicks[None, :]), axis=1)
        assert miss.max() < 0.012, (r.path, miss)  # within half an STFT hop


def test_recorded_ratio_is_drawn_from_the_range(mashed):
    res, _ = mashed
    snrs = np.array([float(r.extra["snr_db"]) for r in res.rows])
    assert snrs.min() >= -6.0 and snrs.max() <= 6.0 and np.ptp(snrs) > 1.0


@pytest.mark.parametrize("snr_db", [-7.5, 0.0, 4.0])
def test_rms_balancing_reaches_the_requested_ratio(snr_db):
    rng = np.random.default_rng(1)
    t = np.arange(SR * 3) / SR
    vocal = (0.05 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    background = (0.3 * rng.standard_normal(len(t))).astype(np.float32)
    mix, vg, bg = mix_segment(vocal, background, snr_db, peak=0.99)
    achieved = 20 * np.log10(rms(vg * vocal) / rms(bg * background))
    assert abs(achieved - snr_db) < 0.1
    np.testing.assert_allclose(mix, vg * vocal + bg * background, atol=1e-6)
    assert np.max(np.abs(mix)) <= 0.99 + 1e-6


def test_loud_mix_is_scaled_down_without_changing_the_ratio():
    t = np.arange(SR) / SR
    vocal = (0.9 * np.sin(2 * np.pi * 300 * t)).astype(np.float32)
    background = (0.9 * np.sign(np.sin(2 * np.pi * 70 * t))).astype(np.float32)
    mix, vg, bg = mix_segment(vocal, background, 0.0, peak=0.99)
    assert vg < 1.0 and abs(np.max(np.abs(mix)) - 0.99) < 1e-6
    assert abs(20 * np.log10(rms(vg * vocal) / rms(bg * background))) < 0.1


def test_nearest_beat_offset():
    beats = np.array([100, 600, 1100])
    assert nearest_beat_offset(0, beats) == 100
    assert nearest_beat_offset(700, beats) == -100
    assert nearest_beat_offset(900, beats) == 200
    assert nearest_beat_offset(900, np.array([], dtype=np.int64)) == 0


def _mix_bytes(res):
    return [
        (r.singer, r.extra["background"], r.extra["snr_db"], open(r.path, "rb").read())
        for r in res.rows
    ]


def test_same_seed_same_bytes_whatever_the_workers_other_seed_differs(corpus, mashed):
    root, _ = corpus
    res, cfg = mashed
    again = make_mashups(
        root / "vocals.csv",
        root / "bg",
        root / "out_again",
        cfg,
        seed=7,
        workers=1,
        progress=False,
        cache_dir=root / "cache",
    )  # `mashed`: 2
    assert _mix_bytes(again) == _mix_bytes(res)
    other = make_mashups(
        root / "vocals.csv",
        root / "bg",
        root / "out_other",
        cfg,
        seed=8,
        workers=1,
        progress=False,
        cache_dir=root / "cache",
    )
    assert len(other.rows) == len(res.rows)
    assert _mix_bytes(other) != _mix_bytes(res)


def test_extensions_relative_key_and_background_pitch_shift(corpus):
    root, _ = corpus
    rows = [
        ManifestRow(
            singer="erin",
            domain="mono",
            path=_write(
                root / "ext" / "erin.wav",
                melody([57, 60, 64, 69, 64, 60, 57, 59, 60, 62, 64, 57], 900.0),
            ),
        ),  # A minor: relative of C major
        ManifestRow(
            singer="fred",
            domain="mono",
            path=_write(root / "ext" / "fred.wav", melody([n + 2 for n in C_MAJOR_MELODY], 700.0)),
        ),  # D major
    ]
    plain = make_mashups(
        rows,
        root / "bg",
        root / "ext_plain",
        MashupConfig(),
        workers=1,
        progress=False,
        cache_dir=root / "cache",
    )
    assert plain.rows == [] and len(plain.unmatched_vocals) == 2
    cfg = MashupConfig(relative_keys=True, pitch_shifts=(-2, 2))
    ext = make_mashups(
        rows, root / "bg", root / "ext_on", cfg, workers=1, progress=False, cache_dir=root / "cache"
    )
    tiers = {
        s: {
            (r.extra["match"], r.extra["pitch_shift"], r.extra["background_key"])
            for r in ext.rows
            if r.singer == s
        }
        for s in ("erin", "fred")
    }
    assert tiers == {"erin": {("relative", "0", "C major")}, "fred": {("shift", "2", "D major")}}
    # The shifted background really is two semitones up: its chord's chroma moved by 2.
    from model.training.keys import chromagram, find_key

    fred = next(r for r in ext.rows if r.singer == "fred")
    mix, _ = sf.read(fred.path, dtype="float32")
    assert find_key(chromagram(mix, SR)).name == "D major"


def test_default_config_segment_is_one_model_segment():
    cfg = MashupConfig()
    f = FeatureConfig()
    assert cfg.clip_samples == f.min_samples
    # A mix of that length gives exactly one segment of the model's input size.
    assert extract_segments(np.ones(cfg.clip_samples, dtype=np.float32), f).shape == (
        1,
        f.n_mels,
        f.segment_frames,
    )


def test_cli_reports_an_undecodable_vocal_and_exits_nonzero(corpus, capsys):
    from model.__main__ import main

    root, _ = corpus
    bad = root / "cli" / "broken.wav"
    bad.parent.mkdir(parents=True, exist_ok=True)
    bad.write_bytes(b"RIFF....not audio at all")
    rows = [*read_manifest(root / "vocals.csv")[:1], ManifestRow(singer="zoe", path=str(bad))]
    write_manifest(root / "cli" / "vocals.csv", rows)
    args = [
        "mashup",
        "--vocals",
        str(root / "cli" / "vocals.csv"),
        "--backgrounds",
        str(root / "bg"),
        "--out",
        str(root / "cli" / "out"),
        "--cache",
        str(root / "cache"),
        "--workers",
        "1",
        "--no-progress",
        "--snr-db",
        "-3",
        "3",
    ]
    assert main(args) == 1
    assert "1 failed" in capsys.readouterr().out
    report = json.loads((root / "cli" / "out" / "report.json").read_text())
    assert [f["path"] for f in report["failed"]] == [str(bad)]
    assert report["settings"]["snr_db"] == [-3.0, 3.0]
    mixes = read_manifest(root / "cli" / "out" / "manifest.csv")
    assert mixes and {r.singer for r in mixes} == {"alice"}
    write_manifest(root / "cli" / "vocals.csv", rows[:1])
    assert main(args) == 0  # without the broken vocal: all good
