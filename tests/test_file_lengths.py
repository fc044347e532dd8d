"""No file of the service, the catalogue or the inference core is over 400 lines (the
developers' guide: split a longer one by job). Research code (model/training,
model/evaluation) and the command-line front ends (model/cli) are not held to it."""

from __future__ import annotations

import subprocess

from tests.support import REPO

LIMIT = 400
HELD = ("service/", "catalog/", "model/")
NOT_HELD = ("model/training/", "model/evaluation/", "model/cli/")


def test_no_core_file_is_over_400_lines():
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "--", *HELD],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    files = [
        f
        for f in listed
        if f.endswith(".py") and not f.startswith(NOT_HELD) and (REPO / f).is_file()
    ]
    assert "service/app.py" in files and "model/embedding.py" in files
    lengths = {f: len((REPO / f).read_text().splitlines()) for f in files}
    assert {f: n for f, n in lengths.items() if n > LIMIT} == {}
