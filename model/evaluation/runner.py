"""`evaluate(...)`: the paper's section 4 on an evaluation set, for checkpoints and the baseline.

For every checkpoint and every scenario (query domain -> target domain):
- singer identification (4.2): track vector = mean of segment vectors (L2-normalised), singer
  model = normalised mean of that singer's model-track vectors, cosine similarity; top-1/top-5.
- query-by-singer (4.3): every query ranks all model tracks of the target domain; precision and
  recall at k, mean average precision.
The GMM-UBM baseline gives the same figures for the in-domain scenarios (its UBM is fitted on
the target domain's model tracks). The SNR sweep re-mixes every mixed rendering that has stems
at each vocal-to-accompaniment ratio and repeats the scenarios that involve mixed audio.

A query whose singer has no model track in the target domain cannot be answered; it is left out
of that scenario and counted in `n_queries_without_model`. A clip that cannot be decoded or is
shorter than one segment is skipped in the renderings it fails in and listed in `failures`; a
rendering that fails for one system (a checkpoint or the baseline) is left out for all of them,
so every row of the table scores the same queries against the same models.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model.audio import SAMPLE_RATE, load_audio
from model.concurrency import completed_in_threads
from model.domains import DOMAINS, SCENARIOS
from model.embedding import Embedder
from model.errors import AudioError
from model.evaluation import retrieval_metrics
from model.evaluation.cache import ArrayCache, file_identity, namespace_for
from model.evaluation.gmm_ubm import GmmUbm, GmmUbmConfig, mfcc_frames
from model.evaluation.openset import OpenSetConfig, open_set_curve, open_set_scenario
from model.evaluation.openset_figures import reliability_diagram
from model.evaluation.score_fusion import Fusion, fuse_stores
from model.evaluation.splits import EvalClip, split_summary
from model.mixing import mix_at_snr, nominal_mix
from model.track_embedding import track_vector

log = logging.getLogger(__name__)

#: Vocal-to-accompaniment ratios of the default SNR sweep, in dB.
DEFAULT_SNRS_DB: tuple[float, ...] = (-10.0, -5.0, 0.0, 5.0, 10.0)
_CACHE_VERSION = 2  # 2: entries hold the segment embeddings (queries of any length)


@dataclass(frozen=True)
class View:
    """One rendering of a clip: a domain, and for re-mixes the vocal-to-accompaniment ratio."""

    domain: str
    snr_db: float | None = None

    @property
    def label(self) -> str:
        return self.domain if self.snr_db is None else f"{self.domain}@{self.snr_db:+g}dB"


# Per rendering, clip index -> an array (track vectors, segment embeddings, MFCC frames).
Store = dict[View, dict[int, np.ndarray]]
# (clip index, rendering label) -> why the rendering could not be used.
Failures = dict[tuple[int, str], str]


def _sources(clip: EvalClip, view: View) -> list[str]:
    """The files a rendering is made of: [file] or [vocals, accompaniment]."""
    if view.domain == "mono":
        return [clip.mono_path or clip.vocal_path]  # type: ignore[list-item]
    if view.snr_db is None and clip.mixed_path:
        return [clip.mixed_path]
    return [clip.vocal_path, clip.accompaniment_path]  # type: ignore[list-item]


def _available(clip: EvalClip, view: View) -> bool:
    return clip.has_stems if view.snr_db is not None else clip.has(view.domain)


def _render(clip: EvalClip, views: Sequence[View], sr: int) -> dict[View, np.ndarray | AudioError]:
    """Decode each needed file once and build the renderings (float32 (samples,) at sr)."""
    files: dict[str, np.ndarray | AudioError] = {}
    out: dict[View, np.ndarray | AudioError] = {}
    for view in views:
        for path in _sources(clip, view):
            if path not in files:
                try:
                    files[path] = load_audio(path, sr)
                except AudioError as failed:
                    files[path] = failed
        got = [files[path] for path in _sources(clip, view)]
        ys = [y for y in got if not isinstance(y, AudioError)]
        if len(ys) < len(got):
            out[view] = next(y for y in got if isinstance(y, AudioError))
        elif len(ys) == 1:
            out[view] = ys[0]
        elif view.snr_db is None:
            out[view] = nominal_mix(ys[0], ys[1])
        else:
            out[view] = mix_at_snr(ys[0], ys[1], view.snr_db)
    return out


def _cache_key(kind: str, clip: EvalClip, view: View, **extra: object) -> str:
    """Cache key of one clip's rendering: its source files' identities, the view, `extra`."""
    return ArrayCache.key(
        {
            "v": _CACHE_VERSION,
            "kind": kind,
            "view": [view.domain, view.snr_db],
            "files": [file_identity(p) for p in _sources(clip, view)],
            "mixed_from_file": view.snr_db is None and bool(clip.mixed_path),
            **extra,
        }
    )


class _Model:
    """A checkpoint under evaluation: its embedder, cache and collected track vectors."""

    def __init__(
        self,
        name: str,
        path: Path,
        embedder: Embedder,
        cache_root: str | Path | None,
        all_segments: bool,
    ):
        self.name = name
        self.path = path
        self.embedder = embedder
        self.cache = ArrayCache(cache_root, f"emb-{embedder.checkpoint_id}")
        self.all_segments = all_segments
        self.vectors: dict[View, dict[int, np.ndarray]] = {}
        # per view, clip index -> its segment embeddings (n_segments, dim), in time order
        self.segments: dict[View, dict[int, np.ndarray]] = {}

    def key(self, clip: EvalClip, view: View) -> str:
        # The service pipeline's vectors depend on the voice detector too.
        detector = self.embedder.detector
        selection = (
            "all-segments"
            if self.all_segments
            else f"voice-{detector.detector_id}"
            if detector is not None
            else "energy-vad"
        )
        return _cache_key("track-vector", clip, view, selection=selection)


class _Mfcc:
    """MFCC frames per clip and rendering for the GMM-UBM baseline, cached like embeddings."""

    def __init__(self, cfg: GmmUbmConfig, sr: int, cache_root: str | Path | None):
        self.cfg = cfg
        self.sr = sr
        front_end = {
            k: v
            for k, v in cfg.to_dict().items()
            if k in ("n_mfcc", "n_mels", "n_fft", "hop_length", "frame_top_db")
        }
        self.cache = ArrayCache(cache_root, "mfcc-" + namespace_for({**front_end, "sr": sr}))
        self.frames: dict[View, dict[int, np.ndarray]] = {}

    def key(self, clip: EvalClip, view: View) -> str:
        return _cache_key("mfcc", clip, view)


def evaluate(
    clips: Sequence[EvalClip],
    checkpoints: Sequence[str | Path] = (),
    *,
    names: Sequence[str] | None = None,
    scenarios: Sequence[str] = tuple(SCENARIOS),
    gmm: GmmUbmConfig | None = None,
    snr_sweep: Sequence[float] | None = None,
    tsne: bool = False,
    plot_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
    all_segments: bool = False,
    k: int = 5,
    device: str | None = None,
    workers: int = 1,
    progress: bool = False,
    dataset: str = "",
    open_set: OpenSetConfig | None = None,
    fusions: Sequence[Fusion] = (),
) -> dict:
    """Evaluate checkpoints (and optionally the GMM-UBM baseline) on an evaluation set.

    clips: from `splits.mir1k_split` or `splits.read_eval_manifest`. names: one label per
    checkpoint (default: file stems). gmm: baseline settings, None to skip it. snr_sweep:
    ratios in dB, None to skip. tsne / plot_dir: write `tsne-<name>.png` (and `snr-sweep.png`)
    there. cache_dir: None disables the cache. all_segments: the paper's protocol, every full
    segment embedded; default False: the service's pipeline (`Embedder.embed_batch`: the
    voice detector's segment choice, a clip without singing fails like a refused upload).
    workers: decoding threads beside the inference thread (0: decode inline). open_set: add the
    open-set figures of `model.evaluation.openset` (and `det-open-set.png`,
    `reliability-open-set.png` under plot_dir).
    fusions: extra rows, each the track-level score fusion of two named checkpoints
    (`model.evaluation.score_fusion`). Returns the result dict that `report.write_report` turns into
    JSON and Markdown.
    """
    t_start = time.perf_counter()
    unknown = [s for s in scenarios if s not in SCENARIOS]
    if unknown:
        raise ValueError(f"unknown scenarios {unknown}; choose from {list(SCENARIOS)}")
    if not checkpoints and gmm is None:
        raise ValueError("nothing to evaluate: give checkpoints and/or the GMM-UBM baseline")
    if tsne and plot_dir is None:
        raise ValueError("tsne needs plot_dir")
    clips = list(clips)
    names = list(names) if names else _default_names(checkpoints)
    if len(names) != len(checkpoints):
        raise ValueError("give one name per checkpoint")
    for f in fusions:
        f.check(names)

    models = [
        _Model(name, Path(p), _embedder(p, device), cache_dir, all_segments)
        for name, p in zip(names, checkpoints, strict=True)
    ]
    base_domains = sorted({d for s in scenarios for d in SCENARIOS[s]})
    snrs = [float(x) for x in snr_sweep] if snr_sweep else []
    snr_scenarios = [s for s in scenarios if "mixed" in SCENARIOS[s]]
    emb_views = [View(d) for d in base_domains] + [View("mixed", x) for x in snrs if snr_scenarios]
    gmm_scenarios = [s for s in scenarios if SCENARIOS[s][0] == SCENARIOS[s][1]]
    sr = models[0].embedder.features.sample_rate if models else SAMPLE_RATE
    if any(m.embedder.features.sample_rate != sr for m in models):
        raise ValueError("all checkpoints must share one sample rate")
    mfcc = _Mfcc(gmm, sr, cache_dir) if gmm is not None and gmm_scenarios else None
    mfcc_views = [View(SCENARIOS[s][0]) for s in gmm_scenarios] if mfcc else []
    # The baseline depends only on the audio, the split and its settings: a re-run (say, to
    # add a checkpoint to the table) reuses its figures instead of refitting the UBM.
    gmm_key = _gmm_key(clips, mfcc, mfcc_views, k) if mfcc else ""
    gmm_cached = mfcc.cache.get_json(gmm_key) if mfcc else None
    if gmm_cached is not None:
        mfcc_views = []

    failures: dict[tuple[int, str], str] = {}
    t_embed = time.perf_counter()
    for i, clip, rendered in _iter_rendered(
        clips, models, mfcc, emb_views, mfcc_views, sr, workers, progress
    ):
        for view, y in rendered.items():
            if isinstance(y, AudioError):
                failures[(i, view.label)] = str(y)
        _embed_clip(i, clip, rendered, models, emb_views, failures)
        if mfcc is not None:
            _mfcc_clip(i, clip, rendered, mfcc, mfcc_views, failures)
    embed_s = time.perf_counter() - t_embed
    # Every row of the table scores the same clips: a rendering that failed anywhere is dropped.
    for store in [m.vectors for m in models] + ([mfcc.frames] if mfcc else []):
        for view, per_clip in store.items():
            for i in [i for i in per_clip if (i, view.label) in failures]:
                del per_clip[i]

    result: dict = {
        "dataset": {"name": dataset, **split_summary(clips)},
        "settings": {
            "scenarios": list(scenarios),
            "k": k,
            "all_segments": all_segments,
            "protocol": "all segments (paper)" if all_segments else "service pipeline",
            "snr_sweep_db": snrs,
            "gmm_ubm": gmm.to_dict() if gmm else None,
            "singer_model": "L2-normalised mean of L2-normalised model-track vectors",
            "similarity": "cosine",
            "ties": "expected value under random order of tied scores",
        },
        "models": [],
        "failures": [
            {"clip": clips[i].clip_id, "rendering": label, "error": msg}
            for (i, label), msg in sorted(failures.items())
        ],
        "plots": {},
        "timing_s": {"features_and_embeddings": round(embed_s, 2)},
    }
    det: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    rows = [(m.name, _header(m), m.vectors, m.segments) for m in models]
    by_name = {m.name: m for m in models}
    for f in fusions:
        a, b = by_name[f.first], by_name[f.second]
        header = {
            "checkpoint": f"{a.path} + {b.path}",
            "checkpoint_id": f"{a.embedder.checkpoint_id}+{b.embedder.checkpoint_id}",
            "model_type": "fusion",
            "fusion": {"of": [f.first, f.second], "weight": f.weight},
        }
        rows.append((f.name, header, fuse_stores(a.vectors, b.vectors, f.weight), {}))
    for name, header, vectors, segments in rows:
        entry = _embedding_entry(clips, name, header, vectors, scenarios, snrs, snr_scenarios, k)
        if open_set is not None:
            entry["open_set"] = {}
            for s in scenarios:
                q, t = SCENARIOS[s]
                got = open_set_scenario(
                    clips,
                    vectors.get(View(q), {}),
                    vectors.get(View(t), {}),
                    open_set,
                    segments.get(View(q)),  # by query length (not for fusions of two rows)
                )
                entry["open_set"][s] = got[0] if got else None
                if got:
                    det[f"{name} {s}"] = open_set_curve(got[1], got[0]["norm"])
        result["models"].append(entry)
    if open_set is not None:
        result["settings"]["open_set"] = {
            "impostors": list(open_set.impostors),
            "calibration_impostors": list(open_set.calibration_impostors),
            "target_fa": open_set.target_fa,
            "likely_fa": open_set.likely_fa,
            "prior_known": open_set.prior_known,
            "norm": open_set.norm,
        }
    if gmm_cached is not None:
        result["models"].append({**gmm_cached, "cached": True})
    elif mfcc is not None:
        t_gmm = time.perf_counter()
        entry = _gmm_entry(clips, mfcc, gmm_scenarios, k, progress)
        result["timing_s"]["gmm_ubm"] = round(time.perf_counter() - t_gmm, 2)
        if not failures:  # a file that failed to decode must not freeze the figures
            mfcc.cache.put_json(gmm_key, entry)
        result["models"].append(entry)
    if plot_dir is not None:
        result["plots"] = _plots(clips, models, result, Path(plot_dir), tsne)
        if det:
            from model.evaluation.plots import det_curves

            result["plots"]["det"] = str(det_curves(det, Path(plot_dir) / "det-open-set.png"))
            result["plots"]["reliability"] = str(
                reliability_diagram(
                    {
                        f"{m['name']} {s}": f["composed"]["reliability"]
                        for m in result["models"]
                        for s, f in (m.get("open_set") or {}).items()
                        if f and "composed" in f
                    },
                    Path(plot_dir) / "reliability-open-set.png",
                )
            )
    result["timing_s"]["total"] = round(time.perf_counter() - t_start, 2)
    return result


def _header(m: _Model) -> dict:
    """What a checkpoint's row says about the checkpoint."""
    return {
        "checkpoint": str(m.path),
        "checkpoint_id": m.embedder.checkpoint_id,
        "model_type": m.embedder.net.model_type,
        "cache": {"hits": m.cache.hits, "misses": m.cache.misses},
    }


