"""FAISS indexes of L2-normalised vectors, searched by inner product (= cosine similarity).

Every index maps its rows to caller-chosen int64 ids (catalogue track or singer ids), so a
search answers catalogue ids directly. Two kinds:

- `flat`: exact search (`IndexIDMap2(IndexFlatIP)`), removal in place. On a machine with the
  FAISS GPU build and a CUDA device, searches run on a GPU copy that follows additions and
  is re-copied after a removal (GPU flat indexes cannot remove rows).
- `hnsw`: approximate search (`IndexHNSWFlat`, CPU only: FAISS has no GPU HNSW). HNSW
  graphs cannot delete nodes, so a removed row is masked out of searches with a bitmap
  selector, and the graph is rebuilt from the live rows once a quarter of them are dead.

An index is serialised to a few numpy arrays (`to_arrays` / `from_arrays`) that the
catalogue stores in one file; it never needs pickling.
"""

from __future__ import annotations

import functools
import logging
import subprocess
import sys
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, Self

import faiss
import numpy as np

#: Track ids: an int64 array or a sequence of ints.
Ids = np.ndarray | Sequence[int]

log = logging.getLogger(__name__)

KINDS = ("flat", "hnsw")
# Exact search of one query over this many 256-d vectors costs about 10 ms of CPU at p99
# (7 ms p50, measured: bench/bench_search.py, README "Scale-out") and grows linearly; beyond
# it HNSW keeps recall@10 >= 0.99 for well under 1 ms a query.
FLAT_MAX_VECTORS = 50_000


def recommended_kind(n_vectors: int) -> str:
    """The index kind for a catalogue of `n_vectors` track vectors: flat up to
    FLAT_MAX_VECTORS, HNSW beyond."""
    return "flat" if n_vectors <= FLAT_MAX_VECTORS else "hnsw"


# One search on GPU 0 through a GPU copy of a flat index: what the service does first.
_GPU_PROBE = """
import faiss, numpy as np
x = np.random.default_rng(0).standard_normal((64, 8), dtype=np.float32)
cpu = faiss.IndexFlatIP(8)
cpu.add(x)
gpu = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, cpu)
assert (gpu.search(x[:4], 1)[1].ravel() == np.arange(4)).all()
"""


def child_failure(code: str, timeout: float = 120.0) -> str | None:
    """Run Python `code` in a child interpreter: None when it succeeds, else its last line of
    error output (or how it ended). A native abort there cannot take this process down."""
    try:
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return f"no answer within {timeout:.0f} s"
    if done.returncode == 0:
        return None
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    return lines[-1][-300:] if lines else f"exit status {done.returncode}"


@functools.cache
def gpu_problem() -> str | None:
    """Why FAISS cannot search on a GPU here, or None when it can (checked once a process)."""
    if not hasattr(faiss, "StandardGpuResources"):
        return "this FAISS build has no GPU support"
    if faiss.get_num_gpus() == 0:
        return "FAISS sees no CUDA device"
    # A GPU build without kernels for the card aborts the process at its first search (the
    # PyPI faiss-gpu-cu12 wheels 1.9 to 1.14 carry sm_70/sm_80 code only, so an H100 fails
    # with "no kernel image"), so the first search runs in a child process.
    failure = child_failure(_GPU_PROBE)
    return None if failure is None else f"FAISS GPU search fails on this device: {failure}"


def gpu_available() -> bool:
    """True when this FAISS build has GPU support, sees a device and can search on it."""
    return gpu_problem() is None


def resolve_gpu(device: str | None) -> int | None:
    """'auto' | 'cpu' | 'cuda' | 'cuda:N' -> the GPU number FAISS should use, or None for CPU.

    An explicit CUDA request without a GPU build of FAISS falls back to CPU with a warning:
    the model may still run on the GPU, and CPU FAISS is correct, only slower.
    """
    device = (device or "auto").strip().lower()
    if device == "cpu":
        return None
    if device == "auto" and not hasattr(faiss, "StandardGpuResources"):
        return None  # faiss-cpu: nothing to try, nothing to warn about
    if device == "auto" or device.startswith("cuda"):
        number = int(device.partition(":")[2] or 0)
        if gpu_available() and number < faiss.get_num_gpus():
            return number
        log.warning("FAISS cannot use %s (%s): searching on CPU", device, gpu_problem())
        return None
    raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}")


@functools.cache
def _gpu_resources(gpu: int) -> Any:
    # One resource object (streams, scratch memory) per device, shared by all indexes.
    return faiss.StandardGpuResources()


def as_matrix(vectors: np.ndarray, dim: int) -> np.ndarray:
    """(n, dim) or (dim,) -> C-contiguous float32 (n, dim), as FAISS requires."""
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2 or x.shape[1] != dim:
        raise ValueError(f"expected vectors of dimension {dim}, got shape {np.shape(vectors)}")
    return x


def _as_ids(ids: Ids) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(ids, dtype=np.int64).reshape(-1))


