"""Each domain pair of a calibration on its own score kind: `calibrate --norm auto` keeps, per
pair, the score (raw cosine or s-norm) that identifies more of its known calibration queries
at the 1 % target; the file records it and the service scores that pair with it."""

from __future__ import annotations

import numpy as np
import pytest

from catalog import Catalog
from model.calibration import FIRM_TARGET_FA, Calibration, PairCalibration, Tier
from model.evaluation.lengths import Query
from model.evaluation.openset import fit_pair, score_queries
from model.vectors import l2_normalize
from tests.support.tracks import add_tracks

Data = tuple[list[Query], np.ndarray, list[str], tuple[np.ndarray, np.ndarray]]


def _queries(rng, hub: bool) -> Data:
    """Six catalogue singers (3 tracks each), their queries and impostors', of 1 and 4
    segments, and a cohort of 40 voices like the impostors. `hub`: the impostors share a
    centre, and one singer's tracks sit near it, so that every impostor scores high against
    that singer by raw cosine (what s-norm corrects)."""
    dim, spread = 16, 0.5 if hub else 0.3
    centres = l2_normalize(rng.normal(size=(6, dim)))
    common = l2_normalize(rng.normal(size=dim))
    if hub:
        centres[0] = l2_normalize(centres[0] + 2.0 * common)
    t_vecs = l2_normalize(np.repeat(centres, 3, axis=0) + 0.2 * rng.normal(size=(18, dim)))
    t_singers = [f"s{k}" for k in range(6) for _ in range(3)]

    def impostor_centre() -> np.ndarray:
        return common if hub else l2_normalize(rng.normal(size=dim))

    queries = []
    for n in (1, 4):
        noise = spread / np.sqrt(n)
        for k in range(240):
            v = l2_normalize(centres[k % 6] + noise * rng.normal(size=dim))
            queries.append(Query(v, f"s{k % 6}", n))
        for k in range(400):
            v = impostor_centre() + 0.5 * rng.normal(size=dim) + noise * rng.normal(size=dim)
            queries.append(Query(l2_normalize(v), f"zed{k % 8}", n))
    voices = np.stack([impostor_centre() for _ in range(40)])
    cohort = l2_normalize(voices + 0.5 * rng.normal(size=(40, dim)))
    return queries, t_vecs, t_singers, (cohort, cohort)


def _identified(data: Data, pair: PairCalibration) -> float:
    """Brute force: the share of known queries whose best singer, by `pair.norm`'s score
    against the whole catalogue, is right and above its length tier's 1 % threshold."""
    queries, t_vecs, t_singers, cohort = data
    vecs = np.stack([q.vector for q in queries])
    sc = score_queries(vecs, [q.singer for q in queries], t_vecs, t_singers, cohort=cohort)
    scores = sc.raw if pair.norm == "raw" else sc.snormed
    hits = []
    for row, q, truth in zip(scores, queries, sc.truth, strict=True):
        if truth < 0:
            continue
        tier = pair.tier(q.n_segments)
        best = int(np.argmax(row))
        bar = tier.threshold(FIRM_TARGET_FA, tier.n_candidates)
        hits.append(best == truth and row[best] > bar)
    return float(np.mean(hits))


@pytest.mark.parametrize("hub", [False, True])
def test_auto_keeps_the_score_that_identifies_more(hub):
    data = _queries(np.random.default_rng(7), hub)
    queries, t_vecs, t_singers, cohort = data

    def fit(norm: str) -> PairCalibration:
        return fit_pair(queries, t_vecs, t_singers, norm, cohort=cohort, tiers=(1, 3))

    fits = {kind: fit(kind) for kind in ("raw", "snorm")}
    rates = {kind: _identified(data, p) for kind, p in fits.items()}
    auto = fit("auto")
    assert rates["raw"] != rates["snorm"]
    best = max(rates, key=lambda k: rates[k])
    assert auto.norm == best
    assert auto == fits[best]  # the same fit as asking for that score
    # raw cosine lets the hub's impostors in, and s-norm against the cohort keeps them out;
    # without a hub, the cohort only adds noise
    assert best == ("snorm" if hub else "raw")


