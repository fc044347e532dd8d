"""docker/compose.scale.yml and docker/nginx.conf without Docker.

The compose file is validated by `docker-compose config` (Debian's docker-compose) and
checked against the code (the catalogue URL parses, nginx's upstream is the api service's
port); the nginx config passes `nginx -t` and, run by a real nginx in front of two real
`python -m service` processes on one catalogue, spreads requests over both.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from urllib.parse import urlsplit

import httpx
import pytest
import yaml

from tests.support import REPO
from tests.support.live import API_KEY, ServiceProcess, add_clip, free_port, make_clip, upload

SCALE = REPO / "docker" / "compose.scale.yml"
NGINX_CONF = REPO / "docker" / "nginx.conf"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(SCALE.read_text())


def _compose() -> list[str] | None:
    """The Compose command line here: docker-compose, else `docker compose` where the docker
    client has its compose plugin (a bare client answers "unknown command"), else None."""
    if exe := shutil.which("docker-compose"):
        return [exe]
    docker = shutil.which("docker")
    if (
        docker
        and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0
    ):
        return [docker, "compose"]
    return None


def test_docker_compose_config_accepts_the_scale_file():
    compose = _compose()
    if compose is None:
        pytest.skip("no Compose CLI (scripts/system-deps.sh installs docker-compose)")
    args = [*compose, "-f", str(SCALE)]
    pg_url = "postgresql://singer@postgres:5432/singer"
    for profile, env in (
        ([], {}),
        (["--profile", "qdrant"], {}),
        (["--profile", "postgres"], {"SINGER_CATALOG": pg_url, "POSTGRES_PASSWORD": "pw"}),
        (["--profile", "ray"], {}),
    ):
        done = subprocess.run(
            [*args, *profile, "config"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env={**os.environ, **env},
        )
        assert done.returncode == 0, done.stderr
        services = yaml.safe_load(done.stdout)["services"]
        assert {"qdrant", "postgres", "api", "lb"} <= set(services)
        api = services["api"]["environment"]
        assert api["SINGER_CATALOG"] == env.get("SINGER_CATALOG", "qdrant://qdrant:6333/singer")
        assert api["PGPASSWORD"] == env.get("POSTGRES_PASSWORD", "")


def test_the_scale_file_agrees_with_the_code(compose):
    from service.settings import Settings

    api = compose["services"]["api"]
    env = api["environment"]
    default = re.fullmatch(r"\$\{SINGER_CATALOG:-(.+)\}", env["SINGER_CATALOG"]).group(1)
    settings = Settings(catalog=default, _env_file=None)
    assert settings.catalog_target.startswith("qdrant://qdrant:6333/")
    assert "ports" not in api  # only nginx is published
    # Each backend behind a profile; the documented PostgreSQL URL names its service, user
    # and database, and the password reaches libpq as PGPASSWORD.
    qdrant, postgres = compose["services"]["qdrant"], compose["services"]["postgres"]
    assert qdrant["profiles"] == ["qdrant"] and postgres["profiles"] == ["postgres"]
    assert postgres["image"].startswith("pgvector/pgvector:")
    url = re.search(r"SINGER_CATALOG=(postgresql://\S+)", SCALE.read_text()).group(1)
    parts = urlsplit(url)
    assert Settings(catalog=url, _env_file=None).catalog_target == url
    assert (parts.hostname, parts.port) == ("postgres", int(postgres["expose"][0]))
    db = postgres["environment"]
    assert (parts.username, parts.path) == (db["POSTGRES_USER"], f"/{db['POSTGRES_DB']}")
    assert env["PGPASSWORD"] == db["POSTGRES_PASSWORD"]
    assert api["build"]["args"]["EXTRAS"] == "scale,postgres"
    lb = compose["services"]["lb"]
    assert any(v.startswith("./nginx.conf:") for v in lb["volumes"])
    upstream = re.search(r"server\s+(\w+):(\d+)", NGINX_CONF.read_text())
    assert upstream.group(1) == "api" and upstream.group(2) == env["SINGER_PORT"]
    listen = re.search(r"listen\s+(\d+);", NGINX_CONF.read_text()).group(1)
    assert lb["ports"][0].endswith(f":{listen}")
    # The Ray job documented at the top of the file uses options the indexer has.
    from indexer.__main__ import build_parser

    job = "index --catalog qdrant://qdrant:6333/singer --engine ray --address auto /music"
    args = build_parser().parse_args(job.split())
    assert args.engine == "ray" and args.address == "auto"


def nginx_config(tmp_path, upstreams: list[int], port: int):
    """The shipped config with the upstream pointed at local ports and paths in tmp_path."""
    text = NGINX_CONF.read_text()
    servers = "\n".join(
        f"        server 127.0.0.1:{p} max_fails=3 fail_timeout=10s;" for p in upstreams
    )
    text = re.sub(r"^\s*server api:8000[^\n]*$", servers, text, flags=re.M)
    text = text.replace("listen 8080;", f"listen 127.0.0.1:{port};")
    text = text.replace("http {", f"http {{\n    client_body_temp_path {tmp_path}/body;", 1)
    if os.geteuid() == 0:  # workers would drop to `nobody`, who cannot write into tmp_path
        text = "user root;\n" + text
    conf = tmp_path / "nginx.conf"
    conf.write_text(text)
    return conf


def nginx() -> str:
    exe = shutil.which("nginx") or (
        "/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None
    )
    if exe is None:
        pytest.skip("nginx is not installed (apt-get install nginx)")
    return exe


def nginx_args(tmp_path, conf) -> list[str]:
    error_log = str(tmp_path / "error.log")
    return [nginx(), "-p", str(tmp_path), "-c", str(conf), "-e", error_log]


def test_nginx_accepts_the_config(tmp_path):
    conf = nginx_config(tmp_path, [free_port(), free_port()], free_port())
    done = subprocess.run(
        [*nginx_args(tmp_path, conf), "-g", f"pid {tmp_path}/nginx.pid;", "-t"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr


@pytest.mark.e2e
@pytest.mark.slow
def test_nginx_spreads_requests_over_two_replicas(tmp_path, random_checkpoint):
    nginx()
    env = {
        **os.environ,
        "SINGER_INDEX_DIR": str(tmp_path / "index"),
        "SINGER_CHECKPOINT": str(random_checkpoint),
        "SINGER_DEVICE": "cpu",
        "SINGER_API_KEY": API_KEY,
        "SINGER_INFERENCE_WORKERS": "1",
        "OMP_NUM_THREADS": "1",
    }
    replicas, ports = [], [free_port(), free_port()]
    lb_port = free_port()
    proc = None
    try:
        for name, port in zip("ab", ports):
            (tmp_path / name).mkdir()
            replicas.append(
                ServiceProcess(
                    [sys.executable, "-m", "service"],
                    {**env, "SINGER_PORT": str(port)},
                    port,
                    tmp_path / name,
                ).start(timeout=180)
            )
        conf = nginx_config(tmp_path, ports, lb_port)
        proc = subprocess.Popen(
            [*nginx_args(tmp_path, conf), "-g", f"daemon off; pid {tmp_path}/nginx.pid;"]
        )
        url = f"http://127.0.0.1:{lb_port}"
        for _ in range(100):
            try:
                httpx.get(f"{url}/healthz", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        clips = [make_clip(tmp_path, v, "mono", 0) for v in range(3)]
        seen = set()
        with httpx.Client(base_url=url, timeout=120) as client:
            for clip in clips:
                add_clip(client, clip)
            answers = []
            for _ in range(4):
                r = upload(client, "/identify", clips[1].path, domain="mono")
                assert r.status_code == 200, r.text
                seen.add(r.headers["X-Upstream"])
                answers.append([(h["name"], round(h["score"], 5)) for h in r.json()["singers"]])
        assert seen == {f"127.0.0.1:{p}" for p in ports}  # both replicas answered
        assert all(a == answers[0] for a in answers) and answers[0][0][0] == clips[1].singer
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(10)
        for r in replicas:
            r.kill()


def test_the_image_installs_the_scale_extra():
    """With EXTRAS=scale,postgres (the build argument compose.scale.yml passes) the image
    installs pyproject's `scale` and `postgres` extras at the versions of the lock file."""
    from tests.test_docker import lock_names, parse_dockerfile

    stages = parse_dockerfile(REPO / "docker" / "Dockerfile")
    run = next(a for s in stages for a in s.all("RUN") if "EXTRAS" in a)
    assert 'pip install -c requirements/lock.txt ".[$EXTRAS]"' in run
    locked = lock_names(REPO / "requirements" / "lock.txt")
    assert {"qdrant-client", "ray", "psycopg", "psycopg-binary", "psycopg-pool"} <= locked
