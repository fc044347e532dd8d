"""Test audio in every container the decoder takes, encoded with PyAV (no `ffmpeg` program).

`encode(y, sr, "m4a")` returns the bytes of `y` (float32 (samples,) or (samples, channels))
in that container; `ENCODINGS` lists each one's (FFmpeg muxer, codec, codec rate). The codec
rate is the one the format allows (Opus: 48 kHz); PyAV's resampler converts to it.
"""

from __future__ import annotations

import io
from pathlib import Path

import av
import numpy as np

# extension -> (muxer, codec, codec rate in Hz or None: the signal's own)
ENCODINGS: dict[str, tuple[str, str, int | None]] = {
    "m4a": ("mp4", "aac", None),
    "mp4": ("mp4", "aac", None),
    "aac": ("adts", "aac", None),
    "webm": ("webm", "libopus", 48000),
    "mka": ("matroska", "libmp3lame", None),
    "wma": ("asf", "wmav2", None),
    "mp3": ("mp3", "libmp3lame", None),
    "opus": ("ogg", "libopus", 48000),
    "flac": ("flac", "flac", None),
    "wav": ("wav", "pcm_s16le", None),
    "aiff": ("aiff", "pcm_s16be", None),
}


def encode(
    y: np.ndarray, sr: int, ext: str, bit_rate: int = 128_000, *, live: bool = False
) -> bytes:
    """`y` at `sr` Hz encoded as a .`ext` file (see ENCODINGS): the file's bytes. `live`
    (webm, mka): written as a stream, with no duration or index, as a browser's
    MediaRecorder writes one."""
    muxer, codec, rate = ENCODINGS[ext]
    return encode_as(y, sr, muxer, codec, rate, bit_rate, live=live)


def encode_as(
    y: np.ndarray,
    sr: int,
    muxer: str,
    codec: str,
    rate: int | None = None,
    bit_rate: int = 128_000,
    *,
    live: bool = False,
    codec_options: dict[str, str] | None = None,
) -> bytes:
    """`y` (float32 (samples,) or (samples, channels)) at `sr` Hz, encoded by `codec` at
    `rate` Hz (None: `sr`) in FFmpeg's `muxer`: the file's bytes."""
    samples = np.ascontiguousarray(np.atleast_2d(y.T if y.ndim == 2 else y), np.float32)
    layout = {1: "mono", 2: "stereo"}.get(len(samples), f"{len(samples)}c")  # 8c: 7.1
    out = io.BytesIO()
    options = {"live": "1"} if live and muxer in ("webm", "matroska") else {}
    with av.open(out, "w", format=muxer, container_options=options) as container:
        stream = container.add_stream(codec, rate=rate or sr, layout=layout)
        stream.bit_rate = bit_rate
        stream.codec_context.options = codec_options or {}
        # Interleaved: PyAV misreads planar frames of 8 or more channels (model/pyav_decoder.py).
        packed = np.ascontiguousarray(samples.T).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(packed, format="flt", layout=layout)
        frame.sample_rate = sr
        ctx = stream.codec_context
        resampler = av.AudioResampler(
            format=ctx.format.name if ctx.format else "fltp",
            layout=layout,
            rate=rate or sr,
            frame_size=ctx.frame_size or None,
        )
        for chunk in [*resampler.resample(frame), *resampler.resample(None)]:
            container.mux(stream.encode(chunk))
        container.mux(stream.encode(None))
    return out.getvalue()


def write_encoded(path: Path, y: np.ndarray, sr: int) -> Path:
    """`encode` into `path`, the container chosen by its extension."""
    path.write_bytes(encode(y, sr, path.suffix.lstrip(".")))
    return path


def video_only_mp4(frames: int = 20, size: int = 64) -> bytes:
    """An MP4 holding one MPEG-4 video stream (`frames` black frames at 10 fps), no audio."""
    out = io.BytesIO()
    with av.open(out, "w", format="mp4") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width = stream.height = size
        black = np.zeros((size, size, 3), np.uint8)
        for _ in range(frames):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(black, format="rgb24")))
        container.mux(stream.encode(None))
    return out.getvalue()
