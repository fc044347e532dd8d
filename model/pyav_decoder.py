"""Decoding with PyAV (FFmpeg's libraries inside its wheel; no `ffmpeg` program, no temp file).

The bytes reach FFmpeg through a Python file object, and the demuxer is the one
`model.audio_containers.sniff` named from the bytes: FFmpeg probes nothing and opens
nothing else. Defence in depth, should a whitelisted demuxer still try to open another
resource: its protocol whitelist names no protocol (`none`), so any nested open fails, and
the mp4 demuxer's external data references (`enable_drefs`) stay off.

FFmpeg's own error strings never reach the caller (they can name inputs); a failure is one
of a few fixed reasons. A packet that does not decode is skipped, as the `ffmpeg` program
skips it, and the end of readable data ends the stream (a truncated upload decodes to its
readable part, as libsndfile decodes one).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO

import av
import numpy as np

from model.audio_bounds import (
    BLOCK_FRAMES,
    Collector,
    check_declared,
    check_stream_params,
    downmix_weights,
)
from model.audio_containers import AAC, MP3, MP4, Container, unsupported_message
from model.errors import UnsupportedAudioParamsError, UnsupportedFormatError

# What FFmpeg raises, and what PyAV adds on odd streams (a layout or sample format it does not
# map): a file it cannot read, never a bug of ours to hide (those are other types).
_AV_ERRORS = (av.FFmpegError, ValueError, TypeError, KeyError, NotImplementedError, EOFError)
# Integer sample formats: the scale libsndfile applies too, so lossless files decode to the
# same float samples with either library.
_SCALE = {"u8": 2.0**-7, "s16": 2.0**-15, "s32": 2.0**-31, "s64": 2.0**-63}
# Containers whose duration FFmpeg estimates from the bit rate (no length field in the
# header): not a declared length to refuse a file by; decoding still counts every sample.
_ESTIMATED_LENGTH = frozenset({MP3.name, AAC.name})
_FRAME_POINTERS = 8  # AV_NUM_DATA_POINTERS: plane pointers an AVFrame holds itself
# FFmpeg's sample formats (planar or packed) as numpy types, in the machine's byte order.
_DTYPES = {
    name: np.dtype(t)
    for name, t in [
        ("u8", np.uint8),
        ("s16", np.int16),
        ("s32", np.int32),
        ("s64", np.int64),
        ("flt", np.float32),
        ("dbl", np.float64),
    ]
}


def _options(container: Container) -> dict[str, str]:
    options = {
        "protocol_whitelist": "none",
        # Enough to read the stream parameters; the default 5 MB made opening a 5-MB WAV
        # read it all (53 ms of 59).
        "probesize": "65536",
    }
    if container == MP4:
        options |= {"enable_drefs": "0", "use_absolute_path": "0"}
    return options


def decode_av(
    file: BinaryIO,
    container: Container,
    sr: int | None,
    max_seconds: float | None,
    name: str | None,
) -> tuple[np.ndarray, int]:
    """Decode the first audio stream of `file` (a seekable binary file object) with the
    demuxer of `container`, downmixed to mono and resampled to `sr` (None: native rate).
    Returns (float32 (samples,), rate in Hz); raises the AudioErrors of `model.audio.decode`."""
    try:
        opened = av.open(file, "r", format=container.demuxer, container_options=_options(container))
    except _AV_ERRORS as err:
        reason = unsupported_message(f"unreadable {container.name}")
        raise UnsupportedFormatError(reason, name) from err
    with opened:
        try:
            return _decode_stream(opened, container, sr, max_seconds, name)
        except _AV_ERRORS as err:  # a frame PyAV cannot convert (an odd layout or format)
            reason = unsupported_message(f"undecodable {container.name}")
            raise UnsupportedFormatError(reason, name) from err


def _decode_stream(
    opened: av.container.InputContainer,
    container: Container,
    sr: int | None,
    max_seconds: float | None,
    name: str | None,
) -> tuple[np.ndarray, int]:
    stream = next(iter(opened.streams.audio), None)
    if stream is None or stream.codec_context is None:
        what = "no audio stream" if stream is None else "an audio codec not supported"
        raise UnsupportedFormatError(unsupported_message(f"{container.name}, {what}"), name)
    ctx = stream.codec_context
    rate = int(ctx.sample_rate or 0)
    check_stream_params(rate, int(ctx.channels or 0), name)
    declared = None if container.name in _ESTIMATED_LENGTH else _declared_s(opened, stream)
    check_declared(declared, max_seconds, name)
    out = Collector(rate, sr, max_seconds, name, declared)
    skipped = [0]
    for block in _mono_blocks(opened, stream, rate, name, skipped):
        out.add(block)
    if out.n == 0 and skipped[0]:
        raise UnsupportedFormatError(unsupported_message(f"undecodable {container.name}"), name)
    return out.result(), sr or rate


def _declared_s(opened: av.container.InputContainer, stream: av.audio.AudioStream) -> float | None:
    """The duration the container declares, seconds (the stream's, else the file's)."""
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if opened.duration:
        return opened.duration / av.time_base
    return None


def _mono_blocks(
    opened: av.container.InputContainer,
    stream: av.audio.AudioStream,
    rate: int,
    name: str | None,
    skipped: list[int],
) -> Iterator[np.ndarray]:
    """The stream decoded to float32 mono blocks of about BLOCK_FRAMES frames (frames of one
    sample format and channel count are joined before converting: a frame is 1,024 to 4,096
    frames, too few to convert one at a time). Undecodable packets are counted in
    `skipped[0]` and skipped."""
    pending: list[list[np.ndarray]] = []
    kind: tuple[str, bool, int] | None = None
    count = 0
    for frame in _planes_safe(_frames(opened, stream, skipped)):
        channels = frame.layout.nb_channels
        if frame.sample_rate != rate:
            raise UnsupportedAudioParamsError(
                f"the sample rate changes from {rate} to {frame.sample_rate} Hz mid-stream", name
            )
        check_stream_params(rate, channels, name)
        this = (frame.format.name.rstrip("p"), frame.format.is_planar, channels)
        if kind != this or count >= BLOCK_FRAMES:
            if pending and kind is not None:
                yield _to_mono(pending, *kind)
            pending, kind, count = [], this, 0
        pending.append(_planes(frame, *this))
        count += frame.samples
    if pending and kind is not None:
        yield _to_mono(pending, *kind)


def _planes_safe(frames: Iterator[av.AudioFrame]) -> Iterator[av.AudioFrame]:
    """`frames`, those that PyAV cannot read safely first repacked into one interleaved
    float plane by FFmpeg's converter (same rate and channels: the same samples).

    Why: PyAV counts a frame's planes up to the first NULL in FFmpeg's `extended_data`, which
    has no NULL after the last channel once a planar frame has 8 channels or more (the frame
    itself holds 8 plane pointers), so `to_ndarray` read past the array: a mutated m4a whose
    AAC stream switched to 32 channels crashed the process (tests/test_audio_containers.py).
    """
    converter, key = None, None
    for frame in frames:
        if frame.format.is_planar and frame.layout.nb_channels >= _FRAME_POINTERS:
            this = (frame.layout.nb_channels, frame.layout.name, frame.sample_rate)
            if converter is None or this != key:
                if converter is not None:
                    yield from converter.resample(None)
                converter, key = av.AudioResampler("flt", frame.layout, frame.sample_rate), this
            yield from converter.resample(frame)
            continue
        if converter is not None:  # keep the order: the converter's rest first
            yield from converter.resample(None)
            converter, key = None, None
        yield frame
    if converter is not None:
        yield from converter.resample(None)


def _frames(
    opened: av.container.InputContainer, stream: av.audio.AudioStream, skipped: list[int]
) -> Iterator[av.AudioFrame]:
    """Decoded frames of `stream`; a packet the codec refuses is skipped (and counted), and a
    read error ends the stream (what was decoded stands)."""
    packets = opened.demux(stream)
    while True:
        try:
            packet = next(packets)
        except StopIteration:
            return
        except _AV_ERRORS:
            skipped[0] += 1
            return  # truncated or corrupt from here on
        try:
            frames = stream.decode(packet)
        except _AV_ERRORS:
            skipped[0] += 1
            continue
        yield from frames


def _planes(frame: av.AudioFrame, fmt: str, planar: bool, channels: int) -> list[np.ndarray]:
    """A frame's samples as views of its planes: planar, one (n,) array per channel; packed,
    one (n * channels,). Why not `to_ndarray`: it stacks the planes into a new array, 6 us
    a frame against 1, and an 8-s Opus clip has 400 frames of 20 ms."""
    count = frame.samples * (1 if planar else channels)
    return [np.frombuffer(memoryview(plane), _DTYPES[fmt], count) for plane in frame.planes]


def _to_mono(parts: list[list[np.ndarray]], fmt: str, planar: bool, channels: int) -> np.ndarray:
    """Frames' samples (`_planes` of each) as one float32 mono block: the mean over channels,
    integers scaled as libsndfile scales them."""
    joined = np.stack([np.concatenate(plane) for plane in zip(*parts, strict=True)])
    samples = joined if planar else joined.reshape(-1, channels).T  # (channels, frames)
    if fmt == "u8":
        samples = samples.astype(np.float32) - np.float32(128)
    elif samples.dtype != np.float32:
        samples = samples.astype(np.float32)
    mono = samples[0] if channels == 1 else downmix_weights(channels) @ samples
    scale = _SCALE.get(fmt)
    return mono * np.float32(scale) if scale is not None else np.ascontiguousarray(mono)
