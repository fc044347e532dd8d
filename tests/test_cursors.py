"""The /search cursor codec: every token either decodes to the offset that encodes back to
it, or is a `BadCursorError`; no input reaches a general parser (issue 39: base64 of 1,000
`[` recursed through json.loads into a 500)."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.cursors import MAX_CURSOR_CHARS, BadCursorError, decode_cursor, encode_cursor


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@given(st.integers(0, 10**19 - 1))
def test_every_offset_round_trips(offset):
    token = encode_cursor(offset)
    assert len(token) <= MAX_CURSOR_CHARS
    assert decode_cursor(token) == offset


TOKENS = st.one_of(
    st.text(max_size=200),
    st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_="),
    st.binary(max_size=120).map(b64),
    st.builds(lambda n, c: b64(c.encode() * n), st.integers(0, 5000), st.sampled_from('[{"')),
    st.integers(-(10**25), 10**25).map(lambda o: b64(b'{"o": %d}' % o)),
    st.integers(0, 10**6).map(lambda o: b64(f'{{"o":{o}}}'.encode())),  # other spacing
)


@given(TOKENS)
def test_any_token_decodes_canonically_or_is_refused(token):
    try:
        offset = decode_cursor(token)
    except BadCursorError:
        return
    assert offset >= 0 and encode_cursor(offset) == token


@pytest.mark.parametrize("n", [1_000, 100_000])
def test_deeply_nested_json_is_refused_in_bounded_time(n):
    with pytest.raises(BadCursorError):
        decode_cursor(b64(b"[" * n))


@pytest.mark.parametrize(
    "token",
    [
        b64(b'{"o": -1}'),
        b64(b'{"o": 1.5}'),
        b64(b'{"o": "1"}'),
        b64(b'{"o": 01}'),
        b64(b'{"o": 1, "x": 2}'),
        b64(b'{"o": 1}') + "=",
        encode_cursor(3)[:-1] + "x",
        "",
        "a" * (MAX_CURSOR_CHARS + 1),
    ],
)
def test_near_misses_are_refused(token):
    with pytest.raises(BadCursorError):
        decode_cursor(token)
