"""`python -m model evaluate` end to end on generated audio with a random-weight checkpoint."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from model.__main__ import main as cli
from model.audio import load_audio
from model.embedding import Embedder
from model.evaluation import metrics
from model.evaluation.gmm_ubm import GmmUbmConfig
from model.evaluation.runner import evaluate
from model.evaluation.splits import read_eval_manifest
from model.manifest import ManifestRow, write_manifest
from model.mixing import measured_snr_db, mix_at_snr, nominal_mix
from tests.support.synth import VOICES, backing, sing, write

pytestmark = pytest.mark.slow

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def eval_manifest(tmp_path_factory):
    """3 singers x 2 songs (model / query) x 2 takes as stems, a mono+mixed file pair, and a
    clip too short to embed."""
    root = tmp_path_factory.mktemp("evalset")
    rows = []
    for s, voice in enumerate(VOICES[:3]):
        for song, role in enumerate(("model", "query")):
            for take in range(2):
                name = f"s{s}_{song}_{take}"
                seed = 100 * s + 10 * song + take
                write(root / "vocals" / f"{name}.wav", sing(voice, 3.4, seed))
                write(root / "backing" / f"{name}.wav", backing(3.4, seed))
                rows.append(
                    ManifestRow(
                        singer=f"singer{s}",
                        role=role,
                        song=f"s{s}_{song}",
                        external_id=name,
                        vocal_path=f"vocals/{name}.wav",
                        accompaniment_path=f"backing/{name}.wav",
                    )
                )
    vox, acc = sing(VOICES[0], 3.4, 999), backing(3.4, 999)
    write(root / "pair" / "vox.wav", vox)
    write(root / "pair" / "mix.wav", nominal_mix(vox, acc))
    for path, domain in (("pair/vox.wav", "mono"), ("pair/mix.wav", "mixed")):
        rows.append(
            ManifestRow(
                singer="singer0", role="query", path=path, domain=domain, external_id="pair"
            )
        )
    write(root / "short" / "vox.wav", sing(VOICES[1], 1.0, 5))
    rows.append(
        ManifestRow(
            singer="singer1",
            role="query",
            path="short/vox.wav",
            domain="mono",
            external_id="too-short",
        )
    )
    return write_manifest(root / "eval.csv", rows)


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory, eval_manifest, random_checkpoint):
    out = tmp_path_factory.mktemp("out")
    cache = tmp_path_factory.mktemp("cache")
    rc = cli(
        [
            "evaluate",
            "--checkpoint",
            str(random_checkpoint),
            "--manifest",
            str(eval_manifest),
            "--gmm",
            "--gmm-components",
            "8",
            "--snr-sweep",
            "--snr",
            "-5",
            "5",
            "--tsne",
            "--all-segments",  # the paper's protocol: synthetic clips at -5 dB stay usable
            "--cache-dir",
            str(cache),
            "--out",
            str(out),
        ]
    )
    return rc, out, cache


def test_cli_writes_json_markdown_and_pngs(cli_run):
    rc, out, _ = cli_run
    assert rc == 1  # the too-short clip was skipped, and the exit status says so
    result = json.loads((out / "results.json").read_text())
    assert [m["name"] for m in result["models"]] == ["random-cross", "gmm-ubm"]
    assert result["dataset"]["n_query_clips"] == 8 and result["dataset"]["n_model_clips"] == 6
    assert {f["clip"] for f in result["failures"]} == {"too-short"}
    emb, gmm = result["models"]
    assert set(emb["scenarios"]) == {"mono2mono", "mix2mix", "mono2mix"}
    for figs in emb["scenarios"].values():
        assert 0.0 <= figs["singer_id"]["top1"] <= figs["singer_id"]["top5"] <= 1.0
        assert figs["singer_id"]["top5"] == 1.0  # only 3 singers
        qbs = figs["query_by_singer"]
        assert 0.0 < qbs["mAP"] <= 1.0 and 0.0 <= qbs["precision@5"] <= 1.0
        assert qbs["n_database"] == 6
    assert emb["scenarios"]["mono2mono"]["singer_id"]["n_queries"] == 7  # 6 stems + the pair
    assert set(gmm["scenarios"]) == {"mono2mono", "mix2mix"}
    assert gmm["ubm"]["mono2mono"]["n_components"] == 8
    assert set(emb["snr_sweep"]) == {"-5", "5"}
    assert set(emb["snr_sweep"]["5"]) == {"mix2mix", "mono2mix"}
    # The pair has no stems: it drops out of the SNR sweep but not of the nominal scenarios.
    assert emb["snr_sweep"]["5"]["mix2mix"]["singer_id"]["n_queries"] == 6
    assert emb["scenarios"]["mix2mix"]["singer_id"]["n_queries"] == 7
    md = (out / "results.md").read_text()
    assert "| random-cross |" in md and "| gmm-ubm |" in md and "too-short" in md
    for name in ("tsne-random-cross.png", "snr-sweep.png"):
        assert (out / name).read_bytes()[:8] == PNG_MAGIC


def result_protocol(out) -> str:
    return json.loads((out / "results.json").read_text())["settings"]["protocol"]


def test_figures_match_a_direct_computation(cli_run, eval_manifest, random_checkpoint):
    """Recompute Mono2Mono and Mix2Mix from file paths with Embedder + metrics directly."""
    _, out, _ = cli_run
    result = json.loads((out / "results.json").read_text())["models"][0]["scenarios"]
    emb = Embedder.from_checkpoint(random_checkpoint, "cpu")
    clips = [c for c in read_eval_manifest(eval_manifest) if c.clip_id != "too-short"]

    assert result_protocol(out) == "all segments (paper)"

    def vector(clip, domain):
        if domain == "mono":
            return emb.embed_file(
                clip.mono_path or clip.vocal_path, "mono", all_segments=True
            ).vector
        if clip.mixed_path:
            return emb.embed_file(clip.mixed_path, "mixed", all_segments=True).vector
        y = nominal_mix(load_audio(clip.vocal_path), load_audio(clip.accompaniment_path))
        return emb.embed_audio(y, "mixed", all_segments=True).vector

    for scenario, domain in (("mono2mono", "mono"), ("mix2mix", "mixed")):
        model = [c for c in clips if c.role == "model"]
        query = [c for c in clips if c.role == "query"]
        t = np.stack([vector(c, domain) for c in model])
        q = np.stack([vector(c, domain) for c in query])
        names, singer_vecs = metrics.singer_models(t, [c.singer for c in model])
        truth = np.array([names.index(c.singer) for c in query])
        sid = metrics.singer_identification(metrics.cosine_scores(q, singer_vecs), truth)
        rel = np.array([[c.singer == m.singer for m in model] for c in query])
        qbs = metrics.query_by_singer(metrics.cosine_scores(q, t), rel, k=5)
        assert result[scenario]["singer_id"]["top1"] == pytest.approx(sid["top1"], abs=1e-9)
        assert result[scenario]["query_by_singer"]["mAP"] == pytest.approx(qbs["mAP"], abs=1e-4)
        assert result[scenario]["query_by_singer"]["precision@5"] == pytest.approx(
            qbs["precision@5"], abs=1e-4
        )


def test_rerun_is_served_from_the_cache(cli_run, eval_manifest, random_checkpoint):
    _, out, cache = cli_run
    first = json.loads((out / "results.json").read_text())
    clips = read_eval_manifest(eval_manifest)
    gmm = replace(GmmUbmConfig(), n_components=8)
    again = evaluate(
        clips, [random_checkpoint], gmm=gmm, snr_sweep=[-5, 5], cache_dir=cache, all_segments=True
    )
    for a, b in zip(first["models"], again["models"], strict=True):
        assert a["scenarios"] == b["scenarios"]
    # 13 usable clips x (mono, mixed) + 12 with stems x 2 ratios; only the short clip misses.
    assert again["models"][0]["cache"] == {"hits": 13 * 2 + 12 * 2, "misses": 1}
    # With a skipped file the baseline's figures are recomputed, never frozen in the cache;
    # without one, the second run reuses them.
    assert "cached" not in again["models"][1]
    usable = [c for c in clips if c.clip_id != "too-short"]
    gmm_only = [evaluate(usable, [], gmm=gmm, cache_dir=cache)["models"][0] for _ in range(2)]
    assert "cached" not in gmm_only[0] and gmm_only[1]["cached"] is True
    assert gmm_only[1]["scenarios"] == gmm_only[0]["scenarios"] == first["models"][1]["scenarios"]


def test_default_protocol_is_the_service_pipeline(eval_manifest, random_checkpoint):
    """Without --all-segments every clip is embedded exactly as an upload of it would be."""
    clips = [c for c in read_eval_manifest(eval_manifest) if c.clip_id != "too-short"]
    result = evaluate(clips, [random_checkpoint], scenarios=["mono2mono"])
    assert result["settings"]["protocol"] == "service pipeline" and not result["failures"]
    emb = Embedder.from_checkpoint(random_checkpoint, "cpu")

    def vectors(role):
        mono = [c for c in clips if c.role == role and (c.mono_path or c.vocal_path)]
        v = [emb.embed_file(c.mono_path or c.vocal_path, "mono").vector for c in mono]
        return np.stack(v), mono

    t, model = vectors("model")
    q, query = vectors("query")
    names, singer_vecs = metrics.singer_models(t, [c.singer for c in model])
    truth = np.array([names.index(c.singer) for c in query])
    sid = metrics.singer_identification(metrics.cosine_scores(q, singer_vecs), truth)
    figs = result["models"][0]["scenarios"]["mono2mono"]["singer_id"]
    assert figs["n_queries"] == len(query)
    assert figs["top1"] == pytest.approx(sid["top1"], abs=1e-9)


def test_mix_at_snr_sets_the_ratio_and_keeps_the_level():
    rng = np.random.default_rng(0)
    v = (0.3 * rng.standard_normal(22050)).astype(np.float32)
    a = (0.05 * rng.standard_normal(22050)).astype(np.float32)
    nominal = nominal_mix(v, a)
    np.testing.assert_allclose(nominal, (v + a) / 2, rtol=1e-6)
    for snr in (-10.0, 0.0, 7.5):
        mix = mix_at_snr(v, a, snr)
        gain = np.sqrt(
            np.mean(mix.astype(np.float64) ** 2) / np.mean(nominal.astype(np.float64) ** 2)
        )
        assert gain == pytest.approx(1.0, rel=1e-5)
        # The mix is gv * v + ga * a: recover both gains and measure the ratio they make.
        (gv, ga), *_ = np.linalg.lstsq(np.stack([v, a], axis=1).astype(np.float64), mix, rcond=None)
        assert measured_snr_db(gv * v, ga * a) == pytest.approx(snr, abs=1e-3)


def test_singers_filter_restricts_queries_and_candidates(
    tmp_path, eval_manifest, random_checkpoint
):
    out = tmp_path / "two"
    rc = cli(
        [
            "evaluate",
            "--checkpoint",
            str(random_checkpoint),
            "--manifest",
            str(eval_manifest),
            "--singers",
            "singer0,singer2",
            "--scenarios",
            "mono2mono",
            "--no-cache",
            "--out",
            str(out),
        ]
    )
    assert rc == 0  # the too-short clip belongs to singer1: nothing is skipped
    result = json.loads((out / "results.json").read_text())
    assert result["dataset"]["n_singers"] == 2
    sid = result["models"][0]["scenarios"]["mono2mono"]["singer_id"]
    assert sid["n_queries"] == 5  # singer0: 2 stem queries + the pair; singer2: 2 stem queries
    assert (
        cli(
            [
                "evaluate",
                "--checkpoint",
                str(random_checkpoint),
                "--manifest",
                str(eval_manifest),
                "--singers",
                "nobody",
                "--out",
                str(out),
            ]
        )
        == 2
    )
