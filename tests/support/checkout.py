"""The checkout's files as git sees them, for tests that check the tree itself."""

from __future__ import annotations

import subprocess

from tests.support import REPO


def checkout_files(*pathspecs: str) -> list[str]:
    """Paths relative to REPO of the files under `pathspecs` (all when none): tracked ones and
    untracked ones git does not ignore, as in the working tree (deleted files left out)."""
    out = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", *pathspecs],
        cwd=REPO,
        capture_output=True,
        check=True,
    )
    return [f for f in out.stdout.decode().split("\0") if f and (REPO / f).is_file()]