def _embedding_entry(
    clips: Sequence[EvalClip],
    name: str,
    header: dict,
    vectors: Store,
    scenarios: Sequence[str],
    snrs: Sequence[float],
    snr_scenarios: Sequence[str],
    k: int,
) -> dict:
    """One row's figures (a checkpoint's or a fusion's): every scenario, and per SNR the
    scenarios with mixed audio. vectors: {view: {clip index: track vector}}."""
    entry = {
        "name": name,
        "kind": "embedding",
        **header,
        "scenarios": {
            s: _embedding_scenario(clips, vectors, View(q), View(t), k)
            for s, (q, t) in SCENARIOS.items()
            if s in scenarios
        },
    }
    if snrs and snr_scenarios:
        entry["snr_sweep"] = {
            f"{x:g}": {
                s: _embedding_scenario(
                    clips,
                    vectors,
                    _snr_view(SCENARIOS[s][0], x),
                    _snr_view(SCENARIOS[s][1], x),
                    k,
                )
                for s in snr_scenarios
            }
            for x in snrs
        }
    return entry


def _embedder(spec: str | Path, device: str | None) -> Embedder:
    """A checkpoint's Embedder, or the distillation teacher for `teacher_eval.TEACHER_SPEC`."""
    from model.evaluation.teacher_eval import TEACHER_SPEC, TeacherEmbedder

    if str(spec) == TEACHER_SPEC:
        return TeacherEmbedder(device)
    return Embedder.from_checkpoint(spec, device)


