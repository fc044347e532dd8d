"""Length tiers of a calibration: composed queries, tier fitting, the file, and the service's
reading of a long query at its own tier."""

from __future__ import annotations

import json

import numpy as np
import pytest

from catalog import Catalog
from model.calibration import Calibration, CalibrationError, PairCalibration, pair_key
from model.evaluation.lengths import Query, compose_queries, tier_members
from model.evaluation.openset import (
    MIN_TIER_IMPOSTORS,
    QUANTILE_LEVELS,
    fit_pair,
    fit_tiers,
)
from model.evaluation.splits import EvalClip
from model.vectors import l2_normalize, normalized_mean


def _pair(threshold: float, min_segments: int = 1) -> PairCalibration:
    """A pair whose impostors' best scores are uniform on [threshold - 0.5, threshold + 0.5)
    at a catalogue of 1: its 1 % threshold is threshold + 0.49."""
    levels = (0.0, 1.0)
    return PairCalibration(
        2.0, -1.0, levels, (threshold - 0.5, threshold + 0.5), 1, 10, 10, min_segments
    )


def test_composed_queries_are_runs_of_a_recordings_segments():
    rng = np.random.default_rng(0)
    clips, segments = [], {}
    for singer, song, n_segs in (
        ("ann", "s1", (2, 3, 1, 4)),
        ("ann", "s2", (2,)),
        ("bo", "s3", (3, 3, 3)),
    ):
        for k, n in enumerate(n_segs):
            segments[len(clips)] = rng.normal(size=(n, 6)).astype(np.float32)
            clips.append(EvalClip(f"{song}_{k:02d}", singer, "query", song=song))
    clips.append(EvalClip("take", "impostor:take", "impostor"))  # a recording of its own
    segments[len(clips) - 1] = rng.normal(size=(5, 6)).astype(np.float32)
    order = list(range(len(clips)))[::-1]  # the clip ids, not the order given, make the runs
    queries = compose_queries(clips, segments, order, (1, 2, 4, None))
    by_singer: dict[str, list[Query]] = {}
    for q in queries:
        by_singer.setdefault(q.singer, []).append(q)
    # s1: 10 segments -> 10 + 5 + 2 runs + the whole; s2: 2 -> 2 + 1 (= the whole, met once)
    assert len(by_singer["ann"]) == (10 + 5 + 2 + 1) + (2 + 1)
    assert len(by_singer["bo"]) == 9 + 4 + 2 + 1
    assert len(by_singer["impostor:take"]) == 5 + 2 + 1 + 1
    # each query is the track vector of its run of the song's segments, across clip boundaries
    song = np.concatenate([segments[i] for i in range(4)])
    for a, b in ((4, 8), (0, 10), (9, 10)):
        want = normalized_mean(song[a:b])
        hits = [
            q
            for q in by_singer["ann"]
            if q.n_segments == b - a and np.allclose(q.vector, want, atol=1e-6)
        ]
        assert len(hits) == 1, (a, b)
    # a clip without segments (it failed to decode) is left out
    fewer = compose_queries(clips, {i: s for i, s in segments.items() if i != 4}, order, (None,))
    assert sorted(q.singer for q in fewer) == ["ann", "bo", "impostor:take"]  # s2 is gone
    assert tier_members([1, 2, 3, 5, 6, 11, 12, 60], (1, 3, 6, 12)).tolist() == [
        0,
        0,
        1,
        1,
        2,
        2,
        3,
        3,
    ]


def _length_effect_queries(rng, n_impostors_long: int):
    """Three known singers; impostors and targets whose best score rises with their length (a
    less noisy mean is closer to its centre, which sits near singer a)."""
    centres = l2_normalize(rng.normal(size=(3, 16)))
    t_vecs = np.repeat(centres, 3, axis=0)
    t_singers = [s for s in "abc" for _ in range(3)]
    imp_centre = l2_normalize(centres[0] + 0.8 * l2_normalize(rng.normal(size=16)))

    def around(c, n):
        return l2_normalize(c + rng.normal(size=16) / np.sqrt(n)).astype(np.float32)

    queries = []
    for n, count in ((1, 200), (4, 200), (16, n_impostors_long)):
        queries += [Query(around(imp_centre, n), f"zed{k % 5}", n) for k in range(count)]
        queries += [Query(around(centres[k % 3], n), "abc"[k % 3], n) for k in range(60)]
    return queries, t_vecs, t_singers


