"""Decoding WAV, AIFF, FLAC and MP3 with libsndfile (through soundfile), whole or in pieces.

PCM and FLAC files have samples after a seek exactly equal to those of reading through
(lossy codecs seek approximately or need pre-roll), so one long one can be decoded on
several cores at once (`parts`, `executor`): it is cut at block boundaries into
contiguous pieces, each read by its own handle, and the pieces' blocks go through the same
checks and resampler in order, so the result is the serial one, sample for sample. A file
whose length is not what its header declares, or one too long to hold its later pieces in
memory (`MAX_SPLIT_FRAMES`), is read serially instead.

libsndfile reads only the bytes or the path it is given: it follows no reference. A file it
refuses raises `SndfileRefused`, and the caller hands it to PyAV.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future
from contextlib import AbstractContextManager, contextmanager, nullcontext
from itertools import pairwise

import numpy as np
import soundfile as sf

from model.audio_bounds import (
    BLOCK_FRAMES,
    Collector,
    check_declared,
    check_stream_params,
    downmix_weights,
)
from model.concurrency import Split

# libsndfile's major formats decoded in pieces (its names for WAV, W64, AIFF and FLAC files).
SPLIT_FORMATS = frozenset({"FLAC", "WAV", "WAVEX", "W64", "AIFF", "RF64"})
MIN_SPLIT_BLOCKS = 2  # blocks per piece at least (3 s at 44.1 kHz): a new handle costs a parse
# Longest file decoded in pieces, frames (6.3 min at 44.1 kHz): the later pieces' samples wait
# in memory (float32 mono, native rate) until the first is through, so longer files are read
# whole, in bounded memory, as before.
MAX_SPLIT_FRAMES = 2**24
_SF_ERRORS = (sf.LibsndfileError, RuntimeError, ValueError, TypeError)

Handle = io.BytesIO | int | str
Opener = Callable[[], AbstractContextManager[Handle]]


class SndfileRefused(Exception):
    """libsndfile cannot read this file (another decoder may)."""


class _SplitMismatch(Exception):
    """A piece did not hold the frames the header promised: decode serially instead."""


def decode_sndfile(
    source: bytes | str,
    sr: int | None,
    max_seconds: float | None,
    name: str | None,
    split: Split | None = None,
) -> tuple[np.ndarray, int]:
    """Decode encoded bytes or a file path (float32 mono at `sr`, None: native rate; the
    rate). Raises the AudioErrors of the bounds, or SndfileRefused."""
    if isinstance(source, str):
        opener: Opener = lambda: nullcontext(source)
        return _decode(source, opener, sr, max_seconds, name, split)
    with _in_memory_file(source) as handle:
        data = source
        return _decode(handle, lambda: _reopen(handle, data), sr, max_seconds, name, split)


def _decode(
    handle: Handle,
    opener: Opener,
    sr: int | None,
    max_seconds: float | None,
    name: str | None,
    split: Split | None,
) -> tuple[np.ndarray, int]:
    try:
        f = sf.SoundFile(handle, closefd=False)
    except _SF_ERRORS as err:
        raise SndfileRefused from err
    with f:
        rate, channels = int(f.samplerate), int(f.channels)
        check_stream_params(rate, channels, name)
        declared = f.frames / rate if 0 < f.frames < 2**62 else None  # huge: unknown length
        check_declared(declared, max_seconds, name)
        weights = downmix_weights(channels)

        def mono(block: np.ndarray) -> np.ndarray:
            return block[:, 0] if channels == 1 else block @ weights

        try:
            if split and split.executor and (pieces := _pieces(f, split.parts)):
                out = Collector(rate, sr, max_seconds, name, declared)
                try:
                    _read_split(f, pieces, split.executor, opener, mono, out.add)
                    return out.result(), sr or rate
                except _SplitMismatch:
                    f.seek(0)  # the header lied about the length: read through, as below
            out = Collector(rate, sr, max_seconds, name, declared)
            while len(block := f.read(BLOCK_FRAMES, dtype="float32", always_2d=True)):
                out.add(mono(block))
        except _SF_ERRORS as err:
            raise SndfileRefused from err
        return out.result(), sr or rate


def _pieces(f: sf.SoundFile, parts: int) -> list[tuple[int, int]]:
    """Up to `parts` contiguous (start, end) frame ranges of the declared length, cut at block
    boundaries (so every block read equals the serial read's); [] when not worth it, or
    when the length is unknown or too long to hold the later pieces."""
    if parts < 2 or f.format not in SPLIT_FORMATS or not f.seekable():
        return []
    if not 0 < f.frames <= MAX_SPLIT_FRAMES:
        return []
    n_blocks = -(-f.frames // BLOCK_FRAMES)
    k = min(parts, n_blocks // MIN_SPLIT_BLOCKS)
    if k < 2:
        return []
    return list(pairwise([i * n_blocks // k * BLOCK_FRAMES for i in range(k)] + [f.frames]))


def _read_piece(
    f: sf.SoundFile, start: int, end: int, last: bool, mono: Callable[[np.ndarray], np.ndarray]
) -> list[np.ndarray]:
    """The mono blocks of frames [start, end), read as the serial loop reads them."""
    f.seek(start)
    blocks = []
    for pos in range(start, end, BLOCK_FRAMES):
        want = min(BLOCK_FRAMES, end - pos)
        block = f.read(want, dtype="float32", always_2d=True)
        if len(block) != want:
            raise _SplitMismatch
        blocks.append(mono(block))
    if last and len(f.read(1, dtype="float32")):
        raise _SplitMismatch  # more audio than declared
    return blocks


def _read_split(
    f: sf.SoundFile,
    pieces: list[tuple[int, int]],
    executor: Executor,
    opener: Opener,
    mono: Callable[[np.ndarray], np.ndarray],
    add: Callable[[np.ndarray], None],
) -> None:
    """Read the pieces after the first in `executor`, each through its own handle, while
    this thread reads the first; hand every block to `add` in order."""

    def read_elsewhere(start: int, end: int, last: bool) -> list[np.ndarray]:
        try:
            with opener() as handle, sf.SoundFile(handle, closefd=False) as g:
                return _read_piece(g, start, end, last, mono)
        except _SF_ERRORS as err:
            raise _SplitMismatch from err

    n = len(pieces)
    futures: list[Future[list[np.ndarray]]] = [
        executor.submit(read_elsewhere, start, end, i == n - 1)
        for i, (start, end) in enumerate(pieces[1:], 1)
    ]
    try:
        for block in _read_piece(f, *pieces[0], False, mono):
            add(block)
        for future in futures:
            for block in future.result():
                add(block)
    finally:
        for future in futures:
            future.cancel()


@contextmanager
def _in_memory_file(data: bytes) -> Iterator[io.BytesIO | int]:
    """Encoded bytes as something libsndfile reads: an anonymous in-memory file descriptor
    where the OS has them (Linux), else a BytesIO.

    Why: libsndfile reads a BytesIO through Python callbacks, which take the GIL for every
    read, so two threads decoding uploads ran one after the other (a 30-s FLAC: 45 ms for a
    pair against 23 ms for one). From a descriptor it reads in C without the GIL (27 ms for
    the pair). The descriptor names no path: nothing reaches the filesystem.
    """
    try:
        fd = os.memfd_create("upload", os.MFD_CLOEXEC)
    except (AttributeError, OSError):  # not Linux, or a sandbox that forbids it
        yield io.BytesIO(data)
        return
    try:
        view = memoryview(data)
        while view:  # os.write may write less than asked
            view = view[os.write(fd, view) :]
        os.lseek(fd, 0, os.SEEK_SET)
        yield fd
    finally:
        os.close(fd)


@contextmanager
def _reopen(handle: io.BytesIO | int, data: bytes) -> Iterator[io.BytesIO | int]:
    """Another handle on the same upload with a read position of its own, for a piece: a
    second open file description of the in-memory file (no copy of the bytes; the name is
    the descriptor's, never the request's), else a BytesIO (which shares the bytes)."""
    if isinstance(handle, int):
        try:
            fd = os.open(f"/proc/self/fd/{handle}", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:  # no /proc here
            pass
        else:
            try:
                yield fd
            finally:
                os.close(fd)
            return
    yield io.BytesIO(data)
