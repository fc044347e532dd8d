"""The bounds every decoder applies, and the collector its mono blocks stream into.

A few compressed bytes can declare hours of audio, or a 1 Hz rate that resampling turns into
gigabytes, so:
- the sample rate and channel count a stream declares are checked against
  [MIN_SAMPLE_RATE, MAX_SAMPLE_RATE] and MAX_CHANNELS (`UnsupportedAudioParamsError`);
- with `max_seconds`, a duration the container declares is checked before decoding, and the
  decoded samples are counted block by block, so a header that under-states its length is
  stopped at the limit too (`AudioTooLongError`);
- every block is checked for NaN/Inf (an `AudioError` before any resampling) and resampled as
  it streams (soxr's streaming resampler gives the same samples as one call), so memory holds
  only the mono output at the target rate plus one block.
"""

from __future__ import annotations

import numpy as np

from model.errors import AudioError, AudioTooLongError, UnsupportedAudioParamsError

MIN_SAMPLE_RATE = 4_000  # Hz; below, nothing of a voice's spectrum is left
MAX_SAMPLE_RATE = 384_000  # Hz; the highest rate of real converters
MAX_CHANNELS = 32
BLOCK_FRAMES = 65_536  # frames decoded at a time (at most 8 MiB at MAX_CHANNELS, float32)


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


def check_declared(seconds: float | None, max_seconds: float | None, name: str | None) -> None:
    """Raise AudioTooLongError when the declared duration (seconds; None: not declared)
    exceeds `max_seconds`."""
    if max_seconds is not None and seconds is not None and seconds > max_seconds:
        raise AudioTooLongError(seconds, max_seconds, name, from_header=True)


def downmix_weights(channels: int) -> np.ndarray:
    """(channels,) float32 weights of the mean over channels. Mixdown as one matrix-vector
    product: numpy's mean over the short channel axis took longer than decoding a 30-s stereo
    FLAC (same result: the weights 1/channels are exact for 1, 2 and 4 channels)."""
    return np.full(channels, 1 / channels, np.float32)


class Collector:
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
        """Take the next (frames,) float32 block at `rate`."""
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
        """Every sample taken, at `sr`: float32 (ceil(n * sr / rate),)."""
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
