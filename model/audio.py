"""Audio decoding: any file or byte string in, mono float32 at the model's sample rate out.

libsndfile (through soundfile) reads wav, flac, ogg/vorbis, opus and mp3 in-process. Other
containers (m4a/aac, mp4, webm, ...: the DAMP dataset is m4a) go through an `ffmpeg`
subprocess when one is on PATH; otherwise a `DecoderMissingError` names what to install.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

from model.errors import AudioError, DecoderMissingError, UnsupportedFormatError

SAMPLE_RATE = 22050
SNDFILE_FORMATS = ("wav", "flac", "ogg", "opus", "mp3", "aiff", "aif")
FFMPEG_FORMATS = ("m4a", "aac", "mp4", "webm", "wma")
SUPPORTED_FORMATS = SNDFILE_FORMATS + FFMPEG_FORMATS

AudioSource = str | Path | bytes


def ffmpeg_available() -> bool:
    return shutil.which("ffmpeg") is not None


def _describe(source: AudioSource) -> str | None:
    return None if isinstance(source, bytes) else str(source)


def _suffix(source: AudioSource) -> str:
    return "" if isinstance(source, bytes) else Path(source).suffix.lower().lstrip(".")


def _decode_ffmpeg(source: AudioSource) -> tuple[np.ndarray, int]:
    """Decode with ffmpeg to mono float32 at the stream's own rate (probed with ffprobe)."""
    if isinstance(source, bytes):
        # A seekable file, not a pipe: an mp4/m4a whose index (moov atom) sits at the end of the
        # file cannot be demuxed from a pipe.
        with tempfile.NamedTemporaryFile(suffix=".audio") as tmp:
            tmp.write(source)
            tmp.flush()
            return _ffmpeg_decode_path(tmp.name, name=None)
    return _ffmpeg_decode_path(str(source), name=str(source))


def _ffmpeg_decode_path(path: str, name: str | None) -> tuple[np.ndarray, int]:
    rate = _ffmpeg_native_rate(path)
    out = subprocess.run(
        [
            "ffmpeg",
            "-nostdin",
            "-v",
            "error",
            "-i",
            path,
            "-ac",
            "1",
            "-f",
            "f32le",
            "-acodec",
            "pcm_f32le",
            "-ar",
            str(rate),
            "pipe:1",
        ],
        capture_output=True,
        check=False,
    )
    if out.returncode != 0 or not out.stdout:
        # ffmpeg names its input: for uploaded bytes that is our temp file, of no use to a client.
        detail = out.stderr.decode(errors="replace").replace(path, name or "input")
        raise UnsupportedFormatError(_unsupported_message(detail), name)
    return np.frombuffer(out.stdout, dtype=np.float32).copy(), rate


def _ffmpeg_native_rate(path: str) -> int:
    # Decode at the native rate: ffmpeg resamples nothing, `resample` does it once, in one place.
    if shutil.which("ffprobe"):
        cmd = [
            "ffprobe",
            "-v",
            "error",
            "-select_streams",
            "a:0",
            "-show_entries",
            "stream=sample_rate",
            "-of",
            "csv=p=0",
            path,
        ]
        res = subprocess.run(cmd, capture_output=True, check=False)
        try:
            return int(res.stdout.decode().strip().splitlines()[0])
        except (ValueError, IndexError):
            pass
    return 44100  # m4a/aac is almost always 44.1 kHz; we resample afterwards anyway


def _unsupported_message(detail: str = "") -> str:
    msg = "not a decodable audio file; supported formats: " + ", ".join(SUPPORTED_FORMATS)
    if not ffmpeg_available():
        msg += f" ({', '.join(FFMPEG_FORMATS)} need ffmpeg, which is not installed)"
    detail = detail.strip().splitlines()[-1] if detail.strip() else ""
    return f"{msg}" + (f" [{detail}]" if detail else "")


def decode(source: AudioSource) -> tuple[np.ndarray, int]:
    """Decode a file path or encoded bytes. Returns (float32 mono (samples,), native rate in Hz)."""
    name = _describe(source)
    if isinstance(source, bytes):
        if not source:
            raise AudioError("empty file", name)
        handle: io.BytesIO | str = io.BytesIO(source)
    else:
        path = Path(source)
        if not path.is_file():
            raise AudioError("no such file", name)
        if path.stat().st_size == 0:
            raise AudioError("empty file", name)
        handle = str(path)
    try:
        y, rate = sf.read(handle, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, ValueError, TypeError) as err:
        if ffmpeg_available():
            return _decode_ffmpeg(source)
        if _suffix(source) in FFMPEG_FORMATS:
            raise DecoderMissingError(
                f"decoding .{_suffix(source)} needs ffmpeg, which is not installed "
                "(apt-get install ffmpeg)",
                name,
            ) from err
        raise UnsupportedFormatError(_unsupported_message(str(err)), name) from err
    if y.shape[0] == 0:
        raise AudioError("the file holds no audio samples", name)
    # Mixdown as one matrix-vector product: numpy's mean over the short channel axis took
    # longer than decoding a 30-s stereo FLAC (same result: the weights 1/channels are exact
    # for 1, 2 and 4 channels). A mono file needs none.
    channels = y.shape[1]
    mono = y[:, 0] if channels == 1 else y @ np.full(channels, 1 / channels, np.float32)
    return np.ascontiguousarray(mono, dtype=np.float32), int(rate)


def resample(y: np.ndarray, orig_sr: int, sr: int) -> np.ndarray:
    """Band-limited resampling (soxr, high quality). (samples,) -> (samples * sr / orig_sr,)."""
    if orig_sr == sr:
        return y
    import librosa  # heavy import, only when a rate actually differs

    return librosa.resample(y, orig_sr=orig_sr, target_sr=sr, res_type="soxr_hq").astype(np.float32)


def rms(y: np.ndarray) -> float:
    """Root-mean-square of a signal (samples,), accumulated in float64; 0 for no samples."""
    return float(np.sqrt(np.mean(np.square(y, dtype=np.float64)))) if len(y) else 0.0


def load_audio(source: AudioSource, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Decode, downmix to mono and resample. Returns float32 (samples,) at `sr` Hz."""
    y, rate = decode(source)
    y = resample(y, rate, sr)
    if not np.all(np.isfinite(y)):
        raise AudioError("the audio holds NaN or infinite samples", _describe(source))
    return y