def _pair(norm: str | None) -> PairCalibration:
    tier = Tier((0.0, 1.0), (10.0, 11.0), 6, 1, 1)
    return PairCalibration((1.0, 0.0, 0.0), 0.0, (tier,), norm=norm)


def test_each_pair_reads_its_own_score_kind_back_and_old_files_the_files():
    cal = Calibration(
        "ck", "snorm", 3, {"mono->mixed": _pair("raw"), "mono->mono": _pair(None)}, {}
    )
    back = Calibration.from_dict(cal.to_dict())
    assert back.pairs["mono->mixed"].norm == "raw"
    assert back.norm_of("mono", "mixed") == "raw"
    # a pair without a kind of its own (a file before per-pair kinds) reads the file's
    assert back.pairs["mono->mono"].norm is None
    assert back.norm_of("mono", "mono") == "snorm"
    assert back.norms() == {"mono->mixed": "raw", "mono->mono": "snorm"}
    # version 4 names a pair's own score; a version-3 file (none named) still reads
    assert cal.to_dict()["version"] == 4
    old = cal.to_dict()
    old["version"] = 3
    for pair in old["pairs"].values():
        pair.pop("norm", None)
    assert Calibration.from_dict(old).norms() == {"mono->mixed": "snorm", "mono->mono": "snorm"}


@pytest.mark.parametrize("norm", ["raw", "snorm"])
def test_the_service_scores_a_pair_with_its_own_kind(tmp_path, norm):
    from service.openset import _scores

    rng = np.random.default_rng(2)
    vecs = l2_normalize(rng.normal(size=(12, 8))).astype(np.float32)
    singers = [f"s{i % 4}" for i in range(12)]
    q = rng.normal(size=8).astype(np.float32)
    cal = Calibration("ck", "snorm", 3, {"mono->mixed": _pair(norm)}, {})
    with Catalog.open(tmp_path / "cat", dim=8) as cat:
        add_tracks(cat, vecs, singers, "mixed")
        hits = cat.search_singers(q, 4, "mixed")
        got = _scores(cat, q, hits, "mono", "mixed", cal)
    ref = score_queries(l2_normalize(q)[None], ["query"], vecs, singers, top_k=3)
    table = ref.raw if norm == "raw" else ref.snormed
    want = [table[0, ref.names.index(h.singer.name)] for h in hits]
    assert got == pytest.approx(want, abs=1e-5)
    if norm == "snorm":  # s-norm is not the cosine: the kind really changed the scores
        assert got != pytest.approx([h.score for h in hits], abs=1e-3)


def test_the_protocol_with_auto_reports_the_kind_it_kept():
    """`python -m model evaluate --open-set --norm auto`: each scenario's figures are those
    of asking for the kind `fit_pair` keeps, and say which it was."""
    from model.evaluation.openset import OpenSetConfig, open_set_scenario
    from model.evaluation.splits import EvalClip

    rng = np.random.default_rng(4)
    centres = {s: rng.normal(size=16) for s in "abcdefgh"}
    clips = [
        EvalClip(f"{s}{i}", s, role, song=f"{s}-{i // 2}")
        for s in "abcdefgh"
        for i, role in enumerate(["model"] * 4 + ["query"] * 6)
    ]
    vectors = {
        i: l2_normalize(centres[c.singer] + 0.6 * rng.normal(size=16)) for i, c in enumerate(clips)
    }
    runs = {}
    for norm in ("auto", "raw", "snorm"):
        cfg = OpenSetConfig(impostors=("g", "h"), norm=norm)
        runs[norm] = open_set_scenario(clips, vectors, vectors, cfg)[0]
    kept = runs["auto"]["norm"]
    assert kept in ("raw", "snorm") and runs["auto"]["calibration"]["norm"] == kept
    assert runs["raw"]["clips"] != runs["snorm"]["clips"]  # the kind shows in the figures
    assert runs["auto"]["clips"] == runs[kept]["clips"]
    assert runs["auto"]["calibration"] == runs[kept]["calibration"]
    assert runs["raw"]["norm"] == "raw" and runs["snorm"]["norm"] == "snorm"
