"""Dataset readers and data recipes: directory layouts in, manifest rows (model.manifest) out.

- `damp_rows`: DAMP vocal performances, one folder per singer (m4a files; decoding needs ffmpeg).
- `musdb_rows`: musdb18-hq stem folders; accompaniment = drums + bass + other.
- `mir1k_rows`, `vowel_rows`: the two singer datasets of `../shared/data`.
- `shared_data_recipe`: everything `../shared/data` offers for training, in one manifest.
- `acappella_rows`: unlabelled a cappella takes, one identity per take.
- `split_singers`: hold out whole singers, deterministically.
- `load_row_audio`: the audio of a row, mixing `vocal_path` + `accompaniment_path` when needed.

Rows carry two extra columns: `dataset` (mir1k, vowels, damp, musdb, mashup) and `kind`
(vocals, karaoke, mashup, accompaniment, mixture).
"""

from __future__ import annotations

import csv
import logging
import math
import random
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import soundfile as sf

from model.audio import SAMPLE_RATE, load_audio
from model.manifest import ManifestRow, write_manifest
from model.mixing import nominal_mix

if TYPE_CHECKING:
    from model.training.mashup import MashupConfig, MashupResult

log = logging.getLogger(__name__)

MUSDB_ACCOMPANIMENT_STEMS = ("drums", "bass", "other")


# ---------------------------------------------------------------------------------------------
# Mixing stems


