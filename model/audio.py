"""Audio decoding: any file or byte string in, mono float32 at the model's sample rate out.

The container is named by the first bytes (`model.audio_containers.sniff`, a whitelist of
wav, w64, aiff, flac, ogg, mp3, aac, mp4/m4a, webm/matroska and asf/wma), never by a file
name, and only that container's reader ever sees the bytes:
- WAV, W64, AIFF, FLAC and MP3: libsndfile (`model.sndfile_decoder`), where it costs less
  CPU than PyAV; it can also decode a PCM or FLAC file in pieces on several cores (`parts`,
  `executor`);
- everything else, and what libsndfile refuses: PyAV (`model.pyav_decoder`) with the demuxer
  pinned, from memory or an open file object. FFmpeg's libraries come inside PyAV's wheel:
  no `ffmpeg` program, no temporary file, no protocol but the bytes themselves, so a playlist
  or concat script cannot make the decoder read a server file.

Every decoder applies the same bounds (`model.audio_bounds`): sample rate, channel count,
declared and decoded duration, NaN/Inf, and streams its mono blocks into one resampler.
Errors are the typed `AudioError`s of `model.errors`; none carries a decoder's own message.
"""

from __future__ import annotations

import io
from concurrent.futures import Executor
from pathlib import Path
from typing import BinaryIO

import numpy as np

from model.audio_containers import SUPPORTED_FORMATS, Container, sniff, unsupported_message
from model.concurrency import Split
from model.errors import AudioError, UnsupportedFormatError
from model.pyav_decoder import decode_av
from model.sndfile_decoder import SndfileRefused, decode_sndfile

__all__ = ["SUPPORTED_FORMATS", "AudioSource", "decode", "load_audio", "resample", "rms"]

SAMPLE_RATE = 22050
# Default bounds of the decoded duration, seconds: a query, and a catalogue track.
MAX_QUERY_SECONDS = 600.0
MAX_TRACK_SECONDS = 1800.0

AudioSource = str | Path | bytes


def _decode(
    source: AudioSource,
    sr: int | None,
    max_seconds: float | None,
    parts: int = 1,
    executor: Executor | None = None,
) -> tuple[np.ndarray, int]:
    if parts > 1 and executor is None:
        raise ValueError("decoding in parts needs an executor to run them")
    split = Split(parts, executor) if parts > 1 and executor is not None else None
    if isinstance(source, bytes):
        if not source:
            raise AudioError("empty file")
        memory = io.BytesIO(source)
        return _decode_file(memory, source, sr, max_seconds, None, split)
    name = str(source)
    path = Path(source)
    if not path.is_file():
        raise AudioError("no such file", name)
    if path.stat().st_size == 0:
        raise AudioError("empty file", name)
    with path.open("rb") as f:
        return _decode_file(f, name, sr, max_seconds, name, split)


def _decode_file(
    f: BinaryIO,
    source: bytes | str,
    sr: int | None,
    max_seconds: float | None,
    name: str | None,
    split: Split | None,
) -> tuple[np.ndarray, int]:
    """Sniff the container of `f` (the bytes or the file of `source`) and decode it."""
    container: Container | None = sniff(f)
    if container is None:
        raise UnsupportedFormatError(unsupported_message(), name)
    if container.sndfile:
        try:
            return decode_sndfile(source, sr, max_seconds, name, split)
        except SndfileRefused:
            pass  # an encoding libsndfile lacks (ADPCM or MP3 in WAV, ...): PyAV's turn
    return decode_av(f, container, sr, max_seconds, name)


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
    raises the AudioErrors of `decode`. `parts` > 1: decode a WAV, AIFF or FLAC file in up to
    that many pieces at once, the pieces after the first in `executor` (threads: libsndfile
    reads without the GIL); the samples are the same as with parts=1.
    """
    return _decode(source, sr, max_seconds, parts, executor)[0]
