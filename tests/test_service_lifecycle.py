"""`python -m service` as a process: it exits when the model cannot load, and its help lists
every setting. (Readiness in process, loading, failed and inconsistent catalogues:
tests/service/routers/test_health.py, tests/service/test_checkpoint_check.py.)"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from service.settings import env_fields
from tests.support import REPO
from tests.support.live import free_port

pytestmark = pytest.mark.e2e


def test_python_m_service_exits_when_the_model_cannot_load(tmp_path):
    env = {
        **os.environ,
        "SINGER_CHECKPOINT": str(tmp_path / "missing.pt"),
        "SINGER_INDEX_DIR": str(tmp_path / "index"),
        "SINGER_PORT": str(free_port()),
        "SINGER_DEVICE": "cpu",
    }
    done = subprocess.run(
        [sys.executable, "-m", "service"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1
    assert "checkpoint not found" in done.stderr


def test_python_m_service_help_lists_the_settings():
    done = subprocess.run(
        [sys.executable, "-m", "service", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0
    for name, _ in env_fields():  # the performance sub-model's flat names included
        assert name in done.stdout
