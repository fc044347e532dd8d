"""The batch indexing job on a Ray cluster (`python -m indexer --engine ray`).

    listing, hashing, skipping      on the driver, as the local engine (indexer/run.py):
                                    the same resume semantics
    prepare   map_batches (tasks)   file -> float32 waveform at the model's rate; on a
                                    cluster without GPUs also its segments, chosen on the
                                    task's CPU (`select_segments`, the shipped detector)
    embed     map_batches (actors)  each actor holds the model (one GPU each when the
                                    cluster has GPUs) and calls `Embedder.embed_batch` on
                                    its batch: waveforms or selections -> track vectors
    write     on the driver         Catalog.add_tracks(replace=True) every `commit_every`
                                    tracks, in listing order

Where segments are chosen follows the local engine: in the tasks when the model is on CPUs
(a core each), beside the encoder on a GPU, many recordings at a time. Waveforms and
selections travel between stages pickled into a bytes column, so Ray Data never has to
infer a tensor type for ragged audio. Files must be readable at the same path on every
node (shared storage). A file that cannot be used comes back with its error in the `error`
column and is reported, as with the local engine.
"""

from __future__ import annotations

import functools
import logging
import pickle
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from catalog import CatalogBackend
from indexer.run import (
    IndexOptions,
    IndexReport,
    _fail,
    _Job,
    _note_quality,
    finish_report,
    start_run,
)
from indexer.sources import Listing, read_source
from model.devices import batch_segments
from model.embedding import Embedder
from model.errors import AudioError
from model.features import FeatureConfig
from model.segment_selection import SegmentSelection, select_segments
from model.track_embedding import TrackEmbedding
from model.voice import VoiceDetector

log = logging.getLogger(__name__)


def _prepare(
    batch: pd.DataFrame,
    sample_rate: int,
    max_seconds: float | None,
    config: FeatureConfig | None,
    all_segments: bool,
) -> pd.DataFrame:
    """Decode each file (and with `config`, choose its segments on this CPU): column `item`,
    the pickled waveform or selection, or `error`."""
    from model.audio import load_audio

    items, errors = [], []
    for path, domain in zip(batch["path"], batch["domain"]):
        try:
            y = load_audio(path, sample_rate, max_seconds)
            item = y if config is None else _select(y, config, all_segments, path, domain)
            items.append(pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL))
            errors.append("")
        except AudioError as err:
            items.append(b"")
            errors.append(err.reason)
    return batch.assign(item=items, error=errors)


def _select(
    y: np.ndarray, config: FeatureConfig, all_segments: bool, path: str, domain: str
) -> SegmentSelection:
    """The segments `Embedder.select` would choose, with the shipped detector, on the CPU."""
    return select_segments(
        y, config, all_segments, device="cpu", path=path, detector=_detector(), domain=domain
    )


@functools.cache
def _detector() -> VoiceDetector:
    """The shipped voice detector, loaded once per worker process."""
    return VoiceDetector.load(None, "cpu")


class _EmbedActor:
    """Holds the model; `embed_batch` over the waveforms or selections of a batch of files."""

    def __init__(self, checkpoint: str | None, device: str, batch_size: int, all_segments: bool):
        torch.set_num_threads(1)  # one core per actor: scale with actors, not threads
        self.embedder = Embedder.from_checkpoint(checkpoint, device)
        self.batch_size = batch_size
        self.all_segments = all_segments

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        n = len(batch)
        vectors, n_segments, durations = [b""] * n, [0] * n, [0.0] * n
        flags, scores, errors = [""] * n, [float("nan")] * n, list(batch["error"])
        voiced = [0.0] * n
        rows = [r for r in range(n) if not errors[r]]
        results = self.embedder.embed_batch(
            [pickle.loads(batch["item"].iat[r]) for r in rows],
            [batch["domain"].iat[r] for r in rows],
            all_segments=self.all_segments,
            names=[batch["path"].iat[r] for r in rows],
            batch_size=self.batch_size,
        )
        for r, result in zip(rows, results, strict=True):
            if isinstance(result, AudioError):
                errors[r] = result.reason
                continue
            vectors[r] = result.vector.astype(np.float32).tobytes()
            n_segments[r], durations[r] = result.n_segments, result.duration_s
            flags[r], voiced[r] = ",".join(result.flags), result.voiced_fraction
            if result.domain_score is not None:
                scores[r] = result.domain_score
        return batch.drop(columns=["item"]).assign(
            vector=vectors,
            n_segments=n_segments,
            duration_s=durations,
            flags=flags,
            domain_score=scores,
            voiced_fraction=voiced,
            error=errors,
        )


