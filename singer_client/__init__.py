"""Python client of the singer-retrieval service (httpx; `pip install '.[client]'`).

    from singer_client import Client

    with Client("http://127.0.0.1:8000", api_key="...") as api:
        api.add_track("ella/take1.flac", singer="Ella", domain="mono")
        answer = api.identify("take.m4a", top_k=5)
        print(answer.verdict, [(s.name, round(s.score, 3)) for s in answer.singers])

`AsyncClient` has the same methods for asyncio. Answers are typed (singer_client.models),
errors are one exception class per family of the API's error codes (singer_client.errors),
and 503s (and connection failures, for calls safe to repeat) are retried with backoff,
honouring Retry-After (singer_client.retry). See singer_client/README.md.
"""

from singer_client.async_client import AsyncClient
from singer_client.client import Client
from singer_client.errors import (
    ApiError,
    AudioRejectedError,
    AuthenticationError,
    BadRequestError,
    ClientConnectionError,
    ConflictError,
    FieldError,
    InvalidParametersError,
    NotFoundError,
    PermissionDeniedError,
    ServerError,
    ServiceUnavailableError,
    SingerClientError,
    UnsupportedFormatError,
    UploadRejectedError,
)
from singer_client.models import (
    AddedTrack,
    Identification,
    Quality,
    Readiness,
    SearchPage,
    Segment,
    Singer,
    SingerDetail,
    SingerHit,
    SingerModel,
    SingersPage,
    Span,
    Track,
    TrackFit,
    TrackHit,
    TracksPage,
)
from singer_client.retry import Retry, RetryEvent

__all__ = [
    "AddedTrack",
    "ApiError",
    "AsyncClient",
    "AudioRejectedError",
    "AuthenticationError",
    "BadRequestError",
    "Client",
    "ClientConnectionError",
    "ConflictError",
    "FieldError",
    "Identification",
    "InvalidParametersError",
    "NotFoundError",
    "PermissionDeniedError",
    "Quality",
    "Readiness",
    "Retry",
    "RetryEvent",
    "SearchPage",
    "Segment",
    "ServerError",
    "ServiceUnavailableError",
    "Singer",
    "SingerClientError",
    "SingerDetail",
    "SingerHit",
    "SingerModel",
    "SingersPage",
    "Span",
    "Track",
    "TrackFit",
    "TrackHit",
    "TracksPage",
    "UnsupportedFormatError",
    "UploadRejectedError",
]
