"""No file of the service, the catalogue or the inference core is over 400 lines (the
developers' guide: split a longer one by job). Research code (model/training,
model/evaluation) and the command-line front ends (model/cli) are not held to it."""

from __future__ import annotations

from tests.support import REPO
from tests.support.checkout import checkout_files

LIMIT = 400
HELD = ("service/", "catalog/", "model/")
NOT_HELD = ("model/training/", "model/evaluation/", "model/cli/")


def test_no_core_file_is_over_400_lines():
    files = [f for f in checkout_files(*HELD) if f.endswith(".py") and not f.startswith(NOT_HELD)]
    assert "service/app.py" in files and "model/embedding.py" in files
    lengths = {f: len((REPO / f).read_text().splitlines()) for f in files}
    assert {f: n for f, n in lengths.items() if n > LIMIT} == {}
