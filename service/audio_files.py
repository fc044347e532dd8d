"""Which audio file, if any, may be played for a catalogued track.

Only two kinds of file are ever served, and only by track id: the file at the track's
recorded `path` when its real location (symlinks resolved) lies inside one of
`SINGER_AUDIO_ROOTS`, and the copy of a `POST /tracks` upload kept in the upload store
(`<index_dir>/audio/<content hash>.<ext>`). Nothing from a request reaches the filesystem.
"""

from __future__ import annotations

import os
import re
import tempfile
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


class AudioUnavailableError(Exception):
    """No servable file for this track; `reason` is 'gone' or 'outside_roots'."""

    def __init__(self, track_id: int, reason: str):
        super().__init__(track_id, reason)
        self.track_id, self.reason = track_id, reason


def media_type(path: PurePath) -> str:
    return MEDIA_TYPES.get(path.suffix.lower().lstrip("."), "application/octet-stream")


def _real(path: Path) -> Path:
    return Path(os.path.realpath(path))


class AudioFiles:
    """Locates the playable file of a track and keeps the upload store."""

    def __init__(self, settings: Settings):
        self.store_uploads = settings.store_uploads
        self.store = settings.upload_store
        self.roots = [_real(root) for root in settings.audio_roots]

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

    # -- serving ---------------------------------------------------------------------------
    def locate(self, track: Track) -> Path:
        """The real path of the file to serve for `track`. Raises AudioUnavailableError."""
        reason = "gone"
        if track.path:
            real = _real(Path(track.path))
            if any(real.is_relative_to(root) for root in self.roots):
                if real.is_file():
                    return real
            else:
                reason = "outside_roots"
        stored = self._stored(track.content_hash)
        if stored is not None:
            return stored
        raise AudioUnavailableError(track.id, reason)

    def playable(self, track: Track) -> bool:
        try:
            self.locate(track)
        except AudioUnavailableError:
            return False
        return True
