"""Score fusion of two evaluated systems at the track level (say, CROSS and its teacher).

The fused vector of a track is [sqrt(w) a, sqrt(1 - w) b] (`model.vectors.fuse`), where a
(d1,) and b (d2,) are the two systems' L2-normalised track vectors and w the first system's
weight. It has unit norm, and
the cosine of two fused vectors is exactly w cos(a, a') + (1 - w) cos(b, b'): one vector per
track in one inner-product index gives the fused scores, so every figure of the runner (closed
set, open set, SNR sweep) applies to a fusion as it is.
"""

from __future__ import annotations

from dataclasses import dataclass

from model.vectors import fuse


@dataclass(frozen=True)
class Fusion:
    """A fused row: the names of two evaluated systems and the first one's weight in [0, 1]."""

    first: str
    second: str
    weight: float

    def __post_init__(self) -> None:
        if not 0.0 <= self.weight <= 1.0:
            raise ValueError(f"fusion weight {self.weight} is outside [0, 1]")
        if self.first == self.second:
            raise ValueError(f"a fusion needs two systems, got {self.first} twice")

    @property
    def name(self) -> str:
        return f"{self.first}+{self.second}@{self.weight:g}"

    def check(self, names: list[str]) -> None:
        """Raise ValueError unless both fused systems are among the evaluated `names`."""
        if {self.first, self.second} - set(names):
            raise ValueError(f"fusion {self.name}: fuse two of the named checkpoints {names}")


def fuse_stores(first: dict, second: dict, weight: float) -> dict:
    """Fuse two {view: {clip index: vector}} stores; a rendering missing in either is left out."""
    return {
        view: {i: fuse(first[view][i], per_clip[i], weight) for i in per_clip if i in first[view]}
        for view, per_clip in second.items()
        if view in first
    }
