"""What `Client` and `AsyncClient` share: settings, and the decision after each attempt
(a result, an error, or a wait and another try). Only the sending and the waiting differ."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import httpx

from singer_client.calls import Call
from singer_client.errors import ClientConnectionError, api_error, retry_after_s
from singer_client.retry import Retry, RetryEvent

T = TypeVar("T")
DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT = httpx.Timeout(120.0, connect=10.0)  # a long upload is decoded and embedded


class ClientBase:
    """base_url: the service; api_key: sent as X-API-Key (writes need it when the service
    has one); retry: the retry policy; on_retry: called with a RetryEvent before each wait."""

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        api_key: str | None = None,
        *,
        retry: Retry | None = None,
        on_retry: Callable[[RetryEvent], None] | None = None,
    ):
        self.base_url = base_url.rstrip("/")
        self.headers = {"X-API-Key": api_key} if api_key else {}
        self.retry = retry or Retry()
        self.on_retry = on_retry

    def _wait_after_answer(
        self, call: Call[T], retry: int, response: httpx.Response
    ) -> float | None:
        """Seconds to wait before retry number `retry` after `response`, or None: done."""
        if response.status_code != 503:
            return None
        header = response.headers.get("Retry-After")
        delay = self.retry.delay_s(retry, retry_after_s(header))
        if delay is not None and self.on_retry is not None:
            code = api_error(503, response.content).code
            self.on_retry(RetryEvent(call.method, call.path, retry, delay, 503, code))
        return delay

    def _wait_after_failure(self, call: Call[T], retry: int, err: httpx.TransportError) -> float:
        """Seconds to wait before retry number `retry` after a connection failure; raises
        ClientConnectionError when the call may not be repeated or the tries are spent."""
        delay = self.retry.delay_s(retry) if call.idempotent else None
        if delay is None:
            tries = f"after {retry} tries" if call.idempotent else "(not retried: not idempotent)"
            msg = f"{call.method} {self.base_url}{call.path} failed {tries}: {err!r}"
            raise ClientConnectionError(msg) from err
        if self.on_retry is not None:
            event = RetryEvent(call.method, call.path, retry, delay, error=type(err).__name__)
            self.on_retry(event)
        return delay

    @staticmethod
    def _result(call: Call[T], response: httpx.Response) -> T:
        if response.status_code >= 400:
            retry_after = response.headers.get("Retry-After")
            raise api_error(response.status_code, response.content, retry_after)
        return call.parse(response)

    def _request_args(self, call: Call[T]) -> dict:
        return {
            "params": call.params,
            "data": call.data,
            "files": call.files,
            "headers": {**self.headers, **call.headers},
        }
