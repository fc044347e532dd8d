"""Bounded logging: no error condition can write unbounded lines (issue 39).

A client can make the server log at will: a malformed multipart body is a WARNING from the
parser, a broken request line one from uvicorn, and at the open-file limit asyncio logged a
traceback per failed accept() (180 MB in 41 s). `LogThrottle` lets each kind of WARNING-or-
worse record (logger, level, message template) through `burst` times per `window_s`, and
each logger's records of a level `logger_burst` times (some libraries format their message
before logging it, e.g. the byte position of a multipart error, so a client could vary the
kind); it drops the rest and says how many it dropped on the next one let through. Lower
levels (the access log: one line per request served) pass untouched.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict

BURST = 20  # records of one kind per window
LOGGER_BURST = 100  # records of one logger and level per window, whatever their kinds
WINDOW_S = 60.0
MAX_KINDS = 1024  # kinds remembered (least recently seen forgotten first)


class LogThrottle(logging.Filter):
    """A filter for handlers: at most `burst` records of a kind per `window_s` seconds."""

    def __init__(
        self,
        burst: int = BURST,
        window_s: float = WINDOW_S,
        max_kinds: int = MAX_KINDS,
        logger_burst: int = LOGGER_BURST,
    ):
        super().__init__()
        self.burst = burst
        self.logger_burst = logger_burst
        self.window_s = window_s
        self.max_kinds = max_kinds
        # kind or (logger, level) -> [window start, let through in it, dropped in it]
        self._kinds: OrderedDict[tuple, list] = OrderedDict()
        self._loggers: dict[tuple, list] = {}
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        decided = record.__dict__.get("_throttle_decision")
        if decided is not None:  # seen by another handler already: same answer, counted once
            return decided
        record._throttle_decision = passed = self._admit(record)
        return passed

    def _window(self, states: dict, key: tuple, now: float) -> tuple[list, int]:
        """The state of `key` in the current window, and what it dropped in the last one."""
        state = states.get(key)
        if state is not None and now - state[0] < self.window_s:
            return state, 0
        states[key] = fresh = [now, 0, 0]
        return fresh, state[2] if state is not None else 0

    def _admit(self, record: logging.LogRecord) -> bool:
        kind = (record.name, record.levelno, str(record.msg)[:300])
        now = time.monotonic()
        with self._lock:
            state, dropped = self._window(self._kinds, kind, now)
            self._kinds.move_to_end(kind)
            if len(self._kinds) > self.max_kinds:
                self._kinds.popitem(last=False)
            source, dropped_source = self._window(self._loggers, kind[:2], now)
            if state[1] >= self.burst or source[1] >= self.logger_burst:
                state[2] += 1
                source[2] += 1
                return False
            state[1] += 1
            source[1] += 1
            notes = []
            if dropped or dropped_source:
                more = f", {dropped_source} of this logger" if dropped_source != dropped else ""
                notes.append(f"{dropped} like this one{more} dropped in the previous window")
            if state[1] == self.burst:
                notes.append(f"further messages like this one are dropped for {self.window_s:g} s")
            elif source[1] == self.logger_burst:
                notes.append(f"further messages of this logger are dropped for {self.window_s:g} s")
        if notes and isinstance(record.msg, str):
            record.msg += f" [{'; '.join(notes)}]"  # (no "%" in the notes: safe with args)
        return True


def install_log_throttle(throttle: LogThrottle | None = None) -> LogThrottle:
    """Attach one throttle to every handler configured now (the root logger's and those of
    named loggers such as uvicorn's); call it after logging is set up."""
    throttle = throttle or LogThrottle()
    loggers = [logging.getLogger()] + [
        logger
        for logger in logging.Logger.manager.loggerDict.values()
        if isinstance(logger, logging.Logger)
    ]
    for logger in loggers:
        for handler in logger.handlers:
            if throttle not in handler.filters:
                handler.addFilter(throttle)
    return throttle
