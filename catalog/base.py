"""The interface every catalogue backend implements, and what they share.

Backends: `catalog.store.Catalog` (SQLite + in-process FAISS, one directory: the default)
and `catalog.qdrant.QdrantCatalog` (a Qdrant collection shared by any number of processes).
`catalog.open_catalog` picks one from a directory or URL. The service and the indexer only
use the methods declared here.
"""

from __future__ import annotations

import csv
import json
import logging
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, fields
from typing import IO, Any, Self

import numpy as np

from catalog.errors import CatalogError, TrackNotFoundError
from catalog.records import GenerationInfo, Singer, SingerHit, StoredTrack, Track, TrackHit
from model.domains import DOMAINS
from model.vectors import l2_normalize

log = logging.getLogger(__name__)

TRACK_FIELDS = ("singer", "domain", "duration_s", "n_segments", "content_hash", "checkpoint_id")
OPTIONAL_FIELDS = ("path", "title", "external_id")
METADATA_FIELDS = ("singer", "path", "title", "external_id")


def validated_item(item: dict, dim: int) -> dict:
    """One `add_tracks` item checked and completed; its vector (dim,) float32 L2-normalised.

    Raises ValueError naming the bad field.
    """
    missing = [k for k in ("vector", *TRACK_FIELDS) if item.get(k) is None]
    if missing:
        raise ValueError(f"track fields missing: {missing}")
    unknown = set(item) - {"vector", *TRACK_FIELDS, *OPTIONAL_FIELDS}
    if unknown:
        raise ValueError(f"unknown track fields: {sorted(unknown)}")
    vector = np.asarray(item["vector"], np.float64).reshape(-1)
    if vector.shape != (dim,):
        raise ValueError(f"vector must have shape ({dim},), got {vector.shape}")
    norm = float(np.linalg.norm(vector))
    if not np.isfinite(norm) or norm == 0.0:
        raise ValueError("vector must be finite and non-zero")
    if item["domain"] not in DOMAINS:
        raise ValueError(f"domain must be one of {DOMAINS}, got {item['domain']!r}")
    singer = str(item["singer"]).strip()
    if not singer:
        raise ValueError("singer must not be empty")
    return {
        **{k: None for k in OPTIONAL_FIELDS},
        **item,
        "singer": singer,
        "vector": (vector / norm).astype(np.float32),
        "duration_s": float(item["duration_s"]),
        "n_segments": int(item["n_segments"]),
    }


_GENERATION_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def check_generation_name(name: str) -> str:
    """A generation name: "" or letters, digits, '.', '_', '-' (it names folders and
    collections). Raises CatalogError."""
    if name and not _GENERATION_NAME.fullmatch(name):
        raise CatalogError(f"{name!r} is not a generation name (letters, digits, . _ -)")
    return name


def stored_item(record: StoredTrack) -> dict:
    """The `add_tracks` item of a stored track: its fields and vector, without id,
    singer id or creation time (which `restore_tracks` takes from the track itself)."""
    t = record.track
    return {
        "vector": record.vector,
        "singer": t.singer,
        "domain": t.domain,
        "duration_s": t.duration_s,
        "n_segments": t.n_segments,
        "content_hash": t.content_hash,
        "checkpoint_id": t.checkpoint_id,
        "path": t.path,
        "title": t.title,
        "external_id": t.external_id,
    }


def check_domain(domain: str | None, *, optional: bool) -> None:
    if (domain is None and not optional) or (domain is not None and domain not in DOMAINS):
        allowed = f"{DOMAINS}{' or None' if optional else ''}"
        raise ValueError(f"domain must be one of {allowed}, got {domain!r}")


@dataclass(frozen=True)
class TrackFilter:
    """Which tracks a search may answer: of `domain` (None: both), of `singer` (None: any),
    scoring at least `min_score` (None: any)."""

    domain: str | None = None
    singer: str | None = None
    min_score: float | None = None


def unit_query(vector: np.ndarray, dim: int) -> np.ndarray:
    """A search query: float32 (dim,), L2-normalised. Raises ValueError on another shape."""
    q = np.asarray(vector, np.float32).reshape(-1)
    if q.shape != (dim,):
        raise ValueError(f"query must have shape ({dim},), got {q.shape}")
    return l2_normalize(q)


