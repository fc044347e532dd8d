"""The `/search` page cursor: an offset, in an opaque token parsed in bounded time.

A cursor is the URL-safe base64 (unpadded) of `{"o": <offset>}`. Decoding never hands client
bytes to a general parser: the token's length and alphabet are checked first, then the
decoded bytes must match one fixed pattern, then re-encoding must give the token back. A
malformed token (1,000 or 100,000 `[` in base64, say, which once recursed through
`json.loads` into a 500) is a `BadCursorError`, answered 422 `bad_cursor`.
"""

from __future__ import annotations

import base64
import binascii
import re

#: The longest token this service makes: an offset of up to 19 digits is 36 characters.
MAX_CURSOR_CHARS = 48
_TOKEN = re.compile(rf"[A-Za-z0-9_-]{{1,{MAX_CURSOR_CHARS}}}")
_PAYLOAD = re.compile(rb'\{"o": (0|[1-9][0-9]{0,18})\}')


class BadCursorError(ValueError):
    """A cursor this service did not return."""

    def __init__(self) -> None:
        super().__init__("cursor is not one this service returned")


def encode_cursor(offset: int) -> str:
    """The token of page offset `offset` (>= 0)."""
    if offset < 0:
        raise ValueError(f"offset must be >= 0, not {offset}")
    return base64.urlsafe_b64encode(b'{"o": %d}' % offset).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    """The offset `cursor` stands for; `BadCursorError` for anything `encode_cursor` did not
    make. Linear in at most `MAX_CURSOR_CHARS` characters, whatever the input."""
    if not _TOKEN.fullmatch(cursor):
        raise BadCursorError()
    try:
        payload = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    except (binascii.Error, ValueError):
        raise BadCursorError() from None
    match = _PAYLOAD.fullmatch(payload)
    if match is None:
        raise BadCursorError()
    offset = int(match.group(1))
    if encode_cursor(offset) != cursor:  # one token per offset: no aliases via padding bits
        raise BadCursorError()
    return offset
