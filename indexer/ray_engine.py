"""The batch indexing job on a Ray cluster (`python -m indexer --engine ray`).

    listing, hashing, skipping      on the driver, as the local engine (indexer/run.py):
                                    the same resume semantics
    decode    map_batches (tasks)   file -> float32 waveform at the model's rate
    features  map_batches (tasks)   waveform -> log-mel segments (n, n_mels, frames), and
                                    for a fused model their waveforms (n, samples)
    embed     map_batches (actors)  each actor holds the model (one GPU each when the
                                    cluster has GPUs): segments -> track vector (dim,)
    write     on the driver         Catalog.add_tracks(replace=True) every `commit_every`
                                    tracks, in listing order

Arrays travel between stages as float32 bytes plus their shape, so Ray Data never has to
infer a tensor type for ragged audio. Files must be readable at the same path on every
node (shared storage). A file that cannot be decoded comes back with its error in the
`error` column and is reported, as with the local engine.
"""

from __future__ import annotations

import functools
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd

from catalog import CatalogBackend
from indexer.run import IndexOptions, IndexReport, _fail, finish_report, start_run
from indexer.sources import Listing, read_source
from model.embedding import Embedder, TrackEmbedding, track_vector
from model.errors import AudioError
from model.features import FeatureConfig, select_segments
from model.voice import VoiceDetector

log = logging.getLogger(__name__)


def _decode(batch: pd.DataFrame, sample_rate: int, max_seconds: float | None) -> pd.DataFrame:
    from model.audio import load_audio

    audio, errors = [], []
    for path in batch["path"]:
        try:
            audio.append(load_audio(path, sample_rate, max_seconds).astype(np.float32).tobytes())
            errors.append("")
        except AudioError as err:
            audio.append(b"")
            errors.append(err.reason)
    return batch.assign(audio=audio, error=errors)


def _features(batch: pd.DataFrame, config: FeatureConfig, all_segments: bool) -> pd.DataFrame:
    feats, shapes, durations, errors = [], [], [], list(batch["error"])
    audios: list[bytes] = []
    for row, (path, domain, audio) in enumerate(
        zip(batch["path"], batch["domain"], batch["audio"])
    ):
        feats.append(b"")
        audios.append(b"")
        shapes.append([0, 0, 0])
        durations.append(0.0)
        if errors[row]:
            continue
        try:
            y = np.frombuffer(audio, np.float32)
            # The segment choice of the local engine and the service: the shipped detector.
            selection = select_segments(
                y,
                config,
                all_segments,
                device="cpu",
                path=path,
                detector=_detector(),
                domain=domain,
            )
        except AudioError as err:
            errors[row] = err.reason
            continue
        x = selection.features.float().cpu().numpy()
        feats[row], shapes[row], durations[row] = x.tobytes(), list(x.shape), selection.duration_s
        if selection.audio is not None:  # a fused model's speaker encoder reads it
            audios[row] = selection.audio.float().cpu().numpy().tobytes()
    return batch.drop(columns=["audio"]).assign(
        features=feats, segment_audio=audios, shape=shapes, duration_s=durations, error=errors
    )


@functools.cache
def _detector() -> VoiceDetector:
    """The shipped voice detector, loaded once per worker process."""
    return VoiceDetector.load(None, "cpu")


class _EmbedActor:
    """Holds the model; embeds the segments of a batch of tracks together, per domain."""

    def __init__(self, checkpoint: str | None, device: str, batch_size: int):
        import torch

        torch.set_num_threads(1)  # one core per actor: scale with actors, not threads
        self.embedder = Embedder.from_checkpoint(checkpoint, device)
        self.batch_size = batch_size

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        import torch

        vectors = [b""] * len(batch)
        n_segments = [0] * len(batch)
        for domain in set(batch["domain"]):
            rows = [
                r
                for r, (d, error) in enumerate(zip(batch["domain"], batch["error"]))
                if d == domain and not error
            ]
            if not rows:
                continue
            segs = [
                np.frombuffer(batch["features"].iat[r], np.float32).reshape(batch["shape"].iat[r])
                for r in rows
            ]
            audio = None
            if self.embedder.speaker is not None:
                audio = np.concatenate(
                    [np.frombuffer(batch["segment_audio"].iat[r], np.float32) for r in rows]
                ).reshape(sum(len(x) for x in segs), -1)
            emb = self.embedder.encode_segments(
                torch.from_numpy(np.concatenate(segs)), domain, audio, self.batch_size
            )
            start = 0
            for r, s in zip(rows, segs):
                vectors[r] = track_vector(emb[start : start + len(s)]).astype(np.float32).tobytes()
                n_segments[r] = len(s)
                start += len(s)
        return batch.drop(columns=["features", "segment_audio", "shape"]).assign(
            vector=vectors, n_segments=n_segments
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
                vector = np.frombuffer(row["vector"], np.float32)
                emb = TrackEmbedding(vector, int(row["n_segments"]), float(row["duration_s"]))
                writer.add(job, emb)
                report.audio_s += emb.duration_s
    except KeyboardInterrupt:
        report.interrupted = True
        log.warning("interrupted: committing what was embedded")
    finally:
        writer.flush()
        report.embed_s = time.perf_counter() - embed_start
    finish_report(catalog, report, embedder.checkpoint_id, start)
    return report


def _pipeline(ray, todo, embedder, checkpoint, actors, files_per_batch, o: IndexOptions):
    """Rows {job, error, vector, n_segments, duration_s} in the order of `todo`."""
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
        _decode,
        fn_kwargs={"sample_rate": embedder.features.sample_rate, "max_seconds": o.max_seconds},
        **kw,
    )
    ds = ds.map_batches(
        _features,
        fn_kwargs={"config": embedder.features, "all_segments": o.all_segments},
        **kw,
    )
    ds = ds.map_batches(
        _EmbedActor,
        fn_constructor_kwargs={
            "checkpoint": str(checkpoint) if checkpoint else None,
            "device": "cuda" if gpus else "cpu",
            "batch_size": o.batch_size,
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
    **options,
) -> IndexReport:
    """Index a folder or a CSV manifest on Ray; `options` are the fields of `IndexOptions`."""
    listing = read_source(source, domain)
    ray_options = {"address": address, "actors": actors, "files_per_batch": files_per_batch}
    return index_listing_ray(
        catalog, embedder, listing, IndexOptions(**options), checkpoint=checkpoint, **ray_options
    )