def _default_names(checkpoints: Sequence[str | Path]) -> list[str]:
    names: list[str] = []
    for p in checkpoints:
        stem = Path(p).stem
        names.append(stem if stem not in names else f"{stem}-{len(names)}")
    return names


def _snr_view(domain: str, snr_db: float) -> View:
    return View(domain, snr_db if domain == "mixed" else None)


def _iter_rendered(
    clips: Sequence[EvalClip],
    models: Sequence[_Model],
    mfcc: _Mfcc | None,
    emb_views: Sequence[View],
    mfcc_views: Sequence[View],
    sr: int,
    workers: int,
    progress: bool,
) -> Iterator[tuple[int, EvalClip, dict]]:
    """Yield (index, clip, arrays) in completion order. arrays maps (model name or "mfcc",
    view) to the cached arrays or None, and each view that had to be rendered to its waveform
    (float32 (samples,) at sr) or its AudioError.

    Cache look-ups and decoding run in `workers` threads (libsndfile, soxr and numpy release the
    GIL); a clip whose every needed array is cached is never decoded.
    """
    from tqdm import tqdm

    def work(i: int) -> tuple[int, EvalClip, dict]:
        clip = clips[i]
        out: dict = {}
        missing: set[View] = set()
        for view in emb_views:
            if _available(clip, view):
                for m in models:
                    hit = m.cache.get(m.key(clip, view))
                    out[(m.name, view)] = hit
                    if hit is None:
                        missing.add(view)
        if mfcc is not None:
            for view in mfcc_views:
                if _available(clip, view):
                    hit = mfcc.cache.get(mfcc.key(clip, view))
                    out[("mfcc", view)] = hit
                    if hit is None:
                        missing.add(view)
        rendered = _render(clip, sorted(missing, key=lambda v: v.label), sr) if missing else {}
        return i, clip, {**out, **rendered}

    bar = tqdm(total=len(clips), unit="clip", desc="clips", disable=not progress)
    if workers <= 0:
        for i in range(len(clips)):
            item = work(i)
            bar.update(1)
            yield item
        bar.close()
        return
    for _, fut in completed_in_threads(work, range(len(clips)), workers=workers, name="eval"):
        bar.update(1)
        yield fut.result()
    bar.close()


