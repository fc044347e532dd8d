"""Typed errors raised at the library's boundaries.

Callers map them to user-facing outcomes: the HTTP service to 4xx responses, the batch
tools to a logged, skipped file. Everything here derives from `SingerRetrievalError`.
"""

from __future__ import annotations


class SingerRetrievalError(Exception):
    """Base class of every error this project raises on purpose."""

    def __reduce__(self):
        # Errors cross process boundaries (decoding in worker processes, model/decode_pool.py).
        # Default pickling calls cls(*args), which breaks subclasses whose __init__ takes
        # other arguments: rebuild from the message and the attributes instead.
        return _restore, (type(self), self.args, self.__dict__)


def _restore(cls: type[SingerRetrievalError], args: tuple, state: dict) -> SingerRetrievalError:
    err = cls.__new__(cls)
    err.args = args
    err.__dict__.update(state)
    return err


class AudioError(SingerRetrievalError):
    """The input audio cannot be used. `path` names the file when there is one."""

    def __init__(self, message: str, path: str | None = None):
        super().__init__(f"{path}: {message}" if path else message)
        self.reason = message
        self.path = path


class UnsupportedFormatError(AudioError):
    """The bytes are not audio that any available decoder reads."""


class UnsupportedAudioParamsError(AudioError):
    """The stream declares a sample rate or channel count outside what the decoder accepts."""


class AudioTooLongError(AudioError):
    """The audio decodes to more than the allowed duration (checked from the header, and
    again while decoding: a header can lie). `duration_s` is a lower bound when
    `from_header` is False (decoding stopped at the limit)."""

    def __init__(
        self,
        duration_s: float,
        max_duration_s: float,
        path: str | None = None,
        *,
        from_header: bool,
    ):
        told = f"is {duration_s:.1f} s long" if from_header else f"exceeds {duration_s:.1f} s"
        super().__init__(f"audio {told}; at most {max_duration_s:.1f} s is accepted", path)
        self.duration_s = duration_s
        self.max_duration_s = max_duration_s
        self.from_header = from_header


class AudioTooShortError(AudioError):
    """The audio is shorter than one analysis segment."""

    def __init__(self, duration_s: float, min_duration_s: float, path: str | None = None):
        super().__init__(
            f"audio is {duration_s:.2f} s long; at least {min_duration_s:.2f} s is needed "
            "(one analysis segment)",
            path,
        )
        self.duration_s = duration_s
        self.min_duration_s = min_duration_s


class NoVoicedSegmentError(AudioError):
    """No segment passed the voice-activity selection (silence, or too little voice)."""


class NotMusicError(NoVoicedSegmentError):
    """A recording declared a finished song (`mixed`) is not music at all: silence, DC, a
    steady tone or noise (`model.refusal`). Same answer as NoVoicedSegmentError."""


class CheckpointError(SingerRetrievalError):
    """A checkpoint file is missing, corrupt, or not in a format this project reads."""
