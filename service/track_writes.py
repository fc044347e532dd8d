"""Adding and removing catalogue tracks through the API (`POST /tracks`, `DELETE /tracks/{id}`).

Both return only after the catalogue has committed the write, so a 2xx survives a crash.
Uploads of one content are serialised (`ContentLocks`): concurrent uploads of the same file
add one track, and a stored upload is discarded only when no track of its content is left.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from starlette.concurrency import run_in_threadpool

from catalog import Track
from catalog.hashing import content_hash
from model.domains import DOMAINS
from model.embedding import TrackEmbedding
from service.catalog_swap import retry_after_swap
from service.errors import ApiError

if TYPE_CHECKING:
    from service.runtime import Runtime


class ContentLocks:
    """One asyncio lock per key; a lock lives as long as someone holds or awaits it."""

    def __init__(self) -> None:
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    def __call__(self, key: str) -> asyncio.Lock:
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        return lock


@dataclass(frozen=True)
class TrackAddition:
    """The track filed for an upload; `embedding` None: the same file was already there."""

    track: Track
    embedding: TrackEmbedding | None

    @property
    def created(self) -> bool:
        return self.embedding is not None


async def add_track(
    runtime: Runtime,
    data: bytes,
    *,
    singer: str,
    domain: str,
    title: str | None,
    external_id: str | None,
    filename: str | None,
) -> TrackAddition:
    """Embed an upload and file it under `singer` (idempotent for the same content, domain and
    singer). Raises ApiError 409 (`duplicate_track`, `checkpoint_mismatch`) and what
    embedding raises. During a migration's switch it is run again with the new model and
    catalogue (service/catalog_swap.py)."""

    def attempt() -> Awaitable[TrackAddition]:
        return _add_track(
            runtime,
            data,
            singer=singer,
            domain=domain,
            title=title,
            external_id=external_id,
            filename=filename,
        )

    return await retry_after_swap(runtime.serving, runtime.follower, attempt)


async def _add_track(
    runtime: Runtime,
    data: bytes,
    *,
    singer: str,
    domain: str,
    title: str | None,
    external_id: str | None,
    filename: str | None,
) -> TrackAddition:
    await runtime.checkpoints.require_consistent()
    digest = content_hash(data)
    ckpt = runtime.embedder.checkpoint_id
    catalog = runtime.catalog
    async with runtime.content_locks(f"{digest}/{domain}"):
        existing = await runtime.catalog_call(catalog.find_track, digest, ckpt, domain)
        if existing is None:
            emb = await runtime.inference.embed(data, domain, runtime.settings.max_track_seconds)
            track = await runtime.catalog_call(
                catalog.add_track,
                emb.vector,
                singer=singer,
                domain=domain,
                duration_s=emb.duration_s,
                n_segments=emb.n_segments,
                content_hash=digest,
                checkpoint_id=ckpt,
                path=None,
                title=title,
                external_id=external_id,
            )
            added = TrackAddition(track, emb)
        elif existing.singer == singer:
            added = TrackAddition(existing, None)
        else:
            raise ApiError(
                409,
                "duplicate_track",
                f"this file is already track {existing.id}, sung by {existing.singer!r}",
                track_id=existing.id,
            )
        # Kept under its content hash so that GET /tracks/{id}/audio can play it.
        await run_in_threadpool(runtime.audio.keep_upload, data, digest, filename)
    return added


@dataclass(frozen=True)
class TrackRemoval:
    """A removed track, and whether its audio could be played before the removal."""

    track: Track
    playable: bool


async def delete_track(runtime: Runtime, track_id: int) -> TrackRemoval:
    """Remove a track (its singer's models are updated; the singer goes with its last track)
    and, with the last track of its content, the stored upload. Raises TrackNotFoundError.
    During a migration's switch it is run again on the new catalogue."""
    return await retry_after_swap(
        runtime.serving, runtime.follower, lambda: _delete_track(runtime, track_id)
    )


async def _delete_track(runtime: Runtime, track_id: int) -> TrackRemoval:
    catalog = runtime.catalog
    track = await runtime.catalog_call(catalog.remove_track, track_id)
    await runtime.checkpoints.track_removed(track)
    playable = runtime.audio.playable(track)  # as it was, before its upload may go
    async with runtime.content_locks(f"{track.content_hash}/{track.domain}"):
        others = [
            await runtime.catalog_call(
                catalog.find_track, track.content_hash, track.checkpoint_id, domain
            )
            for domain in DOMAINS
        ]
        if not any(others):
            await run_in_threadpool(runtime.audio.discard_upload, track.content_hash)
    return TrackRemoval(track, playable)