def _embed_clip(
    i: int,
    clip: EvalClip,
    rendered: dict,
    models: Sequence[_Model],
    emb_views: Sequence[View],
    failures: Failures,
) -> None:
    """Store each model's segment embeddings and track vector per rendering: from the cache,
    else `embed_batch` of all this clip's renderings at once (one encoder pass per branch),
    cached (the segments only: the track vector is their normalised mean)."""
    for m in models:
        todo: list[tuple[View, np.ndarray]] = []
        for view in emb_views:
            hit = rendered.get((m.name, view))
            if hit is not None:
                _keep(m, view, i, hit["segments"])
            elif view in rendered and not isinstance(rendered[view], AudioError):
                todo.append((view, rendered[view]))
        if not todo:
            continue
        results = m.embedder.embed_batch(
            [y for _, y in todo],
            [view.domain for view, _ in todo],
            all_segments=m.all_segments,
            names=[" + ".join(_sources(clip, view)) for view, _ in todo],
        )
        for (view, y), result in zip(todo, results, strict=True):
            if isinstance(result, AudioError):
                failures[(i, view.label)] = str(result)
                continue
            mine = np.asarray(result.segment_vectors, np.float32)
            _keep(m, view, i, mine)
            m.cache.put(
                m.key(clip, view),
                segments=mine,
                duration_s=np.asarray(len(y) / m.embedder.features.sample_rate, np.float64),
            )


