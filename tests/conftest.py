"""Shared fixtures: paths to ../shared and a tiny random-weight checkpoint."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# The research material is read in place: ../shared beside the checkout, or SINGER_SHARED_DIR.
SHARED = Path(os.environ.get("SINGER_SHARED_DIR") or REPO.parent / "shared")


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
