"""mypy checks at least 90 % of the shipped packages' files (docs/development.md: the count)."""

from __future__ import annotations

import re
import tomllib

from tests.support import REPO
from tests.support.checkout import checkout_files

PACKAGES = ("catalog", "service", "indexer", "model", "singer_client")


def test_mypy_covers_nine_tenths_of_the_packages():
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["mypy"]
    files = [f for f in checkout_files(*PACKAGES) if f.endswith(".py")]
    excluded = [re.compile(p) for p in config.get("exclude", [])]
    checked = [
        f
        for f in files
        if any(f == e or f.startswith(e.rstrip("/") + "/") for e in config["files"])
        and not any(p.search(f) for p in excluded)
    ]
    assert len(files) > 100  # the count sees the tree
    assert len(checked) >= 0.9 * len(files), sorted(set(files) - set(checked))
