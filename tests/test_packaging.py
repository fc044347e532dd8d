"""The wheel carries the inference core, the catalogue, the indexer, the service and the client,
and no research code: it is built for real (setuptools, from a copy of the checkout), its file
list checked against the modules the service and the indexer import, and the service imported
from the unpacked wheel alone. The images install this wheel (docker/Dockerfile*); the import
graph of a source checkout is tests/test_layering.py's.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path, PurePosixPath

import pytest

from model.__main__ import COMMANDS, RESEARCH_PACKAGES
from tests.support import REPO
from tests.support.checkout import checkout_files
from tests.test_docker import DOCKERFILES, dockerignore_patterns, is_ignored, parse_dockerfile

LEFT_OUT = ("model/training/", "model/evaluation/", "bench/", "tests/", "data/")
PACKAGES = ("model", "catalog", "indexer", "service", "singer_client")
# What the service and the indexer run: their modules must all be in the wheel.
ENTRY_POINTS = "import service.app, service.__main__, service.healthcheck, indexer.__main__"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's wheel, built offline from a copy of the checkout (the build writes
    build/ and *.egg-info beside the sources, which must not land in the shared tree)."""
    root = tmp_path_factory.mktemp("wheel")
    src = root / "src"
    for name in checkout_files():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, src / name)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-w",
            str(root / "dist"),
            str(src),
        ],
        check=True,
        capture_output=True,
    )
    (built,) = (root / "dist").glob("singer_retrieval-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel: Path) -> Path:
    """The interpreter of a fresh virtual environment with the wheel installed by pip and the
    test environment's dependencies behind it (a .pth line), but not the checkout: the
    editable install's finder, which would reach model/training in the checkout, stays out."""
    env_dir = wheel.parent / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], check=True)
    python = env_dir / "bin" / "python"
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    (Path(site) / "test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "-q",
            "--no-deps",
            "--no-index",
            str(wheel),
        ],
        check=True,
        capture_output=True,
    )
    return python


def _names(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as zf:
        return set(zf.namelist())


def test_wheel_leaves_out_research_code_benchmarks_tests_and_data(wheel):
    names = _names(wheel)
    assert sorted(n for n in names if n.startswith(LEFT_OUT)) == []
    # ... while the checkout it was built from has them
    files = checkout_files()
    assert any(f.startswith("model/training/") for f in files)
    assert any(f.startswith("model/evaluation/") for f in files)


def test_wheel_holds_every_module_the_service_and_indexer_import(wheel):
    # A fresh interpreter on the checkout: the modules the entry points really load.
    code = (
        f"{ENTRY_POINTS}\nimport json, sys\n"
        "print(json.dumps({n: getattr(m, '__file__', None) for n, m in sys.modules.items()}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    ours = {
        PurePosixPath(Path(f).resolve().relative_to(REPO)).as_posix()
        for n, f in loaded.items()
        if n.split(".")[0] in PACKAGES and f
    }
    assert {"service/app.py", "model/embedding.py", "catalog/__init__.py"} <= ours
    names = _names(wheel)
    assert sorted(ours - names) == []
    # the default checkpoint and the web page are package data
    assert any(n.startswith("model/weights/") and n.endswith(".pt") for n in names)
    assert "service/static/index.html" in names
    assert any(n.startswith("singer_client/") for n in names)


def test_installed_wheel_serves_and_declines_research_commands(installed, tmp_path):
    """With the wheel installed and no checkout in reach: the service app builds and the
    default checkpoint loads; `python -m model` runs the core's commands and declines the
    research ones with a message and status 2, never a traceback."""
    script = f"""
import contextlib, io, json, sys
{ENTRY_POINTS}
import model, importlib.util
from model.__main__ import main
from service.app import create_app
create_app()
model.load_model(device="cpu")
found = [p for p in {RESEARCH_PACKAGES!r} if importlib.util.find_spec(p)]
codes = {{}}
for argv in {sorted([name, "--help"] for name in COMMANDS)!r} + [["import-keras", "a.h5", "b.pt"]]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(argv)
        except SystemExit as exit:
            code = exit.code
    codes[" ".join(argv)] = [code, err.getvalue()]
print(json.dumps({{"model": model.__file__, "research": found, "codes": codes}}))
"""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["SINGER_INDEX_DIR"] = str(tmp_path / "ix")
    out = subprocess.run(
        [installed, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert Path(report["model"]).is_relative_to(installed.parent.parent)  # not the checkout's
    assert report["research"] == []
    codes = report["codes"]
    assert codes["embed --help"][0] == 0
    assert codes["fuse --help"][0] == 0
    for argv in ("train --help", "tune-speaker --help", "import-keras a.h5 b.pt"):
        code, err = codes[argv]
        assert code == 2, (argv, err)
        assert "needs model.training" in err and "source checkout" in err, err
    for argv, (code, err) in codes.items():
        assert code in (0, 2), (argv, err)
        assert "Traceback" not in err, (argv, err)


def test_research_commands_run_from_a_checkout():
    """The guard declines only what is missing: in the checkout a research command's help
    is there (status 0), and an unrelated missing module is not reported as research code."""
    from model.__main__ import _research_package

    done = subprocess.run(
        [sys.executable, "-m", "model", "train", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert "--recipe" in done.stdout
    assert _research_package(ModuleNotFoundError(name="model.training.train")) == "model.training"
    assert _research_package(ModuleNotFoundError(name="model.evaluation")) == "model.evaluation"
    assert _research_package(ModuleNotFoundError(name="model.trainingx")) is None
    assert _research_package(ModuleNotFoundError(name="pedalboard")) is None


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_images_copy_no_research_code(dockerfile):
    """The build context leaves model/training and model/evaluation out, and the image checks
    that its installed package has neither."""
    patterns = dockerignore_patterns()
    assert is_ignored("model/training/train.py", patterns)
    assert is_ignored("model/evaluation/runner.py", patterns)
    assert not is_ignored("model/embedding.py", patterns)
    runs = " ".join(a for s in parse_dockerfile(dockerfile) for a in s.all("RUN"))
    assert "pip install --no-deps ." in runs
    assert "find_spec(p) for p in ('model.training', 'model.evaluation')" in runs
