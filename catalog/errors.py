"""Typed catalogue errors; the service maps each to a documented 4xx."""

from __future__ import annotations

from model.errors import SingerRetrievalError


class CatalogError(SingerRetrievalError):
    """The catalogue cannot do what was asked (conflict, incompatible or unreadable files)."""


class TrackNotFoundError(CatalogError):
    """No track has this id."""

    def __init__(self, track_id: int):
        super().__init__(f"no track with id {track_id}")
        self.track_id = track_id


class DuplicateTrackError(CatalogError):
    """A track with the same content, checkpoint and domain is already in the catalogue."""

    def __init__(self, track_id: int | None, content_hash: str):
        where = f" (track {track_id})" if track_id is not None else ""
        super().__init__(
            f"content {content_hash[:12]}... is already in the catalogue for this checkpoint "
            f"and domain{where}"
        )
        self.track_id = track_id
        self.content_hash = content_hash


class CatalogUnavailableError(CatalogError):
    """The catalogue's database server cannot be reached now (down, restarting, out of
    connections); the same call may succeed later. The service answers 503."""


class CatalogRetiredError(CatalogError):
    """A migration has made another generation of this catalogue live: this one takes no
    more writes. A service that follows the catalogue retries on the new generation."""

    def __init__(self, location: str, live: str):
        super().__init__(
            f"{location}: this catalogue generation was retired by a migration; generation "
            f"{live!r} is live now"
        )
        self.live = live
