"""The one manifest format shared by the indexer, mashup generation, training and evaluation.

A manifest is a CSV file with a header row. Every row is one recording:

| column               | required | meaning                                                      |
|----------------------|----------|--------------------------------------------------------------|
| path                 | yes*     | audio file; relative to the CSV's folder unless absolute     |
| singer               | yes      | singer name: the identity the model learns, the index ranks  |
| title                | no       | human-readable title                                         |
| domain               | no       | `mono` (vocals) or `mixed` (a song); default from the reader |
| external_id          | no       | caller's own id for the track                                |
| song                 | no       | song id: performances of one song share it (used by splits)  |
| role                 | no       | free label used by recipes: `train`, `val`, `model`, `query` |
| vocal_path           | no       | vocal stem, for mixing on the fly with `accompaniment_path`  |
| accompaniment_path   | no       | accompaniment stem                                           |
| source               | no       | for generated mixes: path of the vocal recording it came from |

*A row may give `vocal_path` + `accompaniment_path` instead of `path`.
Unknown columns are kept in `extra`, so recipes can carry their own fields.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from model.files import atomic_write

DOMAINS = ("mono", "mixed")
_PATH_COLUMNS = ("path", "vocal_path", "accompaniment_path", "source")


class ManifestError(ValueError):
    """The manifest file is malformed; the message names the file and line."""


@dataclass
class ManifestRow:
    """One recording of a manifest. Paths are absolute once read."""

    singer: str
    path: str | None = None
    title: str | None = None
    domain: str | None = None
    external_id: str | None = None
    song: str | None = None
    role: str | None = None
    vocal_path: str | None = None
    accompaniment_path: str | None = None
    source: str | None = None
    extra: dict[str, str] = field(default_factory=dict)


_COLUMNS = [f.name for f in fields(ManifestRow) if f.name != "extra"]


def read_manifest(path: str | Path, default_domain: str | None = None) -> list[ManifestRow]:
    """Read a manifest CSV; relative paths are resolved against its folder.

    Raises ManifestError on a missing required column, an empty singer, a row with no audio
    path, or a domain other than `mono`/`mixed`.
    """
    path = Path(path)
    base = path.resolve().parent
    rows: list[ManifestRow] = []
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        header = [h.strip() for h in (reader.fieldnames or [])]
        if "singer" not in header:
            raise ManifestError(f"{path}: the header must have a 'singer' column, got {header}")
        if "path" not in header and "vocal_path" not in header:
            raise ManifestError(f"{path}: the header must have a 'path' column, got {header}")
        for lineno, raw in enumerate(reader, start=2):
            rec = {(k or "").strip(): (v or "").strip() for k, v in raw.items() if k}
            known: dict[str, Any] = {k: (rec.get(k) or None) for k in _COLUMNS}
            extra = {k: v for k, v in rec.items() if k not in _COLUMNS}
            if not known["singer"]:
                raise ManifestError(f"{path}:{lineno}: empty singer")
            for col in _PATH_COLUMNS:
                if known[col]:
                    p = Path(known[col]).expanduser()
                    known[col] = str(p if p.is_absolute() else base / p)
            if not known["path"] and not (known["vocal_path"] and known["accompaniment_path"]):
                raise ManifestError(
                    f"{path}:{lineno}: give 'path', or both 'vocal_path' and 'accompaniment_path'"
                )
            known["domain"] = known["domain"] or default_domain
            if known["domain"] is not None and known["domain"] not in DOMAINS:
                raise ManifestError(
                    f"{path}:{lineno}: domain must be one of {DOMAINS}, got {known['domain']!r}"
                )
            rows.append(ManifestRow(**known, extra=extra))
    return rows


def write_manifest(path: str | Path, rows: Iterable[ManifestRow]) -> Path:
    """Write rows as CSV with only the columns that some row uses (plus path and singer)."""
    rows = list(rows)
    used = [c for c in _COLUMNS if c in ("path", "singer") or any(getattr(r, c) for r in rows)]
    extra_cols = sorted({k for r in rows for k in r.extra})
    path = Path(path)
    # atomic: readers never see a half-written manifest
    with atomic_write(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(used + extra_cols)
        for r in rows:
            writer.writerow(
                [getattr(r, c) or "" for c in used] + [r.extra.get(c, "") for c in extra_cols]
            )
    return path
