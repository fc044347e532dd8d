"""The API's endpoints as request descriptions (`Call`), shared by `Client` and
`AsyncClient`: which method and path, which parameters, whether a connection failure may be
retried, and how the answer becomes a typed result."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Generic, TypeVar

import httpx

from singer_client.models import (
    AddedTrack,
    Identification,
    Readiness,
    SearchPage,
    SingerDetail,
    SingersPage,
    Track,
    TracksPage,
)

T = TypeVar("T")
#: A recording to upload: a path, its bytes, or a binary file object.
Audio = str | os.PathLike[str] | bytes | IO[bytes]


@dataclass(frozen=True)
class Call(Generic[T]):
    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    params: dict[str, Any] | None = None
    data: dict[str, str] | None = None
    files: dict[str, tuple[str, bytes, str]] | None = None
    # Safe to send again after a connection failure (it may have been acted on): reads,
    # queries, and POST /tracks, which files the same content under a singer only once.
    idempotent: bool = True
    headers: dict[str, str] = field(default_factory=dict)


def upload(audio: Audio, filename: str | None = None) -> tuple[str, bytes]:
    """(file name, bytes) of a recording, read once so a retry sends the same bytes."""
    if isinstance(audio, bytes):
        return filename or "upload", audio
    if isinstance(audio, str | os.PathLike):
        path = Path(audio)
        return filename or path.name, path.read_bytes()
    name = getattr(audio, "name", None)
    return filename or (Path(name).name if isinstance(name, str) else "upload"), audio.read()


def _form(**fields: Any) -> dict[str, str]:
    """Form fields as the API reads them: None left out, booleans as true/false."""
    out = {}
    for key, value in fields.items():
        if value is not None:
            out[key] = ("true" if value else "false") if isinstance(value, bool) else str(value)
    return out


def _file(audio: Audio, filename: str | None) -> dict[str, tuple[str, bytes, str]]:
    name, data = upload(audio, filename)
    return {"file": (name, data, "application/octet-stream")}


def identify(
    audio: Audio,
    *,
    top_k: int = 5,
    domain: str = "mono",
    models: str = "auto",
    timeline: bool = False,
    filename: str | None = None,
) -> Call[Identification]:
    return Call(
        "POST",
        "/identify",
        lambda r: Identification.model_validate(r.json()),
        data=_form(top_k=top_k, domain=domain, models=models, timeline=timeline),
        files=_file(audio, filename),
    )


def search(
    audio: Audio,
    *,
    top_k: int = 10,
    domain: str = "mono",
    target: str = "mixed",
    singer: str | None = None,
    min_score: float | None = None,
    cursor: str | None = None,
    filename: str | None = None,
) -> Call[SearchPage]:
    data = _form(
        top_k=top_k, domain=domain, target=target, singer=singer, min_score=min_score, cursor=cursor
    )
    return Call(
        "POST",
        "/search",
        lambda r: SearchPage.model_validate(r.json()),
        data=data,
        files=_file(audio, filename),
    )


def add_track(
    audio: Audio,
    *,
    singer: str,
    domain: str,
    title: str | None = None,
    external_id: str | None = None,
    filename: str | None = None,
) -> Call[AddedTrack]:
    return Call(
        "POST",
        "/tracks",
        lambda r: AddedTrack.model_validate({**r.json(), "created": r.status_code == 201}),
        data=_form(singer=singer, domain=domain, title=title, external_id=external_id),
        files=_file(audio, filename),
    )


def track(track_id: int) -> Call[Track]:
    return Call("GET", f"/tracks/{int(track_id)}", lambda r: Track.model_validate(r.json()))


def tracks(singer: str | None = None, after: int = 0, limit: int = 50) -> Call[TracksPage]:
    params = {"after": after, "limit": limit, **({"singer": singer} if singer else {})}
    return Call("GET", "/tracks", lambda r: TracksPage.model_validate(r.json()), params=params)


def delete_track(track_id: int) -> Call[Track]:
    # Not repeated after a connection failure: if the first one was acted on, a second
    # would answer 404 for a track this call did delete.
    parse = lambda r: Track.model_validate(r.json())
    return Call("DELETE", f"/tracks/{int(track_id)}", parse, idempotent=False)


def track_audio(track_id: int) -> Call[bytes]:
    return Call("GET", f"/tracks/{int(track_id)}/audio", lambda r: r.content)


def singers(offset: int = 0, limit: int = 50) -> Call[SingersPage]:
    params = {"offset": offset, "limit": limit}
    return Call("GET", "/singers", lambda r: SingersPage.model_validate(r.json()), params=params)


def singer_detail(singer_id: int) -> Call[SingerDetail]:
    parse = lambda r: SingerDetail.model_validate(r.json())
    return Call("GET", f"/singers/{int(singer_id)}", parse)


def health() -> Call[bool]:
    return Call("GET", "/healthz", lambda r: r.is_success)


def ready() -> Call[Readiness]:
    return Call("GET", "/readyz", lambda r: Readiness.model_validate(r.json()))