def load_row_audio(row: ManifestRow, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Audio of a manifest row, float32 (samples,) at `sr`.

    `path` when the row has one, else the karaoke mix `nominal_mix(vocal_path, accompaniment_path)`.
    Raises model.errors.AudioError subclasses like `load_audio`.
    """
    if row.path:
        return load_audio(row.path, sr)
    # read_manifest's rule: a row without `path` has both stems
    assert row.vocal_path is not None and row.accompaniment_path is not None, row
    return nominal_mix(load_audio(row.vocal_path, sr), load_audio(row.accompaniment_path, sr))


# ---------------------------------------------------------------------------------------------
# Public datasets of the paper


def damp_rows(root: str | Path, extensions: Sequence[str] = ("m4a",)) -> list[ManifestRow]:
    """DAMP vocal performances laid out as `root/<singer>/.../<performance>.m4a`.

    One monophonic row per file; singer = the top-level folder, title = external_id = file stem.
    Only walks the tree (decoding m4a needs ffmpeg, see model.audio).
    """
    root = Path(root)
    exts = {"." + e.lower().lstrip(".") for e in extensions}
    rows = []
    for singer_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for f in sorted(p for p in singer_dir.rglob("*") if p.is_file()):
            if f.suffix.lower() in exts:
                rows.append(
                    ManifestRow(
                        singer=singer_dir.name,
                        path=str(f.resolve()),
                        title=f.stem,
                        domain="mono",
                        external_id=f.stem,
                        extra={"dataset": "damp", "kind": "vocals"},
                    )
                )
    return rows


def musdb_rows(
    root: str | Path,
    accompaniment_dir: str | Path,
    splits: Sequence[str] = ("train", "test"),
    overwrite: bool = False,
) -> list[ManifestRow]:
    """musdb18-hq tracks `root/<split>/<Artist - Title>/{drums,bass,other,vocals}.wav`.

    Writes each track's accompaniment (drums + bass + other, sample by sample, at the stems' own
    rate) to `accompaniment_dir/<split>/<track>.wav` unless already there, and returns one row
    per track: path = accompaniment (so the rows are mashup backgrounds as they are),
    accompaniment_path = the same file, vocal_path = vocals.wav, singer = the artist (the part of
    the folder name before " - "), song = the folder name, role = the split, domain `mixed`.
    """
    root, out = Path(root), Path(accompaniment_dir)
    rows = []
    for split in splits:
        split_dir = root / split
        if not split_dir.is_dir():
            continue
        for track in sorted(p for p in split_dir.iterdir() if p.is_dir()):
            stems = [track / f"{s}.wav" for s in MUSDB_ACCOMPANIMENT_STEMS]
            if not all(p.is_file() for p in stems):
                log.warning("%s: missing one of %s; skipped", track, MUSDB_ACCOMPANIMENT_STEMS)
                continue
            acc = out / split / f"{track.name}.wav"
            if overwrite or not acc.is_file():
                _sum_stems(stems, acc)
            vocals = track / "vocals.wav"
            rows.append(
                ManifestRow(
                    singer=track.name.split(" - ")[0].strip() or track.name,
                    path=str(acc.resolve()),
                    title=track.name,
                    domain="mixed",
                    external_id=track.name,
                    song=track.name,
                    role=split,
                    accompaniment_path=str(acc.resolve()),
                    vocal_path=str(vocals.resolve()) if vocals.is_file() else None,
                    extra={"dataset": "musdb", "kind": "accompaniment"},
                )
            )
    return rows


def _sum_stems(stems: Sequence[Path], out: Path) -> None:
    total, rate = None, None
    for p in stems:
        y, sr = sf.read(str(p), dtype="float32", always_2d=True)
        if rate is not None and sr != rate:
            raise ValueError(f"{p}: sample rate {sr} differs from the other stems' {rate}")
        rate = sr
        if total is None:
            total = y
        else:
            n = min(len(total), len(y))
            total = total[:n] + y[:n]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.stem + ".tmp.wav")
    sf.write(str(tmp), total, rate, subtype="FLOAT")
    tmp.replace(out)


# ---------------------------------------------------------------------------------------------
# ../shared/data


def mir1k_rows(mir1k_dir: str | Path, karaoke: bool = True) -> list[ManifestRow]:
    """MIR-1K clips (`index.csv`: clip, singer, song, duration_s; `vocals/`, `accompaniment/`).

    Per clip one `mono` row (path = the vocal stem) and, with `karaoke`, one `mixed` row with
    vocal_path + accompaniment_path and no path: its audio is the 0 dB karaoke mix
    (vocals + accompaniment) / 2 (`load_row_audio`). Both rows have source = the vocal stem,
    song = the MIR-1K song id, external_id = the clip name.
    """
    root = Path(mir1k_dir).resolve()
    rows = []
    with (root / "index.csv").open(newline="", encoding="utf-8") as fh:
        for rec in csv.DictReader(fh):
            clip = rec["clip"]
            vocal = str(root / "vocals" / f"{clip}.opus")
            common = {
                "singer": rec["singer"],
                "title": clip,
                "external_id": clip,
                "song": rec["song"],
                "source": vocal,
            }
            rows.append(
                ManifestRow(
                    path=vocal,
                    domain="mono",
                    **common,
                    extra={"dataset": "mir1k", "kind": "vocals"},
                )
            )
            if karaoke:
                rows.append(
                    ManifestRow(
                        domain="mixed",
                        vocal_path=vocal,
                        accompaniment_path=str(root / "accompaniment" / f"{clip}.opus"),
                        **common,
                        extra={"dataset": "mir1k", "kind": "karaoke"},
                    )
                )
    return rows


def vowel_rows(
    vowels_dir: str | Path,
    out_dir: str | Path,
    target_seconds: float = 9.0,
    crossfade_seconds: float = 0.02,
    sr: int = SAMPLE_RATE,
) -> list[ManifestRow]:
    """Sung-vowel clips (~1 s each) joined into pseudo-recordings long enough for 3-s segments.

    The clips of one singer and register (`index.csv`: file, singer, register, vowel, take),
    in (vowel, take) order, are concatenated with short crossfades into recordings of about
    `target_seconds` (a shorter remainder joins the previous recording); each is written as
    FLAC at `sr` to `out_dir/<singer>/<singer>_<register>_<n>.flac`. One `mono` row per
    recording: song = `<singer>_<register>`, extra `clips` = the clip names joined by ';'.
    """
    root, out = Path(vowels_dir).resolve(), Path(out_dir).resolve()
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    with (root / "index.csv").open(newline="", encoding="utf-8") as fh:
        for rec in csv.DictReader(fh):
            groups[(rec["singer"], rec["register"])].append(rec)
    fade = round(crossfade_seconds * sr)
    rows = []
    for (singer, register), recs in sorted(groups.items()):
        recs.sort(key=lambda r: (r["vowel"], r["take"], r["file"]))
        for n, chunk in enumerate(_chunks_by_duration(recs, target_seconds)):
            clips = [load_audio(root / r["file"], sr) for r in chunk]
            name = f"{singer}_{register}_{n}"
            path = out / singer / f"{name}.flac"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(str(path), _crossfade_concat(clips, fade), sr, subtype="PCM_16")
            rows.append(
                ManifestRow(
                    singer=singer,
                    path=str(path),
                    title=name,
                    domain="mono",
                    external_id=name,
                    song=f"{singer}_{register}",
                    extra={
                        "dataset": "vowels",
                        "kind": "vowels",
                        "clips": ";".join(Path(r["file"]).stem for r in chunk),
                    },
                )
            )
    return rows


def _chunks_by_duration(recs: list[dict], target_seconds: float) -> list[list[dict]]:
    chunks: list[list[dict]] = [[]]
    length = 0.0
    for r in recs:
        if length >= target_seconds:
            chunks.append([])
            length = 0.0
        chunks[-1].append(r)
        length += float(r["duration_s"])
    if len(chunks) > 1 and length < target_seconds / 2:
        chunks[-2].extend(chunks.pop())  # too short a remainder: lengthen the previous one
    return chunks


def _crossfade_concat(clips: list[np.ndarray], fade: int) -> np.ndarray:
    """Concatenate with linear crossfades of `fade` samples (no clicks at the joins)."""
    out = clips[0].astype(np.float32)
    for c in clips[1:]:
        f = min(fade, len(out) // 2, len(c) // 2)
        if f == 0:
            out = np.concatenate([out, c])
            continue
        ramp = np.linspace(0.0, 1.0, f, dtype=np.float32)
        joint = out[-f:] * (1.0 - ramp) + c[:f] * ramp
        out = np.concatenate([out[:-f], joint, c[f:]])
    return out


def acappella_rows(acappella_dir: str | Path) -> list[ManifestRow]:
    """Unlabelled takes (`index.csv`: file, source, original_path, duration_s, original_rate).

    One `mono` row per take, singer = `take:<file stem>`: each take is its own identity (a few
    repeat singers are possible, and tolerated as label noise). song = the stem too. A file
    listed twice in the index (the shared copy lists ssvd_1150 twice) gives one row.
    """
    root = Path(acappella_dir).resolve()
    rows = []
    seen: set[str] = set()
    with (root / "index.csv").open(newline="", encoding="utf-8") as fh:
        for rec in csv.DictReader(fh):
            if rec["file"] in seen:
                continue
            seen.add(rec["file"])
            stem = Path(rec["file"]).stem
            rows.append(
                ManifestRow(
                    singer=f"take:{stem}",
                    path=str(root / rec["file"]),
                    title=stem,
                    domain="mono",
                    external_id=stem,
                    song=stem,
                    extra={"dataset": "acappella", "kind": rec["source"]},
                )
            )
    return rows


#: Share of the a cappella takes held out for the verification dev figure.
ACAPPELLA_HELDOUT = 0.2


def split_acappella(
    rows: list[ManifestRow], seed: int = 0
) -> tuple[list[ManifestRow], list[ManifestRow]]:
    """(training takes, held-out takes): a seeded 20 % of the takes (rounded up) held out."""
    return split_singers(rows, math.ceil(ACAPPELLA_HELDOUT * len(rows)), seed=seed)


@dataclass
class RecipeResult:
    """What `shared_data_recipe` built: all rows, the manifest path, and mashup bookkeeping."""

    rows: list[ManifestRow]
    manifest: Path
    mashup: MashupResult | None = None  # when mashups were made
    timings_s: dict[str, float] = field(default_factory=dict)


def shared_data_recipe(
    data_dir: str | Path,
    out_dir: str | Path,
    *,
    mashups: bool = True,
    mashup_vowels: bool = False,
    mashup_config: MashupConfig | None = None,
    seed: int = 0,
    workers: int = 2,
    progress: bool = True,
    cache_dir: str | Path | None = None,
) -> RecipeResult:
    """Training data from `../shared/data`, written under `out_dir`, listed in its manifest.csv.

    - MIR-1K (19 singers): vocals (`mono`) and their real accompaniment as 0 dB karaoke mixes
      (`mixed`, vocal_path + accompaniment_path, no path; see `load_row_audio`).
    - Sung vowels (11 singers): pseudo-recordings (`mono`) in `out_dir/vowels/`.
    - With `mashups`: MIR-1K vocals (and the vowel recordings with `mashup_vowels`) mashed up
      over `instrumental/` by `model.training.mashup.make_mashups` into `out_dir/mashup/` (its own
      manifest and report there); rows `mixed`, source = the vocal stem. Background
      analyses are cached in `cache_dir` (default `out_dir/mashup/cache`).
    """
    data, out = Path(data_dir).resolve(), Path(out_dir).resolve()
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    mir = mir1k_rows(data / "mir1k")
    timings["mir1k"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    vowels = vowel_rows(data / "vowels", out / "vowels")
    timings["vowels"] = time.perf_counter() - t0
    rows = mir + vowels
    result = None
    if mashups:
        from model.training.mashup import (
            MashupConfig,
            make_mashups,
        )  # librosa-heavy; only when used

        vocals = [r for r in mir if r.domain == "mono"]
        if mashup_vowels:
            vocals += vowels
        t0 = time.perf_counter()
        result = make_mashups(
            vocals,
            data / "instrumental",
            out / "mashup",
            config=mashup_config or MashupConfig(),
            seed=seed,
            workers=workers,
            progress=progress,
            cache_dir=cache_dir,
        )
        timings["mashup"] = time.perf_counter() - t0
        rows += result.rows
    manifest = write_manifest(out / "manifest.csv", rows)
    return RecipeResult(rows=rows, manifest=manifest, mashup=result, timings_s=timings)


# ---------------------------------------------------------------------------------------------
# Splits


def split_singers(
    rows: Iterable[ManifestRow], holdout: int | Sequence[str], seed: int = 0
) -> tuple[list[ManifestRow], list[ManifestRow]]:
    """Split rows by singer: (kept rows, held-out rows); every row of a singer goes one way.

    holdout: the singer names to hold out, or a number of singers drawn by a seeded shuffle of
    the sorted singer names (the same singers and seed always hold out the same singers,
    whatever the row order). Roles are left as they are; `with_role` labels a side.
    """
    rows = list(rows)
    singers = sorted({r.singer for r in rows})
    if isinstance(holdout, int):
        if not 0 <= holdout <= len(singers):
            raise ValueError(f"cannot hold out {holdout} of {len(singers)} singers")
        shuffled = singers[:]
        random.Random(seed).shuffle(shuffled)
        held = set(shuffled[:holdout])
    else:
        held = set(holdout)
        unknown = held - set(singers)
        if unknown:
            raise ValueError(f"unknown singers to hold out: {sorted(unknown)}")
    return [r for r in rows if r.singer not in held], [r for r in rows if r.singer in held]


def with_role(rows: Iterable[ManifestRow], role: str) -> list[ManifestRow]:
    """Copies of the rows with `role` set."""
    return [replace(r, role=role, extra=dict(r.extra)) for r in rows]
