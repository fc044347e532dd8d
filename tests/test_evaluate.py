"""`python -m model evaluate` end to end on generated audio with a random-weight checkpoint."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from model.__main__ import main as cli
from model.audio import load_audio
from model.embedding import Embedder
from model.evaluation import retrieval_metrics
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
        names, singer_vecs = retrieval_metrics.singer_models(t, [c.singer for c in model])
        truth = np.array([names.index(c.singer) for c in query])
        sid = retrieval_metrics.singer_identification(
            retrieval_metrics.cosine_scores(q, singer_vecs), truth
        )
        rel = np.array([[c.singer == m.singer for m in model] for c in query])
        qbs = retrieval_metrics.query_by_singer(retrieval_metrics.cosine_scores(q, t), rel, k=5)
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
    names, singer_vecs = retrieval_metrics.singer_models(t, [c.singer for c in model])
    truth = np.array([names.index(c.singer) for c in query])
    sid = retrieval_metrics.singer_identification(
        retrieval_metrics.cosine_scores(q, singer_vecs), truth
    )
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


def fused_rows(clips, systems: dict, scenario: str, fusions: list) -> dict:
    """evaluate() of the named systems and fusions in one scenario (paper protocol), rows by
    name; no rendering may fail."""
    result = evaluate(
        clips,
        list(systems.values()),
        names=list(systems),
        scenarios=[scenario],
        all_segments=True,
        fusions=fusions,
    )
    assert not result["failures"]
    return {m["name"]: m for m in result["models"]}


def test_fusion_row_matches_weighted_track_scores(eval_manifest, random_checkpoint, tmp_path):
    """A --fuse row ranks model tracks by w cos_a + (1 - w) cos_b of the two rows' vectors."""
    from model.checkpoint import make_random_checkpoint
    from model.evaluation.score_fusion import Fusion

    other = make_random_checkpoint(tmp_path / "other.pt", seed=1)
    clips = [c for c in read_eval_manifest(eval_manifest) if c.clip_id != "too-short"]
    w = 0.3
    fusions = [Fusion("a", "b", w), Fusion("a", "b", 1.0)]
    rows = fused_rows(clips, {"a": random_checkpoint, "b": other}, "mono2mix", fusions)
    assert list(rows) == ["a", "b", "a+b@0.3", "a+b@1"]
    assert rows["a+b@0.3"]["model_type"] == "fusion"
    # weight 1 is the first system alone, figure for figure
    assert rows["a+b@1"]["scenarios"] == rows["a"]["scenarios"]

    def vectors(path, role, domain):
        emb = Embedder.from_checkpoint(path, "cpu")
        out = []
        for c in [c for c in clips if c.role == role]:
            if domain == "mono":
                src = c.mono_path or c.vocal_path
                out.append(emb.embed_file(src, "mono", all_segments=True).vector)
            elif c.mixed_path:
                out.append(emb.embed_file(c.mixed_path, "mixed", all_segments=True).vector)
            else:
                y = nominal_mix(load_audio(c.vocal_path), load_audio(c.accompaniment_path))
                out.append(emb.embed_audio(y, "mixed", all_segments=True).vector)
        return np.stack(out)

    query = [c for c in clips if c.role == "query" and (c.mono_path or c.vocal_path)]
    model = [c for c in clips if c.role == "model"]
    scores = w * retrieval_metrics.cosine_scores(
        vectors(random_checkpoint, "query", "mono"), vectors(random_checkpoint, "model", "mixed")
    ) + (1 - w) * retrieval_metrics.cosine_scores(
        vectors(other, "query", "mono"), vectors(other, "model", "mixed")
    )
    rel = np.array([[q.singer == m.singer for m in model] for q in query])
    direct = retrieval_metrics.query_by_singer(scores, rel, k=5)
    got = rows["a+b@0.3"]["scenarios"]["mono2mix"]["query_by_singer"]
    assert got["mAP"] == pytest.approx(direct["mAP"], abs=1e-4)
    assert got["precision@5"] == pytest.approx(direct["precision@5"], abs=1e-4)
    assert rows["a+b@0.3"]["scenarios"] != rows["a"]["scenarios"]


def test_fusion_needs_two_evaluated_names(eval_manifest, random_checkpoint):
    from model.evaluation.score_fusion import Fusion

    with pytest.raises(ValueError, match="weight"):
        Fusion("a", "b", 1.5)
    with pytest.raises(ValueError, match="fuse two of the named checkpoints"):
        evaluate(
            read_eval_manifest(eval_manifest),
            [random_checkpoint],
            names=["a"],
            fusions=[Fusion("a", "teacher", 0.5)],
        )


