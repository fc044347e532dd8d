"""Evaluation sets: which clip is a singer-model track and which a query, and its audio.

An `EvalClip` is one performance with up to two renderings: monophonic (vocals only) and mixed
(a finished song). The mixed side is either a file or the nominal mix of a vocal and an
accompaniment stem, made on the fly; with stems the SNR sweep can re-mix it.

Two sources:
- `mir1k_split(root)`: the cross-song split of MIR-1K of the reference notes. For each singer
  with at least two songs, songs sorted by name (plain string order) alternate between the
  model set (1st, 3rd, ...) and the query set (2nd, 4th, ...); singers with one song are left
  out. All clips of a song go to the same side, so no song is in both sets.
- `read_eval_manifest(path)`: a manifest (model/manifest.py) whose `role` is `model` or `query`.
  A row gives `path` with `domain` mono or mixed, and/or `vocal_path` + `accompaniment_path`
  (vocals are then the monophonic rendering unless a mono `path` is given). Rows with the same
  singer, role and `external_id` are one clip: that is how a mono file and a mixed file of the
  same performance are paired. Without `external_id`, each row is its own clip.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from model.manifest import ManifestError, ManifestRow, read_manifest

ROLES = ("model", "query")
#: roles of the one-voice recordings `impostor_clips` adds (their singer is "<role>:<name>")
RECORDING_ROLES = ("impostor", "cohort")


@dataclass(frozen=True)
class EvalClip:
    """One performance in an evaluation set. Paths are absolute; None where absent."""

    clip_id: str
    singer: str
    role: str  # "model" | "query"; open-set extras (`impostor_clips`): "impostor", "cohort"
    song: str | None = None
    mono_path: str | None = None
    mixed_path: str | None = None
    vocal_path: str | None = None
    accompaniment_path: str | None = None

    @property
    def has_stems(self) -> bool:
        return bool(self.vocal_path and self.accompaniment_path)

    def has(self, domain: str) -> bool:
        """Whether the clip has a rendering in `domain` ("mono" or "mixed")."""
        if domain == "mono":
            return bool(self.mono_path or self.vocal_path)
        if domain == "mixed":
            return bool(self.mixed_path or self.has_stems)
        raise ValueError(f"unknown domain {domain!r}")


def mir1k_split(root: str | Path) -> list[EvalClip]:
    """The MIR-1K cross-song split (reference notes): 18 singers, 578 model / 414 query clips.

    root: folder with index.csv (clip, singer, song, duration_s), vocals/ and accompaniment/.
    """
    root = Path(root)
    index = root / "index.csv"
    if not index.is_file():
        raise FileNotFoundError(f"{index}: MIR-1K index not found")
    with index.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    songs: dict[str, set[str]] = defaultdict(set)
    for r in rows:
        songs[r["singer"]].add(r["song"])
    role_of_song = {
        song: ROLES[i % 2]
        for singer_songs in songs.values()
        if len(singer_songs) >= 2
        for i, song in enumerate(sorted(singer_songs))
    }
    clips = []
    for r in sorted(rows, key=lambda r: r["clip"]):
        role = role_of_song.get(r["song"])
        if role is None:
            continue
        clips.append(
            EvalClip(
                clip_id=r["clip"],
                singer=r["singer"],
                role=role,
                song=r["song"],
                vocal_path=str(root / "vocals" / f"{r['clip']}.opus"),
                accompaniment_path=str(root / "accompaniment" / f"{r['clip']}.opus"),
            )
        )
    return clips


def clips_from_rows(rows: list[ManifestRow], origin: str = "manifest") -> list[EvalClip]:
    """Group manifest rows into clips (see the module docstring). Raises ManifestError."""
    groups: dict[tuple, list[ManifestRow]] = defaultdict(list)
    for i, row in enumerate(rows):
        if row.role not in ROLES:
            raise ManifestError(
                f"{origin}: row {i + 1}: role must be one of {ROLES}, got {row.role!r}"
            )
        key = (row.singer, row.role, row.external_id) if row.external_id else ("row", i)
        groups[key].append(row)
    clips = []
    for key, group in groups.items():
        paths: dict[str, str | None] = {
            "mono_path": None,
            "mixed_path": None,
            "vocal_path": None,
            "accompaniment_path": None,
        }
        for row in group:
            if row.path:
                if row.domain not in ("mono", "mixed"):
                    raise ManifestError(
                        f"{origin}: {row.path}: give a domain (mono or mixed) "
                        "for an evaluation path"
                    )
                _set_once(paths, f"{row.domain}_path", row.path, origin)
            if row.vocal_path or row.accompaniment_path:
                if not (row.vocal_path and row.accompaniment_path):
                    raise ManifestError(f"{origin}: give both vocal_path and accompaniment_path")
                _set_once(paths, "vocal_path", row.vocal_path, origin)
                _set_once(paths, "accompaniment_path", row.accompaniment_path, origin)
        first = group[0]
        clip_id = (
            first.external_id
            or first.title
            or Path(first.path or first.vocal_path or f"row{key[-1]}").stem
        )
        songs = {r.song for r in group if r.song}
        assert first.role is not None  # every row's role was checked above
        clips.append(
            EvalClip(
                clip_id=clip_id,
                singer=first.singer,
                role=first.role,
                song=songs.pop() if len(songs) == 1 else None,
                **paths,
            )
        )
    return clips


def _set_once(paths: dict, name: str, value: str, origin: str) -> None:
    if paths[name] is not None and paths[name] != value:
        raise ManifestError(
            f"{origin}: clip has two different {name} values: {paths[name]}, {value}"
        )
    paths[name] = value


def read_eval_manifest(path: str | Path) -> list[EvalClip]:
    """Read an evaluation manifest (roles `model` / `query`). Raises ManifestError."""
    return clips_from_rows(read_manifest(path), origin=str(path))


def impostor_clips(
    vocals: Sequence[str | Path], backgrounds: Sequence[str | Path], role: str = "impostor"
) -> list[EvalClip]:
    """Recordings of voices outside the evaluation set as open-set calibration impostors (e.g.
    the held-out a cappella takes): one singer per recording, role "impostor" (closed-set
    figures ignore them). Mono rendering: the recording; mixed: it over background
    i mod len(backgrounds) (nominal mix, cut to the shorter)."""
    if not backgrounds:
        raise ValueError("impostor clips need at least one background for their mixed rendering")
    return [
        EvalClip(
            clip_id=f"{role}:{Path(v).stem}",
            singer=f"{role}:{Path(v).stem}",
            role=role,
            vocal_path=str(v),
            accompaniment_path=str(backgrounds[i % len(backgrounds)]),
        )
        for i, v in enumerate(vocals)
    ]


def impostor_group(singer: str) -> str:
    """The kind of impostor a query's singer is, for calibrating each kind apart: the role of
    a recording made by `impostor_clips` ("impostor"), else "singer" (a dataset's singer)."""
    role, sep, _ = singer.partition(":")
    return role if sep and role in RECORDING_ROLES else "singer"


def split_summary(clips: list[EvalClip]) -> dict:
    """Counts for reports: singers, model and query clips, songs found on both sides."""
    songs = {
        role: {(c.singer, c.song) for c in clips if c.role == role and c.song} for role in ROLES
    }
    impostors = [c for c in clips if c.role == "impostor"]
    return {
        "n_singers": len({c.singer for c in clips if c.role in ROLES}),
        "n_calibration_impostor_clips": len(impostors),
        "n_model_clips": sum(c.role == "model" for c in clips),
        "n_query_clips": sum(c.role == "query" for c in clips),
        "n_query_singers": len({c.singer for c in clips if c.role == "query"}),
        "songs_in_both_sets": sorted(f"{s}/{g}" for s, g in songs["model"] & songs["query"]),
    }
