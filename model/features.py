"""Log-mel features, segmentation and voice-activity selection.

The recipe is the one the authors' published weights expect (see
`../shared/reference/mono2mixed-singer/NOTES.md`): 22050 Hz mono, STFT with n_fft 1024,
hop 512, periodic Hann window, centred frames, magnitude (not power), 128 Slaney mel bands,
then `log10(1 + 10 * mel)`. Segments are 129 frames (about 2.99 s).

Everything here is a plain function of the audio and a `FeatureConfig`; the model never sees
audio, only mel tensors. The configuration travels inside each checkpoint.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from functools import lru_cache

import numpy as np
import torch

from model.errors import AudioTooShortError, NoVoicedSegmentError


@dataclass(frozen=True)
class FeatureConfig:
    """Feature parameters. Frequencies in Hz, lengths in samples or frames as named."""

    sample_rate: int = 22050
    n_fft: int = 1024
    hop_length: int = 512
    n_mels: int = 128
    fmin: float = 0.0
    fmax: float | None = None  # None: sample_rate / 2
    log_scale: float = 10.0  # log10(1 + log_scale * mel)
    pad_mode: str = "constant"  # centring pad; librosa >= 0.10's default
    segment_frames: int = 129
    segment_hop: int = 129  # frames between segment starts; 129 = non-overlapping
    # Voice activity: a frame is voiced when its RMS is within `vad_top_db` of the loudest
    # frame of the recording and above `vad_floor_db` dBFS; a segment is kept when at least
    # `vad_min_voiced` of its frames are voiced (the paper's 70 %).
    vad_top_db: float = 35.0
    vad_floor_db: float = -55.0
    vad_min_voiced: float = 0.7

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> FeatureConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    @property
    def min_samples(self) -> int:
        """Fewest samples that give one full segment (centred framing: 1 + n // hop frames)."""
        return (self.segment_frames - 1) * self.hop_length

    @property
    def segment_seconds(self) -> float:
        return self.min_samples / self.sample_rate


@lru_cache(maxsize=8)
def _mel_basis(
    sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float | None, device: torch.device
) -> torch.Tensor:
    """Slaney mel filters (n_mels, 1 + n_fft // 2), kept on `device` (one copy per device,
    not one host-to-device transfer per call)."""
    import librosa

    basis = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)
    with torch.inference_mode(False):  # a cached plain tensor, usable under autograd too
        return torch.from_numpy(basis).to(device)


@lru_cache(maxsize=8)
def _window(n_fft: int, device: torch.device) -> torch.Tensor:
    with torch.inference_mode(False):
        return torch.hann_window(n_fft, periodic=True, device=device)


def to_device(t: torch.Tensor, device: str | torch.device | None) -> torch.Tensor:
    """`t` on `device`; a host tensor bound for CUDA goes through pinned (page-locked) memory,
    so the copy is one DMA transfer that does not block the host thread."""
    if device is None or t.device == torch.device(device):
        return t
    if torch.device(device).type == "cuda" and t.device.type == "cpu":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def _as_tensor(y: np.ndarray | torch.Tensor, device: str | torch.device | None) -> torch.Tensor:
    return to_device(torch.as_tensor(y, dtype=torch.float32), device)


def log_mel(
    y: np.ndarray | torch.Tensor, cfg: FeatureConfig, device: str | torch.device | None = None
) -> torch.Tensor:
    """Waveform (samples,) or (batch, samples) at cfg.sample_rate -> log-mel (…, n_mels, frames).

    frames = 1 + samples // hop_length. Runs on `device` (CUDA if given) or y's device.
    """
    y = _as_tensor(y, device)
    spec = torch.stft(
        y,
        n_fft=cfg.n_fft,
        hop_length=cfg.hop_length,
        window=_window(cfg.n_fft, y.device),
        center=True,
        pad_mode=cfg.pad_mode,
        return_complex=True,
    ).abs()  # (…, 1 + n_fft // 2, frames)
    basis = _mel_basis(cfg.sample_rate, cfg.n_fft, cfg.n_mels, cfg.fmin, cfg.fmax, y.device)
    mel = torch.matmul(basis, spec)
    return torch.log10(1.0 + cfg.log_scale * mel)


def frame_voicing(y: np.ndarray | torch.Tensor, cfg: FeatureConfig) -> np.ndarray:
    """Energy-based voice activity per STFT frame: bool (frames,), aligned with `log_mel`."""
    y = _as_tensor(y, None).cpu()
    pad = cfg.n_fft // 2
    frames = torch.nn.functional.pad(y[None, None], (pad, pad)).reshape(-1)
    frames = frames.unfold(0, cfg.n_fft, cfg.hop_length)  # (frames, n_fft)
    rms_db = 10.0 * torch.log10(frames.pow(2).mean(dim=1) + 1e-20)
    voiced = (rms_db > cfg.vad_floor_db) & (rms_db > rms_db.max() - cfg.vad_top_db)
    return voiced.numpy()


