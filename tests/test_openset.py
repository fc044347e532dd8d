"""Open-set answers: calibration files, verdict, evidence, timeline and search filters.

A real uvicorn on the random-weight checkpoint (which tells the synthetic voices apart) and a
catalogue filled over HTTP; the calibration is fitted with the library on other takes of the
same synthetic voices, leave-one-singer-out, exactly as `python -m model calibrate` does.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from catalog import Catalog
from model.calibration import (
    CalibrationMismatchError,
    calibration_path,
    find_calibration,
    load_calibration,
)
from model.checkpoint import checkpoint_id
from model.embedding import Embedder
from model.evaluation.lengths import Query
from model.evaluation.openset import fit_calibration
from model.vectors import l2_normalize
from tests.support.live import (
    API_KEY,
    LiveServer,
    add_clip,
    live_settings,
    make_clip,
    make_corpus,
    render,
    singer_name,
    upload,
)
from tests.support.synth import VOICES, write
from tests.support.tracks import add_tracks

CAL_SEEDS = (10, 11, 12, 13)  # takes the calibration is fitted on (not in any catalogue)
QUERY_SEED = 5


@pytest.fixture(scope="module")
def calibrated_checkpoint(tmp_path_factory, random_checkpoint):
    """A copy of the random checkpoint with a calibration fitted beside it."""
    ckpt = shutil.copy(random_checkpoint, tmp_path_factory.mktemp("calibrated") / "cross.pt")
    emb = Embedder.from_checkpoint(ckpt, device="cpu")
    pairs = {}
    for qd in ("mono", "mixed"):
        for md in ("mono", "mixed"):
            q = [(v, s) for v in range(len(VOICES)) for s in CAL_SEEDS[2:]]
            t = [(v, s) for v in range(len(VOICES)) for s in CAL_SEEDS[:2]]

            def queries(items, domain):
                embs = [emb.embed_audio(render(v, domain, s), domain) for v, s in items]
                return [
                    Query(e.vector, singer_name(v), e.n_segments)
                    for e, (v, _) in zip(embs, items, strict=True)
                ]

            pairs[(qd, md)] = (
                queries(q, qd),
                np.stack([x.vector for x in queries(t, md)]),
                [singer_name(v) for v, _ in t],
            )
    # raw cosine: the random weights' s-norm against 3 other voices is too noisy to test on
    cal = fit_calibration(pairs, emb.checkpoint_id, {"dataset": "synthetic"}, norm="raw")
    cal.save(calibration_path(ckpt, emb.checkpoint_id))
    return ckpt


def test_calibration_is_refused_for_another_checkpoint(
    calibrated_checkpoint, random_checkpoint, tmp_path
):
    ckpt_id = checkpoint_id(calibrated_checkpoint)
    path = calibration_path(calibrated_checkpoint, ckpt_id)
    assert find_calibration(calibrated_checkpoint, ckpt_id).checkpoint_id == ckpt_id
    with pytest.raises(CalibrationMismatchError):
        load_calibration(path, "0123456789abcdef")
    # A file named after the checkpoint but fitted for other weights is refused too.
    other = tmp_path / "other.pt"
    other.write_bytes(b"other weights")
    stale = calibration_path(other, checkpoint_id(other))
    data = json.loads(path.read_text())
    stale.write_text(json.dumps(data))
    with pytest.raises(CalibrationMismatchError):
        find_calibration(other, checkpoint_id(other))


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory, calibrated_checkpoint):
    with (
        LiveServer(live_settings(tmp_path_factory, calibrated_checkpoint)) as srv,
        srv.client() as c,
    ):
        clips = make_corpus(tmp_path_factory.mktemp("corpus"))
        tracks = {clip.path: add_clip(c, clip) for clip in clips}
        yield c, tracks


def test_readyz_and_answers_say_whether_calibrated(
    calibrated, tmp_path_factory, random_checkpoint, tmp_path
):
    client, _ = calibrated
    assert client.get("/readyz").json()["calibrated"] is True
    # The random checkpoint has no calibration beside it: no verdict, never an invented one.
    with LiveServer(live_settings(tmp_path_factory, random_checkpoint)) as srv, srv.client() as c:
        ready = c.get("/readyz").json()
        assert ready["calibrated"] is False and "no calibration" in ready["calibration"]
        clip = make_clip(tmp_path, 0, "mono", 0)
        add_clip(c, clip)
        body = upload(c, "/identify", clip.path).json()
        assert body["calibrated"] is False and body["verdict"] is None
        assert all(s["confidence"] is None for s in body["singers"])


@pytest.mark.parametrize("domain", ["mono", "mixed"])
def test_verdict_flips_to_unknown_when_the_singer_is_deleted(
    calibrated, calibrated_checkpoint, tmp_path, domain
):
    client, tracks = calibrated
    voice = 1
    query = make_clip(tmp_path, voice, domain, QUERY_SEED)
    body = upload(client, "/identify", query.path, domain=domain, models=domain).json()
    assert body["calibrated"] is True
    assert body["singers"][0]["name"] == singer_name(voice)
    assert body["verdict"] == "known", body
    conf = [s["confidence"] for s in body["singers"]]
    assert conf[0] > 0.5 and all(0.0 <= c <= 1.0 for c in conf)
    assert conf == sorted(conf, reverse=True)  # monotone in the score
    # Evidence: every segment, in time order, with its best singer.
    assert len(body["segments"]) == body["n_segments"]
    starts = [g["start_s"] for g in body["segments"]]
    assert starts == sorted(starts)
    assert 0.0 < body["voiced_fraction"] <= 1.0
    # How much singing the answer rests on: its embedded segments of 3 s.
    segment_s = Embedder.from_checkpoint(calibrated_checkpoint, "cpu").features.segment_seconds
    assert body["singing_s"] == pytest.approx(body["n_segments"] * segment_s)
    assert body["likely_false_alarm"] == 0.10 and body["likely_threshold"] <= body["threshold"]

    mine = [t for t in tracks.values() if t["singer"] == singer_name(voice)]
    try:
        for t in mine:
            assert (
                client.delete(f"/tracks/{t['id']}", headers={"X-API-Key": API_KEY}).status_code
                == 200
            )
        body = upload(client, "/identify", query.path, domain=domain, models=domain).json()
        assert singer_name(voice) not in [s["name"] for s in body["singers"]]
        assert body["verdict"] in ("likely", "unknown"), body
        assert body["singers"][0]["confidence"] < conf[0]
    finally:
        for t in mine:  # restore the catalogue for the other tests
            clip = next(p for p, tr in tracks.items() if tr["id"] == t["id"])
            r = upload(
                client,
                "/tracks",
                clip,
                headers={"X-API-Key": API_KEY},
                singer=t["singer"],
                domain=t["domain"],
            )
            assert r.status_code == 201
            tracks[clip] = r.json()


def duet(tmp_path):
    """Voice 2 for three segments, then voice 0 for three."""
    seg_s = 129 * 512 / 22050
    y = np.concatenate([render(2, "mono", 21, 3 * seg_s), render(0, "mono", 22, 3 * seg_s)])
    return write(tmp_path / "duet.wav", y, subtype="PCM_16"), 3 * seg_s


def test_timeline_of_a_duet_gives_two_spans_in_order(tmp_path_factory, random_checkpoint, tmp_path):
    with LiveServer(live_settings(tmp_path_factory, random_checkpoint)) as srv, srv.client() as c:
        for clip in make_corpus(tmp_path_factory.mktemp("corpus"), seeds=(0,)):
            add_clip(c, clip)
        path, switch_s = duet(tmp_path)
        body = upload(c, "/identify", path, timeline="true", models="mono").json()
        spans = body["timeline"]
        assert [s["singer"] for s in spans] == [singer_name(2), singer_name(0)], spans
        assert spans[0]["start_s"] == pytest.approx(0.0)
        assert spans[0]["end_s"] == pytest.approx(switch_s, abs=0.05)
        assert spans[1]["start_s"] == pytest.approx(switch_s, abs=0.05)
        assert sum(s["n_windows"] for s in spans) == body["n_segments"]
        assert [g["singer"] for g in body["segments"]] == [singer_name(2)] * 3 + [
            singer_name(0)
        ] * 3
        assert all(s["confidence"] is None for s in spans)  # uncalibrated: no confidence
        assert upload(c, "/identify", path).json()["timeline"] is None


def test_calibrated_timeline_splits_at_the_change_of_voice(calibrated, tmp_path):
    client, _ = calibrated
    path, switch_s = duet(tmp_path)
    spans = upload(client, "/identify", path, timeline="true", models="mono").json()["timeline"]
    # Segment scores are noisier than a whole take's: a window may read "unknown", but the
    # change of voice still splits the timeline there, and voice 0 is recognised.
    assert len(spans) == 2 and spans[1]["singer"] == singer_name(0)
    assert spans[0]["end_s"] == pytest.approx(switch_s, abs=0.05)
    assert all(0.0 <= s["confidence"] <= 1.0 for s in spans)


def brute_force(cat: Catalog, vector: np.ndarray, domain=None, singer=None, min_score=None):
    q = vector / np.linalg.norm(vector)
    rows = [
        (float(cat.get_vector(t.id) @ q), t.id)
        for t in cat.iter_tracks()
        if (domain is None or t.domain == domain) and (singer is None or t.singer == singer)
    ]
    rows = sorted(rows, key=lambda r: (-r[0], r[1]))
    return [r for r in rows if min_score is None or r[0] >= min_score]


def test_catalog_search_filters_match_brute_force(tmp_path):
    rng = np.random.default_rng(0)
    with Catalog.open(tmp_path / "cat", dim=16) as cat:
        for i in range(60):
            cat.add_track(
                singer=f"s{i % 5}",
                domain=("mono", "mixed")[i % 2],
                vector=rng.normal(size=16).astype(np.float32),
                content_hash=f"{i:064x}",
                checkpoint_id="ck",
                duration_s=3.0,
                n_segments=1,
            )
        q = rng.normal(size=16).astype(np.float32)
        for domain in (None, "mono", "mixed"):
            for singer in (None, "s3"):
                for min_score in (None, 0.1):
                    want = brute_force(cat, q, domain, singer, min_score)[:7]
                    got = cat.search_tracks(q, 7, domain, singer=singer, min_score=min_score)
                    assert [h.track.id for h in got] == [i for _, i in want]
                    assert [h.score for h in got] == pytest.approx([s for s, _ in want], abs=1e-5)
        assert cat.search_tracks(q, 5, singer="nobody") == []
        assert cat.n_singers("mono") == 5


def test_search_pages_filters_and_fallback(calibrated, tmp_path):
    client, tracks = calibrated
    query = make_clip(tmp_path, 3, "mono", QUERY_SEED)
    full = upload(client, "/search", query.path, target="any", top_k=100).json()["tracks"]
    assert len(full) == len(tracks)
    # Pages of 3 through the cursor give the same ranking as one big page.
    seen, cursor = [], None
    while True:
        form = {"target": "any", "top_k": 3, **({"cursor": cursor} if cursor else {})}
        body = upload(client, "/search", query.path, **form).json()
        seen += body["tracks"]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert [t["id"] for t in seen] == [t["id"] for t in full]
    # Filters.
    cut = full[5]["score"]
    body = upload(client, "/search", query.path, target="any", top_k=100, min_score=cut).json()
    assert [t["id"] for t in body["tracks"]] == [t["id"] for t in full if t["score"] >= cut]
    body = upload(
        client, "/search", query.path, target="mixed", top_k=100, singer=singer_name(1)
    ).json()
    want = [t["id"] for t in full if t["singer"] == singer_name(1) and t["domain"] == "mixed"]
    assert [t["id"] for t in body["tracks"]] == want
    r = upload(client, "/search", query.path, cursor="not-a-cursor")
    assert r.status_code == 422 and r.json()["code"] == "bad_cursor"


def test_search_falls_back_when_the_target_domain_is_empty(
    tmp_path_factory, random_checkpoint, tmp_path
):
    with LiveServer(live_settings(tmp_path_factory, random_checkpoint)) as srv, srv.client() as c:
        body = upload(c, "/search", make_clip(tmp_path, 0, "mono", 1).path).json()
        assert body["tracks"] == [] and body["note"] == "the catalogue is empty"
        add_clip(c, make_clip(tmp_path, 0, "mono", 0))
        body = upload(c, "/search", make_clip(tmp_path, 0, "mono", 1).path, target="mixed").json()
        assert body["searched"] == "mono" and "no mixed track" in body["note"]
        assert len(body["tracks"]) == 1


def test_open_set_figures_match_hand_computed_values():
    from model.calibration import PairCalibration, Tier
    from model.evaluation.openset import OpenSetConfig, scenario_figures
    from model.evaluation.openset_figures import Scores, eer_min_dcf

    # Separable trials: EER 0; one overlapping pair of 4 non-targets: EER 1/4 at its threshold.
    assert eer_min_dcf(np.array([0.9, 0.8]), np.array([0.1, 0.2]))["eer"] == 0.0
    assert eer_min_dcf(np.array([0.9, 0.3]), np.array([0.1, 0.2, 0.4, 0.0]))["eer"] == 0.375
    # 3 singers; 2 known queries (one right, one wrong), 4 impostor queries.
    raw = np.array(
        [
            [0.9, 0.1, 0.0],  # singer 0, right, best 0.9
            [0.2, 0.7, 0.1],  # singer 2, wrong (best is singer 1)
            [0.5, 0.0, 0.0],
            [0.0, 0.6, 0.0],
            [0.0, 0.0, 0.3],
            [0.95, 0.0, 0.0],
        ]
    )
    sc = Scores(["a", "b", "c"], raw, raw, np.array([0, 2, -1, -1, -1, -1]))
    levels = (0.0, 0.5, 1.0)
    pair = PairCalibration((4.0, 0.0, 0.0), -2.0, (Tier(levels, (0.0, 0.55, 1.0), 3, 2, 4),))
    f = scenario_figures(sc, np.ones(6, int), pair, OpenSetConfig((), target_fa=0.5, norm="raw"))
    # no threshold keeps the 0.95 impostor out and lets the right 0.9 in: DIR 0 at 1 and 5 %
    assert f["raw"]["dir@0.05"] == 0.0 and f["raw"]["dir@0.01"] == 0.0
    op = f["operating_point"]  # threshold 0.55: 0.6 and 0.95 of the impostors pass
    assert op["false_alarm_rate"] == 0.5
    assert op["detection_rate"] == 1.0 and op["identification_rate"] == 0.5
    # the likely point (target 0.1) lets everything through: level 0.9 is above 0.5
    assert f["likely_point"]["false_alarm_rate"] == 0.25  # threshold 0.91: the 0.95 passes
    # reliability: confidence sigmoid(4 s - 2) of each best score, right only for query 0
    conf = 1 / (1 + np.exp(-(4 * raw.max(1) - 2)))
    w = np.array([0.5, 0.5, 0.25, 0.25, 0.25, 0.25])  # known and impostors half each
    right = np.array([1, 0, 0, 0, 0, 0])
    bins = np.minimum((conf * 10).astype(int), 9)
    want = sum(
        w[bins == b].sum()
        / w.sum()
        * abs(np.average(conf[bins == b] - right[bins == b], weights=w[bins == b]))
        for b in set(bins)
    )
    assert f["reliability"]["ece"] == pytest.approx(want)
    # At the calibration's catalogue size the threshold is the impostors' best-score quantile.
    assert pair.tiers[0].threshold(0.5, 3) == pytest.approx(0.55)
    # A larger catalogue raises the threshold (more chances for an impostor to score high).
    assert pair.tiers[0].threshold(0.25, 30) > pair.tiers[0].threshold(0.25, 3)


def test_service_snorm_matches_the_evaluation_protocol(tmp_path):
    """The service's s-norm, from catalogue searches and the shipped cohort, equals the
    evaluation's, from matrices; and its ranking is by that score."""
    from model.calibration import Calibration, PairCalibration, Tier
    from model.evaluation.openset import score_queries
    from service.openset import OpenSetPolicy, _scores, identify_hits

    rng = np.random.default_rng(1)
    vecs = l2_normalize(rng.normal(size=(18, 8))).astype(np.float32)
    cohort = {
        d: l2_normalize(rng.normal(size=(7, 8))).astype(np.float32) for d in ("mono", "mixed")
    }
    singers = [f"s{i % 6}" for i in range(18)]
    q = rng.normal(size=8).astype(np.float32)
    tier = Tier((0.0, 1.0), (10.0, 11.0), 6, 1, 1)
    pair = PairCalibration((1.0, 0.0, 0.0), 0.0, (tier,))
    cal = Calibration("ck", "snorm", 3, {"mono->mixed": pair}, {}, cohort=cohort)
    with Catalog.open(tmp_path / "cat", dim=8) as cat:
        add_tracks(cat, vecs, singers, "mixed")
        hits = cat.search_singers(q, 6, "mixed")
        got = _scores(cat, q, hits, "mono", "mixed", cal)
        ranked, reading = identify_hits(
            cat, q, 3, "mono", "mixed", cal, OpenSetPolicy(0.01, 0.1, False, 3.0)
        )
    # the query against the mixed cohort, the models against the mono one
    ref = score_queries(
        l2_normalize(q)[None],
        ["query"],
        vecs,
        singers,
        top_k=3,
        cohort=(cohort["mixed"], cohort["mono"]),
    )
    want = [ref.snormed[0, ref.names.index(h.singer.name)] for h in hits]
    assert got == pytest.approx(want, abs=1e-5)
    assert [h.score for h in hits] == pytest.approx(
        [ref.raw[0, ref.names.index(h.singer.name)] for h in hits], abs=1e-5
    )
    best3 = np.argsort(-ref.snormed[0])[:3]
    assert [h.singer.name for h in ranked] == [ref.names[j] for j in best3]
    want_conf = 1 / (1 + np.exp(-ref.snormed[0, best3]))
    assert reading.confidence == pytest.approx(want_conf.tolist(), abs=1e-5)
    assert reading.verdict == "unknown"  # below the impostors' 10-11


