"""The HTTP server: uvicorn, with the connection hygiene it lacks (issue 39).

uvicorn closes an idle keep-alive connection after `timeout_keep_alive`, but has no deadline
for a request's headers (its issue #157): a socket that connects and sends nothing, or
trickles a header a byte at a time, stays open for good, and a few thousand of them reach
the open-file limit, where `/healthz` can no longer connect and asyncio's accept loop logs
a traceback per failed accept (180 MB in 41 s). `GuardedH11Protocol` adds:

- a header deadline: a request's headers must be complete within `header_timeout_s` of
  the connection's start, or of the previous response on a kept-alive connection (a
  deadline, not an idle timeout, so trickling does not extend it); else the connection is
  closed;
- a connection cap: past `max_connections` open connections, a new connection closes the
  connection that has waited longest for request headers (an idle one: no request in
  progress), or itself when every connection is busy with a request; so idle and
  slow-header sockets cannot lock out a client that sends a request at once;
- a lingering close (as nginx does): a connection closed after an answer given before the
  request body was read (401, 403, 413, 429, 503...) is half-closed, and the rest of the
  body read and dropped for up to `LINGER_S`, before it is closed. Closing a socket with
  unread bytes makes the kernel send a reset, which can destroy the answer before the client
  has read it (an intermittent "connection reset by peer" instead of the 4xx).

`GuardedServer` keeps the cap under the open-file limit (raised to the hard limit at start),
and when accept() fails for lack of file descriptors anyway it sheds idle connections. Log
lines of every error condition are throttled (`service.log_throttle`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger(__name__)

#: File descriptors kept free of connections: the catalogue's files, decoding processes'
#: pipes and scratch files, logs, and the accept() of the connection that evicts another.
FD_RESERVE = 64
#: Share of idle connections closed when accept() meets the open-file limit.
SHED_SHARE = 0.25
SHED_INTERVAL_S = 0.5
#: Longest a closing connection reads and drops the rest of a request body, and the most
#: bytes it drops, before it is closed anyway.
LINGER_S = 2.0
LINGER_MAX_BYTES = 64 << 20
_ACCEPT_FAILED = "socket.accept() out of system resource"


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a request-header deadline and a connection cap (set on a
    subclass by `guarded_protocol`)."""

    header_timeout_s: float = 10.0
    max_connections: int = 1000

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.raw_transport = transport
        self._lingering = -1  # bytes dropped while lingering after the answer; -1: not
        self._header_timer: asyncio.TimerHandle | None = None
        super().connection_made(_LingeringTransport(transport, self))
        self._idle_since = self.loop.time()
        self._arm()
        if len(self.connections) > self.max_connections:
            self._make_room()

    def data_received(self, data: bytes) -> None:
        if self._lingering >= 0:  # the answer is out: drop the rest of the request
            self._lingering += len(data)
            if self._lingering > LINGER_MAX_BYTES:
                self.raw_transport.close()
            return
        super().data_received(data)
        if self.busy:
            self._disarm()  # the headers are complete: the body has its own limits

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and not self.busy:  # (a pipelined one may start)
            self._idle_since = self.loop.time()
            self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    @property
    def busy(self) -> bool:
        """A request is in progress (its headers have arrived; no response sent yet)."""
        return self.cycle is not None and not self.cycle.response_complete

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_late)

    def _disarm(self) -> None:
        if getattr(self, "_header_timer", None) is not None:
            self._header_timer.cancel()  # type: ignore[union-attr]
            self._header_timer = None

    def _headers_late(self) -> None:
        self._header_timer = None
        if not self.busy and not self.transport.is_closing():
            self.raw_transport.close()  # nobody is waiting for an answer: close without one

    def close_for_linger(self) -> bool:
        """Called by the transport's close(): linger when a request body is still arriving
        (True), else let it close at once (False)."""
        cycle = self.cycle
        if cycle is None or not cycle.more_body or cycle.disconnected:
            return False
        if self.raw_transport.is_closing() or not self.raw_transport.can_write_eof():
            return False
        self._disarm()
        self._lingering = 0
        self.raw_transport.write_eof()  # the answer, then FIN: the client sees the end
        self.raw_transport.resume_reading()
        self.loop.call_later(LINGER_S, self.raw_transport.close)
        return True

    def _make_room(self) -> None:
        """Over the cap: close the longest-idle other connection, or this one."""
        idle = idle_connections(self.connections, exclude=self)
        victim = idle[0] if idle else self
        victim.raw_transport.close()
        log.warning(
            "connection limit (%d) reached: closed %s connection",
            self.max_connections,
            "an idle" if idle else "the new",
        )


