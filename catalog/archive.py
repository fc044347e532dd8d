"""A portable catalogue archive: every track with its vector, the singers, the checkpoint
ids, the indexed roots and the metadata, in one tar file that any backend can import.

    catalogue.json   format, version, dim, n_tracks, checkpoint ids (id -> tracks), roots,
                     generation, creation time, and the SHA-256 and size of the two files below
    tracks.jsonl     one `Track` per line (id, singer, singer_id, domain, path, title,
                     external_id, duration_s, n_segments, content_hash, checkpoint_id, created_at)
    vectors.f32      the tracks' vectors in the same order: float32 little-endian, n x dim

`.tar.gz` / `.tgz` names are compressed. Importing checks everything before it writes: the
format, the checksums and sizes, the dimension against the catalogue's, that every track's
checkpoint is one the manifest declares, and that the catalogue holds no vectors of another
checkpoint (scores across checkpoints mean nothing). Tracks are written with their ids
(`restore_tracks`), so an import that was interrupted is finished by running it again.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import IO, Any

import numpy as np

from catalog.base import CatalogBackend
from catalog.errors import CatalogError
from catalog.records import StoredTrack, Track
from model.files import atomic_write

FORMAT = "singer-retrieval-catalogue"
VERSION = 1
MANIFEST, TRACKS, VECTORS = "catalogue.json", "tracks.jsonl", "vectors.f32"
_BATCH = 500
_TRACK_FIELDS = [f.name for f in fields(Track)]


class ArchiveError(CatalogError):
    """The archive is damaged, of another format, or does not fit the catalogue."""


@dataclass(frozen=True)
class ArchiveSummary:
    n_tracks: int
    dim: int
    checkpoint_ids: dict[str, int]
    roots: list[str]


def _compressed(path: Path) -> bool:
    return path.name.endswith((".tar.gz", ".tgz"))


class _HashingWriter:
    """A binary file that hashes and counts what goes through it."""

    def __init__(self, fh: IO[bytes]):
        self.fh, self.sha, self.size = fh, hashlib.sha256(), 0

    def write(self, data: bytes) -> None:
        self.fh.write(data)
        self.sha.update(data)
        self.size += len(data)

    def record(self) -> dict[str, Any]:
        return {"sha256": self.sha.hexdigest(), "bytes": self.size}


def export_archive(catalog: CatalogBackend, path: str | Path) -> ArchiveSummary:
    """Write every track of `catalog` to a new archive at `path` (atomically: a reader sees
    no half-written archive). Returns what it holds."""
    path = Path(path)
    counts: dict[str, int] = {}
    n = 0
    with tempfile.TemporaryDirectory(dir=path.parent if path.parent.exists() else None) as tmp:
        tracks_file, vectors_file = Path(tmp) / TRACKS, Path(tmp) / VECTORS
        with tracks_file.open("wb") as tf, vectors_file.open("wb") as vf:
            tracks_out, vectors_out = _HashingWriter(tf), _HashingWriter(vf)
            for record in catalog.iter_stored():
                line = json.dumps(asdict(record.track), ensure_ascii=False) + "\n"
                tracks_out.write(line.encode())
                vectors_out.write(np.asarray(record.vector, "<f4").tobytes())
                counts[record.track.checkpoint_id] = counts.get(record.track.checkpoint_id, 0) + 1
                n += 1
        summary = ArchiveSummary(n, catalog.dim, counts, catalog.roots())
        manifest = {
            "format": FORMAT,
            "version": VERSION,
            "dim": catalog.dim,
            "n_tracks": n,
            "checkpoint_ids": counts,
            "roots": summary.roots,
            "generation": asdict(catalog.generation()),
            "files": {TRACKS: tracks_out.record(), VECTORS: vectors_out.record()},
        }
        with (
            atomic_write(path, durable=True) as fh,
            (
                tarfile.open(fileobj=fh, mode="w:gz")
                if _compressed(path)
                else tarfile.open(fileobj=fh, mode="w")
            ) as tar,
        ):
            data = json.dumps(manifest, indent=2).encode()
            info = tarfile.TarInfo(MANIFEST)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
            tar.add(tracks_file, TRACKS)
            tar.add(vectors_file, VECTORS)
    return summary


def read_manifest(path: str | Path) -> dict[str, Any]:
    """The archive's manifest, its format checked. Raises ArchiveError."""
    try:
        with tarfile.open(path) as tar:
            manifest = json.loads(_member(tar, MANIFEST).read())
    except (OSError, tarfile.TarError, ValueError) as err:
        raise ArchiveError(f"{path}: not a catalogue archive: {err}") from err
    if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        raise ArchiveError(
            f"{path}: not a catalogue archive of version {VERSION} "
            f"({manifest.get('format')!r} version {manifest.get('version')!r})"
        )
    return manifest