def test_openapi_documents_the_open_set_fields(calibrated):
    client, _ = calibrated
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    identify = schemas["IdentifyResponse"]["properties"]
    for field in ("verdict", "calibrated", "segments", "timeline", "voiced_fraction"):
        assert "description" in identify[field], field
    assert identify["verdict"]["examples"] == ["known"]
    assert schemas["SingerHitOut"]["properties"]["confidence"]["examples"] == [0.87]
    assert "next_cursor" in schemas["SearchResponse"]["properties"]


def test_impostor_recordings_join_the_calibration_only():
    from model.evaluation.openset import OpenSetConfig, open_set_scenario
    from model.evaluation.splits import EvalClip, impostor_clips, split_summary

    rng = np.random.default_rng(0)
    centres = {s: rng.normal(size=16) for s in "abcdef"}

    def vec(s):
        v = centres[s] + 0.3 * rng.normal(size=16)
        return v / np.linalg.norm(v)

    clips = [
        EvalClip(f"{s}{i}", s, role, song=f"{s}-{i}", mono_path=f"/{s}{i}")
        for s in "abcde"
        for i, role in enumerate(["model", "model", "query", "query"])
    ]
    clips += impostor_clips(["/takes/x.opus", "/takes/y.opus"], ["/bg/one.opus"])
    assert [c.accompaniment_path for c in clips[-2:]] == ["/bg/one.opus"] * 2
    assert split_summary(clips)["n_singers"] == 5
    assert split_summary(clips)["n_calibration_impostor_clips"] == 2
    vectors = {i: vec(c.singer if c.role != "impostor" else "f") for i, c in enumerate(clips)}
    cfg = OpenSetConfig(impostors=("e",))
    with_takes, _ = open_set_scenario(clips, vectors, vectors, cfg)
    known_only = {i: v for i, v in vectors.items() if i < len(clips) - 2}
    without, _ = open_set_scenario(clips[:-2], known_only, known_only, cfg)
    # 4 known singers' calibration halves (1 query each) + the 2 impostor recordings
    assert without["n_calibration_queries"] == 4 and with_takes["n_calibration_queries"] == 6
    assert with_takes["calibration_impostors"] == ["leave-one-singer-out", "2 impostor recordings"]
    # the evaluation trials are the same: the impostor recordings never reach them
    for kind in ("raw", "snorm"):
        assert with_takes["clips"][kind] == without["clips"][kind]