def index_listing_ray(
    catalog: CatalogBackend,
    embedder: Embedder,
    listing: Listing,
    options: IndexOptions | None = None,
    *,
    checkpoint: str | Path | None = None,
    address: str | None = None,
    actors: int = 2,
    files_per_batch: int = 8,
) -> IndexReport:
    """`indexer.run.index_listing` on Ray; `embedder` (on the driver) gives the checkpoint id
    and feature recipe, `checkpoint` is what each actor loads (None: the default model).

    Joins the Ray cluster at `address` (None: an existing `ray.init`, else a local one).
    """
    import ray

    o = options or IndexOptions()
    start = time.perf_counter()
    if not ray.is_initialized():
        ray.init(address=address, log_to_driver=False)
    report, todo, writer = start_run(catalog, embedder, listing, o)
    embed_start = time.perf_counter()
    try:
        if todo:
            for row in _pipeline(ray, todo, embedder, checkpoint, actors, files_per_batch, o):
                job = todo[int(row["job"])]
                if row["error"]:
                    _fail(report, job.item.path, row["error"])
                    continue
                score = float(row["domain_score"])
                emb = TrackEmbedding(
                    np.frombuffer(row["vector"], np.float32),
                    int(row["n_segments"]),
                    float(row["duration_s"]),
                    flags=tuple(f for f in row["flags"].split(",") if f),
                    domain_score=None if np.isnan(score) else score,
                    voiced_fraction=float(row["voiced_fraction"]),
                )
                writer.add(job, emb)
                report.audio_s += emb.duration_s
                _note_quality(report, job.item, emb)
    except KeyboardInterrupt:
        report.interrupted = True
        log.warning("interrupted: committing what was embedded")
    finally:
        writer.flush()
        report.embed_s = time.perf_counter() - embed_start
    finish_report(catalog, report, embedder.checkpoint_id, start)
    return report


def _pipeline(
    ray: Any,
    todo: list[_Job],
    embedder: Embedder,
    checkpoint: str | Path | None,
    actors: int,
    files_per_batch: int,
    o: IndexOptions,
) -> Iterator[dict[str, Any]]:
    """Rows {job, error, vector, n_segments, duration_s, flags, domain_score,
    voiced_fraction} in the order of `todo`."""
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True  # commit in listing order: same ids as local
    gpus = ray.cluster_resources().get("GPU", 0)
    ds = ray.data.from_pandas(
        pd.DataFrame(
            {
                "job": range(len(todo)),
                "path": [str(j.item.path) for j in todo],
                "domain": [j.item.domain for j in todo],
            }
        )
    )
    kw = {"batch_size": files_per_batch, "batch_format": "pandas"}
    ds = ds.map_batches(
        _prepare,
        fn_kwargs={
            "sample_rate": embedder.features.sample_rate,
            "max_seconds": o.max_seconds,
            # Without GPUs the tasks choose the segments, each on its core (as the local
            # engine's threads do on the CPU); with them the actors do, many at once.
            "config": None if gpus else embedder.features,
            "all_segments": o.all_segments,
        },
        **kw,
    )
    ds = ds.map_batches(
        _EmbedActor,
        fn_constructor_kwargs={
            "checkpoint": str(checkpoint) if checkpoint else None,
            "device": "cuda" if gpus else "cpu",
            "batch_size": o.batch_size or batch_segments(torch.device("cuda" if gpus else "cpu")),
            "all_segments": o.all_segments,
        },
        concurrency=max(1, actors),
        num_gpus=1 if gpus else 0,
        **kw,
    )
    yield from ds.iter_rows()


def index_source_ray(
    catalog: CatalogBackend,
    embedder: Embedder,
    source: str | Path,
    *,
    domain: str = "mixed",
    checkpoint: str | Path | None = None,
    address: str | None = None,
    actors: int = 2,
    files_per_batch: int = 8,
    **options: Any,
) -> IndexReport:
    """Index a folder or a CSV manifest on Ray; `options` are the fields of `IndexOptions`."""
    return index_listing_ray(
        catalog,
        embedder,
        read_source(source, domain),
        IndexOptions(**options),
        checkpoint=checkpoint,
        address=address,
        actors=actors,
        files_per_batch=files_per_batch,
    )
