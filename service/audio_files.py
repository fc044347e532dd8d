"""Which audio file, if any, may be played for a catalogued track.

Only two kinds of file are ever served, and only by track id:

- the file at the track's recorded `path`, when that path (the link as the indexer recorded
  it, before symlinks are followed) lies inside a folder the indexer indexed (recorded in
  the catalogue: `CatalogBackend.roots`) or one of `SINGER_AUDIO_ROOTS`. A library of
  symlinks plays: the link is in the folder even when its target is elsewhere. A path
  with `..` in it gets no such benefit: its real location must lie in a root;
- the copy of a `POST /tracks` upload kept in the upload store
  (`<index_dir>/audio/<content hash>.<ext>`).

Nothing from a request reaches the filesystem: the catalogue knows every path, and only
the indexer (an operator's command) writes paths into it.
"""

from __future__ import annotations

import os
import re
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path, PurePath

from catalog import Track
from model.audio import SUPPORTED_FORMATS
from service.settings import Settings

# Content types the page's <audio> element is given; browsers sniff the rest themselves.
MEDIA_TYPES = {
    "wav": "audio/wav",
    "flac": "audio/flac",
    "ogg": "audio/ogg",
    "opus": "audio/ogg",
    "mp3": "audio/mpeg",
    "aiff": "audio/aiff",
    "aif": "audio/aiff",
    "m4a": "audio/mp4",
    "mp4": "audio/mp4",
    "aac": "audio/aac",
    "webm": "audio/webm",
    "wma": "audio/x-ms-wma",
}
_HEX_DIGEST = re.compile(r"[0-9a-f]{64}")
# The catalogue's roots are read again at most this often (the indexer may add a folder
# while the service runs); a request never waits for more than one read.
ROOTS_MAX_AGE_S = 5.0

# Why a track cannot be played (`AudioFiles.unavailable`), as the API and the page say it.
GONE = "gone"  # the recorded file is no longer there
OUTSIDE_ROOTS = "outside_roots"  # the recorded file lies outside every allowed folder
NOT_STORED = "not_stored"  # an upload whose audio was not kept
REASONS = {
    GONE: "the file is no longer where it was indexed",
    OUTSIDE_ROOTS: "the file lies outside the indexed folders and SINGER_AUDIO_ROOTS",
    NOT_STORED: "the uploaded audio was not kept (SINGER_STORE_UPLOADS)",
}


class AudioUnavailableError(Exception):
    """No servable file for this track; `reason` is GONE, OUTSIDE_ROOTS or NOT_STORED."""

    def __init__(self, track_id: int, reason: str):
        super().__init__(track_id, reason)
        self.track_id, self.reason = track_id, reason

    @property
    def explanation(self) -> str:
        return f"track {self.track_id} cannot be played: {REASONS[self.reason]}"


def media_type(path: PurePath) -> str:
    return MEDIA_TYPES.get(path.suffix.lower().lstrip("."), "application/octet-stream")


def _real(path: Path) -> Path:
    return Path(os.path.realpath(path))


def _inside(path: Path, roots: Iterable[Path]) -> bool:
    return any(path.is_relative_to(root) for root in roots)


