"""The content hash: a track's duplicate key in the catalogue (with checkpoint id and domain)."""

from __future__ import annotations

import hashlib
from pathlib import Path

_CHUNK = 1 << 20  # 1 MiB: files are hashed without being read whole


def content_hash(source: bytes | str | Path) -> str:
    """Hex SHA-256 of a file's encoded bytes, given as the bytes or as a path to the file.

    The indexer hashes files and the service hashes uploads; both come here, so a song indexed
    from disk and the same file uploaded get the same key.
    """
    h = hashlib.sha256()
    if isinstance(source, bytes | bytearray | memoryview):
        h.update(source)
        return h.hexdigest()
    with open(source, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()
