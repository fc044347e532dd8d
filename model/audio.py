"""Audio decoding: any file or byte string in, mono float32 at the model's sample rate out.

libsndfile (through soundfile) reads wav, flac, ogg/vorbis, opus and mp3 in-process. Other
containers (m4a/aac, mp4, webm, ...: the DAMP dataset is m4a) go through an `ffmpeg`
subprocess when one is on PATH; otherwise a `DecoderMissingError` names what to install.

Decoding is bounded, because a few compressed bytes can declare hours of audio or a 1 Hz
rate that resampling turns into gigabytes:
- sample rate and channel count are checked against [MIN_SAMPLE_RATE, MAX_SAMPLE_RATE] and
  MAX_CHANNELS from the header (`UnsupportedAudioParamsError`);
- with `max_seconds`, the duration the header declares is checked before decoding, and the
  decoded samples are counted block by block, so a header that under-states its length is
  stopped at the limit too (`AudioTooLongError`);
- every block is downmixed, checked for NaN/Inf (an `AudioError` before any resampling) and
  resampled as it streams (soxr's streaming resampler gives the same samples as one call),
  so memory holds only the mono output at the target rate plus one block.

One long upload can be decoded on several cores at once (`parts`, `executor`): a FLAC, WAV
or AIFF file, whose samples after a seek are exactly those of reading through, is cut at
block boundaries into contiguous pieces, each read by its own handle, and the pieces' blocks
go through the same checks and resampler in order, so the result is the serial one, sample
for sample. A file whose length is not what its header declares, or one too long to hold its
later pieces in memory (`MAX_SPLIT_FRAMES`), is read serially instead.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future
from contextlib import AbstractContextManager, contextmanager, nullcontext
from itertools import pairwise
from pathlib import Path
from typing import IO, Any, NamedTuple

import numpy as np
import soundfile as sf

from model.errors import (
    AudioError,
    AudioTooLongError,
    DecoderMissingError,
    UnsupportedAudioParamsError,
    UnsupportedFormatError,
)

SAMPLE_RATE = 22050
SNDFILE_FORMATS = ("wav", "flac", "ogg", "opus", "mp3", "aiff", "aif")
FFMPEG_FORMATS = ("m4a", "aac", "mp4", "webm", "wma")
SUPPORTED_FORMATS = SNDFILE_FORMATS + FFMPEG_FORMATS
MIN_SAMPLE_RATE = 4_000  # Hz; below, nothing of a voice's spectrum is left
MAX_SAMPLE_RATE = 384_000  # Hz; the highest rate of real converters
MAX_CHANNELS = 32
# Default bounds of the decoded duration, seconds: a query, and a catalogue track.
MAX_QUERY_SECONDS = 600.0
MAX_TRACK_SECONDS = 1800.0
BLOCK_FRAMES = 65_536  # frames decoded at a time (at most 8 MiB at MAX_CHANNELS, float32)
# libsndfile formats whose samples after a seek equal those of reading through (lossless or
# PCM): only these are decoded in pieces. Lossy codecs seek approximately or need pre-roll.
SPLIT_FORMATS = frozenset({"FLAC", "WAV", "WAVEX", "W64", "AIFF", "RF64"})
MIN_SPLIT_BLOCKS = 2  # blocks per piece at least (3 s at 44.1 kHz): a new handle costs a parse
# Longest file decoded in pieces, frames (6.3 min at 44.1 kHz): the later pieces' samples wait
# in memory (float32 mono, native rate) until the first is through, so longer files are read
# whole, in bounded memory, as before.
MAX_SPLIT_FRAMES = 2**24

AudioSource = str | Path | bytes


def ffmpeg_available() -> bool:
    return shutil.which("ffmpeg") is not None


def _describe(source: AudioSource) -> str | None:
    return None if isinstance(source, bytes) else str(source)


def _suffix(source: AudioSource) -> str:
    return "" if isinstance(source, bytes) else Path(source).suffix.lower().lstrip(".")


def check_stream_params(rate: int, channels: int, name: str | None = None) -> None:
    """Raise UnsupportedAudioParamsError for a rate or channel count outside the sane range."""
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise UnsupportedAudioParamsError(
            f"sample rate {rate} Hz is outside {MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz", name
        )
    if not 1 <= channels <= MAX_CHANNELS:
        raise UnsupportedAudioParamsError(
            f"{channels} channels; 1 to {MAX_CHANNELS} are accepted", name
        )


class _Collector:
    """Receives decoded mono blocks at `rate`; checks them, counts them against the limit and
    resamples them to `sr` as they arrive (None: keep the native rate).

    With a limit and a declared length, the output is written into one buffer allocated
    up front (joining blocks at the end would need the output's size twice); a header that
    under-states the length falls back to joining blocks."""

    def __init__(
        self,
        rate: int,
        sr: int | None,
        max_seconds: float | None,
        name: str | None,
        declared_s: float | None = None,
    ):
        self.rate, self.sr, self.name, self.max_seconds = rate, sr or rate, name, max_seconds
        self.n = 0
        self.parts: list[np.ndarray] = []
        self.buffer: np.ndarray | None = None
        self.filled = 0
        if max_seconds is not None and declared_s:
            size = int(np.ceil(min(declared_s, max_seconds) * (sr or rate))) + BLOCK_FRAMES
            self.buffer = np.empty(size, dtype=np.float32)
        self.stream = None
        if sr is not None and sr != rate:
            import soxr  # librosa's "soxr_hq", streaming

            self.stream = soxr.ResampleStream(rate, sr, 1, dtype="float32", quality="HQ")

    def _store(self, y: np.ndarray) -> None:
        if self.buffer is not None:
            if self.filled + len(y) <= len(self.buffer):
                self.buffer[self.filled : self.filled + len(y)] = y
                self.filled += len(y)
                return
            self.parts, self.buffer = [self.buffer[: self.filled]], None
        self.parts.append(y)

    def add(self, mono: np.ndarray) -> None:
        self.n += len(mono)
        if self.max_seconds is not None and self.n > int(self.max_seconds * self.rate):
            raise AudioTooLongError(
                self.n / self.rate, self.max_seconds, self.name, from_header=False
            )
        if not np.isfinite(mono).all():
            raise AudioError("the audio holds NaN or infinite samples", self.name)
        if self.stream is not None:
            mono = self.stream.resample_chunk(mono, last=False)
        self._store(mono)

    def result(self) -> np.ndarray:
        if self.n == 0:
            raise AudioError("the file holds no audio samples", self.name)
        if self.stream is not None:
            self._store(self.stream.resample_chunk(np.zeros(0, np.float32), last=True))
        if self.buffer is not None:
            y = self.buffer[: self.filled]
            y = y if 2 * self.filled > len(self.buffer) else y.copy()  # a lying header
        else:
            y = np.concatenate(self.parts).astype(np.float32, copy=False)
        # As many samples as `resample` (librosa) gives: ceil(n * sr / rate), zero-padded.
        n_out = int(np.ceil(self.n * self.sr / self.rate))
        return y[:n_out] if len(y) >= n_out else np.pad(y, (0, n_out - len(y)))


def _check_declared(seconds: float | None, max_seconds: float | None, name: str | None) -> None:
    if max_seconds is not None and seconds is not None and seconds > max_seconds:
        raise AudioTooLongError(seconds, max_seconds, name, from_header=True)


# -- libsndfile ------------------------------------------------------------------------------
Opener = Callable[[], AbstractContextManager[io.BytesIO | int | str]]


class _Split(NamedTuple):
    """How to decode one file in pieces: at most `parts`, the later ones run by `executor`,
    each through a handle of its own from `opener`."""

    parts: int
    executor: Executor
    opener: Opener


class _SplitMismatch(Exception):
    """A piece did not hold the frames the header promised: decode serially instead."""


def _decode_sndfile(
    handle: io.BytesIO | int | str,
    sr: int | None,
    max_seconds: float | None,
    name: str | None,
    split: _Split | None = None,
) -> tuple[np.ndarray, int]:
    with sf.SoundFile(handle, closefd=False) as f:
        rate, channels = int(f.samplerate), int(f.channels)
        check_stream_params(rate, channels, name)
        declared = f.frames / rate if 0 < f.frames < 2**62 else None  # huge: unknown length
        _check_declared(declared, max_seconds, name)
        # Mixdown as one matrix-vector product: numpy's mean over the short channel axis took
        # longer than decoding a 30-s stereo FLAC (same result: the weights 1/channels are
        # exact for 1, 2 and 4 channels). A mono file needs none.
        weights = np.full(channels, 1 / channels, np.float32)

        def mono(block: np.ndarray) -> np.ndarray:
            return block[:, 0] if channels == 1 else block @ weights

        if split is not None and (pieces := _pieces(f, split.parts)):
            out = _Collector(rate, sr, max_seconds, name, declared)
            try:
                _read_split(f, pieces, split.executor, split.opener, mono, out.add)
                return out.result(), sr or rate
            except _SplitMismatch:
                f.seek(0)  # the header lied about the length: read through, as below
        out = _Collector(rate, sr, max_seconds, name, declared)
        while True:
            block = f.read(BLOCK_FRAMES, dtype="float32", always_2d=True)
            if not len(block):
                break
            out.add(mono(block))
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
        except (sf.LibsndfileError, RuntimeError, ValueError, TypeError) as err:
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


# -- ffmpeg ----------------------------------------------------------------------------------
def _decode_ffmpeg(
    source: AudioSource, sr: int | None, max_seconds: float | None
) -> tuple[np.ndarray, int]:
    """Decode with ffmpeg to mono float32 at the stream's own rate, then resample here."""
    if isinstance(source, bytes):
        # A seekable file, not a pipe: an mp4/m4a whose index (moov atom) sits at the end of the
        # file cannot be demuxed from a pipe.
        with tempfile.NamedTemporaryFile(suffix=".audio") as tmp:
            tmp.write(source)
            tmp.flush()
            return _ffmpeg_decode_path(tmp.name, None, sr, max_seconds)
    return _ffmpeg_decode_path(str(source), str(source), sr, max_seconds)


def _ffmpeg_decode_path(
    path: str, name: str | None, sr: int | None, max_seconds: float | None
) -> tuple[np.ndarray, int]:
    rate, declared = _ffprobe_check(path, name, max_seconds)
    cmd = ["ffmpeg", "-nostdin", "-v", "error", "-i", path, "-vn", "-ac", "1"]
    # Decode at the native rate: ffmpeg resamples nothing, the collector does it once.
    cmd += ["-f", "f32le", "-acodec", "pcm_f32le", "-ar", str(rate), "pipe:1"]
    out = _Collector(rate, sr, max_seconds, name, declared)
    # stderr to a file: a corrupt stream can print more errors than a pipe buffer holds.
    with (
        tempfile.TemporaryFile() as err,
        subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err) as proc,
    ):
        assert proc.stdout is not None  # stdout=PIPE
        try:
            for block in _read_f32(proc.stdout):
                out.add(block)
        finally:
            if proc.poll() is None:
                proc.kill()  # stopped at the limit (or an error): no need to decode the rest
            proc.wait()
        err.seek(0)
        detail = err.read().decode(errors="replace")
    if proc.returncode != 0 or out.n == 0:
        # ffmpeg names its input: for uploaded bytes that is our temp file, of no use to a client.
        detail = detail.replace(path, name or "input")
        raise UnsupportedFormatError(_unsupported_message(detail), name)
    return out.result(), sr or rate


