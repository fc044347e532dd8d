"""Evaluation sets: the MIR-1K cross-song split and evaluation manifests."""

from __future__ import annotations

import csv
from collections import defaultdict

import pytest

from model.evaluation.splits import mir1k_split, read_eval_manifest, split_summary
from model.manifest import ManifestError, ManifestRow, write_manifest


def _write_index(root, rows):
    root.mkdir(parents=True, exist_ok=True)
    with (root / "index.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["clip", "singer", "song", "duration_s"])
        w.writerows(rows)


def test_split_rule_on_a_small_index(tmp_path):
    # Songs sort as strings: a_1 < a_10 < a_2, so a_1 and a_2 are models and a_10 a query.
    rows = [
        ("a_1_01", "a", "a_1", 5),
        ("a_1_02", "a", "a_1", 5),
        ("a_10_01", "a", "a_10", 5),
        ("a_2_01", "a", "a_2", 5),
        ("b_1_01", "b", "b_1", 5),
        ("b_2_01", "b", "b_2", 5),
        ("solo_1_01", "solo", "solo_1", 5),
    ]
    _write_index(tmp_path / "mir1k", rows)
    clips = mir1k_split(tmp_path / "mir1k")
    roles = {c.clip_id: c.role for c in clips}
    assert roles == {
        "a_1_01": "model",
        "a_1_02": "model",
        "a_10_01": "query",
        "a_2_01": "model",
        "b_1_01": "model",
        "b_2_01": "query",
    }
    clip = next(c for c in clips if c.clip_id == "a_10_01")
    assert clip.vocal_path == str(tmp_path / "mir1k" / "vocals" / "a_10_01.opus")
    assert clip.accompaniment_path == str(tmp_path / "mir1k" / "accompaniment" / "a_10_01.opus")
    assert clip.has("mono") and clip.has("mixed") and clip.has_stems
    summary = split_summary(clips)
    assert summary["n_singers"] == 2 and summary["songs_in_both_sets"] == []


def test_mir1k_split_on_real_data(shared_dir):
    root = shared_dir / "data" / "mir1k"
    clips = mir1k_split(root)
    summary = split_summary(clips)
    assert summary["n_singers"] == 18
    assert summary["n_query_clips"] == 414
    assert summary["n_model_clips"] == 578
    assert summary["n_query_singers"] == 18
    songs = defaultdict(set)
    for c in clips:
        songs[c.role].add(c.song)
    assert not songs["model"] & songs["query"], "a song is in both sets"
    assert "tammy" not in {c.singer for c in clips}  # one song only: left out
    by_id = {c.clip_id: c for c in clips}
    assert by_id["amy_1_01"].role == "model" and by_id["amy_10_01"].role == "query"
    sample = clips[0]
    assert (root / "vocals" / f"{sample.clip_id}.opus").is_file()
    assert (root / "accompaniment" / f"{sample.clip_id}.opus").is_file()


def test_manifest_pairs_renderings_by_external_id(tmp_path):
    rows = [
        ManifestRow(
            singer="ann", path="ann1_vox.wav", domain="mono", role="model", external_id="ann-1"
        ),
        ManifestRow(
            singer="ann", path="ann1_mix.wav", domain="mixed", role="model", external_id="ann-1"
        ),
        ManifestRow(
            singer="ann",
            vocal_path="v/ann2.wav",
            accompaniment_path="a/ann2.wav",
            role="query",
            song="s2",
        ),
        ManifestRow(singer="bob", path="bob1_mix.wav", domain="mixed", role="query"),
    ]
    clips = read_eval_manifest(write_manifest(tmp_path / "eval.csv", rows))
    assert len(clips) == 3
    paired = next(c for c in clips if c.clip_id == "ann-1")
    assert paired.mono_path == str(tmp_path / "ann1_vox.wav")
    assert paired.mixed_path == str(tmp_path / "ann1_mix.wav")
    assert paired.role == "model" and not paired.has_stems
    stems = next(c for c in clips if c.role == "query" and c.singer == "ann")
    assert stems.has("mono") and stems.has("mixed") and stems.has_stems and stems.song == "s2"
    mixed_only = next(c for c in clips if c.singer == "bob")
    assert mixed_only.has("mixed") and not mixed_only.has("mono")


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (ManifestRow(singer="a", path="x.wav", domain="mono", role="train"), "role"),
        (ManifestRow(singer="a", path="x.wav", role="query"), "domain"),
    ],
)
def test_manifest_errors(tmp_path, row, message):
    path = write_manifest(tmp_path / "bad.csv", [row])
    with pytest.raises(ManifestError, match=message):
        read_eval_manifest(path)


def test_manifest_conflicting_paths_for_one_clip(tmp_path):
    rows = [
        ManifestRow(singer="a", path="one.wav", domain="mono", role="query", external_id="x"),
        ManifestRow(singer="a", path="two.wav", domain="mono", role="query", external_id="x"),
    ]
    with pytest.raises(ManifestError, match="two different"):
        read_eval_manifest(write_manifest(tmp_path / "eval.csv", rows))