def test_tiers_hold_their_own_false_alarm_rate_and_never_lower_the_bar():
    rng = np.random.default_rng(3)
    queries, t_vecs, t_singers = _length_effect_queries(rng, n_impostors_long=100)
    tiers = fit_tiers(queries, t_vecs, t_singers, tiers=(1, 3, 12))
    assert [t.min_segments for t in tiers] == [1, 3, 12]
    models = l2_normalize(np.stack([t_vecs[3 * k : 3 * k + 3].mean(0) for k in range(3)]))
    thresholds = []
    for tier, n in zip(tiers, (1, 4, 16), strict=True):
        imp = np.stack(
            [q.vector for q in queries if q.n_segments == n and q.singer.startswith("zed")]
        )
        best = (imp @ models.T).max(1)
        # the tier's own impostors' quantiles (brute force), never below the tier under it
        own = np.quantile(best, QUANTILE_LEVELS)
        floor = thresholds[-1] if thresholds else -np.inf
        np.testing.assert_allclose(tier.top1_quantiles, np.maximum(own, floor), atol=1e-6)
        thresholds.append(np.asarray(tier.top1_quantiles))
        assert np.mean(best > tier.threshold(0.05, 3)) <= 0.05 + 1e-9
    # longer queries score higher: a one-tier calibration lets many more long impostors through
    one_tier = fit_tiers([q for q in queries if q.n_segments == 1], t_vecs, t_singers)
    long_best = (
        np.stack([q.vector for q in queries if q.n_segments == 16 and q.singer.startswith("zed")])
        @ models.T
    ).max(1)
    assert np.mean(long_best > one_tier[0].threshold(0.05, 3)) > 2 * 0.05
    assert tiers[2].threshold(0.05, 3) > tiers[0].threshold(0.05, 3)


def test_a_tier_with_few_impostors_joins_the_one_below():
    rng = np.random.default_rng(4)
    queries, t_vecs, t_singers = _length_effect_queries(
        rng, n_impostors_long=MIN_TIER_IMPOSTORS - 1
    )
    tiers = fit_tiers(queries, t_vecs, t_singers, tiers=(1, 3, 12))
    assert [t.min_segments for t in tiers] == [1, 3]
    # the second tier was fitted on the 4- and the 16-segment queries together
    from model.evaluation.openset import calibration_trials

    mine = [q for q in queries if q.n_segments >= 3]
    want = fit_pair(
        *calibration_trials(
            np.stack([q.vector for q in mine]), [q.singer for q in mine], t_vecs, t_singers
        )
    )
    assert tiers[1].n_target == want.n_target and tiers[1].n_nontarget == want.n_nontarget


def test_calibration_file_keeps_tiers_and_reads_version_1(tmp_path):
    cal = Calibration("ck", "raw", 50, {pair_key("mono", "mixed"): (_pair(0.3), _pair(0.5, 6))}, {})
    path = cal.save(tmp_path / "c.json")
    back = Calibration.from_dict(json.loads(path.read_text()))
    assert back == cal
    assert [back.pair("mono", "mixed", n).min_segments for n in (0, 1, 5, 6, 500)] == [
        1,
        1,
        1,
        6,
        6,
    ]
    assert back.pair("mono", "mono", 10) is None
    # version 1 stored one calibration per pair: it reads as one tier for every length
    v1 = json.loads(path.read_text())
    v1["version"] = 1
    v1["pairs"] = {k: p[0] for k, p in v1["pairs"].items()}
    old = Calibration.from_dict(v1)
    assert old.pair("mono", "mixed", 500) == _pair(0.3)
    for bad in ([], [_pair(0.3, 2)], [_pair(0.3), _pair(0.5, 6), _pair(0.6, 6)]):
        data = json.loads(path.read_text())
        data["pairs"]["mono->mixed"] = [p.to_dict() for p in bad]
        with pytest.raises(CalibrationError, match="tiers"):
            Calibration.from_dict(data)


def test_service_reads_a_long_query_at_its_tier(tmp_path):
    """The same score is "known" for a one-segment query and "unknown" for a 20-segment one,
    whose tier's impostors score higher."""
    from service.openset import read_hits

    rng = np.random.default_rng(5)
    vecs = l2_normalize(rng.normal(size=(6, 8))).astype(np.float32)
    with Catalog.open(tmp_path / "cat", dim=8) as cat:
        for i, v in enumerate(vecs):
            cat.add_track(
                v,
                singer=f"s{i % 3}",
                domain="mixed",
                content_hash=f"{i:064x}",
                checkpoint_id="ck",
                duration_s=3.0,
                n_segments=1,
            )
        q = l2_normalize(vecs[0] + 0.1 * rng.normal(size=8)).astype(np.float32)
        hits = cat.search_singers(q, 3, "mixed")
        best = hits[0].score
        cal = Calibration(
            "ck",
            "raw",
            50,
            {pair_key("mono", "mixed"): (_pair(best - 0.6), _pair(best + 0.2, 12))},
            {},
        )
        short = read_hits(cat, q, hits, "mono", "mixed", cal, 0.01, n_segments=1)
        long = read_hits(cat, q, hits, "mono", "mixed", cal, 0.01, n_segments=20)
    assert short.verdict == "known" and long.verdict == "unknown"
    assert long.threshold > best > short.threshold
    assert long.confidence[0] == pytest.approx(1 / (1 + np.exp(-(2.0 * best - 1.0))))


