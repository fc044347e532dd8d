"""Length tiers of a calibration: composed queries, tier fitting, the file, and the service's
reading of a long query at its own tier."""

from __future__ import annotations

import json

import numpy as np
import pytest

from catalog import Catalog
from model.calibration import Calibration, CalibrationError, PairCalibration, Tier, pair_key
from model.evaluation.lengths import Query, compose_queries, tier_members
from model.evaluation.openset import MIN_TIER_IMPOSTORS, QUANTILE_LEVELS, fit_pair
from model.evaluation.splits import EvalClip
from model.vectors import l2_normalize, normalized_mean


def _tier(threshold: float, min_segments: int = 1) -> Tier:
    """A tier whose impostors' best scores are uniform on [threshold - 0.5, threshold + 0.5)
    at a catalogue of 1: its 1 % threshold is threshold + 0.49."""
    return Tier((0.0, 1.0), (threshold - 0.5, threshold + 0.5), 1, 10, 10, min_segments)


def _pair(*tiers: Tier, firm: int | None = None) -> PairCalibration:
    return PairCalibration((2.0, 0.0, 0.0), -1.0, tiers, firm)


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


def _length_effect_queries(
    rng, n_impostors_long: int, n_known_long: int = 60, scale: int = 1, voices=None
):
    """Three known singers; impostors and targets whose best score rises with their length (a
    less noisy mean is closer to its centre, which sits near singer a); `scale` times the
    queries of 1 and 4 segments; `voices`: the singers' rng (default: `rng`), for two draws
    of queries of the same voices."""
    voices = voices or rng
    centres = l2_normalize(voices.normal(size=(3, 16)))
    t_vecs = np.repeat(centres, 3, axis=0)
    t_singers = [s for s in "abc" for _ in range(3)]
    imp_centre = l2_normalize(centres[0] + 0.8 * l2_normalize(voices.normal(size=16)))

    def around(c, n):
        return l2_normalize(c + rng.normal(size=16) / np.sqrt(n)).astype(np.float32)

    queries = []
    for n, count, known in (
        (1, 200 * scale, 60 * scale),
        (4, 200 * scale, 60 * scale),
        (16, n_impostors_long, n_known_long),
    ):
        queries += [Query(around(imp_centre, n), f"zed{k % 5}", n) for k in range(count)]
        queries += [Query(around(centres[k % 3], n), "abc"[k % 3], n) for k in range(known)]
    return queries, t_vecs, t_singers


def _models(t_vecs):
    return l2_normalize(np.stack([t_vecs[3 * k : 3 * k + 3].mean(0) for k in range(3)]))


def test_tiers_hold_their_own_false_alarm_rate_and_never_lower_the_bar():
    """Each tier's quantiles are the highest of its impostor kinds' (the impostor singers, and
    the known singers' own queries with their singer left out), never below the tier under."""
    rng = np.random.default_rng(3)
    queries, t_vecs, t_singers = _length_effect_queries(rng, n_impostors_long=100)
    tiers = fit_pair(queries, t_vecs, t_singers, "raw", tiers=(1, 3, 12)).tiers
    assert [t.min_segments for t in tiers] == [1, 3, 12]
    models = _models(t_vecs)
    thresholds = []
    for tier, n in zip(tiers, (1, 4, 16), strict=True):
        mine = [q for q in queries if q.n_segments == n]
        imp = np.stack([q.vector for q in mine if q.singer.startswith("zed")])
        best = (imp @ models.T).max(1)
        # a known query with its own singer out of the catalogue: its best of the others
        rotated = np.array(
            [
                np.delete(models @ q.vector, "abc".index(q.singer)).max()
                for q in mine
                if q.singer in "abc"
            ]
        )
        own = np.maximum(np.quantile(best, QUANTILE_LEVELS), np.quantile(rotated, QUANTILE_LEVELS))
        floor = thresholds[-1] if thresholds else -np.inf
        np.testing.assert_allclose(tier.top1_quantiles, np.maximum(own, floor), atol=1e-6)
        thresholds.append(np.asarray(tier.top1_quantiles))
        assert np.mean(best > tier.threshold(0.05, 3)) <= 0.05 + 1e-9
        assert tier.n_impostor == len(best) + len(rotated)
    # longer queries score higher: a one-tier calibration lets many more long impostors through
    one_tier = fit_pair([q for q in queries if q.n_segments == 1], t_vecs, t_singers, "raw").tiers
    long_best = (
        np.stack([q.vector for q in queries if q.n_segments == 16 and q.singer.startswith("zed")])
        @ models.T
    ).max(1)
    assert np.mean(long_best > one_tier[0].threshold(0.05, 3)) > 2 * 0.05
    assert tiers[2].threshold(0.05, 3) > tiers[0].threshold(0.05, 3)


