"""What to index: a folder of audio files or a CSV manifest, as a list of `SourceItem`s.

- A folder is searched recursively for audio files (extensions of
  `model.audio.SUPPORTED_FORMATS`; hidden files and folders are ignored). The singer is the
  first folder under the root (`<singer>/<track>`, or `<singer>/<album>/<track>`); a file
  directly in the root has no singer and is reported. A folder holding a `manifest.csv` at
  its root is read through that manifest instead.
- A manifest is the project's CSV format (`model/manifest.py`): `path,singer` plus optional
  `title`, `domain`, `external_id`; relative paths are resolved against the CSV's folder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from model.audio import SUPPORTED_FORMATS
from model.manifest import read_manifest

FOLDER_MANIFEST = "manifest.csv"
NO_SINGER = "no singer: put the file in a <singer>/ folder or list it in a manifest"
NO_PATH = (
    "the indexer needs one audio file in 'path' (vocal_path/accompaniment_path rows "
    "are mixed only by training and evaluation)"
)


@dataclass(frozen=True)
class SourceItem:
    """One file to index, with the catalogue metadata it will get."""

    path: Path  # absolute
    singer: str
    domain: str  # "mono" | "mixed"
    title: str | None = None
    external_id: str | None = None


@dataclass
class Listing:
    """The items of a source, and the entries that cannot be indexed, with the reason."""

    items: list[SourceItem] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)


def is_audio(path: Path) -> bool:
    return path.suffix.lower().lstrip(".") in SUPPORTED_FORMATS


def read_source(source: str | Path, domain: str) -> Listing:
    """List a folder or a manifest. `domain` applies where the manifest names none.

    Raises FileNotFoundError for a missing source and model.manifest.ManifestError for a
    malformed manifest.
    """
    source = Path(source)
    if source.is_dir():
        manifest = source / FOLDER_MANIFEST
        return (
            read_manifest_source(manifest, domain)
            if manifest.is_file()
            else scan_folder(source, domain)
        )
    if source.is_file():
        return read_manifest_source(source, domain)
    raise FileNotFoundError(f"no such folder or manifest: {source}")


def source_root(source: str | Path) -> Path:
    """The folder a source indexes, recorded in the catalogue as a root the service may play
    files from: the folder itself, or a manifest's folder (its relative paths lie there)."""
    source = Path(source).resolve()
    return source if source.is_dir() else source.parent


def scan_folder(root: str | Path, domain: str) -> Listing:
    """Audio files under `root`, singer from the first folder level, title from the file name."""
    root = Path(root).resolve()
    listing = Listing()
    seen_dirs: set[Path] = set()
    for folder, dirs, files in os.walk(root, followlinks=True):
        real = Path(folder).resolve()
        if real in seen_dirs:  # a symlink loop or a folder linked twice
            dirs[:] = []
            continue
        seen_dirs.add(real)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            path = Path(folder) / name
            if name.startswith(".") or not is_audio(path):
                continue
            parts = path.relative_to(root).parts
            if len(parts) < 2:
                listing.problems.append((str(path), NO_SINGER))
                continue
            listing.items.append(SourceItem(path, parts[0], domain, title=path.stem))
    return listing


def read_manifest_source(csv_path: str | Path, domain: str) -> Listing:
    """Rows of a manifest as items; rows without a single audio `path` are problems."""
    listing = Listing()
    for row in read_manifest(csv_path, default_domain=domain):
        if not row.path:
            listing.problems.append((f"{row.vocal_path} + {row.accompaniment_path}", NO_PATH))
            continue
        path = Path(row.path)
        listing.items.append(
            SourceItem(
                path,
                row.singer,
                row.domain or domain,
                title=row.title or path.stem,
                external_id=row.external_id,
            )
        )
    return listing
