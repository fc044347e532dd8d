"""Where the research material (`../shared`: paper, reference weights, data sets) is read from."""

from __future__ import annotations

import os
from pathlib import Path

#: The repository root, when the package runs from a checkout.
_CHECKOUT = Path(__file__).resolve().parents[1]


def shared_dir() -> Path:
    """`$SINGER_SHARED_DIR` when set, else `../shared` beside the checkout (may not exist)."""
    env = os.environ.get("SINGER_SHARED_DIR", "").strip()
    return Path(env) if env else _CHECKOUT.parent / "shared"
