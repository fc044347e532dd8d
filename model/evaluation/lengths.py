"""Queries of several lengths, made of runs of consecutive segments of one recording: research
code.

An evaluation set's clips are short (MIR-1K: 4-13 s, 1-4 embedded segments), the service's
queries are whole takes and songs (10-60 segments). A longer query's vector is a less noisy
mean, and scores higher against every singer model, so a calibration fitted on clips alone
lets more unknown singers through on real queries (`model.calibration`). The clips of one
song are its consecutive pieces: strung together in clip order, their segments are the song's,
and a run of them is a query of that many segments, as the service would have embedded it
(its vector is the run's normalised mean).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from model.evaluation.splits import EvalClip
from model.vectors import normalized_mean

#: Segments per composed query: runs of 1 to 32 consecutive segments (3 s to 1.5 min), and
#: the whole recording (None).
SEGMENTS_PER_QUERY: tuple[int | None, ...] = (1, 2, 4, 8, 16, 32, None)
#: Where the calibration's length tiers start, in embedded segments (3 s each): a clip, a few
#: clips, a verse, a song.
LENGTH_TIERS: tuple[int, ...] = (1, 3, 6, 12)


@dataclass(frozen=True)
class Query:
    """A composed query: unit vector (dim,), its singer, and how many segments it averages."""

    vector: np.ndarray
    singer: str
    n_segments: int


def compose_queries(
    clips: Sequence[EvalClip],
    segments: Mapping[int, np.ndarray],
    indices: Sequence[int],
    segments_per_query: Sequence[int | None] = SEGMENTS_PER_QUERY,
) -> list[Query]:
    """Queries made of non-overlapping runs of consecutive segments of one recording.

    segments: clip index -> its (n_segments, dim) embeddings in time order, as
    `runner.collect_segments` gives; indices: the clips to draw from (those without
    segments are left out). A recording is a (singer, song)'s clips in clip-id order, or a
    clip without a song alone. Runs shorter than asked (a recording's tail) are dropped; a run
    met twice (a whole recording of exactly 8 segments) is one query.
    """
    groups: dict[tuple, list[int]] = defaultdict(list)
    for i in indices:
        if i in segments and len(segments[i]):
            c = clips[i]
            groups[(c.singer, c.song) if c.song else (c.singer, c.clip_id)].append(i)
    out = []
    for (singer, _), members in sorted(groups.items()):
        members.sort(key=lambda i: clips[i].clip_id)
        seq = np.concatenate([segments[i] for i in members])
        runs: set[tuple[int, int]] = set()
        for size in segments_per_query:
            step = size or len(seq)
            runs |= {(j, j + step) for j in range(0, len(seq) - step + 1, step)}
        out += [Query(normalized_mean(seq[a:b]), singer, b - a) for a, b in sorted(runs)]
    return out


def tier_members(
    n_segments: Sequence[int] | np.ndarray, tiers: Sequence[int] = LENGTH_TIERS
) -> np.ndarray:
    """(Q,) index into `tiers` of each query: the last tier start it reaches."""
    return np.searchsorted(np.asarray(tiers), np.asarray(n_segments), side="right") - 1