def _keep(m: _Model, view: View, i: int, segments: np.ndarray) -> None:
    """Hold clip i's segment embeddings in `view` and its track vector, their normalised mean."""
    m.segments.setdefault(view, {})[i] = segments
    m.vectors.setdefault(view, {})[i] = track_vector(segments)


def _mfcc_clip(
    i: int, clip: EvalClip, rendered: dict, mfcc: _Mfcc, views: Sequence[View], failures: Failures
) -> None:
    for view in views:
        hit = rendered.get(("mfcc", view))
        if hit is not None:
            frames = hit["frames"]
        elif view in rendered and not isinstance(rendered[view], AudioError):
            frames = mfcc_frames(rendered[view], mfcc.sr, mfcc.cfg)
            mfcc.cache.put(mfcc.key(clip, view), frames=frames)
        else:
            continue
        if len(frames) == 0:
            failures[(i, view.label)] = "no MFCC frame above the GMM-UBM's silence threshold"
            continue
        mfcc.frames.setdefault(view, {})[i] = frames


def _split(
    clips: Sequence[EvalClip], store: Store, query: View, target: View
) -> tuple[list[int], list[int]]:
    """Indices of query clips and model clips that have the renderings."""
    q = store.get(query, {})
    t = store.get(target, {})
    q_idx = [i for i in sorted(q) if clips[i].role == "query"]
    t_idx = [i for i in sorted(t) if clips[i].role == "model"]
    return q_idx, t_idx