def segment_starts(n_frames: int, cfg: FeatureConfig, hop: int | None = None) -> np.ndarray:
    """Start frame of every full segment: (n_segments,) int."""
    hop = hop or cfg.segment_hop
    if n_frames < cfg.segment_frames:
        return np.zeros(0, dtype=np.int64)
    return np.arange(0, n_frames - cfg.segment_frames + 1, hop, dtype=np.int64)


def voiced_shares(
    y: np.ndarray | torch.Tensor, cfg: FeatureConfig, hop: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(start frames (n_segments,) int64, share of voiced frames in each segment (n_segments,))."""
    return _segment_shares(frame_voicing(y, cfg), cfg, hop)


def _segment_shares(
    voiced: np.ndarray, cfg: FeatureConfig, hop: int | None
) -> tuple[np.ndarray, np.ndarray]:
    starts = segment_starts(len(voiced), cfg, hop)
    cum = np.concatenate([[0.0], np.cumsum(voiced, dtype=np.float64)])
    return starts, (cum[starts + cfg.segment_frames] - cum[starts]) / cfg.segment_frames


def voiced_segment_starts(
    y: np.ndarray | torch.Tensor, cfg: FeatureConfig, hop: int | None = None
) -> np.ndarray:
    """Start frames (int64) of the segments `extract_segments` keeps (same voice-activity rule)."""
    if int(y.shape[-1]) < cfg.min_samples:
        return np.zeros(0, dtype=np.int64)
    starts, share = voiced_shares(y, cfg, hop)
    return starts[share >= cfg.vad_min_voiced]


def segment(mel: torch.Tensor, cfg: FeatureConfig, hop: int | None = None) -> torch.Tensor:
    """(n_mels, frames) -> (n_segments, n_mels, segment_frames) full segments, hop in frames."""
    hop = hop or cfg.segment_hop
    if mel.shape[-1] < cfg.segment_frames:
        return mel.new_zeros((0, mel.shape[0], cfg.segment_frames))
    return mel.unfold(-1, cfg.segment_frames, hop).permute(1, 0, 2).contiguous()


@dataclass
class SegmentSelection:
    """The segments of one recording that the model embeds, with where they lie and why.

    features: (n, n_mels, segment_frames) log-mel on the embedding device;
    starts_s, ends_s: (n,) float64 seconds from the start of the recording;
    voice: (n,) float64 in [0, 1], how voiced each kept segment is (share of voiced frames);
    voiced_fraction: share of the whole recording's frames judged voiced, in [0, 1];
    duration_s: length of the recording in seconds.
    """

    features: torch.Tensor
    starts_s: np.ndarray
    ends_s: np.ndarray
    voice: np.ndarray
    voiced_fraction: float
    duration_s: float

    def __len__(self) -> int:
        return len(self.features)


def select_segments(
    y: np.ndarray | torch.Tensor,
    cfg: FeatureConfig,
    all_segments: bool = False,
    hop: int | None = None,
    device: str | torch.device | None = None,
    path: str | None = None,
) -> SegmentSelection:
    """Waveform (samples,) at cfg.sample_rate -> the segments to embed, with their times.

    Keeps only segments with at least `vad_min_voiced` voiced frames unless `all_segments`.
    Raises AudioTooShortError below one segment, NoVoicedSegmentError when none qualifies.
    """
    n = int(y.shape[-1])
    if n < cfg.min_samples:
        raise AudioTooShortError(n / cfg.sample_rate, cfg.segment_seconds, path)
    segs = segment(log_mel(y, cfg, device), cfg, hop)
    voiced = frame_voicing(y, cfg)
    starts, share = _segment_shares(voiced, cfg, hop)
    if all_segments:
        keep = np.arange(len(starts))
    else:
        keep = np.flatnonzero(share >= cfg.vad_min_voiced)
        if keep.size == 0:
            raise NoVoicedSegmentError(
                f"no {cfg.segment_seconds:.1f}-s segment has {cfg.vad_min_voiced:.0%} voiced "
                f"frames (best: {share.max():.0%}); the recording is silent or holds too "
                "little voice",
                path,
            )
        segs = segs[torch.from_numpy(keep).to(segs.device)]
    frame_s = cfg.hop_length / cfg.sample_rate
    starts_s = starts[keep] * frame_s
    return SegmentSelection(
        features=segs,
        starts_s=starts_s,
        ends_s=starts_s + cfg.segment_frames * frame_s,
        voice=share[keep],
        voiced_fraction=float(voiced.mean()) if len(voiced) else 0.0,
        duration_s=n / cfg.sample_rate,
    )


def extract_segments(
    y: np.ndarray | torch.Tensor,
    cfg: FeatureConfig,
    all_segments: bool = False,
    hop: int | None = None,
    device: str | torch.device | None = None,
    path: str | None = None,
) -> torch.Tensor:
    """Waveform (samples,) -> the segments the model embeds: (n, n_mels, segment_frames).

    The features of `select_segments`; same arguments, same errors.
    """
    return select_segments(y, cfg, all_segments, hop, device, path).features
