"""Enrolment quality: the outlier statistic, planted songs on MIR-1K, GET /singers/{id},
SINGER_EXCLUDE_OUTLIERS and the indexer's summary."""

from __future__ import annotations

import shutil
from collections import defaultdict
from dataclasses import replace

import numpy as np
import pytest

from model.calibration import EnrolmentCalibration, calibration_path
from model.enrolment import (
    MIN_TRACKS,
    leave_one_out_scores,
    model_without,
    outlier_flags,
    reliability,
)
from model.vectors import l2_normalize
from tests.support.live import API_KEY, LiveServer, add_clip, live_settings, make_clip, upload


def test_leave_one_out_scores_match_a_direct_computation():
    rng = np.random.default_rng(0)
    v = l2_normalize(rng.normal(size=(5, 8)))
    loo = leave_one_out_scores(v)
    for i in range(5):
        others = l2_normalize(np.delete(v, i, axis=0).mean(0))
        assert loo[i] == pytest.approx(float(v[i] @ others))
    assert np.isnan(leave_one_out_scores(v[:1])).all()
    # two tracks do not say which one is wrong; three do
    assert not outlier_flags(np.array([-1.0, -1.0]), 0.5).any()
    assert MIN_TRACKS == 3 and outlier_flags(np.array([0.9, 0.1, 0.8]), 0.5).tolist() == [
        False,
        True,
        False,
    ]
    assert not outlier_flags(np.array([0.1, 0.1, 0.1]), None).any()
    r = reliability(v, [2, 3, 1, 4, 2], 3.0, 0.0)
    model = l2_normalize(v.mean(0))
    assert r.n_tracks == 5 and r.voiced_s == 36.0
    assert r.spread == pytest.approx(float(np.mean(1 - v @ model)))
    np.testing.assert_array_equal(r.outliers, loo < 0.0)
    np.testing.assert_allclose(
        model_without(v, np.array([1, 0, 0, 0, 0], bool)), l2_normalize(v[1:].mean(0)), atol=1e-6
    )
    assert model_without(v, np.ones(5, bool)) is None


@pytest.fixture(scope="module")
def held_out_songs(shared_dir):
    """singer -> vocal-take vectors (default model, mono) of each song of the default model's
    held-out MIR-1K singers: the first 3 clips of the song joined (about 25 s of singing)."""
    from model import DEFAULT_CHECKPOINT
    from model.audio import load_audio
    from model.cli.options import HELD_OUT_SINGERS
    from model.embedding import Embedder
    from model.evaluation.splits import mir1k_split

    emb = Embedder.from_checkpoint(DEFAULT_CHECKPOINT, device="cpu")
    songs: dict[tuple[str, str], list] = defaultdict(list)
    for c in mir1k_split(shared_dir / "data" / "mir1k"):
        if c.singer in HELD_OUT_SINGERS:
            songs[(c.singer, c.song)].append(c)
    out: dict[str, list[np.ndarray]] = defaultdict(list)
    for (singer, _), clips in sorted(songs.items()):
        clips.sort(key=lambda c: c.clip_id)
        sr = emb.features.sample_rate
        y = np.concatenate([load_audio(c.vocal_path, sr) for c in clips[:3]])
        out[singer].append(emb.embed_audio(y, "mono").vector)
    return emb, dict(out)


def test_a_planted_song_of_another_singer_is_flagged(held_out_songs):
    """Every held-out singer's songs (singers the default model never trained on, nor the
    shipped outlier bar was fitted on) with one song of another held-out singer planted: the
    shipped bar flags the planted song in at least 90 % of the trials, and at most 10 % of
    the singers' own songs."""
    from model import DEFAULT_CHECKPOINT
    from model.calibration import find_calibration

    emb, songs = held_out_songs
    cal = find_calibration(DEFAULT_CHECKPOINT, emb.checkpoint_id)
    assert cal is not None
    bar = cal.enrolment["mono"].outlier_below
    planted, own = [], []
    for host, mine in songs.items():
        for guest, theirs in songs.items():
            if guest == host:
                continue
            for song in theirs:
                flags = reliability(
                    np.stack([*mine, song]), [1] * (len(mine) + 1), 3.0, bar
                ).outliers
                planted.append(flags[-1])
                own.extend(flags[:-1])
    assert len(planted) >= 100
    assert np.mean(planted) >= 0.9, np.mean(planted)
    assert np.mean(own) <= 0.1, np.mean(own)


