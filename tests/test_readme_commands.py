"""Every command in README.md runs: its shell and Python blocks are read from the README and
run for real, in order, in a fresh folder laid out as the README assumes (`data/index`, a
music folder, `take.m4a`, `take.wav`, `song.flac`, `new-weights.pt`).

`make run` is its recipe (`python -m service` with local writes allowed) on a free port, with
the default checkpoint; the `curl` lines and the Python client go to that server; the indexer
commands run as written (`.venv/bin/python` is this interpreter). `make test` is this suite:
only its target is checked (`make -n`). A command the README gains that this file does not
know how to run fails the test, so the README cannot drift from what runs.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import REPO
from tests.support.encoded import write_encoded
from tests.support.live import ServiceProcess, free_port, make_clip, render, singer_name
from tests.support.synth import SR

pytestmark = pytest.mark.e2e

README = REPO / "README.md"
README_URL = "http://127.0.0.1:8000"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)


def readme_blocks(text: str) -> list[tuple[str, str]]:
    """(language, code) of the README's fenced blocks that are commands: bash/sh and python."""
    return [(lang, code) for lang, code in FENCE.findall(text) if lang in ("bash", "sh", "python")]


def shell_commands(code: str) -> list[str]:
    """The commands of a shell block: continuation lines joined, comments dropped."""
    joined = code.replace("\\\n", " ")
    commands = []
    for line in joined.splitlines():
        words = shlex.split(line, comments=True)
        if words:
            commands.append(shlex.join(words))
    return commands


def test_readme_blocks_are_read():
    text = "x\n```bash\nmake run   # serve\ncurl -F a=@b \\\n  http://h/x\n```\n```json\n{}\n```\n"
    (block,) = readme_blocks(text)
    assert shell_commands(block[1]) == ["make run", "curl -F a=@b http://h/x"]


class Readme:
    """Runs README commands in `work`, against the server `make run` starts."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.server: ServiceProcess | None = None
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("SINGER_")}
        self.env.update(
            PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
            OMP_NUM_THREADS="1",
        )
        self.ran: list[str] = []

    def url(self) -> str:
        assert self.server is not None, "the README runs `make run` before its requests"
        return self.server.url

    def shell(self, command: str) -> None:
        words = shlex.split(command)
        if words[:2] == ["make", "run"]:
            self.make_run()
        elif words[0] == "make":
            self.run(["make", "-n", *words[1:]], cwd=REPO)  # the target exists
        elif words[0] == ".venv/bin/python":
            self.run([sys.executable, *(self.local(w) for w in words[1:])])
        elif words[0] == "curl":
            self.curl(words[1:])
        else:
            pytest.fail(f"README command this test cannot run yet: {command}")
        self.ran.append(command)

    def python(self, code: str) -> None:
        script = self.work / f"readme_snippet_{len(self.ran)}.py"
        script.write_text(code.replace(README_URL, self.url()) if self.server else code)
        self.run([sys.executable, str(script)])
        self.ran.append(code.splitlines()[0])

    def make_run(self) -> None:
        """The Makefile's `run` recipe: `python -m service`, local writes allowed. The README
        gives it twice (the two commands, then the tour): the second finds it serving."""
        if self.server is not None:
            assert self.server.proc is not None and self.server.proc.poll() is None
            return
        recipe = subprocess.run(
            ["make", "-n", "run"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout
        assert "SINGER_ALLOW_UNAUTHENTICATED_WRITES" in recipe and "-m service" in recipe
        port = free_port()
        env = {**self.env, "SINGER_PORT": str(port), "SINGER_ALLOW_UNAUTHENTICATED_WRITES": "true"}
        cmd = [sys.executable, "-m", "service"]
        self.server = ServiceProcess(cmd, env, port, self.work).start(timeout=180)

    def curl(self, args: list[str]) -> None:
        args = [a.replace(README_URL, self.url()) for a in args]
        out = self.work / f"curl_{len(self.ran)}.json"
        done = self.run(["curl", "-sS", "-o", str(out), "-w", "%{http_code}", *args])
        assert done.stdout.strip().startswith("2"), (args, done.stdout, out.read_text())

    def local(self, word: str) -> str:
        """A path of the README's machine as it is in `work`: the music folder."""
        return "music/" if word in ("~/music/", "~/music") else word

    def run(self, cmd: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess:
        done = subprocess.run(
            cmd, cwd=cwd or self.work, env=self.env, capture_output=True, text=True, timeout=600
        )
        assert done.returncode == 0, (cmd, done.stdout[-2000:], done.stderr[-3000:])
        return done

    def stop(self) -> None:
        if self.server is not None:
            self.server.kill()


@pytest.fixture
def work(tmp_path: Path, random_checkpoint: Path) -> Path:
    """What the README's commands expect in the working directory."""
    music = tmp_path / "music"
    for voice in (0, 1):
        for seed in (0, 1):
            make_clip(music / singer_name(voice), voice, "mixed", seed)
    write_encoded(tmp_path / "take.m4a", render(0, "mono", 7), SR)
    write_encoded(tmp_path / "take.wav", render(1, "mono", 8), SR)
    write_encoded(tmp_path / "song.flac", render(1, "mixed", 9), SR)
    shutil.copy(random_checkpoint, tmp_path / "new-weights.pt")  # a model to migrate to
    return tmp_path


def test_every_readme_command_runs(work):
    blocks = readme_blocks(README.read_text())
    readme = Readme(work)
    try:
        for lang, code in blocks:
            if lang == "python":
                readme.python(code)
            else:
                for command in shell_commands(code):
                    readme.shell(command)
    finally:
        readme.stop()
    ran = "\n".join(readme.ran)
    # the tour and the catalogue's operations were all there to run
    for expected in ("make run", "-m indexer --index", "/identify", "/search", "/tracks"):
        assert expected in ran, expected
    for operation in ("stats", "migrate", "snapshot", "export"):
        assert f"-m indexer {operation}" in ran, operation
    assert (work / "catalogue.tar").stat().st_size > 0
    assert (work / "backups" / "today").exists()
