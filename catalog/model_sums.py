"""Running sums of singers' track vectors: a write updates a singer model from what it changed.

A singer model is the L2-normalised mean of the singer's track vectors in one domain
(`model.vectors.normalized_mean`). Recomputing it from every stored vector on each write costs
a read of all the singer's tracks: indexing 64 tracks of 20 singers interleaved into a
catalogue of 15,000 read some 15,000 vectors a commit, about 1 ms a track, growing with the
catalogue. With the float64 sum and count of each singer's vectors at hand, a write adds and
subtracts only the vectors it changed.

The cache is bounded (least recently used out) and holds only what this process has seen
committed: the catalogue drops it whenever another process has written, and a singer not in
it is summed from the stored vectors, exactly as `normalized_mean` sums them.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from model.vectors import l2_normalize

#: (singer id, domain) pairs whose sums are kept: 16 MiB of float64 at 512 dimensions.
CACHED_SINGERS = 4096

Key = tuple[int, str]


class ModelSums:
    """(singer id, domain) -> (float64 (dim,) sum of the singer's track vectors, their count)."""

    def __init__(self, capacity: int | None = None):
        self.capacity = CACHED_SINGERS if capacity is None else capacity
        self._sums: OrderedDict[Key, tuple[np.ndarray, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._sums)

    def get(self, key: Key) -> tuple[np.ndarray, int] | None:
        """The cached sum and count (the array is the cache's own: do not change it)."""
        found = self._sums.get(key)
        if found is not None:
            self._sums.move_to_end(key)
        return found

    def put(self, key: Key, total: np.ndarray, count: int) -> None:
        """Record a committed sum; a singer with no tracks left is forgotten."""
        if count <= 0:
            self._sums.pop(key, None)
            return
        self._sums[key] = (total, count)
        self._sums.move_to_end(key)
        while len(self._sums) > self.capacity:
            self._sums.popitem(last=False)

    def clear(self) -> None:
        self._sums.clear()


def shifted(
    total: np.ndarray, count: int, changes: list[tuple[int, np.ndarray]]
) -> tuple[np.ndarray, int]:
    """A sum and count moved by (+1 or -1, vector (dim,)) changes: a new array, in float64."""
    total = total.copy()
    for sign, vector in changes:
        total += sign * np.asarray(vector, np.float64)
        count += sign
    return total, count


def model_of_sum(total: np.ndarray, count: int) -> np.ndarray | None:
    """The singer model of a sum of `count` unit vectors: float32 (dim,), L2-normalised, as
    `normalized_mean` gives it (the same division of the same sum); None without tracks."""
    if count <= 0:
        return None
    return l2_normalize(total / count).astype(np.float32)
