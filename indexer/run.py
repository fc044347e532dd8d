"""The batch indexing job: a folder or manifest in, catalogue tracks out.

    listing = read_source(...)            what to index (indexer/sources.py)
    hash every file (threads)             content identity: hex SHA-256 of the file's bytes,
                                          the same key the HTTP service computes for uploads
    skip what is already indexed          same content + checkpoint + domain (unless rebuild)
    Embedder.embed_many (per domain)      decoding threads (or worker processes: `processes`),
                                          segments batched across files
    catalog.add_tracks(replace=True)      a transaction every `commit_every` tracks or
                                          `commit_interval_s` seconds

A killed run loses at most the tracks embedded since the last commit; running it again
skips what was committed. A file that cannot be used is logged, skipped and listed in the
report; it never stops the job.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import os
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch
from tqdm import tqdm

from catalog import CatalogBackend, CatalogError, Track
from catalog.hashing import content_hash
from catalog.vector_index import FLAT_MAX_VECTORS, KINDS, recommended_kind
from indexer.sources import Listing, SourceItem, read_source
from model.audio import MAX_TRACK_SECONDS
from model.calibration import EnrolmentCalibration
from model.decode_pool import DecodePool
from model.embedding import Embedder, TrackEmbedding
from model.enrolment import flagged_tracks
from model.errors import AudioError

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class Failure:
    path: str
    reason: str


@dataclass
class IndexReport:
    """What a run did. Durations in seconds."""

    n_listed: int = 0
    n_added: int = 0  # embedded and committed (new, or replacing an older vector)
    n_skipped: int = 0  # already indexed with the same content, checkpoint and domain
    n_updated: int = 0  # of the skipped, those whose metadata (singer, title...) changed
    duplicates: list[tuple[str, str]] = field(default_factory=list)  # (path, same content as)
    failures: list[Failure] = field(default_factory=list)
    # (path, declared domain, domain_score): indexed, but the audio sounds like the other domain
    domain_mismatches: list[tuple[str, str, float]] = field(default_factory=list)
    # (path, voiced_fraction): indexed, but the detector heard little singing (`low_voice`)
    low_voice: list[tuple[str, float]] = field(default_factory=list)
    audio_s: float = 0.0  # audio embedded
    embed_s: float = 0.0  # wall time of the embedding phase
    wall_s: float = 0.0
    interrupted: bool = False
    other_checkpoints: dict[str, int] = field(default_factory=dict)  # id -> tracks
    advice: str | None = None  # e.g. a better index kind for the catalogue's size
    singers: set[str] = field(default_factory=set)  # of the tracks embedded in this run
    # singer -> ids of tracks far from the singer's others (`check_enrolment`)
    outliers: dict[str, list[int]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failures and not self.interrupted

    @property
    def realtime_factor(self) -> float:
        return self.audio_s / self.embed_s if self.embed_s > 0 else 0.0

    def summary(self) -> str:
        lines = [
            f"{self.n_listed} files listed: {self.n_added} indexed, {self.n_skipped} already "
            f"indexed ({self.n_updated} with updated metadata), {len(self.duplicates)} "
            f"duplicates skipped, {len(self.failures)} failed"
            + (" - INTERRUPTED, run again to resume" if self.interrupted else ""),
        ]
        if self.n_added:
            lines.append(
                f"embedded {self.audio_s / 60:.1f} min of audio in {self.embed_s:.1f} s: "
                f"{self.n_added / max(self.embed_s, 1e-9):.2f} tracks/s, "
                f"{self.realtime_factor:.1f}x realtime (total {self.wall_s:.1f} s)"
            )
        if self.domain_mismatches:
            lines.append(
                f"{len(self.domain_mismatches)} indexed files sound like the other domain than "
                "declared (domain_score: 0 a vocal take, 1 a finished song):"
            )
            lines += [
                f"  {p}: declared {d}, domain_score {s:.2f}" for p, d, s in self.domain_mismatches
            ]
        if self.low_voice:
            lines.append(
                f"{len(self.low_voice)} indexed files hold little singing (flag low_voice): "
                "their vectors lean on the accompaniment (share of frames heard as voiced):"
            )
            lines += [f"  {p}: {v:.0%}" for p, v in self.low_voice]
        for path, first in self.duplicates:
            lines.append(f"  duplicate: {path} (same audio as {first})")
        if self.failures:
            lines.append("failed:")
            lines += [f"  {f.path}: {f.reason}" for f in self.failures]
        if self.other_checkpoints:
            others = ", ".join(
                f"{k} ({n} tracks)" for k, n in sorted(self.other_checkpoints.items())
            )
            lines.append(
                f"note: the catalogue also holds vectors of other checkpoints: {others}; the "
                "service refuses queries until they are re-indexed (--rebuild over their "
                "sources) or removed (python -m indexer remove --checkpoint-id ID)"
            )
        if self.advice:
            lines.append(f"note: {self.advice}")
        if self.outliers:
            lines.append(
                f"{len(self.outliers)} singers have tracks far from their other tracks (a wrong "
                "label or a featured artist?); see GET /singers/{id}:"
            )
            lines += [
                f"  {s}: track{'s' if len(ids) > 1 else ''} {', '.join(map(str, ids))}"
                for s, ids in sorted(self.outliers.items())
            ]
        return "\n".join(lines)


@dataclass(frozen=True)
class IndexOptions:
    """How a listing is indexed, by either engine."""

    rebuild: bool = False  # re-embed files already indexed with this checkpoint
    workers: int = 2  # hashing and decoding threads
    # Decoding worker processes (model/decode_pool.py), which also choose the segments;
    # 0: decode in the threads; None: `auto_processes`. Threads queue on the GIL once there
    # are many cores; processes do not.
    processes: int | None = None
    batch_size: int | None = None  # segments per encoder batch (None: the device's default)
    all_segments: bool = False  # every 3-s segment, not only the voiced ones (the paper's)
    progress: bool = False  # a progress bar on stderr
    commit_every: int = 64  # tracks per catalogue transaction ...
    commit_interval_s: float = 2.0  # ... or this long since the last one, whichever first
    max_seconds: float | None = MAX_TRACK_SECONDS  # longer files are refused (None: no bound)


@dataclass(frozen=True)
class _Job:
    item: SourceItem
    digest: str


class _Writer:
    """Buffers embedded tracks and commits them in batches, one transaction each."""

    def __init__(
        self,
        catalog: CatalogBackend,
        report: IndexReport,
        checkpoint_id: str,
        commit_every: int,
        commit_interval_s: float,
    ):
        self.catalog, self.report, self.checkpoint_id = catalog, report, checkpoint_id
        self.commit_every, self.commit_interval_s = max(1, commit_every), commit_interval_s
        self.pending: list[tuple[_Job, dict]] = []
        self.last_commit = time.monotonic()

    def add(self, job: _Job, emb: TrackEmbedding) -> None:
        item = job.item
        self.report.singers.add(item.singer)
        self.pending.append(
            (
                job,
                {
                    "vector": emb.vector,
                    "singer": item.singer,
                    "domain": item.domain,
                    "duration_s": emb.duration_s,
                    "n_segments": emb.n_segments,
                    "content_hash": job.digest,
                    "checkpoint_id": self.checkpoint_id,
                    "path": str(item.path),
                    "title": item.title,
                    "external_id": item.external_id,
                },
            )
        )
        if (
            len(self.pending) >= self.commit_every
            or time.monotonic() - self.last_commit >= self.commit_interval_s
        ):
            self.flush()

    def flush(self) -> None:
        pending, self.pending = self.pending, []
        self.last_commit = time.monotonic()
        if not pending:
            return
        try:
            self.catalog.add_tracks([rec for _, rec in pending], replace=True)
            self.report.n_added += len(pending)
            return
        except (CatalogError, ValueError) as err:
            log.warning(
                "a batch of %d tracks was refused (%s); writing them one by one", len(pending), err
            )
        for job, rec in pending:  # isolate the track that the catalogue refuses
            try:
                self.catalog.add_tracks([rec], replace=True)
                self.report.n_added += 1
            except (CatalogError, ValueError) as err:
                _fail(self.report, job.item.path, f"not stored: {err}")


def _fail(report: IndexReport, path: str | Path, reason: str) -> None:
    log.warning("skipped %s: %s", path, reason)
    report.failures.append(Failure(str(path), reason))


def _domain_mismatch(report: IndexReport, item: SourceItem, score: float | None) -> None:
    log.warning(
        "%s: declared %s but sounds like %s (domain_score %.2f); indexed as declared",
        item.path,
        item.domain,
        "a vocal take" if item.domain == "mixed" else "a mix",
        score if score is not None else float("nan"),
    )
    report.domain_mismatches.append((str(item.path), item.domain, score or 0.0))


def _note_quality(report: IndexReport, item: SourceItem, emb: TrackEmbedding) -> None:
    """Report an indexed track the detector heard as the other domain, or as little singing."""
    if "domain_mismatch" in emb.flags:
        _domain_mismatch(report, item, emb.domain_score)
    if "low_voice" in emb.flags:
        report.low_voice.append((str(item.path), emb.voiced_fraction))


def _hash_all(
    items: Sequence[SourceItem], workers: int, progress: bool, report: IndexReport
) -> list[_Job]:
    """Hash the files in threads (hashlib releases the GIL); unreadable files fail."""
    jobs: list[_Job] = []
    with cf.ThreadPoolExecutor(max(1, workers), thread_name_prefix="hash") as pool:
        results = pool.map(_try_hash, [it.path for it in items])
        bar = tqdm(
            zip(items, results),
            total=len(items),
            desc="hashing",
            unit="file",
            disable=not progress,
            leave=False,
        )
        for item, (digest, error) in bar:
            if error is not None:
                _fail(report, item.path, error)
            else:
                jobs.append(_Job(item, digest))
    return jobs


def _try_hash(path: Path) -> tuple[str | None, str | None]:
    try:
        return content_hash(path), None
    except FileNotFoundError:
        return None, "no such file"
    except OSError as err:
        return None, f"cannot read the file ({err.strerror or err})"


def _plan(
    catalog: CatalogBackend,
    jobs: list[_Job],
    checkpoint_id: str,
    rebuild: bool,
    report: IndexReport,
) -> list[_Job]:
    """Drop duplicates within the source and (unless rebuild) what is already indexed."""
    first: dict[tuple[str, str], _Job] = {}
    todo: list[_Job] = []
    for job in jobs:
        key = (job.digest, job.item.domain)
        if key in first:
            other = first[key].item
            if other.singer == job.item.singer:
                report.duplicates.append((str(job.item.path), str(other.path)))
            else:
                _fail(
                    report,
                    job.item.path,
                    f"same audio as {other.path}, which is filed under singer {other.singer!r}",
                )
            continue
        first[key] = job
        existing = (
            None if rebuild else catalog.find_track(job.digest, checkpoint_id, job.item.domain)
        )
        if existing is None:
            todo.append(job)
        else:
            report.n_skipped += 1
            _update_metadata(catalog, existing, job.item, report)
    return todo


def _update_metadata(
    catalog: CatalogBackend, track: Track, item: SourceItem, report: IndexReport
) -> None:
    wanted = {
        "singer": item.singer,
        "path": str(item.path),
        "title": item.title,
        "external_id": item.external_id,
    }
    changes = {k: v for k, v in wanted.items() if getattr(track, k) != v}
    if changes:
        catalog.update_track(track.id, **changes)
        report.n_updated += 1


def auto_processes(device: torch.device) -> int:
    """Decoding processes by default: with the model on CUDA, every core but two (the
    encoder's thread and the catalogue writer), at least 2; on the CPU none, because the
    model needs the cores and on 2 cores threads measured faster (bench/bench_indexer.py:
    56 against 51 files/s indexing)."""
    if device.type != "cuda":
        return 0
    return max(2, (os.cpu_count() or 2) - 2)


def embedding_order(todo: list[_Job]) -> list[_Job]:
    """The order tracks are committed in, by every engine: by domain, then listing order.
    Track ids follow it, so two engines build catalogues with the same ids."""
    return sorted(todo, key=lambda j: j.item.domain)  # stable: listing order within a domain


def in_order(results: Iterable[tuple[int, T]]) -> Iterator[tuple[int, T]]:
    """(index, result) pairs in any order -> in index order 0, 1, 2... as soon as possible.

    `embed_many` yields in completion order; holding the early ones back costs at most its
    bounded number of files in flight.
    """
    waiting: dict[int, T] = {}
    following = 0
    for i, result in results:
        waiting[i] = result
        while following in waiting:
            yield following, waiting.pop(following)
            following += 1
    yield from sorted(waiting.items())


def start_run(
    catalog: CatalogBackend, embedder: Embedder, listing: Listing, o: IndexOptions
) -> tuple[IndexReport, list[_Job], _Writer]:
    """What both engines do first: report the listing's problems, hash every file, and plan
    (in embedding order) the jobs this checkpoint has not indexed yet."""
    report = IndexReport(n_listed=len(listing.items) + len(listing.problems))
    for path, reason in listing.problems:
        _fail(report, path, reason)
    ckpt = embedder.checkpoint_id
    jobs = _hash_all(listing.items, o.workers, o.progress, report)
    todo = embedding_order(_plan(catalog, jobs, ckpt, o.rebuild, report))
    log.info("%d files to embed, %d already indexed", len(todo), report.n_skipped)
    return report, todo, _Writer(catalog, report, ckpt, o.commit_every, o.commit_interval_s)


def index_listing(
    catalog: CatalogBackend,
    embedder: Embedder,
    listing: Listing,
    options: IndexOptions | None = None,
    pool: DecodePool | None = None,
) -> IndexReport:
    """Embed and store the items of `listing`; see the module docstring.

    `pool`: decoding worker processes the caller keeps (warm) across runs; else the run
    starts its own when `options.processes` asks for them, and stops them at the end.

    A file longer than `options.max_seconds` of audio is refused while decoding, reported as
    a failure and skipped, like any unusable file.
    A KeyboardInterrupt stops the job after committing what was embedded; the report says
    `interrupted`. Other exceptions (not AudioError) propagate, also after that commit.
    """
    o = options or IndexOptions()
    start = time.perf_counter()
    report, todo, writer = start_run(catalog, embedder, listing, o)
    ckpt = embedder.checkpoint_id
    bar = tqdm(
        total=len(todo), desc="indexing", unit="track", disable=not o.progress, dynamic_ncols=True
    )
    processes = auto_processes(embedder.device) if o.processes is None else o.processes
    own_pool = pool is None and processes > 0 and bool(todo)
    if own_pool:
        # Where segments are chosen in batches (CUDA) the workers only decode: with the fused
        # default on an H100, 342 files/s against 281 with segments chosen in the workers
        # (bench/device_check.sh, 2026-11-27); elsewhere the workers choose them on their CPU.
        pool = embedder.decode_pool(processes, features_in_workers=not embedder.selects_in_batches)
    embed_start = time.perf_counter()
    try:
        for domain in sorted({j.item.domain for j in todo}):
            batch = [j for j in todo if j.item.domain == domain]
            results = embedder.embed_many(
                [j.item.path for j in batch],
                domain,
                o.all_segments,
                workers=o.workers,
                batch_size=o.batch_size,
                max_seconds=o.max_seconds,
                pool=pool,
            )
            for i, result in in_order(results):
                if isinstance(result, AudioError):
                    _fail(report, batch[i].item.path, result.reason)
                else:
                    writer.add(batch[i], result)
                    report.audio_s += result.duration_s
                    _note_quality(report, batch[i].item, result)
                bar.update(1)
                elapsed = time.perf_counter() - embed_start
                bar.set_postfix_str(
                    f"{report.audio_s / max(elapsed, 1e-9):.1f}x realtime, "
                    f"{len(report.failures)} failed",
                    refresh=False,
                )
    except KeyboardInterrupt:
        report.interrupted = True
        log.warning("interrupted: committing what was embedded")
    finally:
        writer.flush()
        bar.close()
        report.embed_s = time.perf_counter() - embed_start
        if own_pool and pool is not None:
            pool.close()
    finish_report(catalog, report, ckpt, start)
    return report


def finish_report(catalog: CatalogBackend, report: IndexReport, ckpt: str, start: float) -> None:
    """Fill what the catalogue tells after a run: other checkpoints, index advice, wall time."""
    stats = catalog.stats()
    report.other_checkpoints = {k: n for k, n in stats["checkpoint_ids"].items() if k != ckpt}
    n = sum(stats["n_tracks"].values())
    if stats["index"] in KINDS and recommended_kind(n) != stats["index"]:
        report.advice = (
            f"the catalogue holds {n} tracks: a {recommended_kind(n)} index suits this size "
            f"better than {stats['index']} (--index-kind / SINGER_INDEX_KIND; crossover "
            f"{FLAT_MAX_VECTORS} tracks, see README 'Scale-out')"
        )
    report.wall_s = time.perf_counter() - start


def check_enrolment(
    catalog: CatalogBackend, report: IndexReport, bars: Mapping[str, EnrolmentCalibration]
) -> None:
    """Flag the outlier tracks of the singers this run embedded (`bars`: domain -> the
    calibration's outlier bar, `model.enrolment`) into `report.outliers`."""
    report.outliers = flagged_tracks(catalog, sorted(report.singers), bars)


def index_source(
    catalog: CatalogBackend,
    embedder: Embedder,
    source: str | Path,
    *,
    domain: str = "mixed",
    **options: Any,
) -> IndexReport:
    """Index a folder or a CSV manifest (see indexer/sources.py) into `catalog`.

    `domain` applies to a folder and to manifest rows that name none. `options` are the fields
    of `IndexOptions`. Raises FileNotFoundError / ManifestError for an unusable source.
    """
    return index_listing(catalog, embedder, read_source(source, domain), IndexOptions(**options))