class AudioFiles:
    """Locates the playable file of a track and keeps the upload store."""

    def __init__(self, settings: Settings, roots: Callable[[], Iterable[str]] | None = None):
        """`roots`: reads the catalogue's indexed folders (`CatalogBackend.roots`)."""
        self.store_uploads = settings.store_uploads
        self.store = settings.upload_store
        self.configured = [Path(os.path.abspath(root)) for root in settings.audio_roots]
        self._roots_source = roots
        self._roots: tuple[list[Path], list[Path]] = ([], [])
        self._roots_read_at = -ROOTS_MAX_AGE_S
        self._roots_lock = threading.Lock()

    def follow(self, roots: Callable[[], Iterable[str]] | None) -> None:
        """Read indexed folders from `roots` from now on (the catalogue now served)."""
        with self._roots_lock:
            self._roots_source, self._roots_read_at = roots, -ROOTS_MAX_AGE_S

    def roots(self) -> tuple[list[Path], list[Path]]:
        """(the allowed folders as given, their real locations): the catalogue's indexed
        folders and SINGER_AUDIO_ROOTS."""
        with self._roots_lock:
            if time.monotonic() - self._roots_read_at >= ROOTS_MAX_AGE_S:
                indexed = [Path(r) for r in self._roots_source()] if self._roots_source else []
                given = sorted({*indexed, *self.configured})
                self._roots = (given, sorted({_real(r) for r in given}))
                self._roots_read_at = time.monotonic()
            return self._roots

    def display_path(self, path: str) -> str:
        """A recorded path as answers may show it: relative to the deepest allowed folder
        holding it, else the file name (never where the server keeps its files)."""
        link = Path(os.path.normpath(path))
        holders = [r for r in self.roots()[0] if link.is_relative_to(r)]
        if not holders:
            return link.name
        return link.relative_to(max(holders, key=lambda r: len(r.parts))).as_posix()

    # -- the upload store ----------------------------------------------------------------
    def _stored(self, digest: str) -> Path | None:
        if not _HEX_DIGEST.fullmatch(digest) or not self.store.is_dir():
            return None
        store = _real(self.store)
        for candidate in sorted(self.store.glob(f"{digest}.*")):
            real = _real(candidate)
            if real.is_file() and real.is_relative_to(store):
                return real
        return None

    def keep_upload(self, data: bytes, digest: str, filename: str | None) -> Path | None:
        """Store an upload under its content hash (once); None when storing is off."""
        if not self.store_uploads or not _HEX_DIGEST.fullmatch(digest):
            return None
        existing = self._stored(digest)
        if existing is not None:
            return existing
        suffix = PurePath(filename or "").suffix.lower().lstrip(".")
        ext = suffix if suffix in SUPPORTED_FORMATS else "audio"
        self.store.mkdir(parents=True, exist_ok=True)
        target = self.store / f"{digest}.{ext}"
        # Write, sync, then rename: a reader (or a restart after a crash) never sees half a file.
        with tempfile.NamedTemporaryFile(dir=self.store, suffix=".part", delete=False) as tmp:
            try:
                tmp.write(data)
                tmp.flush()
                os.fsync(tmp.fileno())
            except BaseException:
                Path(tmp.name).unlink(missing_ok=True)
                raise
        os.replace(tmp.name, target)
        return target

    def discard_upload(self, digest: str) -> None:
        """Remove the stored copy of a content no track refers to any more."""
        stored = self._stored(digest)
        if stored is not None:
            stored.unlink(missing_ok=True)

    def stored_upload(self, digest: str) -> Path | None:
        """The kept copy of an upload with this content hash, if any."""
        return self._stored(digest)

    # -- serving ---------------------------------------------------------------------------
    def _allowed(self, path: str) -> Path | None:
        """The real file behind a recorded path when the path is allowed, else None."""
        given, real_roots = self.roots()
        link = Path(os.path.abspath(path))
        real = _real(link)
        by_link = ".." not in PurePath(path).parts and _inside(link, given)
        return real if by_link or _inside(real, real_roots) else None

    def locate(self, track: Track) -> Path:
        """The real path of the file to serve for `track`. Raises AudioUnavailableError."""
        reason = NOT_STORED
        if track.path:
            real = self._allowed(track.path)
            if real is None:
                reason = OUTSIDE_ROOTS
            elif real.is_file():
                return real
            else:
                reason = GONE
        stored = self._stored(track.content_hash)
        if stored is not None:
            return stored
        raise AudioUnavailableError(track.id, reason)

    def unavailable(self, track: Track) -> str | None:
        """Why `track` cannot be played (GONE, OUTSIDE_ROOTS, NOT_STORED), None if it can."""
        try:
            self.locate(track)
        except AudioUnavailableError as err:
            return err.reason
        return None

    def playable(self, track: Track) -> bool:
        return self.unavailable(track) is None
