"""Docker packaging without Docker: the compose file and Dockerfiles are checked statically
(services, referenced files and commands exist, ports and volumes agree), and the image's
entry point is run outside a container with the image's environment mapped onto tmp paths:
the compose `indexer` command fills a catalogue, `serve` answers on it, a write acknowledged
before a SIGKILL is there after the restart.
"""

from __future__ import annotations

import fnmatch
import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import httpx
import pytest
import yaml

from tests.support import REPO
from tests.support.live import API_KEY, ServiceProcess, free_port, make_clip, upload

pytestmark = pytest.mark.e2e

COMPOSE = REPO / "docker-compose.yml"
GPU_OVERRIDE = REPO / "docker" / "compose.gpu.yml"
DOCKERFILES = [REPO / "docker" / "Dockerfile", REPO / "docker" / "Dockerfile.gpu"]


# -- parsing helpers -----------------------------------------------------------------------
@dataclass
class Stage:
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)  # (KEYWORD, arguments)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]

    def last(self, keyword: str) -> str | None:
        found = self.all(keyword)
        return found[-1] if found else None

    def env(self) -> dict[str, str]:
        env: dict[str, str] = {}
        for args in self.all("ENV"):
            for token in shlex.split(args):
                key, _, value = token.partition("=")
                env[key] = value
        return env


def parse_dockerfile(path: Path) -> list[Stage]:
    """Instructions per build stage, with continuation lines joined and comments dropped."""
    text = re.sub(
        r"\\\n",
        " ",
        "\n".join(
            line for line in path.read_text().splitlines() if not line.lstrip().startswith("#")
        ),
    )
    stages: list[Stage] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        keyword, _, args = line.strip().partition(" ")
        keyword, args = keyword.upper(), args.strip()
        if keyword == "FROM":
            stages.append(Stage(args))
        else:
            assert stages, f"{path}: {keyword} before FROM"
            stages[-1].instructions.append((keyword, args))
    return stages


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list), f"use the exec (JSON) form: {args}"
    return value


def expand(value: str, env: dict[str, str] | None = None) -> str:
    """Compose-style ${VAR:-default} / ${VAR} interpolation against `env` (default: none)."""
    env = env or {}
    return re.sub(
        r"\$\{(\w+)(?::?-([^}]*))?\}", lambda m: env.get(m.group(1)) or (m.group(2) or ""), value
    )


