"""The voice detector's verdict per frame of the model's features, many recordings at once.

`model.voice.VoiceDetector` classifies windows of its own log-mel frames; selection needs,
for each frame of the model's log-mel, P(voice), P(mixture | voice) and P(music: voice or
instruments, not silence, noise or tones). When both use the same recipe the model's frames
are reused, else the detector's are computed and mapped onto the model's by time.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple, Protocol

import numpy as np
import torch

from model.concurrency import Split
from model.features import DEFAULT_CHUNK_FRAMES, FeatureConfig, log_mel_chunked


class FrameDetector(Protocol):
    """What `select_segments` needs of a voice detector (model.voice.VoiceDetector)."""

    features: FeatureConfig
    rule: Any  # model.voice.DetectorRule

    def frame_probs_many(
        self, mels: Sequence[torch.Tensor], split: Split | None = None
    ) -> list[np.ndarray]: ...
    def voice_probability(self, probs: np.ndarray) -> np.ndarray: ...
    def domain_probability(self, probs: np.ndarray) -> np.ndarray: ...
    def music_probability(self, probs: np.ndarray) -> np.ndarray: ...


class FrameVerdict(NamedTuple):
    """The detector's verdict on each frame of a recording's log-mel: (frames,) float each."""

    voice: np.ndarray  # P(singing voice, solo or in a mixture)
    mixture: np.ndarray  # P(mixture | voice)
    music: np.ndarray  # P(voice or instruments): 1 - P(none)


_MEL_FIELDS = (
    "sample_rate",
    "n_fft",
    "hop_length",
    "n_mels",
    "fmin",
    "fmax",
    "log_scale",
    "pad_mode",
)


def detect_voice(
    y: np.ndarray | torch.Tensor,
    mel: torch.Tensor,
    cfg: FeatureConfig,
    detector: FrameDetector,
    chunk_frames: int | None = DEFAULT_CHUNK_FRAMES,
) -> tuple[np.ndarray, np.ndarray]:
    """(P(voice) per frame of `mel` (frames,), P(mixture | voice) per frame (frames,)).

    Reuses `mel` when the detector's recipe is `cfg`'s, else computes the detector's own
    features and maps its frames onto `mel`'s by time.
    """
    verdict = detect_voice_many([y], [mel], cfg, detector, chunk_frames)[0]
    return verdict.voice, verdict.mixture


def detect_voice_many(
    ys: Sequence[np.ndarray | torch.Tensor],
    mels: Sequence[torch.Tensor],
    cfg: FeatureConfig,
    detector: FrameDetector,
    chunk_frames: int | None = DEFAULT_CHUNK_FRAMES,
    split: Split | None = None,
) -> list[FrameVerdict]:
    """The `FrameVerdict` of each of several recordings, on the frames of its log-mel in
    `mels`, the detector run over all their windows at once (with a `split`, in pieces at
    once)."""
    dcfg = detector.features
    if all(getattr(dcfg, f) == getattr(cfg, f) for f in _MEL_FIELDS):
        return [_verdict(detector, p) for p in detector.frame_probs_many(mels, split)]
    if dcfg.sample_rate != cfg.sample_rate:
        raise ValueError("the voice detector and the model need audio at the same sample rate")
    own = [
        log_mel_chunked(y, dcfg, mel.device, chunk_frames, split)
        for y, mel in zip(ys, mels, strict=True)
    ]
    out = []
    for probs, mel in zip(detector.frame_probs_many(own, split), mels, strict=True):
        t_det = np.arange(len(probs)) * dcfg.hop_length
        t_mel = np.arange(mel.shape[-1]) * cfg.hop_length
        out.append(FrameVerdict(*(np.interp(t_mel, t_det, p) for p in _verdict(detector, probs))))
    return out


def _verdict(detector: FrameDetector, probs: np.ndarray) -> FrameVerdict:
    return FrameVerdict(
        detector.voice_probability(probs),
        detector.domain_probability(probs),
        detector.music_probability(probs),
    )
