"""`Client`: the service's API from synchronous Python, over one httpx connection pool.

with Client("http://127.0.0.1:8000", api_key="...") as api:
    answer = api.identify("take.m4a", top_k=5)
    print(answer.verdict, [(s.name, s.score) for s in answer.singers])
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any, Self, TypeVar

import httpx

from singer_client import calls
from singer_client.base import DEFAULT_TIMEOUT, DEFAULT_URL, ClientBase
from singer_client.calls import Audio, Call
from singer_client.errors import NotFoundError
from singer_client.models import (
    AddedTrack,
    Identification,
    Readiness,
    SearchPage,
    Singer,
    SingerDetail,
    SingersPage,
    Track,
    TracksPage,
)
from singer_client.retry import Retry, RetryEvent

T = TypeVar("T")


class Client(ClientBase):
    """Synchronous client. Every call raises the `ApiError` subclass of the answer's code
    (singer_client.errors) or `ClientConnectionError`; 503s and, for calls safe to repeat,
    connection failures are retried first (`retry`, singer_client.retry)."""

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        api_key: str | None = None,
        *,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        retry: Retry | None = None,
        on_retry: Callable[[RetryEvent], None] | None = None,
        http: httpx.Client | None = None,
    ):
        super().__init__(base_url, api_key, retry=retry, on_retry=on_retry)
        self.http = http or httpx.Client(base_url=self.base_url, timeout=timeout)

    def _send(self, call: Call[T]) -> T:
        retry = 0
        while True:
            retry += 1
            try:
                response = self.http.request(call.method, call.path, **self._request_args(call))
            except httpx.TransportError as err:
                time.sleep(self._wait_after_failure(call, retry, err))
                continue
            delay = self._wait_after_answer(call, retry, response)
            if delay is None:
                return self._result(call, response)
            time.sleep(delay)

    # -- queries --------------------------------------------------------------------------
    def identify(
        self,
        audio: Audio,
        *,
        top_k: int = 5,
        domain: str = "mono",
        models: str = "auto",
        timeline: bool = False,
        filename: str | None = None,
    ) -> Identification:
        """Rank the catalogue's singers for a recording (POST /identify). `domain`: mono
        (vocal take), mixed (finished song) or auto; `timeline`: who sings when."""
        call = calls.identify(
            audio, top_k=top_k, domain=domain, models=models, timeline=timeline, filename=filename
        )
        return self._send(call)

    def search(
        self,
        audio: Audio,
        *,
        top_k: int = 10,
        domain: str = "mono",
        target: str = "mixed",
        singer: str | None = None,
        min_score: float | None = None,
        cursor: str | None = None,
        filename: str | None = None,
    ) -> SearchPage:
        """One page of tracks ranked for a recording (POST /search); pass the page's
        `next_cursor` as `cursor` for the next one, or use `search_pages`."""
        call = calls.search(
            audio, top_k=top_k, domain=domain, target=target, singer=singer,
            min_score=min_score, cursor=cursor, filename=filename,
        )  # fmt: skip
        return self._send(call)

    def search_pages(self, audio: Audio, **options: Any) -> Iterator[SearchPage]:
        """Every page of a search, in order (the recording is read once); `options` are
        `search`'s."""
        name, data = calls.upload(audio, options.pop("filename", None))
        cursor = options.pop("cursor", None)
        while True:
            page = self.search(data, filename=name, cursor=cursor, **options)
            yield page
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    # -- tracks ---------------------------------------------------------------------------
    def add_track(
        self,
        audio: Audio,
        *,
        singer: str,
        domain: str,
        title: str | None = None,
        external_id: str | None = None,
        filename: str | None = None,
    ) -> AddedTrack:
        """File a recording under `singer` (POST /tracks; needs the API key). `created` is
        False when the same content was already filed under this singer and domain."""
        call = calls.add_track(
            audio, singer=singer, domain=domain, title=title, external_id=external_id,
            filename=filename,
        )  # fmt: skip
        return self._send(call)

    def track(self, track_id: int) -> Track:
        return self._send(calls.track(track_id))

    def tracks(self, *, singer: str | None = None, after: int = 0, limit: int = 50) -> TracksPage:
        """One page of tracks by id (GET /tracks); `next_after` starts the next one."""
        return self._send(calls.tracks(singer, after, limit))

    def iter_tracks(self, *, singer: str | None = None, page_size: int = 200) -> Iterator[Track]:
        """Every track (of `singer`), page by page."""
        after: int | None = 0
        while after is not None:
            page = self.tracks(singer=singer, after=after, limit=page_size)
            yield from page.tracks
            after = page.next_after

    def delete_track(self, track_id: int) -> Track:
        """Remove a track (needs the API key); returns it as it was."""
        return self._send(calls.delete_track(track_id))

    def track_audio(self, track_id: int) -> bytes:
        """The track's audio file, when the service may serve it (GET /tracks/{id}/audio)."""
        return self._send(calls.track_audio(track_id))

    # -- singers --------------------------------------------------------------------------
    def singers(self, *, offset: int = 0, limit: int = 50) -> SingersPage:
        return self._send(calls.singers(offset, limit))

    def iter_singers(self, *, page_size: int = 200) -> Iterator[Singer]:
        offset = 0
        while True:
            page = self.singers(offset=offset, limit=page_size)
            yield from page.singers
            offset += len(page.singers)
            if not page.singers or offset >= page.total:
                return

    def singer(self, key: int | str) -> Singer:
        """The singer with this id (int) or name (str). The API lists singers only, so this
        reads pages until it is found; NotFoundError (`singer_not_found`) if never."""
        for found in self.iter_singers():
            if (found.id if isinstance(key, int) else found.name) == key:
                return found
        raise NotFoundError(404, "singer_not_found", f"no singer {key!r} in the catalogue")

    def singer_detail(self, singer_id: int) -> SingerDetail:
        """A singer and the reliability of their models: tracks, voiced minutes, spread, the
        tracks that do not fit (GET /singers/{id}); NotFoundError if none has this id."""
        return self._send(calls.singer_detail(singer_id))

    # -- service --------------------------------------------------------------------------
    def health(self) -> bool:
        """Whether the process answers (GET /healthz), loaded or not."""
        return self._send(calls.health())

    def ready(self) -> Readiness:
        """The loaded model and catalogue (GET /readyz); while loading, retried like any
        503, then ServiceUnavailableError."""
        return self._send(calls.ready())

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