class CatalogBackend(ABC):
    """Tracks, singers, singer models (L2-normalised mean of a singer's track vectors per
    domain) and the checkpoints that computed them. Every method is thread-safe."""

    dim: int

    # -- writes ------------------------------------------------------------------------
    @abstractmethod
    def add_tracks(self, items: Iterable[dict], *, replace: bool = False) -> list[Track]:
        """Add tracks; each item has `add_track`'s keyword fields, `vector` (dim,).

        Without `replace`, content already stored for the same checkpoint and domain raises
        DuplicateTrackError and nothing is written. With `replace`, a track of the same
        content and domain (any checkpoint) keeps its id and takes the new vector/metadata.
        """

    def add_track(
        self,
        vector: np.ndarray,
        *,
        singer: str,
        domain: str,
        duration_s: float,
        n_segments: int,
        content_hash: str,
        checkpoint_id: str,
        path: str | None = None,
        title: str | None = None,
        external_id: str | None = None,
        replace: bool = False,
    ) -> Track:
        """Add one track (see `add_tracks`). Durable when it returns."""
        item = {
            "vector": vector,
            "singer": singer,
            "domain": domain,
            "duration_s": duration_s,
            "n_segments": n_segments,
            "content_hash": content_hash,
            "checkpoint_id": checkpoint_id,
            "path": path,
            "title": title,
            "external_id": external_id,
        }
        return self.add_tracks([item], replace=replace)[0]

    @abstractmethod
    def update_track(self, track_id: int, **changes: Any) -> Track:
        """Change metadata (singer, path, title, external_id); singer models follow."""

    @abstractmethod
    def remove_tracks(self, track_ids: Iterable[int], *, missing_ok: bool = False) -> list[Track]:
        """Remove tracks (all or, for an unknown id without `missing_ok`, none)."""

    def remove_track(self, track_id: int) -> Track:
        """Remove one track; its singer goes with their last track. Raises TrackNotFoundError."""
        return self.remove_tracks([track_id])[0]

    # -- reads -------------------------------------------------------------------------
    @abstractmethod
    def get_track(self, track_id: int) -> Track:
        """Raises TrackNotFoundError."""

    @abstractmethod
    def get_vector(self, track_id: int) -> np.ndarray:
        """The stored vector: float32 (dim,), L2-normalised. Raises TrackNotFoundError."""

    @abstractmethod
    def find_track(self, content_hash: str, checkpoint_id: str, domain: str) -> Track | None:
        """The track of this content embedded by this checkpoint in this domain, if any."""

    def track_ids(
        self,
        *,
        singer: str | None = None,
        checkpoint_id: str | None = None,
        domain: str | None = None,
    ) -> list[int]:
        """Ids of the tracks matching every filter given, ascending."""
        return self._track_ids(singer, checkpoint_id, domain)

    @abstractmethod
    def _track_ids(
        self, singer: str | None, checkpoint_id: str | None, domain: str | None
    ) -> list[int]: ...

    def list_tracks(
        self,
        *,
        singer: str | None = None,
        domain: str | None = None,
        after_id: int = 0,
        limit: int = 50,
    ) -> list[Track]:
        """One page of tracks matching the filters: ids > `after_id`, ascending, at most
        `limit` (keyset pagination: the next page starts after the last id returned)."""
        return self._list_tracks(singer, domain, int(after_id), int(limit)) if limit > 0 else []

    @abstractmethod
    def _list_tracks(
        self, singer: str | None, domain: str | None, after_id: int, limit: int
    ) -> list[Track]:
        """`list_tracks` with `limit` >= 1."""

    def iter_tracks(self) -> Iterator[Track]:
        """Every track, by id, a page at a time."""
        after = 0
        while page := self.list_tracks(after_id=after, limit=1000):
            yield from page
            after = page[-1].id

    @abstractmethod
    def list_singers(self, offset: int = 0, limit: int = 50) -> tuple[int, list[Singer]]:
        """(total number of singers, one page of them ordered by name)."""

    @abstractmethod
    def get_singer(self, name: str) -> Singer | None: ...

    @abstractmethod
    def singer_vector(self, singer_id: int, domain: str) -> np.ndarray | None:
        """A singer's model in one domain (None: no tracks there)."""

    @abstractmethod
    def checkpoint_ids(self) -> set[str]:
        """The checkpoints whose vectors the catalogue holds."""

    @abstractmethod
    def stats(self) -> dict:
        """JSON-serialisable: n_tracks (per domain), n_singers, checkpoint_ids (id -> tracks),
        duration_h, index, dim, faiss_device, schema_version, directory (where it lives)."""

    @abstractmethod
    def __len__(self) -> int: ...

    # -- search ------------------------------------------------------------------------
    def search_tracks(
        self,
        vector: np.ndarray,
        k: int,
        domain: str | None = None,
        *,
        singer: str | None = None,
        min_score: float | None = None,
    ) -> list[TrackHit]:
        """The `k` tracks most similar to `vector` (dim,), best first; `domain` None: both;
        `singer`: only that singer's tracks; `min_score`: only cosine scores >= it.
        Raises ValueError on a vector of another shape or an unknown domain."""
        query = unit_query(vector, self.dim)
        check_domain(domain, optional=True)
        where = TrackFilter(domain, singer, min_score)
        return self._search_tracks(query, k, where) if k > 0 else []

    @abstractmethod
    def _search_tracks(self, query: np.ndarray, k: int, where: TrackFilter) -> list[TrackHit]:
        """`search_tracks` with its arguments checked: `query` float32 (dim,) of unit norm,
        `k` >= 1."""

    def search_singers(self, vector: np.ndarray, k: int, domain: str) -> list[SingerHit]:
        """The `k` singers whose model in `domain` is most similar to `vector`, best first."""
        query = unit_query(vector, self.dim)
        check_domain(domain, optional=False)
        return self._search_singers(query, k, domain) if k > 0 else []

    @abstractmethod
    def _search_singers(self, query: np.ndarray, k: int, domain: str) -> list[SingerHit]:
        """`search_singers` with its arguments checked, as in `_search_tracks`."""

    @abstractmethod
    def n_singers(self, domain: str) -> int:
        """Singers with at least one track in `domain` (the candidates of search_singers)."""

    # -- export and lifecycle ----------------------------------------------------------
    def export(self, fh: IO[str], fmt: str = "csv", include_vectors: bool = False) -> int:
        """Write every track to a text stream as CSV (a valid manifest) or a JSON array.

        Vectors, when included, are a list of floats (JSON) or space-separated (CSV).
        Returns the number of tracks written.
        """
        if fmt not in ("csv", "json"):
            raise ValueError(f"format must be 'csv' or 'json', got {fmt!r}")
        columns = ["path", "singer", "title", "domain", "external_id"]
        columns += [f.name for f in fields(Track) if f.name not in columns]
        if include_vectors:
            columns.append("vector")
        writer = csv.DictWriter(fh, columns) if fmt == "csv" else None
        if writer:
            writer.writeheader()
        else:
            fh.write("[")
        n = 0
        for track in self.iter_tracks():
            row = asdict(track)
            if include_vectors:
                vec = self.get_vector(track.id)
                row["vector"] = vec.tolist() if fmt == "json" else " ".join(f"{v:.7g}" for v in vec)
            if writer:
                writer.writerow({k: ("" if row[k] is None else row[k]) for k in columns})
            else:
                fh.write(("," if n else "") + "\n" + json.dumps({k: row[k] for k in columns}))
            n += 1
        if not writer:
            fh.write("\n]\n")
        return n

    # -- indexed roots -----------------------------------------------------------------
    def add_roots(self, folders: Iterable[str]) -> None:
        """Record folders the indexer indexed (absolute paths; recording one twice is a
        no-op). The service plays a catalogued file whose recorded path lies in one of them
        (catalog/roots.py). A backend that cannot record them says so in the log."""
        log.warning("%s does not record indexed folders", type(self).__name__)

    def roots(self) -> list[str]:
        """The folders recorded by `add_roots`, sorted."""
        return []

    # -- whole records: export, import, migrations ------------------------------------
    def iter_stored(self) -> Iterator[StoredTrack]:
        """Every track with its vector, by id."""
        for track in self.iter_tracks():
            try:
                yield StoredTrack(track, self.get_vector(track.id))
            except TrackNotFoundError:  # removed meanwhile
                continue

    def restore_tracks(self, records: Iterable[StoredTrack]) -> list[Track]:
        """Write tracks as they are given: id, singer, created_at and vector included (an
        existing track of the same id is overwritten; singer models follow). For imports and
        migrations; `add_tracks` is the way to add new audio. Raises DuplicateTrackError
        when the content, checkpoint and domain belong to another id."""
        raise CatalogError(f"{type(self).__name__} cannot restore tracks")

    # -- generations: a migration builds a shadow, then makes it live atomically ------
    def generation(self) -> GenerationInfo:
        """The generation this handle reads and writes (it never changes for a handle)."""
        return GenerationInfo()

    def live_generation(self) -> str:
        """The name of the generation live at this catalogue's location now: another one
        than `generation().name` once a migration has switched (cheap; polled)."""
        return self.generation().name

    def open_generation(self, name: str, *, dim: int | None) -> CatalogBackend:
        """Open (creating if absent) generation `name` at this location: a catalogue of its
        own, not live until `switch_to`. `dim` None: whatever it holds."""
        raise CatalogError(f"{type(self).__name__} does not support migrations")

    def record_build(self, checkpoint_id: str, checkpoint_file: str | None) -> None:
        """Record, in this generation, the checkpoint a migration builds it with (services
        that follow the switch load that file)."""
        raise CatalogError(f"{type(self).__name__} does not support migrations")

    def switch_to(self, shadow: CatalogBackend, ready: Callable[[], bool]) -> bool:
        """Make generation `shadow` live, atomically, and retire this one (its writes then
        raise CatalogRetiredError). `ready()` is called while this generation's writes are
        held: False (writes landed since the last catch-up) cancels; returns whether it
        switched. This handle must serve the live generation."""
        raise CatalogError(f"{type(self).__name__} does not support migrations")

    def save_indexes(self) -> bool:
        """Persist derived state, if the backend has any. Returns whether it wrote."""
        return False

    @abstractmethod
    def close(self) -> None:
        """Release the backend. Safe to call twice."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