def _read_f32(pipe: IO[bytes]) -> Iterator[np.ndarray]:
    """Blocks of float32 samples from a byte pipe (a read may end mid-sample)."""
    rest = b""
    while chunk := pipe.read(4 * BLOCK_FRAMES):
        chunk = rest + chunk
        usable = len(chunk) - len(chunk) % 4
        rest = chunk[usable:]
        if usable:
            yield np.frombuffer(chunk[:usable], dtype=np.float32)


def _ffprobe_check(
    path: str, name: str | None, max_seconds: float | None
) -> tuple[int, float | None]:
    """The first audio stream's rate and declared duration (seconds; None: not declared),
    after checking rate, channels and duration."""
    if not shutil.which("ffprobe"):
        return 44100, None  # m4a/aac is almost always 44.1 kHz; the block limit still applies
    cmd = ["ffprobe", "-v", "error", "-of", "json", "-select_streams", "a:0"]
    cmd += ["-show_entries", "stream=sample_rate,channels,duration:format=duration", path]
    res = subprocess.run(cmd, capture_output=True, check=False, timeout=30)
    try:
        info = json.loads(res.stdout or b"{}")
    except ValueError:
        info = {}
    streams = info.get("streams") or []
    if res.returncode != 0 or not streams:
        what = "no audio stream" if res.returncode == 0 else res.stderr.decode(errors="replace")
        raise UnsupportedFormatError(_unsupported_message(what.replace(path, "input")), name)
    stream = streams[0]
    rate, channels = _as_int(stream.get("sample_rate")), _as_int(stream.get("channels"))
    check_stream_params(rate, channels, name)
    durations = [
        _as_float(d) for d in (stream.get("duration"), info.get("format", {}).get("duration"))
    ]
    declared = max((d for d in durations if d is not None), default=None)
    _check_declared(declared, max_seconds, name)
    return rate, declared


