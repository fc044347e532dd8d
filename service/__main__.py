"""`python -m service`: run the HTTP service with uvicorn, configured by SINGER_* variables."""

from __future__ import annotations

import argparse
import logging
import sys

from service.settings import Settings, env_fields


def _env_help() -> str:
    lines = ["environment variables:"]
    for name, field in env_fields():  # the performance sub-model's variables included
        default = field.default if field.default is not None else "(unset)"
        lines.append(f"  {name:<37} {field.description or ''} [{default}]")
    return "\n".join(lines)


def uvicorn_options(settings: Settings) -> dict:
    """uvicorn.Config options of the service (the tests' live servers use them too)."""
    from service.http_server import connection_cap, guarded_protocol

    return {
        "log_level": settings.log_level,
        "timeout_graceful_shutdown": 30,
        "server_header": False,  # no "Server: uvicorn": what runs here is nobody's business
        # An idle keep-alive connection is closed after this; bodies have body_timeout_s.
        "timeout_keep_alive": 5,
        # Request headers within header_timeout_s; at most max_connections (fitting the
        # open-file limit) open, the longest idle closed first (service.http_server).
        "http": guarded_protocol(
            settings.header_timeout_s, connection_cap(settings.max_connections)
        ),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m service",
        description=__doc__.splitlines()[0],
        epilog=_env_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.parse_args(sys.argv[1:] if argv is None else argv)

    import uvicorn

    from service.app import create_app
    from service.http_server import GuardedServer, raise_fd_limit
    from service.log_throttle import install_log_throttle

    settings = Settings()
    raise_fd_limit()  # before the connection cap is derived from it
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    server: uvicorn.Server | None = None

    def stop(_: BaseException) -> None:
        # Fail fast: a process that cannot load its model should exit, not linger unready.
        if server is not None:
            server.should_exit = True

    app = create_app(settings, on_load_failure=stop)
    # One process: scale with inference_workers (threads), not uvicorn workers (each would
    # load the model). Across machines, run replicas on a shared Qdrant catalogue
    # (SINGER_CATALOG=qdrant://...; docker/compose.scale.yml).
    server = GuardedServer(
        uvicorn.Config(app, host=settings.host, port=settings.port, **uvicorn_options(settings))
    )
    install_log_throttle()  # on every handler, uvicorn's included (configured by Config)
    server.run()
    return 1 if app.state.runtime.state == "failed" else 0


if __name__ == "__main__":
    sys.exit(main())