def _member(tar: tarfile.TarFile, name: str) -> IO[bytes]:
    member = tar.getmember(name)
    fh = tar.extractfile(member) if member.isfile() else None
    if fh is None:
        raise ArchiveError(f"{name} is not a file in the archive")
    return fh


def verify_archive(path: str | Path) -> dict[str, Any]:
    """Check the checksums and sizes of the archive's files. Returns its manifest."""
    manifest = read_manifest(path)
    with tarfile.open(path) as tar:
        for name, expected in manifest["files"].items():
            sha, size = hashlib.sha256(), 0
            with _member(tar, name) as fh:
                while chunk := fh.read(1 << 20):
                    sha.update(chunk)
                    size += len(chunk)
            if (sha.hexdigest(), size) != (expected["sha256"], expected["bytes"]):
                raise ArchiveError(f"{path}: {name} does not match its checksum (damaged)")
    n, dim = int(manifest["n_tracks"]), int(manifest["dim"])
    if manifest["files"][VECTORS]["bytes"] != n * dim * 4:
        raise ArchiveError(f"{path}: {VECTORS} does not hold {n} vectors of dimension {dim}")
    with tarfile.open(path) as tar, _member(tar, TRACKS) as fh:
        lines = sum(1 for line in fh for _ in [_track(line, manifest)])
    if lines != n:
        raise ArchiveError(f"{path}: {TRACKS} holds {lines} tracks, the manifest says {n}")
    return manifest


def _track(line: bytes | str, manifest: dict[str, Any]) -> Track:
    """One line of tracks.jsonl as a Track, checked against the manifest."""
    row = json.loads(line)
    if not isinstance(row, dict) or set(row) != set(_TRACK_FIELDS):
        raise ArchiveError(f"{TRACKS}: a line without the track fields: {line[:200]!r}")
    track = Track(**row)
    if track.checkpoint_id not in manifest["checkpoint_ids"]:
        raise ArchiveError(
            f"{TRACKS}: track {track.id} is of checkpoint {track.checkpoint_id}, which the "
            "archive does not declare"
        )
    return track


def _records(path: str | Path, manifest: dict[str, Any]) -> Iterator[StoredTrack]:
    dim = int(manifest["dim"])
    with tarfile.open(path) as tar, _member(tar, TRACKS) as tf, _member(tar, VECTORS) as vf:
        for line in tf:
            vector = np.frombuffer(vf.read(4 * dim), "<f4").astype(np.float32)
            yield StoredTrack(_track(line, manifest), vector)


def import_archive(catalog: CatalogBackend, path: str | Path) -> ArchiveSummary:
    """Check the archive (see the module docstring), then write its tracks and roots into
    `catalog`, keeping their ids. Every check reads the whole archive before the first
    write: a damaged or unfit archive raises ArchiveError and changes nothing."""
    manifest = verify_archive(path)
    dim = int(manifest["dim"])
    if dim != catalog.dim:
        raise ArchiveError(
            f"{path}: the archive's vectors have dimension {dim}, the catalogue's {catalog.dim}"
        )
    declared = {str(k): int(v) for k, v in manifest["checkpoint_ids"].items()}
    others = catalog.checkpoint_ids() - set(declared)
    if others:
        raise ArchiveError(
            f"the catalogue holds vectors of checkpoint(s) {sorted(others)}, the archive of "
            f"{sorted(declared)}: import into an empty catalogue or one of the same checkpoint"
        )
    batch: list[StoredTrack] = []
    n = 0
    for record in _records(path, manifest):
        batch.append(record)
        if len(batch) >= _BATCH:
            n += len(catalog.restore_tracks(batch))
            batch = []
    n += len(catalog.restore_tracks(batch))
    catalog.add_roots(manifest["roots"])
    if n != int(manifest["n_tracks"]):
        raise ArchiveError(f"{path}: {n} tracks read, the manifest says {manifest['n_tracks']}")
    return ArchiveSummary(n, dim, declared, list(manifest["roots"]))