def _figures(
    q_singers: list[str],
    names: list[str],
    singer_scores: np.ndarray,
    t_singers: list[str],
    track_scores: np.ndarray,
    k: int,
    n_without: int,
) -> dict:
    truth = np.array([names.index(s) for s in q_singers])
    relevant = np.asarray(q_singers)[:, None] == np.asarray(t_singers)[None, :]
    singer_id: dict[str, object] = dict(
        retrieval_metrics.singer_identification(singer_scores, truth, (1, 5))
    )
    singer_id["top1_ci95"] = retrieval_metrics.bootstrap_ci(
        retrieval_metrics.topk_hits(singer_scores, truth, 1)
    )
    return {
        "singer_id": singer_id,
        "query_by_singer": retrieval_metrics.query_by_singer(track_scores, relevant, k),
        "n_queries_without_model": n_without,
    }


def _embedding_scenario(
    clips: Sequence[EvalClip], vectors: Store, query: View, target: View, k: int
) -> dict | None:
    q_idx, t_idx = _split(clips, vectors, query, target)
    if not t_idx:
        return None
    t_singers = [clips[i].singer for i in t_idx]
    names, models = retrieval_metrics.singer_models(
        np.stack([vectors[target][i] for i in t_idx]), t_singers
    )
    kept = [i for i in q_idx if clips[i].singer in names]
    if not kept:
        return None
    q_vecs = np.stack([vectors[query][i] for i in kept])
    t_vecs = np.stack([vectors[target][i] for i in t_idx])
    return _figures(
        [clips[i].singer for i in kept],
        names,
        retrieval_metrics.cosine_scores(q_vecs, models),
        t_singers,
        retrieval_metrics.cosine_scores(q_vecs, t_vecs),
        k,
        len(q_idx) - len(kept),
    )


def _gmm_key(clips: Sequence[EvalClip], mfcc: _Mfcc, views: list[View], k: int) -> str:
    return ArrayCache.key(
        {
            "v": _CACHE_VERSION,
            "kind": "gmm-ubm-figures",
            "settings": mfcc.cfg.to_dict(),
            "k": k,
            "views": [v.label for v in views],
            "clips": [
                [
                    c.singer,
                    c.role,
                    [[file_identity(p) for p in _sources(c, v)] for v in views if _available(c, v)],
                ]
                for c in clips
            ],
        }
    )


def _gmm_entry(
    clips: Sequence[EvalClip], mfcc: _Mfcc, scenarios: Sequence[str], k: int, progress: bool
) -> dict:
    from tqdm import tqdm

    cfg = mfcc.cfg
    entry: dict = {
        "name": "gmm-ubm",
        "kind": "gmm-ubm",
        "settings": cfg.to_dict(),
        "scenarios": {},
        "ubm": {},
    }
    for s in scenarios:
        view = View(SCENARIOS[s][0])
        q_idx, t_idx = _split(clips, mfcc.frames, view, view)
        if not t_idx:
            entry["scenarios"][s] = None
            continue
        frames = mfcc.frames[view]
        pool = np.concatenate([frames[i] for i in t_idx])
        t0 = time.perf_counter()
        n_comp = min(cfg.n_components, len(pool))
        log.info(
            "%s: fitting a %d-component UBM on %d of %d frames",
            s,
            n_comp,
            min(len(pool), cfg.ubm_max_frames),
            len(pool),
        )
        ubm = GmmUbm.fit(pool, cfg, n_components=n_comp)
        entry["ubm"][s] = {
            "n_pool_frames": len(pool),
            "n_fit_frames": int(min(len(pool), cfg.ubm_max_frames)),
            "n_components": n_comp,
            "fit_s": round(time.perf_counter() - t0, 2),
        }
        t_singers = [clips[i].singer for i in t_idx]
        names = sorted(set(t_singers))
        singer_means = np.stack(
            [
                ubm.adapt_means(
                    np.concatenate([frames[i] for i in t_idx if clips[i].singer == n]),
                    cfg.relevance,
                )
                for n in names
            ]
        )
        track_means = np.stack([ubm.adapt_means(frames[i], cfg.relevance) for i in t_idx])
        kept = [i for i in q_idx if clips[i].singer in names]
        if not kept:
            entry["scenarios"][s] = None
            continue
        singer_scores = np.empty((len(kept), len(names)))
        track_scores = np.empty((len(kept), len(t_idx)))
        for row, i in enumerate(
            tqdm(kept, desc=f"gmm-ubm {s}", unit="query", disable=not progress)
        ):
            singer_scores[row] = ubm.score(frames[i], singer_means)  # exact LLR
            track_scores[row] = ubm.score(frames[i], track_means, top_c=cfg.qbs_top_c)
        entry["scenarios"][s] = _figures(
            [clips[i].singer for i in kept],
            names,
            singer_scores,
            t_singers,
            track_scores,
            k,
            len(q_idx) - len(kept),
        )
    return entry