def test_teacher_is_evaluated_beside_a_checkpoint(eval_manifest, random_checkpoint):
    """The distillation teacher runs through the same runner (and its cache keys) as a
    checkpoint, and fuses with it."""
    pytest.importorskip("resemblyzer", reason="the teacher's weights ship in resemblyzer")
    from model.evaluation.score_fusion import Fusion
    from model.evaluation.teacher_eval import TEACHER_SPEC

    clips = [c for c in read_eval_manifest(eval_manifest) if c.clip_id != "too-short"]
    systems = {"cross": random_checkpoint, "teacher": TEACHER_SPEC}
    rows = fused_rows(clips, systems, "mono2mono", [Fusion("cross", "teacher", 0.0)])
    assert rows["teacher"]["model_type"] == "teacher"
    assert rows["teacher"]["scenarios"]["mono2mono"]["singer_id"]["n_queries"] == 7
    # weight 0 is the teacher alone
    assert rows["cross+teacher@0"]["scenarios"] == rows["teacher"]["scenarios"]


def test_acappella_eer_cli_with_a_fusion(tmp_path, random_checkpoint):
    """`evaluate --recipe acappella`: each row's EER equals one computed from the take halves
    directly, and a --fuse row scores the fused halves of the takes both systems could use."""
    from model.checkpoint import make_random_checkpoint
    from model.evaluation.verification import acappella_eer, halves_eer, take_halves
    from model.training.datasets import acappella_rows, split_acappella
    from model.vectors import fuse

    root = tmp_path / "acappella"
    lines = ["file,source,original_path,duration_s,original_rate"]
    for i in range(15):
        write(root / f"take_{i:02d}.wav", sing(VOICES[i % len(VOICES)], 8.0, seed=i))
        lines.append(f"take_{i:02d}.wav,synthetic,x,8.0,22050")
    (root / "index.csv").write_text("\n".join(lines) + "\n")
    other = make_random_checkpoint(tmp_path / "other.pt", seed=1)
    out = tmp_path / "out"
    args = f"--checkpoint {random_checkpoint} --checkpoint {other} --name a --name b"
    args += f" --fuse a b 0.4 --recipe acappella --data-root {root} --out {out}"
    rc = cli(["evaluate", *args.split()])
    assert rc == 0
    got = {m["name"]: m for m in json.loads((out / "acappella_eer.json").read_text())["models"]}
    assert list(got) == ["a", "b", "a+b@0.4"]
    held = [r.path for r in split_acappella(acappella_rows(root))[1]]
    assert got["a"]["n_takes"] == len(held) == 3
    a = Embedder.from_checkpoint(random_checkpoint, "cpu")
    b = Embedder.from_checkpoint(other, "cpu")
    assert got["a"]["eer"] == pytest.approx(acappella_eer(a, held)["eer"], abs=1e-9)
    ha, hb = take_halves(a, held)[0], take_halves(b, held)[0]
    fused = [(fuse(ha[p][0], hb[p][0], 0.4), fuse(ha[p][1], hb[p][1], 0.4)) for p in held]
    assert got["a+b@0.4"]["eer"] == pytest.approx(halves_eer(fused)["eer"], abs=1e-9)

    # Cross-domain: each second half mixed over an instrumental beside the takes, mixed branch.
    bgs = [write(tmp_path / "instrumental" / f"bg{i}.wav", backing(20.0, seed=i)) for i in (0, 1)]
    rc = cli(["evaluate", *args.split(), "--cross-domain-snr", "10"])
    assert rc == 0
    report = json.loads((out / "acappella_eer.json").read_text())
    assert report["second_half"] == "mixed at 10 dB over 2 instrumentals"
    cross = report["models"][0]
    # the reference: halves by hand, second half over the middle of background i mod 2
    vecs = []
    for i, p in enumerate(held):
        y, bg = load_audio(p), load_audio(bgs[i % 2])
        first, second = y[: len(y) // 2], y[len(y) // 2 :]
        off = (len(bg) - len(second)) // 2
        mixed = mix_at_snr(second, bg[off : off + len(second)], 10.0)
        vecs.append((a.embed_audio(first, "mono").vector, a.embed_audio(mixed, "mixed").vector))
    assert cross["eer"] == pytest.approx(halves_eer(vecs)["eer"], abs=1e-9)
    hx = take_halves(a, held, bgs, 10.0)[0]
    for (first, second), p in zip(vecs, held, strict=True):
        np.testing.assert_allclose(hx[p][0], first, atol=1e-6)
        np.testing.assert_allclose(hx[p][1], second, atol=1e-6)