@pytest.fixture(scope="module")
def enrolled_checkpoint(tmp_path_factory, random_checkpoint):
    """The random checkpoint with a calibration whose mono outlier bar is fitted (as
    `python -m model calibrate` does) on takes of the synthetic voices."""
    from model.embedding import Embedder
    from model.evaluation.enrolment_fit import fit_enrolment
    from model.evaluation.lengths import Query
    from model.evaluation.openset import fit_calibration
    from tests.support.live import render, singer_name
    from tests.support.synth import VOICES

    ckpt = shutil.copy(random_checkpoint, tmp_path_factory.mktemp("enrolled") / "cross.pt")
    emb = Embedder.from_checkpoint(ckpt, device="cpu")
    takes = {
        singer_name(v): [
            emb.embed_audio(render(v, "mono", 40 + s), "mono").vector for s in range(5)
        ]
        for v in range(len(VOICES))
    }
    queries = [Query(x, s, 2) for s, xs in takes.items() for x in xs[3:]]
    tracks = [(x, s) for s, xs in takes.items() for x in xs[:3]]
    fitted = fit_calibration(
        {("mono", "mono"): (queries, np.stack([x for x, _ in tracks]), [s for _, s in tracks])},
        emb.checkpoint_id,
        {"dataset": "synthetic"},
        norm="raw",
    )
    bar = fit_enrolment(takes, 0.02)
    cal = replace(fitted, enrolment={"mono": bar})
    cal.save(calibration_path(ckpt, emb.checkpoint_id))
    return ckpt, bar


def test_singer_page_flags_the_planted_track_and_identify_can_leave_it_out(
    enrolled_checkpoint, tmp_path_factory, tmp_path
):
    ckpt, bar = enrolled_checkpoint
    assert isinstance(bar, EnrolmentCalibration) and bar.detection > 0.8
    settings = live_settings(tmp_path_factory, ckpt, exclude_outliers=True)
    with LiveServer(settings) as srv, srv.client() as c:
        ids = [add_clip(c, make_clip(tmp_path, 0, "mono", s))["id"] for s in range(1, 6)]
        for s in (1, 2, 3):
            add_clip(c, make_clip(tmp_path, 1, "mono", s))
        # a take of voice 2 filed under voice 0's singer: a wrong label
        wrong = make_clip(tmp_path, 2, "mono", 7)
        r = upload(
            c,
            "/tracks",
            wrong.path,
            headers={"X-API-Key": API_KEY},
            singer="singer-0",
            domain="mono",
        )
        assert r.status_code == 201
        planted = r.json()["id"]
        singer_id = r.json()["singer_id"]
        page = c.get(f"/singers/{singer_id}").json()
        (model,) = page["models"]
        assert page["name"] == "singer-0" and model["domain"] == "mono" and model["n_tracks"] == 6
        fits = {t["id"]: t["fit"] for t in model["tracks"]}
        assert [t["id"] for t in model["tracks"] if t["outlier"]] == [planted], fits
        assert {t["id"] for t in model["tracks"]} == {*ids, planted}
        assert model["outlier_bar"] == pytest.approx(bar.outlier_below)
        assert model["outliers_excluded"] is True and model["n_outliers"] == 1
        assert model["voiced_minutes"] > 0 and 0 < model["spread"] < 1
        assert fits[planted] < bar.outlier_below <= min(fits[i] for i in ids)
        # /identify ranks singer-0 by the model of its five own tracks
        body = upload(c, "/identify", make_clip(tmp_path, 0, "mono", 9).path, models="mono").json()
        best = body["singers"][0]
        assert best["name"] == "singer-0" and best["n_tracks"] == 5
        assert c.get("/singers/999999").status_code == 404
        assert c.get("/singers/999999").json()["code"] == "singer_not_found"


def test_indexer_summary_lists_singers_with_outliers(enrolled_checkpoint, tmp_path):
    from catalog import Catalog
    from indexer.run import check_enrolment, index_source
    from model.calibration import find_calibration
    from model.checkpoint import checkpoint_id
    from model.embedding import Embedder

    ckpt, _ = enrolled_checkpoint
    folder = tmp_path / "songs"
    for s in range(1, 6):
        clip = make_clip(tmp_path, 0, "mono", s)
        (folder / "singer-0").mkdir(parents=True, exist_ok=True)
        shutil.copy(clip.path, folder / "singer-0" / clip.path.name)
    planted = make_clip(tmp_path, 2, "mono", 7)
    shutil.copy(planted.path, folder / "singer-0" / "featured.wav")
    emb = Embedder.from_checkpoint(ckpt, device="cpu")
    with Catalog.open(tmp_path / "index", dim=emb.embed_dim) as cat:
        report = index_source(cat, emb, folder, domain="mono", processes=0)
        cal = find_calibration(ckpt, checkpoint_id(ckpt))
        check_enrolment(cat, report, cal.outlier_bars())
        featured = [t.id for t in cat.iter_tracks() if t.path.endswith("featured.wav")]
    assert report.outliers == {"singer-0": featured}
    assert "singer-0: track" in report.summary() and "GET /singers" in report.summary()
