"""The batch indexing job: a folder or manifest in, catalogue tracks out.

    listing = read_source(...)            what to index (indexer/sources.py)
    hash every file (threads)             content identity: hex SHA-256 of the file's bytes,
                                          the same key the HTTP service computes for uploads
    skip what is already indexed          same content + checkpoint + domain (unless rebuild)
    Embedder.embed_many (per domain)      decoding threads, segments batched across files
    Catalog.add_tracks(replace=True)      a transaction every `commit_every` tracks or
                                          `commit_interval_s` seconds

A killed run loses at most the tracks embedded since the last commit; running it again
skips what was committed. A file that cannot be used is logged, skipped and listed in the
report; it never stops the job.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from catalog import Catalog, CatalogError, Track
from catalog.hashing import content_hash
from indexer.sources import Listing, SourceItem, read_source
from model.embedding import Embedder, TrackEmbedding
from model.errors import AudioError

log = logging.getLogger(__name__)


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
    audio_s: float = 0.0  # audio embedded
    embed_s: float = 0.0  # wall time of the embedding phase
    wall_s: float = 0.0
    interrupted: bool = False
    other_checkpoints: dict[str, int] = field(default_factory=dict)  # id -> tracks

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
        return "\n".join(lines)


@dataclass(frozen=True)
class _Job:
    item: SourceItem
    digest: str


class _Writer:
    """Buffers embedded tracks and commits them in batches, one transaction each."""

    def __init__(
        self,
        catalog: Catalog,
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
    catalog: Catalog, jobs: list[_Job], checkpoint_id: str, rebuild: bool, report: IndexReport
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


def _update_metadata(catalog: Catalog, track: Track, item: SourceItem, report: IndexReport) -> None:
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


def index_listing(
    catalog: Catalog,
    embedder: Embedder,
    listing: Listing,
    *,
    rebuild: bool = False,
    workers: int = 2,
    batch_size: int = 64,
    all_segments: bool = False,
    progress: bool = False,
    commit_every: int = 64,
    commit_interval_s: float = 2.0,
) -> IndexReport:
    """Embed and store the items of `listing`; see the module docstring.

    A KeyboardInterrupt stops the job after committing what was embedded; the report says
    `interrupted`. Other exceptions (not AudioError) propagate, also after that commit.
    """
    start = time.perf_counter()
    report = IndexReport(n_listed=len(listing.items) + len(listing.problems))
    for path, reason in listing.problems:
        _fail(report, path, reason)
    ckpt = embedder.checkpoint_id
    jobs = _hash_all(listing.items, workers, progress, report)
    todo = _plan(catalog, jobs, ckpt, rebuild, report)
    log.info("%d files to embed, %d already indexed", len(todo), report.n_skipped)

    writer = _Writer(catalog, report, ckpt, commit_every, commit_interval_s)
    bar = tqdm(
        total=len(todo), desc="indexing", unit="track", disable=not progress, dynamic_ncols=True
    )
    embed_start = time.perf_counter()
    try:
        for domain in sorted({j.item.domain for j in todo}):
            batch = [j for j in todo if j.item.domain == domain]
            results = embedder.embed_many(
                [j.item.path for j in batch],
                domain,
                all_segments,
                workers=workers,
                batch_size=batch_size,
            )
            for i, result in results:
                if isinstance(result, AudioError):
                    _fail(report, batch[i].item.path, result.reason)
                else:
                    writer.add(batch[i], result)
                    report.audio_s += result.duration_s
                    if "domain_mismatch" in result.flags:
                        _domain_mismatch(report, batch[i].item, result.domain_score)
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
    counts = catalog.stats()["checkpoint_ids"]
    report.other_checkpoints = {k: n for k, n in counts.items() if k != ckpt}
    report.wall_s = time.perf_counter() - start
    return report


def index_source(
    catalog: Catalog, embedder: Embedder, source: str | Path, *, domain: str = "mixed", **options
) -> IndexReport:
    """Index a folder or a CSV manifest (see indexer/sources.py) into `catalog`.

    `domain` applies to a folder and to manifest rows that name none. `options` are those of
    `index_listing`. Raises FileNotFoundError / ManifestError for an unusable source.
    """
    return index_listing(catalog, embedder, read_source(source, domain), **options)