class _LingeringTransport(asyncio.Transport):
    """The connection's transport as uvicorn sees it: close() lingers when the protocol
    says a request body is still arriving (`GuardedH11Protocol.close_for_linger`)."""

    def __init__(self, raw: asyncio.Transport, protocol: GuardedH11Protocol):
        super().__init__()
        self._raw = raw
        self._protocol = protocol
        self._closing = False

    def close(self) -> None:
        if not self._closing:
            self._closing = True
            if not self._protocol.close_for_linger():
                self._raw.close()

    def is_closing(self) -> bool:
        return self._closing or self._raw.is_closing()

    def abort(self) -> None:
        self._closing = True
        self._raw.abort()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._raw.get_extra_info(name, default)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._raw.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._raw.get_protocol()

    def is_reading(self) -> bool:
        return self._raw.is_reading()

    def pause_reading(self) -> None:
        self._raw.pause_reading()

    def resume_reading(self) -> None:
        self._raw.resume_reading()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._raw.set_write_buffer_limits(high, low)

    def get_write_buffer_size(self) -> int:
        return self._raw.get_write_buffer_size()

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._raw.get_write_buffer_limits()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._raw.write(data)

    def writelines(self, list_of_data: Any) -> None:
        self._raw.writelines(list_of_data)

    def write_eof(self) -> None:
        self._raw.write_eof()

    def can_write_eof(self) -> bool:
        return self._raw.can_write_eof()


def idle_connections(connections: Any, exclude: Any = None) -> list[GuardedH11Protocol]:
    """Open connections with no request in progress, longest idle first."""
    idle = [
        c
        for c in connections
        if isinstance(c, GuardedH11Protocol)
        and c is not exclude
        and not c.busy
        and not c.transport.is_closing()
    ]
    return sorted(idle, key=lambda c: c._idle_since)


def guarded_protocol(header_timeout_s: float, max_connections: int) -> type[GuardedH11Protocol]:
    """The protocol class uvicorn should use (`uvicorn.Config(http=...)`)."""
    return type(
        "GuardedH11Protocol",
        (GuardedH11Protocol,),
        {"header_timeout_s": header_timeout_s, "max_connections": max_connections},
    )


def raise_fd_limit() -> int:
    """Raise this process's soft open-file limit to the hard one (servers commonly start
    with a soft 1024); the resulting soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft


def open_fds() -> int:
    """File descriptors this process has open (Linux; 0 where it cannot tell)."""
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return 0


def connection_cap(max_connections: int) -> int:
    """`max_connections`, lowered to fit the open-file limit with `FD_RESERVE` to spare."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return max_connections
    return max(8, min(max_connections, soft - open_fds() - FD_RESERVE))


class GuardedServer(uvicorn.Server):
    """uvicorn.Server that sheds idle connections when accept() runs out of descriptors
    (instead of only logging it: CPython's accept loop retries up to `backlog` times per
    wake-up, each failure a logged traceback)."""

    async def startup(self, sockets: list | None = None) -> None:
        loop = asyncio.get_running_loop()
        default = loop.get_exception_handler()
        last_shed = -SHED_INTERVAL_S

        def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
            nonlocal last_shed
            if context.get("message") != _ACCEPT_FAILED:
                if default is not None:
                    default(loop, context)
                else:
                    loop.default_exception_handler(context)
                return
            # Called for every failed accept (up to `backlog` per wake-up); descriptors
            # come free only once closed connections are gone: shed once per interval.
            if loop.time() - last_shed < SHED_INTERVAL_S:
                return
            last_shed = loop.time()
            idle = idle_connections(self.server_state.connections)
            shed = idle[: max(1, int(len(idle) * SHED_SHARE))]
            for conn in shed:
                conn.raw_transport.close()
            log.warning(
                "out of file descriptors at accept(): closed %d of %d idle connections",
                len(shed),
                len(idle),
            )

        loop.set_exception_handler(handler)
        await super().startup(sockets)
