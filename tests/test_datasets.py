"""Dataset readers, the ../shared/data recipe and the singer split (model/datasets.py)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from model.audio import load_audio
from model.features import FeatureConfig
from model.manifest import ManifestRow, read_manifest
from model.mixing import nominal_mix
from model.segment_selection import extract_segments
from model.training.datasets import (
    damp_rows,
    load_row_audio,
    musdb_rows,
    shared_data_recipe,
    split_singers,
    with_role,
)

SR = 22050


def _tone(seconds: float, hz: float, seed: int) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    noise = 0.01 * np.random.default_rng(seed).standard_normal(len(t))
    return (0.2 * np.sin(2 * np.pi * hz * t) + noise).astype(np.float32)


def test_damp_reader_walks_singer_folders(tmp_path):
    for rel in ["alice/perf1.m4a", "alice/sub/perf2.M4A", "bob/perf3.m4a", "bob/notes.txt"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")  # walking only: the reader decodes nothing
    (tmp_path / "stray.m4a").write_bytes(b"")  # not in a singer folder
    rows = damp_rows(tmp_path)
    assert [(r.singer, Path(r.path).name) for r in rows] == [
        ("alice", "perf1.m4a"),
        ("alice", "perf2.M4A"),
        ("bob", "perf3.m4a"),
    ]
    assert all(r.domain == "mono" and r.extra["dataset"] == "damp" for r in rows)


def test_musdb_accompaniment_is_drums_plus_bass_plus_other(tmp_path):
    track = tmp_path / "musdb" / "train" / "Some Artist - Some Song"
    track.mkdir(parents=True)
    stems = {
        s: _tone(1.0, hz, i)
        for i, (s, hz) in enumerate([("drums", 100), ("bass", 55), ("other", 330), ("vocals", 440)])
    }
    for name, y in stems.items():
        sf.write(str(track / f"{name}.wav"), np.stack([y, 0.5 * y], axis=1), SR, subtype="FLOAT")
    (tmp_path / "musdb" / "test" / "Incomplete - Track").mkdir(parents=True)  # no stems: skipped
    rows = musdb_rows(tmp_path / "musdb", tmp_path / "acc")
    assert len(rows) == 1
    row = rows[0]
    assert (row.singer, row.song, row.role, row.domain) == (
        "Some Artist",
        "Some Artist - Some Song",
        "train",
        "mixed",
    )
    assert row.path == row.accompaniment_path and row.vocal_path == str(track / "vocals.wav")
    acc, sr = sf.read(row.path, dtype="float32", always_2d=True)
    expected = stems["drums"] + stems["bass"] + stems["other"]
    assert sr == SR
    np.testing.assert_allclose(acc[:, 0], expected, atol=1e-6)
    np.testing.assert_allclose(acc[:, 1], 0.5 * expected, atol=1e-6)


def test_karaoke_row_audio_is_the_mean_of_the_stems(tmp_path):
    v, a = _tone(2.0, 220, 0), _tone(2.1, 110, 1)
    sf.write(str(tmp_path / "v.wav"), v, SR, subtype="FLOAT")
    sf.write(str(tmp_path / "a.wav"), a, SR, subtype="FLOAT")
    row = ManifestRow(
        singer="x",
        domain="mixed",
        vocal_path=str(tmp_path / "v.wav"),
        accompaniment_path=str(tmp_path / "a.wav"),
    )
    y = load_row_audio(row)
    np.testing.assert_allclose(y, (v + a[: len(v)]) / 2, atol=1e-6)
    np.testing.assert_array_equal(nominal_mix(v, a), y)
    path_row = ManifestRow(singer="x", path=str(tmp_path / "v.wav"))
    np.testing.assert_array_equal(load_row_audio(path_row), v)


def _rows(singers, per_singer=3):
    return [
        ManifestRow(singer=s, path=f"/x/{s}/{i}.wav") for s in singers for i in range(per_singer)
    ]


def test_split_singers_holds_out_whole_singers_deterministically():
    singers = [f"s{i:02d}" for i in range(12)]
    rows = _rows(singers)
    kept, held = split_singers(rows, 4, seed=3)
    held_singers = {r.singer for r in held}
    assert len(held_singers) == 4 and len(held) == 12
    assert held_singers.isdisjoint({r.singer for r in kept})
    assert len(kept) + len(held) == len(rows)
    # Same singers whatever the row order; another seed gives another draw.
    _, held_again = split_singers(list(reversed(rows)), 4, seed=3)
    assert {r.singer for r in held_again} == held_singers
    draws = {frozenset(r.singer for r in split_singers(rows, 4, seed=s)[1]) for s in range(5)}
    assert len(draws) > 1
    # By name.
    kept, held = split_singers(rows, ["s01", "s07"])
    assert {r.singer for r in held} == {"s01", "s07"} and len(kept) == 30
    with pytest.raises(ValueError):
        split_singers(rows, ["nobody"])
    with pytest.raises(ValueError):
        split_singers(rows, 13)
    assert {r.role for r in with_role(held, "val")} == {"val"} and held[0].role is None


def test_shared_data_recipe_rows(tmp_path, shared_dir):
    res = shared_data_recipe(shared_dir / "data", tmp_path, mashups=False)
    rows = read_manifest(res.manifest)
    assert len(rows) == len(res.rows)
    by = Counter((r.extra["dataset"], r.extra["kind"], r.domain) for r in rows)
    assert by[("mir1k", "vocals", "mono")] == by[("mir1k", "karaoke", "mixed")] == 1000
    mir = {r.singer for r in rows if r.extra["dataset"] == "mir1k"}
    vowels = [r for r in rows if r.extra["dataset"] == "vowels"]
    assert len(mir) == 19 and len({r.singer for r in vowels}) == 11
    assert mir.isdisjoint({r.singer for r in vowels})
    # Karaoke rows mix the clip's own stems; every row links its vocal source.
    karaoke = next(r for r in rows if r.extra["kind"] == "karaoke")
    assert Path(karaoke.vocal_path).name == Path(karaoke.accompaniment_path).name
    assert karaoke.path is None and karaoke.source == karaoke.vocal_path
    # Every vowel clip is used once, and every pseudo-recording yields model segments.
    clips = [c for r in vowels for c in r.extra["clips"].split(";")]
    assert len(clips) == len(set(clips)) == 820
    cfg = FeatureConfig()
    for r in vowels[:: max(1, len(vowels) // 8)]:
        y = load_audio(r.path)
        assert len(y) >= cfg.min_samples
        assert len(extract_segments(y, cfg)) >= 1
