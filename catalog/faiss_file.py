"""The file that caches a catalogue's FAISS indexes: `<directory>/faiss-<kind>.npz`.

Per domain, the index over track vectors and the flat index over singer models, as the
numpy arrays of `VectorIndex.to_arrays`, plus a `meta` record of what they were built from
(catalogue uuid, kind, dim, generation). It is derived state: a file that does not match its
catalogue is ignored and rebuilt. It is written atomically (temporary file + rename).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from catalog.vector_index import FlatIndex, VectorIndex, load_index
from model.domains import DOMAINS
from model.files import atomic_write

INDEX_FORMAT = 1

TrackIndexes = dict[str, VectorIndex]
SingerIndexes = dict[str, FlatIndex]


def index_file(directory: Path, kind: str) -> Path:
    return directory / f"faiss-{kind}.npz"


def file_meta(uuid: str, kind: str, dim: int, generation: int) -> dict[str, Any]:
    """What a FAISS file records, and must match to be loaded."""
    return {
        "format": INDEX_FORMAT,
        "uuid": uuid,
        "kind": kind,
        "dim": dim,
        "generation": generation,
    }


def save_index_file(
    path: Path, meta: dict[str, Any], tracks: TrackIndexes, singers: SingerIndexes
) -> None:
    """Write the indexes and their `meta` (durable: fsynced before the rename)."""
    arrays: dict[str, Any] = {"meta": np.frombuffer(json.dumps(meta).encode(), np.uint8)}
    for name, group in (("tracks", tracks), ("singers", singers)):
        for d, index in group.items():
            arrays.update({f"{name}.{d}.{k}": v for k, v in index.to_arrays().items()})
    with atomic_write(path, durable=True) as fh:
        np.savez(fh, **arrays)


def read_index_file(
    path: Path, expected: dict[str, Any], gpu: int | None
) -> tuple[TrackIndexes, SingerIndexes] | str:
    """The indexes in `path`, or why they cannot be used (a string): `expected` is the
    `file_meta` of the catalogue as it is now. Raises on an unreadable file."""
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    meta = json.loads(arrays.pop("meta").tobytes().decode())
    found = {k: meta.get(k) for k in expected}
    if found != expected:
        return f"it does not match the catalogue ({found}, not {expected})"
    groups: dict[str, dict[str, np.ndarray]] = {}
    for key, value in arrays.items():
        group, _, name = key.rpartition(".")
        groups.setdefault(group, {})[name] = value
    kind, dim = expected["kind"], expected["dim"]
    tracks = {d: load_index(kind, dim, groups[f"tracks.{d}"], gpu) for d in DOMAINS}
    singers = {d: FlatIndex.from_arrays(dim, groups[f"singers.{d}"]) for d in DOMAINS}
    return tracks, singers
