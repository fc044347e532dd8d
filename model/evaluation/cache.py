"""A file cache of per-clip arrays (track embeddings, MFCC frames) so re-runs are fast.

Layout: `<root>/<namespace>/<key[:2]>/<key>.npz` (and `.json` for small result records). The
namespace says what produced the arrays (a checkpoint id, or the MFCC front end's settings); the
key says from what: the rendering (domain, mix, SNR), the options, and each source file's path,
size and modification time, so an edited file is never served stale. Writes are atomic (temp
file + rename): an interrupted run leaves no half-written entry, and two runs may share a cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import zipfile
from pathlib import Path

import numpy as np

from model.files import atomic_write, atomic_write_text

# np.load parses each array's header with ast.literal_eval, which CPython before 3.11.8 can
# fail from two threads at once ("AST constructor recursion depth mismatch", gh-106905): the
# evaluation reads the cache from its decoding threads, so reads take turns (they are small).
_LOAD_LOCK = threading.Lock()


def default_cache_dir() -> Path:
    """$XDG_CACHE_HOME/singer-retrieval/evaluation (~/.cache/... when unset)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "singer-retrieval" / "evaluation"


def file_identity(path: str | None) -> list | None:
    """[absolute path, size, mtime_ns] of a file, or None for no file."""
    if not path:
        return None
    st = os.stat(path)
    return [str(Path(path).resolve()), st.st_size, st.st_mtime_ns]


def namespace_for(settings: dict) -> str:
    """A short stable name for a dict of settings (JSON-able)."""
    blob = json.dumps(settings, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


class ArrayCache:
    """Named arrays per key under one namespace. `root=None` disables caching (get -> None)."""

    def __init__(self, root: str | Path | None, namespace: str):
        self.dir = Path(root) / namespace if root is not None else None
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(description: dict) -> str:
        """The cache key of a JSON-able description of what was computed from what."""
        blob = json.dumps(description, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:32]

    def _path(self, key: str) -> Path:
        assert self.dir is not None
        return self.dir / key[:2] / f"{key}.npz"

    def get(self, key: str) -> dict[str, np.ndarray] | None:
        if self.dir is None:
            return None
        path = self._path(key)
        try:
            with _LOAD_LOCK, np.load(path, allow_pickle=False) as data:
                arrays = {name: data[name] for name in data.files}
        except (FileNotFoundError, OSError, ValueError, zipfile.BadZipFile):
            self.misses += 1  # absent or damaged: recompute (and overwrite)
            return None
        self.hits += 1
        return arrays

    def put(self, key: str, **arrays: np.ndarray) -> None:
        if self.dir is None:
            return
        with atomic_write(self._path(key)) as fh:
            np.savez(fh, **arrays)  # type: ignore[arg-type]  # numpy stubs: keyword arrays

    def get_json(self, key: str) -> dict | None:
        """A JSON record stored with `put_json`, or None."""
        if self.dir is None:
            return None
        try:
            record = json.loads(self._path(key).with_suffix(".json").read_text(encoding="utf-8"))
        except (FileNotFoundError, OSError, ValueError):
            self.misses += 1
            return None
        self.hits += 1
        return record

    def put_json(self, key: str, record: dict) -> None:
        if self.dir is None:
            return
        atomic_write_text(self._path(key).with_suffix(".json"), json.dumps(record))