def test_each_kind_of_impostor_holds_the_threshold_alone():
    """Impostor singers of the data, impostor recordings and rotated-out known singers are
    calibrated apart: the stored best-score quantile at every level is the highest of the
    kinds' own quantiles, so a target false-alarm rate holds for each kind, however many
    queries the others have."""
    from model.evaluation.openset import QUANTILE_LEVELS, fit_tier, scored_calibration_queries
    from model.evaluation.splits import impostor_group

    assert [impostor_group(s) for s in ("ann", "impostor:take1", "cohort:t", "odd:name")] == [
        "singer",
        "impostor",
        "cohort",
        "singer",
    ]
    rng = np.random.default_rng(1)
    known = l2_normalize(rng.normal(size=(3, 8)))
    tracks = np.repeat(known, 2, axis=0)
    t_singers = ["a", "a", "b", "b", "c", "c"]
    # 40 recordings far from every singer, 4 clips of an impostor singer close to singer a
    far = l2_normalize(rng.normal(size=(40, 8)) - 2 * known.sum(0))
    close = l2_normalize(known[0] + 0.2 * rng.normal(size=(4, 8)))
    vectors = np.concatenate([known, far, close])
    names = ["a", "b", "c"] + [f"impostor:r{i}" for i in range(40)] + ["zed"] * 4
    queries = [Query(v, s, 1) for v, s in zip(vectors, names, strict=True)]
    sets = scored_calibration_queries(queries, tracks, t_singers)
    assert [len(x.kinds) for x in sets] == [47, 1, 1, 1]  # all, then each singer rotated out
    assert sorted(set(sets[0].kinds)) == ["impostor", "known", "singer"]
    tier = fit_tier(sets, "raw", 3)
    rotated = np.array([np.delete(known @ known[i], i).max() for i in range(3)])
    kinds = [(far @ tracks.T).max(1), (close @ tracks.T).max(1), rotated]
    want = np.max([np.quantile(k, QUANTILE_LEVELS) for k in kinds], axis=0)
    np.testing.assert_allclose(tier.top1_quantiles, want, atol=1e-6)
    assert tier.n_impostor == 47
    # Pooled, the 4 close clips all pass the 0.9 quantile; apart, the singer kind's own 0.9
    # quantile (or a higher kind's) is the threshold for a 10 % target.
    pooled = np.quantile(np.concatenate(kinds), 0.9)
    assert np.all(kinds[1] > pooled)
    assert tier.threshold(0.1, 3) >= np.quantile(kinds[1], 0.9) - 1e-9