def _as_int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _as_float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _unsupported_message(detail: str = "") -> str:
    msg = "not a decodable audio file; supported formats: " + ", ".join(SUPPORTED_FORMATS)
    if not ffmpeg_available():
        msg += f" ({', '.join(FFMPEG_FORMATS)} need ffmpeg, which is not installed)"
    detail = detail.strip().splitlines()[-1] if detail.strip() else ""
    detail = re.sub(r"\[[^\[\]]* @ 0x[0-9a-fA-F]+\]\s*", "", detail)  # ffmpeg's "[codec @ 0x...]"
    return f"{msg}" + (f" [{detail}]" if detail else "")


# -- entry points ----------------------------------------------------------------------------
def _decode(
    source: AudioSource,
    sr: int | None,
    max_seconds: float | None,
    parts: int = 1,
    executor: Executor | None = None,
) -> tuple[np.ndarray, int]:
    name = _describe(source)
    if parts > 1 and executor is None:
        raise ValueError("decoding in parts needs an executor to run them")
    helpers = executor if parts > 1 else None
    if isinstance(source, bytes):
        if not source:
            raise AudioError("empty file", name)
        with _in_memory_file(source) as handle:
            data = source
            reopen: Opener = lambda: _reopen(handle, data)
            split = _Split(parts, helpers, reopen) if helpers is not None else None
            return _decode_handle(source, handle, sr, max_seconds, name, split)
    path = Path(source)
    if not path.is_file():
        raise AudioError("no such file", name)
    if path.stat().st_size == 0:
        raise AudioError("empty file", name)
    opener: Opener = lambda: nullcontext(str(path))
    split = _Split(parts, helpers, opener) if helpers is not None else None
    return _decode_handle(source, str(path), sr, max_seconds, name, split)


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