def test_a_tier_with_few_impostors_joins_the_one_below():
    rng = np.random.default_rng(4)
    queries, t_vecs, t_singers = _length_effect_queries(
        rng, n_impostors_long=MIN_TIER_IMPOSTORS - 1, n_known_long=0
    )
    tiers = fit_pair(queries, t_vecs, t_singers, "raw", tiers=(1, 3, 12)).tiers
    assert [t.min_segments for t in tiers] == [1, 3]
    # the second tier was fitted on the 4- and the 16-segment queries together
    mine = [q for q in queries if q.n_segments >= 3]
    want = fit_pair(mine, t_vecs, t_singers, "raw", tiers=(1,)).tiers[0]
    assert (tiers[1].n_known, tiers[1].n_impostor) == (want.n_known, want.n_impostor)
    assert tiers[1].n_impostor == MIN_TIER_IMPOSTORS - 1 + 200 + 60


def test_confidence_is_calibrated_on_queries_like_its_own():
    """Fitted on one draw of queries, the confidence of the best singer is calibrated on
    another draw read the same way (known queries half the weight, each kind of impostor
    alike: singers outside the catalogue, known singers left out of it): ECE below 0.05, and
    the confidence rises with the score."""
    from model.evaluation.openset import (
        confidence_queries,
        kind_weights,
        scored_calibration_queries,
    )
    from model.evaluation.openset_figures import reliability

    draws = [
        _length_effect_queries(np.random.default_rng(seed), 500, 300, 5, np.random.default_rng(0))
        for seed in (7, 8)
    ]
    fit_q, t_vecs, t_singers = draws[0]
    pair = fit_pair(fit_q, t_vecs, t_singers, "raw")
    test_q, test_t, _ = draws[1]
    np.testing.assert_array_equal(test_t, t_vecs)  # the same voices
    sets = scored_calibration_queries(test_q, t_vecs, t_singers)
    top, right, n, kinds = confidence_queries(sets, "raw")
    assert set(kinds) == {"known", "singer", "rotation"}
    conf = np.array([pair.confidence(s, k) for s, k in zip(top, n, strict=True)])
    rel = reliability(conf, right, kind_weights(kinds, 0.5))
    assert rel["ece"] < 0.05, rel
    assert sum(b["weight"] for b in rel["bins"]) == pytest.approx(1.0)
    grid = pair.confidence(np.linspace(0.0, 1.0, 11), 4)
    assert np.all(np.diff(grid) > 0)


def test_confidence_follows_right_and_wrong_scores_of_unequal_spread():
    """Right answers' scores spread wider than impostors' (as AS-norm scores do): the true
    P(right) is the sigmoid of a quadratic in the score. The fitted confidence follows it
    within 0.03 where the scores lie (a logistic on the score alone misses it by more than
    0.05), and never falls as the score rises, far below the data included."""
    from sklearn.linear_model import LogisticRegression

    from model.evaluation.openset import ScoredQueries, fit_confidence
    from model.evaluation.openset_figures import Scores

    rng = np.random.default_rng(3)
    right_mu, right_sd, wrong_sd = 3.0, 1.5, 0.6
    s = np.concatenate([rng.normal(right_mu, right_sd, 4000), rng.normal(0.0, wrong_sd, 4000)])
    truth = np.repeat([0, -1], 4000)  # one catalogue singer: a known query's best is right
    col = s[:, None]
    queries = ScoredQueries(
        Scores(["a"], col, col, truth),
        np.ones(len(s), int),
        np.where(truth == 0, "known", "singer"),
    )
    weights, intercept = fit_confidence([queries], "raw")
    pair = PairCalibration(weights, intercept, (_tier(0.0),))
    grid = np.linspace(-0.5, 5.0, 56)

    def log_normal(x, mu, sd):
        return -0.5 * ((x - mu) / sd) ** 2 - np.log(sd)

    truth_p = 1 / (
        1 + np.exp(log_normal(grid, 0.0, wrong_sd) - log_normal(grid, right_mu, right_sd))
    )
    assert np.abs(pair.confidence(grid, 1) - truth_p).max() < 0.03
    linear = LogisticRegression(C=1e3).fit(col, truth == 0)
    assert np.abs(linear.predict_proba(grid[:, None])[:, 1] - truth_p).max() > 0.05
    wide = pair.confidence(np.linspace(-30.0, 30.0, 601), 1)
    assert np.all(np.diff(wide) >= 0) and wide[-1] > 0.99


