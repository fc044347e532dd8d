"""The two questions an upload can ask: who is singing (`identify`) and which catalogue tracks
sound like that singer (`search`).

Both embed the upload, then do all their catalogue work in one trip to a worker thread (on a
busy machine every hand-off between the event loop and a thread waits for a core). When the
domain asked for holds no track, the other domain is used and the answer says so: the CROSS
model embeds both domains in one space.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, cast

from catalog import CatalogBackend, SingerHit, TrackHit
from model.embedding import TrackEmbedding
from service.openset import (
    HitReading,
    OpenSetPolicy,
    SegmentEvidence,
    Span,
    identify_hits,
    segment_evidence,
    timeline,
)

if TYPE_CHECKING:
    from service.runtime import Runtime

Domain = Literal["mono", "mixed"]
OTHER: dict[str, Domain] = {"mono": "mixed", "mixed": "mono"}


def domain_with_tracks(catalog: CatalogBackend, wanted: str) -> Domain | None:
    """`wanted` when the catalogue holds tracks in it, else the other domain when it holds
    some there, else None (an empty catalogue). Blocking."""
    for domain in (wanted, OTHER[wanted]):
        if catalog.n_singers(domain) > 0:
            return cast(Domain, domain)
    return None


def open_set_policy(runtime: Runtime) -> OpenSetPolicy:
    """The settings' operating points and outlier rule, and the model's segment length."""
    s = runtime.settings
    return OpenSetPolicy(
        s.target_false_alarm,
        s.likely_false_alarm,
        s.exclude_outliers,
        runtime.embedder.features.segment_seconds,
    )


@dataclass(frozen=True)
class Identification:
    """The singers ranked for an upload, with the open-set reading of the ranking."""

    embedding: TrackEmbedding
    models_domain: Domain | None  # the singer models ranked; None: an empty catalogue
    hits: list[SingerHit]
    reading: HitReading
    segments: list[SegmentEvidence]
    timeline: list[Span] | None


async def identify(
    runtime: Runtime, data: bytes, *, top_k: int, domain: str, models: str, with_timeline: bool
) -> Identification:
    """Rank the catalogue's singer models by cosine similarity to the upload. `domain`: how to
    embed it (mono, mixed, auto); `models`: the singer models' domain, or `auto`: the query's
    branch when the catalogue holds tracks in it, else the other. Raises ApiError 409
    `checkpoint_mismatch` and what embedding raises."""
    await runtime.checkpoints.require_consistent()
    emb = await runtime.inference.embed(data, domain)
    branch = emb.domain or domain  # with auto: the branch the voice detector chose
    cal, policy = runtime.calibration, open_set_policy(runtime)
    catalog = runtime.catalog

    def rank() -> Identification:
        wanted = domain_with_tracks(catalog, branch) if models == "auto" else cast(Domain, models)
        hits, reading = (
            identify_hits(catalog, emb.vector, top_k, branch, wanted, cal, policy, emb.n_segments)
            if wanted
            else ([], HitReading([], None, None))
        )
        models_domain = wanted if hits else None
        segments = segment_evidence(catalog, emb, branch, models_domain, cal, policy)
        spans = timeline(segments) if with_timeline else None
        return Identification(emb, models_domain, hits, reading, segments, spans)

    return await runtime.catalog_call(rank)


@dataclass(frozen=True)
class TrackSearch:
    """One page of tracks ranked for an upload."""

    embedding: TrackEmbedding
    searched: Literal["mono", "mixed", "any"]  # the domain searched
    note: str | None  # why the answer differs from the request, or is empty
    tracks: list[TrackHit]
    next_offset: int | None  # the next page's offset; None on the last page


async def search(
    runtime: Runtime,
    data: bytes,
    *,
    domain: str,
    target: Literal["mono", "mixed", "any"],
    offset: int,
    top_k: int,
    singer: str | None = None,
    min_score: float | None = None,
) -> TrackSearch:
    """Rank the catalogue's tracks in `target` (any: both domains; a domain without tracks:
    the other) by cosine similarity to the upload; the page of `top_k` from `offset`.
    Raises ApiError 409 `checkpoint_mismatch` and what embedding raises."""
    await runtime.checkpoints.require_consistent()
    emb = await runtime.inference.embed(data, domain)
    catalog = runtime.catalog

    def find() -> TrackSearch:
        searched: Literal["mono", "mixed", "any"] = target
        note = None
        if target != "any":
            found = domain_with_tracks(catalog, target)
            if found is None:
                note = "the catalogue is empty"
            elif found != target:
                searched = found
                note = f"the catalogue holds no {target} track; searched the {found} tracks"
        # One more than the page tells whether a next page exists.
        hits = catalog.search_tracks(
            emb.vector,
            offset + top_k + 1,
            None if searched == "any" else searched,
            singer=singer,
            min_score=min_score,
        )
        if not hits and note is None and (singer is not None or min_score is not None):
            note = "no track passes the filters"
        more = len(hits) > offset + top_k
        page = hits[offset : offset + top_k]
        return TrackSearch(emb, searched, note, page, offset + top_k if more else None)

    return await runtime.catalog_call(find)
