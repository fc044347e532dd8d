"""Which vocal takes of `../shared/data` the studio mixes are made of, per split.

- train: the MIR-1K vocal stems of the default model's training singers (not its held-out or
  validation singers), and the training a cappella takes (`split_acappella`), cut into
  pieces of at most `PIECE_S` seconds.
- heldout: the MIR-1K clips of the held-out singers (abjones, bobon, geniusturtle, khair,
  yifen), whole; and the held-out a cappella takes, each cut in two halves (the evaluation
  queries one half with the other).

Durations come from the data sets' `index.csv`, so nothing is decoded to plan a run.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

from model.training.datasets import acappella_rows, split_acappella
from model.training.studio_generator import VocalSource

#: MIR-1K singers of the default's evaluation and validation (`model.training.recipe`)
HOLDOUT = ("abjones", "bobon", "geniusturtle", "khair", "yifen")
VAL_SINGERS = ("ariel", "stool")
#: longest piece of a training take, seconds
PIECE_S = 15.0
#: shortest piece worth mixing, seconds (two model segments)
MIN_PIECE_S = 6.0


def _index(path: Path) -> list[dict]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def mir1k_sources(
    data_dir: str | Path, singers: Sequence[str] | None, exclude: Sequence[str] = ()
) -> list[VocalSource]:
    """One source per MIR-1K clip (its vocal stem, whole) of `singers` (None: all but
    `exclude`)."""
    root = Path(data_dir) / "mir1k"
    out = []
    for r in _index(root / "index.csv"):
        if (singers is not None and r["singer"] not in singers) or r["singer"] in exclude:
            continue
        out.append(
            VocalSource(
                path=str((root / "vocals" / f"{r['clip']}.opus").resolve()),
                singer=r["singer"],
                name=r["clip"],
                song=r["song"],
            )
        )
    return out


def _durations(acappella: Path) -> dict[str, float]:
    return {Path(r["file"]).stem: float(r["duration_s"]) for r in _index(acappella / "index.csv")}


def take_pieces(data_dir: str | Path, held_out: bool, halves: bool = False) -> list[VocalSource]:
    """The a cappella takes of one side of `split_acappella`, one identity each: cut in
    consecutive pieces of at most PIECE_S s (the last kept if >= MIN_PIECE_S), or with
    `halves` in two halves (named `<take>#1`, `<take>#2`)."""
    acappella = Path(data_dir) / "acappella"
    rows = split_acappella(acappella_rows(acappella))[1 if held_out else 0]
    durations = _durations(acappella)
    out = []
    for row in rows:
        stem = row.external_id or Path(str(row.path)).stem
        total = durations[stem]
        if halves:
            cuts = [(0.0, total / 2), (total / 2, total / 2)]
        else:
            n = max(1, int(-(-total // PIECE_S)))
            step = total / n
            cuts = [(k * step, step) for k in range(n) if step >= MIN_PIECE_S or k == 0]
        for k, (offset, seconds) in enumerate(cuts):
            out.append(
                VocalSource(
                    path=str(row.path),
                    singer=row.singer,
                    name=f"{stem}#{k + 1}",
                    song=stem,
                    offset_s=round(offset, 3),
                    seconds=round(seconds, 3),
                )
            )
    return out


def studio_sources(
    data_dir: str | Path,
    split: str,
    holdout: Sequence[str] = HOLDOUT,
    val_singers: Sequence[str] = VAL_SINGERS,
) -> list[VocalSource]:
    """The vocal sources of `split` ('train' or 'heldout'; module docstring); `holdout` and
    `val_singers`: the MIR-1K singers training leaves out (the held-out split is `holdout`'s)."""
    if split == "train":
        return mir1k_sources(data_dir, None, (*holdout, *val_singers)) + take_pieces(
            data_dir, held_out=False
        )
    if split == "heldout":
        return mir1k_sources(data_dir, holdout) + take_pieces(data_dir, True, halves=True)
    raise ValueError(f"split: train or heldout, not {split!r}")