def test_a_calibration_file_of_three_confidence_weights_reads_as_before():
    """Files fitted before the s^2 term: (s, l, s * l) only, the same confidence as then."""
    pair = PairCalibration.from_dict(
        {
            "confidence": {"weights": [1.5, -0.5, 0.25], "intercept": -2.0},
            "tiers": [_tier(0.0).to_dict()],
        }
    )
    s, n = np.array([-3.0, 0.0, 2.0, 7.0]), 4
    length = np.log(n)
    want = 1 / (1 + np.exp(-((1.5 + 0.25 * length) * s - 0.5 * length - 2.0)))
    np.testing.assert_allclose(pair.confidence(s, n), want)
    with pytest.raises(CalibrationError):
        PairCalibration((1.0, 0.0), 0.0, (_tier(0.0),))


def test_reliability_and_ece_match_a_hand_computation():
    from model.evaluation.openset_figures import prior_weights, reliability

    conf = np.array([0.05, 0.15, 0.12, 0.95, 0.91, 0.55])
    right = np.array([0, 0, 1, 1, 1, 0], dtype=bool)
    rel = reliability(conf, right)
    # bins [0, .1): 0.05 vs 0; [.1, .2): 0.135 vs 0.5; [.5, .6): 0.55 vs 0; [.9, 1]: 0.93 vs 1
    want = (0.05 + 2 * abs(0.135 - 0.5) + 0.55 + 2 * abs(0.93 - 1.0)) / 6
    assert rel["ece"] == pytest.approx(want)
    assert [b["n"] for b in rel["bins"]] == [1, 2, 1, 2]
    w = prior_weights(np.array([True, False, False, False]), 0.5)
    assert w[0] == pytest.approx(3 * w[1]) and w.sum() == pytest.approx(4)


def test_calibration_file_keeps_tiers_and_its_cohort(tmp_path):
    rng = np.random.default_rng(2)
    cohort = {
        d: l2_normalize(rng.normal(size=(5, 8))).astype(np.float32) for d in ("mono", "mixed")
    }
    pair = _pair(_tier(0.3), _tier(0.5, 6), firm=6)
    cal = Calibration("ck", "snorm", 50, {pair_key("mono", "mixed"): pair}, {}, cohort=cohort)
    path = cal.save(tmp_path / "ck.calibration.json")
    assert (tmp_path / "ck.cohort.npz").is_file()
    from model.calibration import load_calibration

    back = load_calibration(path, "ck")
    assert back == cal
    for d in cohort:  # stored as float16: the cosines move by less than 1e-3
        np.testing.assert_allclose(back.cohort[d], cohort[d], atol=1e-3)
    got = back.pair("mono", "mixed")
    assert [got.tier(n).min_segments for n in (0, 1, 5, 6, 500)] == [1, 1, 1, 6, 6]
    assert back.pair("mono", "mono") is None
    # another cohort file beside the calibration is refused, never used
    (tmp_path / "ck.cohort.npz").write_bytes((tmp_path / "ck.cohort.npz").read_bytes()[::-1])
    with pytest.raises(CalibrationError, match="cohort"):
        load_calibration(path, "ck")
    # an older file says what to do, and so do broken tiers
    data = json.loads(path.read_text())
    with pytest.raises(CalibrationError, match="refit"):
        Calibration.from_dict({**data, "version": 2})
    for bad in ([], [_tier(0.3, 2)], [_tier(0.3), _tier(0.5, 6), _tier(0.6, 6)]):
        broken = json.loads(path.read_text())
        broken["pairs"]["mono->mixed"]["tiers"] = [t.to_dict() for t in bad]
        with pytest.raises(CalibrationError, match="tiers"):
            Calibration.from_dict(broken)


def test_graded_verdict_reads_known_likely_and_unknown():
    from model.calibration import read_scores

    pair = _pair(_tier(0.0))  # impostors uniform on [-0.5, 0.5) at a catalogue of 1
    read = [read_scores(np.array([s, -1.0]), 1, 1, pair, 0.01, 0.1) for s in (0.495, 0.45, 0.1)]
    assert [r.verdict for r in read] == ["known", "likely", "unknown"]
    assert read[0].threshold == pytest.approx(0.49) and read[0].likely_threshold == pytest.approx(
        0.4
    )
    assert read_scores(np.array([np.nan]), 1, 1, pair, 0.01, 0.1).verdict is None
    # the likely bar is never above the known one, whatever the settings
    assert read_scores(np.array([0.45]), 1, 1, pair, 0.2, 0.1).likely_threshold == pytest.approx(
        0.3
    )