def _plots(
    clips: Sequence[EvalClip], models: Sequence[_Model], result: dict, plot_dir: Path, tsne: bool
) -> dict[str, str]:
    from model.evaluation import plots

    out: dict[str, str] = {}
    if tsne:
        for m in models:
            idx = sorted(
                set(m.vectors.get(View("mono"), {})) | set(m.vectors.get(View("mixed"), {}))
            )
            vecs, singers, domains = [], [], []
            for d in DOMAINS:
                for i in idx:
                    v = m.vectors.get(View(d), {}).get(i)
                    if v is not None:
                        vecs.append(v)
                        singers.append(clips[i].singer)
                        domains.append(d)
            if len(vecs) >= 3:
                path = plots.embedding_map(
                    np.stack(vecs),
                    singers,
                    domains,
                    plot_dir / f"tsne-{m.name}.png",
                    title=f"{m.name}: track vectors, t-SNE (light ^ mono, dark o mixed)",
                )
                out[f"tsne-{m.name}"] = str(path)
    curves: dict[str, dict[float, float]] = {}
    for entry in result["models"]:
        for x, per_scenario in (entry.get("snr_sweep") or {}).items():
            for s, figs in per_scenario.items():
                if figs:
                    curves.setdefault(f"{entry['name']} {s}", {})[float(x)] = figs["singer_id"][
                        "top1"
                    ]
    if curves:
        out["snr-sweep"] = str(
            plots.snr_curves(
                curves,
                plot_dir / "snr-sweep.png",
                title="Singer ID vs vocal-to-accompaniment ratio",
            )
        )
    return out


def collect_segments(
    clips: Sequence[EvalClip],
    checkpoint: str | Path,
    *,
    domains: Sequence[str] = DOMAINS,
    cache_dir: str | Path | None = None,
    all_segments: bool = False,
    device: str | None = None,
    workers: int = 1,
    progress: bool = False,
) -> tuple[str, dict[str, dict[int, np.ndarray]], dict[tuple[int, str], str]]:
    """Every clip's segment embeddings in each domain, through the evaluation cache: the
    track vector is their normalised mean, and runs of them make queries of any length.

    Returns (checkpoint id, domain -> clip index -> (n_segments, dim) embeddings in time
    order, failures keyed by (clip index, domain)).
    """
    m = _Model(
        "model",
        Path(checkpoint),
        Embedder.from_checkpoint(checkpoint, device),
        cache_dir,
        all_segments,
    )
    views = [View(d) for d in domains]
    sr = m.embedder.features.sample_rate
    failures: dict[tuple[int, str], str] = {}
    for i, clip, rendered in _iter_rendered(clips, [m], None, views, [], sr, workers, progress):
        for view, y in rendered.items():
            if isinstance(y, AudioError):
                failures[(i, view.domain)] = str(y)
        _embed_clip(i, clip, rendered, [m], views, failures)
    return m.embedder.checkpoint_id, {v.domain: m.segments.get(v, {}) for v in views}, failures