def dockerignore_patterns() -> list[str]:
    path = REPO / ".dockerignore"
    lines = path.read_text().splitlines() if path.is_file() else []
    return [ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")]


def is_ignored(relpath: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins; `!` re-includes; a match on a parent
    directory excludes everything under it."""
    ignored = False
    parts = PurePosixPath(relpath).parts
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern.lstrip("!").strip("/")
        if any(
            fnmatch.fnmatch(c, pat) or fnmatch.fnmatch(c, pat.replace("**/", ""))
            for c in candidates
        ):
            ignored = not negate
    return ignored


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def final_stage(path: Path) -> Stage:
    return parse_dockerfile(path)[-1]


# -- static checks -------------------------------------------------------------------------
def test_compose_services_and_build(compose):
    services = compose["services"]
    assert {"api", "indexer"} <= set(services)
    assert "profiles" not in services["api"], "the api must start with a plain `compose up`"
    assert "indexer" in services["indexer"]["profiles"]
    for name in ("api", "indexer"):
        build = services[name]["build"]
        context = REPO / build["context"]
        assert context.resolve() == REPO
        assert (context / build["dockerfile"]).is_file()
    assert services["api"]["image"] == services["indexer"]["image"]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_references_exist(dockerfile):
    patterns = dockerignore_patterns()
    stages = parse_dockerfile(dockerfile)
    assert len(stages) >= 2
    for stage in stages:
        for args in stage.all("COPY"):
            tokens = shlex.split(args)
            if any(t.startswith("--from") for t in tokens):
                continue
            for src in [t for t in tokens if not t.startswith("--")][:-1]:
                assert (REPO / src).exists(), f"{dockerfile.name}: COPY {src}: no such path"
                assert not is_ignored(src, patterns), f"{src} is excluded by .dockerignore"
    # The weights baked into the image: the default checkpoint, shipped as package data.
    import model

    weights = model.DEFAULT_CHECKPOINT.relative_to(REPO).as_posix()
    assert model.DEFAULT_CHECKPOINT.is_file(), "the default checkpoint is not committed"
    assert not is_ignored(weights, patterns), "the weights are excluded by .dockerignore"
    copied = [shlex.split(a)[0] for s in stages for a in s.all("COPY")]
    assert any(weights.startswith(src.rstrip("/") + "/") for src in copied)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_runtime_contract(dockerfile, compose):
    stage = final_stage(dockerfile)
    env = stage.env()
    user = stage.last("USER")
    assert user and user.split(":")[0] not in ("root", "0"), "the image must not run as root"
    # Port: EXPOSE == SINGER_PORT == the container side of the compose mapping.
    assert stage.last("EXPOSE") == env["SINGER_PORT"]
    api = compose["services"]["api"]
    container_ports = {expand(p).rsplit(":", 1)[-1] for p in api["ports"]}
    assert container_ports == {env["SINGER_PORT"]}
    assert api["environment"]["SINGER_PORT"] == env["SINGER_PORT"]
    assert env["SINGER_HOST"] == "0.0.0.0"
    # The catalogue directory is inside the image's volume.
    volume = exec_form(stage.last("VOLUME"))
    assert any(PurePosixPath(env["SINGER_INDEX_DIR"]).is_relative_to(v) for v in volume)
    # Entry point: a script copied into the image from the repository, executable.
    entry = exec_form(stage.last("ENTRYPOINT"))
    copies = {shlex.split(a)[-1]: shlex.split(a)[0] for a in stage.all("COPY")}
    target = next(dst for dst in copies if PurePosixPath(dst).name == entry[0])
    script = REPO / copies[target]
    assert script.is_file() and os.access(script, os.X_OK)
    assert exec_form(stage.last("CMD"))[0] in entrypoint_commands()
    # Healthcheck: a module of this project.
    check = stage.last("HEALTHCHECK")
    assert check and "CMD" in check
    command = exec_form(check.split("CMD", 1)[1].strip())
    assert command[:2] == ["python", "-m"] and importlib.util.find_spec(command[2])


def entrypoint_commands() -> set[str]:
    """The sub-commands the entry point script dispatches (its `case` labels)."""
    text = (REPO / "docker" / "entrypoint.sh").read_text()
    return set(re.findall(r"^\s*(\w+)\)", text, flags=re.MULTILINE))


def test_entrypoint_is_valid_sh():
    subprocess.run(["sh", "-n", str(REPO / "docker" / "entrypoint.sh")], check=True)
    assert {"serve", "index"} <= entrypoint_commands()


def test_compose_volumes_and_commands_agree(compose):
    services, env = compose["services"], final_stage(DOCKERFILES[0]).env()
    declared = set(compose.get("volumes") or {})
    mounts = {}
    for name in ("api", "indexer"):
        for spec in services[name]["volumes"]:
            source, target = expand(spec).split(":")[:2]
            if not source.startswith((".", "/")):
                assert source in declared, f"named volume {source} is not declared"
            mounts.setdefault(name, {})[target] = source
    # Both services see the same catalogue volume, which holds the index directory.
    index_dir = services["api"]["environment"].get("SINGER_INDEX_DIR", env["SINGER_INDEX_DIR"])
    catalog_mounts = {t for t in mounts["api"] if PurePosixPath(index_dir).is_relative_to(t)}
    assert catalog_mounts and all(
        mounts["indexer"].get(t) == mounts["api"][t] for t in catalog_mounts
    )
    # The commands: sub-commands the entry point knows; the indexer writes where the api reads.
    assert services["api"]["command"][0] in entrypoint_commands()
    command = services["indexer"]["command"]
    assert command[0] == "index" and command[0] in entrypoint_commands()
    args = command[1:]
    assert args[args.index("--index") + 1] == index_dir
    source = args[-1]
    assert any(PurePosixPath(source).is_relative_to(t) for t in mounts["indexer"])
    # Healthcheck of the service: the same module as the image's.
    test = services["api"]["healthcheck"]["test"]
    assert test[0] == "CMD" and importlib.util.find_spec(test[3])


def test_indexer_command_parses(compose):
    """The compose indexer arguments are accepted by `python -m indexer`'s own parser."""
    from indexer.__main__ import build_parser

    args = build_parser().parse_args(["index", *compose["services"]["indexer"]["command"][1:]])
    assert args.command == "index"
    assert str(args.index) == compose["services"]["api"]["environment"]["SINGER_INDEX_DIR"]


def test_gpu_override(compose):
    override = yaml.safe_load(GPU_OVERRIDE.read_text())
    assert set(override["services"]) <= set(compose["services"])
    api = override["services"]["api"]
    assert (REPO / api["build"]["dockerfile"]).name == "Dockerfile.gpu"
    assert (REPO / api["build"]["dockerfile"]).is_file()
    for service in override["services"].values():
        devices = service["deploy"]["resources"]["reservations"]["devices"]
        assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_installs_the_service_lock(dockerfile, tmp_path):
    """The image installs requirements/service.txt (the GPU image with faiss-gpu swapped in)."""
    runs = [a for s in parse_dockerfile(dockerfile) for a in s.all("RUN") if "service.txt" in a]
    assert len(runs) == 1
    (tmp_path / "requirements").mkdir()
    lock = REPO / "requirements" / "service.txt"
    (tmp_path / "requirements" / "service.txt").write_bytes(lock.read_bytes())
    if dockerfile.name.endswith(".gpu"):
        # run the image's own shell step up to the install, then read what it would install
        step = runs[0].split("&& pip install")[0]
        env = {**os.environ, "FAISS_GPU": "faiss-gpu-cu12>=1.8"}
        subprocess.run(["sh", "-c", step], cwd=tmp_path, env=env, check=True)
        names = lock_names(tmp_path / "requirements" / "gpu.txt")
        assert "faiss-gpu-cu12" in names
        assert not names & {"faiss-cpu", "torch"}
    else:
        assert "pip install -r requirements/service.txt" in runs[0]
        names = lock_names(lock)
    assert {"fastapi", "numpy", "librosa", "uvicorn"} <= names


def lock_names(path: Path) -> set[str]:
    """Package names pinned in a requirements file (`name==version` or a bare requirement)."""
    lines = [ln.split("#")[0].strip() for ln in path.read_text().splitlines()]
    return {re.split(r"[=<>!~;\[ ]", ln)[0].lower() for ln in lines if ln and ln[0].isalnum()}


def test_locks_cover_pyproject():
    """Every dependency of pyproject is pinned: core ones in both locks, extras in lock.txt
    (train in no-deps.txt),
    and the service lock holds no research-only package."""
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    name = lambda d: re.split(r"[=<>!~;\[ ]", d)[0].lower()
    core = {name(d) for d in project["dependencies"]}
    extras = {
        name(d)
        for k, ds in project["optional-dependencies"].items()
        for d in ds
        if k not in ("gpu", "train") and not d.startswith("singer-retrieval")
    }
    # `train` is installed with --no-deps from its own pin file (see the Makefile)
    train = {name(d) for d in project["optional-dependencies"]["train"]}
    service = lock_names(REPO / "requirements" / "service.txt")
    full = lock_names(REPO / "requirements" / "lock.txt")
    assert core <= service
    assert core | extras <= full
    # no-deps.txt includes speaker.txt (the default model's speaker weights: the images install
    # that one alone)
    no_deps = REPO / "requirements" / "no-deps.txt"
    assert "-r speaker.txt" in no_deps.read_text().splitlines()
    assert train <= lock_names(no_deps) | lock_names(REPO / "requirements" / "speaker.txt")
    # (scikit-learn stays: librosa depends on it)
    assert not {"matplotlib", "h5py"} & service


# -- the entry point, outside Docker -------------------------------------------------------
def container_env(stage: Stage, root: Path, port: int) -> dict[str, str]:
    """The image's ENV with container paths mapped under `root` and this venv on PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SINGER_")}
    for key, value in stage.env().items():
        if key == "PATH":
            continue
        if value.startswith("/"):
            value = str(root / value.lstrip("/"))
        env[key] = value
    env.update(
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        PYTHONPATH=str(REPO),
        SINGER_HOST="127.0.0.1",
        SINGER_PORT=str(port),
        SINGER_API_KEY=API_KEY,
    )
    return env


def test_entrypoint_index_serve_and_crash(compose, tmp_path):
    stage = final_stage(DOCKERFILES[0])
    port = free_port()
    env = container_env(stage, tmp_path, port)
    entry = [str(REPO / "docker" / "entrypoint.sh")]
    # The compose indexer job over a music folder laid out <singer>/<track>.
    music = tmp_path / "music"
    for voice in range(2):
        for seed in range(2):
            clip = make_clip(music / f"singer-{voice}", voice, "mixed", seed)
            clip.path.rename(clip.path.with_name(f"take{seed}.wav"))
    command = compose["services"]["indexer"]["command"]
    mapped = [str(tmp_path / a.lstrip("/")) if a.startswith("/") else a for a in command]
    done = subprocess.run(
        entry + mapped,
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr

    serve = ServiceProcess(entry + exec_form(stage.last("CMD")), env, port, tmp_path).start()
    try:
        check = exec_form(stage.last("HEALTHCHECK").split("CMD", 1)[1].strip())
        healthy = subprocess.run(check, env=env, cwd=tmp_path, timeout=60, check=False)
        assert healthy.returncode == 0
        with httpx.Client(base_url=serve.url, timeout=60) as client:
            singers = client.get("/singers").json()
            assert {s["name"] for s in singers["singers"]} == {"singer-0", "singer-1"}
            r = upload(client, "/identify", music / "singer-0" / "take0.wav", domain="mixed")
            assert r.status_code == 200, r.text
            assert {s["name"] for s in r.json()["singers"]} == {"singer-0", "singer-1"}
            new = make_clip(tmp_path / "new", 2, "mono", 7)
            r = upload(
                client,
                "/tracks",
                new.path,
                headers={"X-API-Key": API_KEY},
                singer="late singer",
                domain="mono",
            )
            assert r.status_code == 201, r.text
            track_id = r.json()["id"]
    finally:
        serve.kill()  # SIGKILL right after the acknowledgement: a crash
    serve.start()
    try:
        with httpx.Client(base_url=serve.url, timeout=60) as client:
            r = client.get(f"/tracks/{track_id}")
            assert r.status_code == 200 and r.json()["singer"] == "late singer"
            assert client.get("/singers").json()["total"] == 3
    finally:
        serve.kill()


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.gpu"])
def test_image_installs_the_speaker_encoder_weights(name):
    """The default checkpoint is fused: the image installs the speaker encoder's weights
    carrier without its dependencies, and loads the default model at build time."""
    import model
    from model.checkpoint import load_checkpoint
    from model.fusion import FUSION_KEY

    _, _, meta = load_checkpoint(model.DEFAULT_CHECKPOINT)
    assert FUSION_KEY in meta
    runs = [a for s in parse_dockerfile(REPO / "docker" / name) for a in s.all("RUN")]
    assert "pip install --no-deps -r requirements/speaker.txt" in runs
    assert any("model.load_model(device='cpu')" in r for r in runs)
    assert "resemblyzer" in lock_names(REPO / "requirements" / "speaker.txt")