def test_service_reads_a_long_query_at_its_tier(tmp_path):
    """The same score is "known" for a one-segment query and "unknown" for a 20-segment one,
    whose tier's impostors score higher."""
    from service.openset import OpenSetPolicy, read_hits

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
        pair = _pair(_tier(best - 0.6), _tier(best + 0.2, 12), firm=12)
        cal = Calibration("ck", "raw", 50, {pair_key("mono", "mixed"): pair}, {})
        policy = OpenSetPolicy(0.01, 0.1, False, 3.0)
        short = read_hits(cat, q, hits, "mono", "mixed", cal, policy, n_segments=1)
        long = read_hits(cat, q, hits, "mono", "mixed", cal, policy, n_segments=20)
    assert short.verdict == "known" and long.verdict == "unknown"
    assert long.threshold > best > short.threshold
    assert long.confidence[0] == pytest.approx(1 / (1 + np.exp(-(2.0 * best - 1.0))))
    assert short.firm_answer_s == 36.0


def test_operating_points_read_each_query_at_its_tier():
    from model.evaluation.openset_figures import Scores, operating_point

    pair = _pair(_tier(0.0), _tier(1.0, 4))
    # queries of 1 and 8 segments; singer 0 is known, truth -1 an impostor
    raw = np.array([[0.6, 0.1], [0.6, 0.1], [1.2, 0.0], [0.3, 0.4], [1.6, 0.0]])
    sc = Scores(["a", "b"], raw, raw, np.array([0, 0, 0, -1, -1]))
    n = np.array([1, 8, 8, 1, 8])
    point = operating_point(sc, n, pair, "raw", 0.01)
    # thresholds at 2 candidates: level 0.99^(1/2); 1-seg 0.495, 8-seg 1.495
    assert point["detection_rate"] == pytest.approx(1 / 3)  # only the 1-segment query passes
    assert point["false_alarm_rate"] == pytest.approx(1 / 2)  # the 8-segment impostor at 1.6
    assert point["identification_rate"] == pytest.approx(1 / 3)


def test_calibrate_cli_fits_the_pairs_of_its_segments(tmp_path, random_checkpoint):
    """`python -m model calibrate` on a manifest (through the evaluation cache) writes the
    tiers and confidence that `fit_pair` gives on runs of each clip's segments embedded
    directly, and an outlier bar per domain."""
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
        for song, role in enumerate(("model", "query", "model", "query")):
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
            "--no-cohort-takes",
            "--cache-dir",
            str(tmp_path / "cache"),
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    cal = load_calibration(out, checkpoint_id(random_checkpoint))
    assert set(cal.pairs) == {"mono->mono"} and not cal.cohort
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
    # the catalogue as the service holds it: one track per song, its clips' segments joined
    songs = sorted({(clips[i].singer, clips[i].song or clips[i].clip_id) for i in t})
    tracks = [
        normalized_mean(
            np.concatenate(
                [segs[i] for i in t if (clips[i].singer, clips[i].song or clips[i].clip_id) == k]
            )
        )
        for k in songs
    ]
    assert len(songs) < len(t)  # songs of several clips: not the same as one track per clip
    # the CLI's default --norm auto: the pair on the score that identifies more (`fit_pair`)
    want = fit_pair(queries, np.stack(tracks), [s for s, _ in songs], "auto")
    got = cal.pairs["mono->mono"]
    assert got.norm == want.norm == cal.norm_of("mono", "mono")
    assert [p.min_segments for p in got.tiers] == [p.min_segments for p in want.tiers]
    for a, b in zip(got.tiers, want.tiers, strict=True):
        np.testing.assert_allclose(a.top1_quantiles, b.top1_quantiles, atol=1e-4)
        assert (a.n_known, a.n_impostor) == (b.n_known, b.n_impostor)
    np.testing.assert_allclose(got.weights, want.weights, rtol=1e-2, atol=1e-2)
    # each known singer has two recordings per role: four songs, enough for an outlier bar
    assert set(cal.enrolment) == {"mono"}
    assert -1.0 <= cal.enrolment["mono"].outlier_below <= 1.0