def test_operating_points_by_length_match_a_direct_reading():
    """`length_operating_points` cuts the evaluation recordings into runs and reads each band
    with the right tier: recomputed here from `compose_queries` and `fit_tiers` directly."""
    from model.evaluation.lengths import LENGTH_TIERS
    from model.evaluation.openset import OpenSetConfig, length_operating_points

    rng = np.random.default_rng(6)
    centres = {s: l2_normalize(rng.normal(size=16)) for s in "abcd"}
    centres["z"] = l2_normalize(centres["a"] + 0.8 * l2_normalize(rng.normal(size=16)))
    clips, segments = [], {}
    for s in "abcdz":
        for song in range(4):
            for k in range(4):
                segments[len(clips)] = l2_normalize(centres[s] + 0.35 * rng.normal(size=(3, 16)))
                clips.append(EvalClip(f"{s}{song}_{k}", s, "query", song=f"{s}{song}"))
    t_vecs = np.stack([centres[s] for s in "abcd" for _ in range(2)]).astype(np.float32)
    t_singers = [s for s in "abcd" for _ in range(2)]
    cal = [i for i, c in enumerate(clips) if c.song[-1] in "02"]
    ev = [i for i, c in enumerate(clips) if c.song[-1] in "13"]
    cfg = OpenSetConfig(impostors=("z",), target_fa=0.05)
    got = length_operating_points(clips, segments, cal, ev, t_vecs, t_singers, cfg)
    tiered = fit_tiers(compose_queries(clips, segments, cal), t_vecs, t_singers)
    queries = compose_queries(clips, segments, ev)
    models = l2_normalize(np.stack([centres[s] for s in "abcd"]))
    band = tier_members([q.n_segments for q in queries])
    for j, start in enumerate(LENGTH_TIERS):
        mine = [q for q, b in zip(queries, band, strict=True) if b == j]
        if not mine:
            assert f">={start}" not in got
            continue
        tier = [t for t in tiered if t.min_segments <= start][-1]
        threshold = tier.threshold(0.05, 4)
        imp = [q for q in mine if q.singer == "z"]
        fa = np.mean([(models @ q.vector).max() > threshold for q in imp])
        point = got[f">={start}"]
        assert point["n_impostor"] == len(imp) and point["n_known"] == len(mine) - len(imp)
        assert point["tiers"]["threshold"] == pytest.approx(threshold)
        assert point["tiers"]["false_alarm_rate"] == pytest.approx(fa)


def test_calibrate_cli_fits_the_tiers_of_its_segments(tmp_path, random_checkpoint):
    """`python -m model calibrate` on a manifest (through the evaluation cache) writes the
    tiers that `fit_tiers` gives on runs of each clip's segments embedded directly."""
    from model.__main__ import main as cli
    from model.audio import load_audio
    from model.calibration import load_calibration
    from model.checkpoint import checkpoint_id
    from model.embedding import Embedder
    from model.evaluation.splits import read_eval_manifest
    from model.manifest import ManifestRow, write_manifest
    from tests.support.synth import VOICES, sing, write

    rows = []
    for s, voice in enumerate(VOICES):  # the last voice is the impostor
        for song, role in enumerate(("model", "query")):
            for take in range(2):
                name = f"v{s}_{song}_{take}"
                write(tmp_path / f"{name}.wav", sing(voice, 6.5, 100 * s + 10 * song + take))
                rows.append(
                    ManifestRow(
                        singer=f"singer{s}",
                        role=role,
                        song=f"v{s}_{song}",
                        external_id=name,
                        path=f"{name}.wav",
                        domain="mono",
                    )
                )
    manifest = write_manifest(tmp_path / "cal.csv", rows)
    out = tmp_path / "cal.json"
    rc = cli(
        [
            "calibrate",
            "--checkpoint",
            str(random_checkpoint),
            "--manifest",
            str(manifest),
            "--impostors",
            f"singer{len(VOICES) - 1}",
            "--no-calibration-takes",
            "--cache-dir",
            str(tmp_path / "cache"),
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    cal = load_calibration(out, checkpoint_id(random_checkpoint))
    assert set(cal.pairs) == {"mono->mono"}
    # the reference: each clip embedded on its own, its segments cut into runs
    clips = read_eval_manifest(manifest)
    emb = Embedder.from_checkpoint(random_checkpoint, device="cpu")
    segs = {
        i: emb.embed_audio(
            load_audio(c.mono_path, emb.features.sample_rate), "mono"
        ).segment_vectors
        for i, c in enumerate(clips)
    }
    impostor = f"singer{len(VOICES) - 1}"
    t = [i for i, c in enumerate(clips) if c.role == "model" and c.singer != impostor]
    q = [i for i, c in enumerate(clips) if c.role == "query" or c.singer == impostor]
    queries = compose_queries(clips, segs, q)
    assert {x.n_segments for x in queries} >= {1, 2, 4}
    want = fit_tiers(
        queries, np.stack([normalized_mean(segs[i]) for i in t]), [clips[i].singer for i in t]
    )
    got = cal.pairs["mono->mono"]
    assert [p.min_segments for p in got] == [p.min_segments for p in want]
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(a.top1_quantiles, b.top1_quantiles, atol=1e-5)
        assert a.slope == pytest.approx(b.slope, rel=1e-3, abs=1e-3)
        assert (a.n_target, a.n_nontarget) == (b.n_target, b.n_nontarget)