def _decode_handle(
    source: AudioSource,
    handle: io.BytesIO | int | str,
    sr: int | None,
    max_seconds: float | None,
    name: str | None,
    split: _Split | None = None,
) -> tuple[np.ndarray, int]:
    try:
        return _decode_sndfile(handle, sr, max_seconds, name, split)
    except (sf.LibsndfileError, RuntimeError, ValueError, TypeError) as err:
        if ffmpeg_available():
            return _decode_ffmpeg(source, sr, max_seconds)
        if _suffix(source) in FFMPEG_FORMATS:
            raise DecoderMissingError(
                f"decoding .{_suffix(source)} needs ffmpeg, which is not installed "
                "(apt-get install ffmpeg)",
                name,
            ) from err
        raise UnsupportedFormatError(_unsupported_message(_reason(err)), name) from err


def _reason(err: Exception) -> str:
    """libsndfile's own words, without the `<_io.BytesIO object at 0x...>` it was handed."""
    if isinstance(err, sf.LibsndfileError):
        return err.error_string
    return re.sub(r"<[^<>]* at 0x[0-9a-fA-F]+>", "input", str(err))


def decode(source: AudioSource, max_seconds: float | None = None) -> tuple[np.ndarray, int]:
    """Decode a file path or encoded bytes. Returns (float32 mono (samples,), native rate in Hz).

    Raises AudioError: UnsupportedFormatError, UnsupportedAudioParamsError, AudioTooLongError
    (more than `max_seconds` of audio), or a plain AudioError (empty, NaN/Inf samples).
    """
    return _decode(source, None, max_seconds)


def resample(y: np.ndarray, orig_sr: int, sr: int) -> np.ndarray:
    """Band-limited resampling (soxr, high quality). (samples,) -> (samples * sr / orig_sr,)."""
    if orig_sr == sr:
        return y
    import librosa  # heavy import, only when a rate actually differs

    return librosa.resample(y, orig_sr=orig_sr, target_sr=sr, res_type="soxr_hq").astype(np.float32)


def rms(y: np.ndarray) -> float:
    """Root-mean-square of a signal (samples,), accumulated in float64; 0 for no samples."""
    return float(np.sqrt(np.mean(np.square(y, dtype=np.float64)))) if len(y) else 0.0


def load_audio(
    source: AudioSource,
    sr: int = SAMPLE_RATE,
    max_seconds: float | None = None,
    *,
    parts: int = 1,
    executor: Executor | None = None,
) -> np.ndarray:
    """Decode, downmix to mono and resample. Returns float32 (samples,) at `sr` Hz.

    `max_seconds` bounds the decoded duration (None: unbounded, for trusted research data);
    raises the AudioErrors of `decode`. `parts` > 1: decode a FLAC, WAV or AIFF file in up to
    that many pieces at once, the pieces after the first in `executor` (threads: libsndfile
    reads without the GIL); the samples are the same as with parts=1.
    """
    return _decode(source, sr, max_seconds, parts, executor)[0]