class VectorIndex(ABC):
    """Inner-product index over (n, dim) float32 rows, each with a unique int64 id."""

    kind: str

    def __init__(self, dim: int):
        self.dim = dim

    @abstractmethod
    def __len__(self) -> int:
        """Number of live rows."""

    @abstractmethod
    def add(self, ids: Ids, vectors: np.ndarray) -> None:
        """Add rows. `ids` (n,) must not be in the index; `vectors` (n, dim) L2-normalised."""

    @abstractmethod
    def remove(self, ids: Ids) -> int:
        """Remove the rows with these ids (absent ids are ignored). Returns how many went."""

    @abstractmethod
    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(q, dim) queries -> (scores (q, k) float32, ids (q, k) int64), best first.

        Rows past the number of live vectors are padded with id -1.
        """

    @abstractmethod
    def to_arrays(self) -> dict[str, np.ndarray]:
        """The index as named numpy arrays (for `from_arrays`)."""

    @classmethod
    @abstractmethod
    def from_arrays(cls, dim: int, arrays: dict[str, np.ndarray], gpu: int | None = None) -> Self:
        """Inverse of `to_arrays`."""

    def _empty_result(self, n_queries: int, k: int) -> tuple[np.ndarray, np.ndarray]:
        return (np.full((n_queries, k), -np.inf, np.float32), np.full((n_queries, k), -1, np.int64))


class FlatIndex(VectorIndex):
    """Exact inner-product search; optional GPU copy for searching."""

    kind = "flat"

    def __init__(self, dim: int, gpu: int | None = None):
        super().__init__(dim)
        self._index: Any = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        self._gpu = gpu
        self._gpu_index: Any = None  # rebuilt lazily after a removal

    def __len__(self) -> int:
        return int(self._index.ntotal)

    @property
    def on_gpu(self) -> bool:
        return self._gpu is not None

    def add(self, ids: Ids, vectors: np.ndarray) -> None:
        x, ids = as_matrix(vectors, self.dim), _as_ids(ids)
        if len(ids) != len(x):
            raise ValueError(f"{len(ids)} ids for {len(x)} vectors")
        self._index.add_with_ids(x, ids)
        if self._gpu_index is not None:
            self._gpu_index.add_with_ids(x, ids)

    def remove(self, ids: Ids) -> int:
        ids = _as_ids(ids)
        if not len(ids):
            return 0
        removed = int(self._index.remove_ids(faiss.IDSelectorBatch(ids)))
        if removed:
            self._gpu_index = None
        return removed

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        q = as_matrix(queries, self.dim)
        if len(self) == 0 or k <= 0:
            return self._empty_result(len(q), max(k, 0))
        index = self._gpu_copy() or self._index
        scores, ids = index.search(q, k)
        return scores, ids

    def _gpu_copy(self) -> Any:
        """The GPU copy for searching (built on first use after a removal), or None."""
        if self._gpu is None or self._gpu_index is not None:
            return self._gpu_index
        try:
            config = faiss.GpuIndexFlatConfig()
            config.device = self._gpu
            flat = faiss.GpuIndexFlatIP(_gpu_resources(self._gpu), self.dim, config)
            mirror: Any = faiss.IndexIDMap2(flat)
            mirror.own_fields = False
            mirror._flat = flat  # the wrapper does not own it: keep it alive with the mirror
            n = len(self)
            if n:
                mirror.add_with_ids(
                    self._index.index.reconstruct_n(0, n), faiss.vector_to_array(self._index.id_map)
                )
        except Exception as err:
            log.warning("FAISS GPU %d unusable (%s); searching on CPU", self._gpu, err)
            self._gpu = None
            return None
        self._gpu_index = mirror
        return mirror

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"index": faiss.serialize_index(self._index)}

    @classmethod
    def from_arrays(cls, dim: int, arrays: dict[str, np.ndarray], gpu: int | None = None) -> Self:
        out = cls(dim, gpu)
        index = faiss.deserialize_index(np.ascontiguousarray(arrays["index"]))
        if index.d != dim:
            raise ValueError(f"stored flat index has dimension {index.d}, expected {dim}")
        out._index = index  # deserialize_index already answers the concrete class
        return out


class HNSWIndex(VectorIndex):
    """Approximate search on an HNSW graph; removed rows are masked, then compacted away."""

    kind = "hnsw"
    COMPACT_FRACTION = 0.25  # rebuild the graph when this share of its rows is dead

    def __init__(self, dim: int, m: int = 32, ef_construction: int = 200, ef_search: int = 128):
        super().__init__(dim)
        self.m, self.ef_construction, self.ef_search = m, ef_construction, ef_search
        self._reset()

    def _reset(self) -> None:
        self._index: Any = faiss.IndexHNSWFlat(self.dim, self.m, faiss.METRIC_INNER_PRODUCT)
        self._index.hnsw.efConstruction = self.ef_construction
        # Graph row -> external id / not removed; arrays grow by doubling, the first
        # `_n_rows` entries are used.
        self._labels = np.empty(0, np.int64)
        self._live = np.empty(0, bool)
        self._n_rows = 0
        self._row_of: dict[int, int] = {}  # external id -> graph row, live rows only
        self._bitmap: np.ndarray | None = None  # packed `_live`, cached for the search selector

    def __len__(self) -> int:
        return len(self._row_of)

    def add(self, ids: Ids, vectors: np.ndarray) -> None:
        x, ids = as_matrix(vectors, self.dim), _as_ids(ids)
        if len(ids) != len(x):
            raise ValueError(f"{len(ids)} ids for {len(x)} vectors")
        if len(set(ids.tolist())) != len(ids) or any(int(i) in self._row_of for i in ids):
            raise ValueError("ids must be unique and not already in the index")
        start, end = self._n_rows, self._n_rows + len(ids)
        if end > len(self._labels):
            capacity = max(end, 2 * len(self._labels), 1024)
            self._labels = np.resize(self._labels, capacity)
            self._live = np.resize(self._live, capacity)
        self._index.add(x)
        self._labels[start:end], self._live[start:end] = ids, True
        self._n_rows = end
        self._row_of.update(zip(ids.tolist(), range(start, end)))
        self._bitmap = None

    def remove(self, ids: Ids) -> int:
        removed = 0
        for i in _as_ids(ids).tolist():
            row = self._row_of.pop(i, None)
            if row is not None:
                self._live[row] = False
                removed += 1
        if removed:
            self._bitmap = None
            if self._n_rows - len(self._row_of) > self.COMPACT_FRACTION * self._n_rows:
                self._compact()
        return removed

    def _compact(self) -> None:
        """Rebuild the graph from the live rows (HNSW cannot unlink nodes)."""
        rows = np.flatnonzero(self._live[: self._n_rows])
        vectors = self._index.reconstruct_n(0, self._n_rows)[rows]
        labels = self._labels[rows]
        log.debug("compacting HNSW index: %d live of %d rows", len(rows), self._n_rows)
        self._reset()
        if len(rows):
            self.add(labels, vectors)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        q = as_matrix(queries, self.dim)
        if len(self) == 0 or k <= 0:
            return self._empty_result(len(q), max(k, 0))
        params = faiss.SearchParametersHNSW()  # type: ignore[attr-defined]
        params.efSearch = max(self.ef_search, k)
        if len(self._row_of) < self._n_rows:
            if self._bitmap is None:
                self._bitmap = np.packbits(self._live[: self._n_rows], bitorder="little")
            bitmap = self._bitmap
            # The selector reads the bitmap through a raw pointer: keep both referenced
            # (`self._bitmap`, `selector`) until the search returns.
            selector = faiss.IDSelectorBitmap(self._n_rows, faiss.swig_ptr(bitmap))
            params.sel = selector
        scores, rows = self._index.search(q, k, params=params)
        ids = np.where(rows >= 0, self._labels[np.maximum(rows, 0)], -1)
        return scores, ids

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {
            "index": faiss.serialize_index(self._index),
            "labels": self._labels[: self._n_rows],
            "live": self._live[: self._n_rows],
            "params": np.array([self.m, self.ef_construction, self.ef_search], np.int64),
        }

    @classmethod
    def from_arrays(cls, dim: int, arrays: dict[str, np.ndarray], gpu: int | None = None) -> Self:
        m, ef_construction, ef_search = (int(v) for v in arrays["params"])
        out = cls(dim, m, ef_construction, ef_search)
        # Not faiss.downcast_index(faiss.deserialize_index(...)): the inner proxy owns the
        # C++ object and would free it when garbage-collected.
        index = faiss.deserialize_index(np.ascontiguousarray(arrays["index"]))
        # Copies: the index mutates them, and the caller's arrays may be another index's.
        labels, live = np.array(arrays["labels"], np.int64), np.array(arrays["live"], bool)
        if index.d != dim or index.ntotal != len(labels) or len(live) != len(labels):
            raise ValueError("stored HNSW index is inconsistent with its labels")
        out._index, out._labels, out._live, out._n_rows = index, labels, live, len(labels)
        out._row_of = {int(labels[r]): int(r) for r in np.flatnonzero(live)}
        return out


def create_index(kind: str, dim: int, gpu: int | None = None) -> VectorIndex:
    """A new empty index of `kind` ('flat' or 'hnsw'); `gpu` applies to flat indexes only."""
    if kind == "flat":
        return FlatIndex(dim, gpu)
    if kind == "hnsw":
        return HNSWIndex(dim)
    raise ValueError(f"index kind must be one of {KINDS}, got {kind!r}")


def load_index(
    kind: str, dim: int, arrays: dict[str, np.ndarray], gpu: int | None = None
) -> VectorIndex:
    """Rebuild an index saved with `to_arrays`."""
    classes: dict[str, type[VectorIndex]] = {"flat": FlatIndex, "hnsw": HNSWIndex}
    cls = classes.get(kind)
    if cls is None:
        raise ValueError(f"index kind must be one of {KINDS}, got {kind!r}")
    return cls.from_arrays(dim, arrays, gpu)
