"""Bounded logging: no error condition can write unbounded lines (issue 39).

A client can make the server log at will: a malformed multipart body is a WARNING from the
parser, a broken request line one from uvicorn, and at the open-file limit asyncio logged a
traceback per failed accept() (180 MB in 41 s). `LogThrottle` lets each kind of WARNING-or-
worse record (logger, level, message template) through `burst` times per `window_s`, drops
the rest and says how many it dropped on the next one let through. Lower levels (the access
log: one line per request served) pass untouched.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict

BURST = 20  # records of one kind per window
WINDOW_S = 60.0
MAX_KINDS = 1024  # kinds remembered (least recently seen forgotten first)


class LogThrottle(logging.Filter):
    """A filter for handlers: at most `burst` records of a kind per `window_s` seconds."""

    def __init__(self, burst: int = BURST, window_s: float = WINDOW_S, max_kinds: int = MAX_KINDS):
        super().__init__()
        self.burst = burst
        self.window_s = window_s
        self.max_kinds = max_kinds
        # kind -> [window start, records let through in it, records dropped in it]
        self._kinds: OrderedDict[tuple, list] = OrderedDict()
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        decided = record.__dict__.get("_throttle_decision")
        if decided is not None:  # seen by another handler already: same answer, counted once
            return decided
        record._throttle_decision = passed = self._admit(record)
        return passed

    def _admit(self, record: logging.LogRecord) -> bool:
        kind = (record.name, record.levelno, str(record.msg)[:300])
        now = time.monotonic()
        with self._lock:
            state = self._kinds.get(kind)
            dropped = 0
            if state is None or now - state[0] >= self.window_s:
                dropped = state[2] if state is not None else 0
                state = [now, 0, 0]
                self._kinds[kind] = state
                if len(self._kinds) > self.max_kinds:
                    self._kinds.popitem(last=False)
            self._kinds.move_to_end(kind)
            if state[1] >= self.burst:
                state[2] += 1
                return False
            state[1] += 1
            if state[1] == self.burst:
                note = f" [further messages like this one are dropped for {self.window_s:g} s]"
            else:
                note = ""
        if dropped:
            note = f" [{dropped} like this one dropped in the previous {self.window_s:g} s]" + note
        if note and isinstance(record.msg, str):
            record.msg += note  # (no "%" in the note: safe with or without args)
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
