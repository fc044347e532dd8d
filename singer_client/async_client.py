"""`AsyncClient`: the same API as `Client`, for asyncio, over one httpx.AsyncClient.

async with AsyncClient("http://127.0.0.1:8000") as api:
    answers = await asyncio.gather(*(api.identify(p) for p in paths))
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
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


class AsyncClient(ClientBase):
    """Asynchronous client; methods, errors and retries as `Client`'s (singer_client.client)."""

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        api_key: str | None = None,
        *,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        retry: Retry | None = None,
        on_retry: Callable[[RetryEvent], None] | None = None,
        http: httpx.AsyncClient | None = None,
    ):
        super().__init__(base_url, api_key, retry=retry, on_retry=on_retry)
        self.http = http or httpx.AsyncClient(base_url=self.base_url, timeout=timeout)

    async def _send(self, call: Call[T]) -> T:
        retry = 0
        while True:
            retry += 1
            try:
                args = self._request_args(call)
                response = await self.http.request(call.method, call.path, **args)
            except httpx.TransportError as err:
                await asyncio.sleep(self._wait_after_failure(call, retry, err))
                continue
            delay = self._wait_after_answer(call, retry, response)
            if delay is None:
                return self._result(call, response)
            await asyncio.sleep(delay)

    async def identify(
        self,
        audio: Audio,
        *,
        top_k: int = 5,
        domain: str = "mono",
        models: str = "auto",
        timeline: bool = False,
        filename: str | None = None,
    ) -> Identification:
        call = calls.identify(
            audio, top_k=top_k, domain=domain, models=models, timeline=timeline, filename=filename
        )
        return await self._send(call)

    async def search(
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
        call = calls.search(
            audio, top_k=top_k, domain=domain, target=target, singer=singer,
            min_score=min_score, cursor=cursor, filename=filename,
        )  # fmt: skip
        return await self._send(call)

    async def search_pages(self, audio: Audio, **options: Any) -> AsyncIterator[SearchPage]:
        name, data = calls.upload(audio, options.pop("filename", None))
        cursor = options.pop("cursor", None)
        while True:
            page = await self.search(data, filename=name, cursor=cursor, **options)
            yield page
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def add_track(
        self,
        audio: Audio,
        *,
        singer: str,
        domain: str,
        title: str | None = None,
        external_id: str | None = None,
        filename: str | None = None,
    ) -> AddedTrack:
        call = calls.add_track(
            audio, singer=singer, domain=domain, title=title, external_id=external_id,
            filename=filename,
        )  # fmt: skip
        return await self._send(call)

    async def track(self, track_id: int) -> Track:
        return await self._send(calls.track(track_id))

    async def tracks(
        self, *, singer: str | None = None, after: int = 0, limit: int = 50
    ) -> TracksPage:
        return await self._send(calls.tracks(singer, after, limit))

    async def iter_tracks(
        self, *, singer: str | None = None, page_size: int = 200
    ) -> AsyncIterator[Track]:
        after: int | None = 0
        while after is not None:
            page = await self.tracks(singer=singer, after=after, limit=page_size)
            for track in page.tracks:
                yield track
            after = page.next_after

    async def delete_track(self, track_id: int) -> Track:
        return await self._send(calls.delete_track(track_id))

    async def track_audio(self, track_id: int) -> bytes:
        return await self._send(calls.track_audio(track_id))

    async def singers(self, *, offset: int = 0, limit: int = 50) -> SingersPage:
        return await self._send(calls.singers(offset, limit))

    async def iter_singers(self, *, page_size: int = 200) -> AsyncIterator[Singer]:
        offset = 0
        while True:
            page = await self.singers(offset=offset, limit=page_size)
            for singer in page.singers:
                yield singer
            offset += len(page.singers)
            if not page.singers or offset >= page.total:
                return

    async def singer(self, key: int | str) -> Singer:
        async for found in self.iter_singers():
            if (found.id if isinstance(key, int) else found.name) == key:
                return found
        raise NotFoundError(404, "singer_not_found", f"no singer {key!r} in the catalogue")

    async def singer_detail(self, singer_id: int) -> SingerDetail:
        return await self._send(calls.singer_detail(singer_id))

    async def health(self) -> bool:
        return await self._send(calls.health())

    async def ready(self) -> Readiness:
        return await self._send(calls.ready())

    async def aclose(self) -> None:
        await self.http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
