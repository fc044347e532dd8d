"""Bounded logging (service/log_throttle.py): a flood of one kind of warning writes a bounded
number of lines, says how many it dropped, and leaves other kinds and the access log alone."""

from __future__ import annotations

import io
import logging

from service.log_throttle import LogThrottle, install_log_throttle


def logger_with(stream: io.StringIO, throttle: LogThrottle, name: str) -> logging.Logger:
    handler = logging.StreamHandler(stream)
    handler.addFilter(throttle)
    logger = logging.getLogger(name)
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger


def test_a_flood_of_one_warning_is_bounded_and_counted(monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr("service.log_throttle.time.monotonic", lambda: clock[0])
    stream = io.StringIO()
    log = logger_with(stream, LogThrottle(burst=5, window_s=60), "flood")
    for i in range(100_000):
        log.warning("malformed body from %s", f"client-{i}")
        try:
            raise OSError(24, "Too many open files")
        except OSError:
            log.exception("socket.accept() out of system resource")
    log.error("another kind")
    for i in range(50):
        log.info("GET /healthz %d", i)  # below WARNING: never throttled
    lines = stream.getvalue().splitlines()
    assert sum("malformed body" in ln for ln in lines) == 5
    assert sum("out of system resource" in ln for ln in lines) == 5
    assert "another kind" in lines and sum("GET /healthz" in ln for ln in lines) == 50
    assert len(stream.getvalue()) < 10_000  # 100,000 tracebacks would be megabytes
    clock[0] += 61  # the next window: one line says how many were dropped
    log.warning("malformed body from %s", "late")
    last = stream.getvalue().splitlines()[-1]
    assert "99995 like this one dropped in the previous window" in last


def test_messages_formatted_before_logging_are_bounded_per_logger():
    """python-multipart formats the byte position into its message: each position would be
    a kind of its own. A logger's records of a level are bounded whatever their kinds."""
    stream = io.StringIO()
    log = logger_with(stream, LogThrottle(burst=20, window_s=60, logger_burst=100), "parser")
    for i in range(50_000):
        log.warning(f"Found invalid character 32 in header at {i}")
    other = logging.getLogger("another")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 100 and "further messages of this logger" in lines[-1]
    assert other is not log


def test_a_record_seen_by_two_handlers_is_counted_once():
    throttle = LogThrottle(burst=3, window_s=60)
    first, second = io.StringIO(), io.StringIO()
    parent = logger_with(first, throttle, "parent")
    child = logging.getLogger("parent.child")
    child.propagate = True
    extra = logging.StreamHandler(second)
    extra.addFilter(throttle)
    child.handlers[:] = [extra]
    for _ in range(10):
        child.warning("same")
    assert first.getvalue().count("same") == 3 and second.getvalue().count("same") == 3
    assert parent.handlers[0].filters == [throttle]


def test_install_attaches_to_every_configured_handler():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logging.getLogger("uvicorn.test-install").addHandler(handler)
    try:
        throttle = install_log_throttle()
        assert throttle in handler.filters
        assert install_log_throttle(throttle) is throttle and handler.filters.count(throttle) == 1
    finally:
        logging.getLogger("uvicorn.test-install").removeHandler(handler)
        loggers = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
        for logger in loggers:
            for h in getattr(logger, "handlers", []):
                h.removeFilter(throttle)