def test_fixed_cohort_snorm_matches_a_direct_computation():
    """The shipped cohort joins the catalogue's: the query side against the other singers'
    models and the cohort in the catalogue's domain, the model side against the other
    singers' tracks and the cohort in the queries' domain."""
    from model.evaluation.openset import score_queries

    rng = np.random.default_rng(1)

    def unit(n):
        v = rng.normal(size=(n, 8))
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    q, t, c_t, c_q = unit(4), unit(6), unit(5), unit(5)
    singers = ["a", "a", "b", "b", "c", "c"]
    sc = score_queries(q, ["a", "b", "x", "y"], t, singers, top_k=3, cohort=(c_t, c_q))
    models = np.stack([t[i : i + 2].mean(0) for i in (0, 2, 4)])
    models /= np.linalg.norm(models, axis=1, keepdims=True)
    i, j = 2, 1  # query 2 against singer b
    raw = q[i] @ models[j]
    top_q = np.sort(np.r_[c_t @ q[i], models[[0, 2]] @ q[i]])[-3:]
    top_m = np.sort(np.r_[c_q @ models[j], t[[0, 1, 4, 5]] @ models[j]])[-3:]
    want = 0.5 * (
        (raw - top_q.mean()) / top_q.std(ddof=1) + (raw - top_m.mean()) / top_m.std(ddof=1)
    )
    assert sc.raw[i, j] == pytest.approx(raw, abs=1e-6)
    assert sc.snormed[i, j] == pytest.approx(want, abs=1e-6)
    assert list(sc.truth) == [0, 1, -1, -1]
