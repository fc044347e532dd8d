"""Log-mel features and their framing into segments: the model's input.

The recipe is the one the authors' published weights expect (see
`../shared/reference/mono2mixed-singer/NOTES.md`): 22050 Hz mono, STFT with n_fft 1024,
hop 512, periodic Hann window, centred frames, magnitude (not power), 128 Slaney mel bands,
then `log10(1 + 10 * mel)`. Segments are 129 frames (about 2.99 s).

Everything here is a plain function of the audio and a `FeatureConfig`; the model never sees
audio, only mel tensors. The configuration travels inside each checkpoint. Which segments a
recording contributes is `model.segment_selection`'s job.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from model.concurrency import Split, in_pieces
from model.devices import as_tensor
from model.stored import Stored

#: Frames per chunk of `log_mel_chunked` (about 3 minutes at 22050 Hz, hop 512).
DEFAULT_CHUNK_FRAMES = 8192


@dataclass(frozen=True)
class FeatureConfig(Stored):
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
    # Keep each chosen segment's waveform too (`SegmentSelection.audio`): for a fused
    # checkpoint, whose speaker encoder reads audio through its own front end.
    segment_audio: bool = False
    # The mixed branch's front end (the shipped default's margin is 4 since 2026-12-08;
    # model card, "Stage 6"): each segment of a song is also read from the song without its
    # repeating band (`model.repeating_background`) and its two vectors are summed; the voice
    # detector, the refusal and the flags read the song itself. 0: off. The voice is kept
    # where it stands `margin` times above the band; neighbour frames at least `width_s`
    # apart, searched within blocks of `block_s` seconds.
    mix_background_margin: float = 0.0
    mix_background_width_s: float = 1.0
    mix_background_block_s: float = 20.0

    @property
    def min_samples(self) -> int:
        """Fewest samples that give one full segment (centred framing: 1 + n // hop frames)."""
        return (self.segment_frames - 1) * self.hop_length

    @property
    def segment_seconds(self) -> float:
        return self.min_samples / self.sample_rate


@lru_cache(maxsize=8)
def mel_basis(
    sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float | None, device: torch.device
) -> torch.Tensor:
    """Slaney mel filters (n_mels, 1 + n_fft // 2), kept on `device` (one copy per device,
    not one host-to-device transfer per call)."""
    import librosa

    basis = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)
    with torch.inference_mode(False):  # a cached plain tensor, usable under autograd too
        return torch.from_numpy(basis).to(device)


@lru_cache(maxsize=8)
def hann_window(n_fft: int, device: torch.device) -> torch.Tensor:
    """The periodic Hann window (n_fft,), kept on `device`."""
    with torch.inference_mode(False):
        return torch.hann_window(n_fft, periodic=True, device=device)


def log_mel(
    y: np.ndarray | torch.Tensor, cfg: FeatureConfig, device: str | torch.device | None = None
) -> torch.Tensor:
    """Waveform (samples,) or (batch, samples) at cfg.sample_rate -> log-mel (…, n_mels, frames).

    frames = 1 + samples // hop_length. Runs on `device` (CUDA if given) or y's device.
    """
    y = as_tensor(y, device)
    spec = torch.stft(
        y,
        n_fft=cfg.n_fft,
        hop_length=cfg.hop_length,
        window=hann_window(cfg.n_fft, y.device),
        center=True,
        pad_mode=cfg.pad_mode,
        return_complex=True,
    ).abs()  # (…, 1 + n_fft // 2, frames)
    basis = mel_basis(cfg.sample_rate, cfg.n_fft, cfg.n_mels, cfg.fmin, cfg.fmax, y.device)
    mel = torch.matmul(basis, spec)
    return torch.log10(1.0 + cfg.log_scale * mel)


def mel_magnitude(log_mel: torch.Tensor, log_scale: float) -> torch.Tensor:
    """The features' log-mel (…, n_mels, frames) undone: the mel-weighted STFT magnitude
    that `log_mel` took `log10(1 + log_scale * x)` of (float32, never below 0)."""
    return (torch.pow(10.0, log_mel.float()) - 1.0).clamp_min(0.0) / log_scale


def log_mel_chunked(
    y: np.ndarray | torch.Tensor,
    cfg: FeatureConfig,
    device: str | torch.device | None = None,
    chunk_frames: int | None = DEFAULT_CHUNK_FRAMES,
    split: Split | None = None,
) -> torch.Tensor:
    """`log_mel` of one waveform (samples,) computed `chunk_frames` frames at a time.

    Same frames as `log_mel`, bit for bit (centred framing: frame i covers samples i * hop -
    n_fft / 2 ... + n_fft, padded at the true ends only), but the linear spectrogram, 4 x
    larger than the mel one and 8 x for its complex form, never exists for more than one
    chunk: a 30-minute file needs ~40 MB of mel frames, not ~0.5 GB of STFT. None: one shot.
    `split`: the frames in pieces computed at once (chunks no longer than a piece).
    """
    n = int(y.shape[-1])
    n_frames = 1 + n // cfg.hop_length
    if split is not None:  # no chunk longer than a piece
        chunk_frames = min(chunk_frames or n_frames, -(-n_frames // split.parts))
    if chunk_frames is None or n_frames <= chunk_frames:
        return log_mel(y, cfg, device)
    y = as_tensor(y, device)
    calls = [(y, cfg, a, min(a + chunk_frames, n_frames)) for a in range(0, n_frames, chunk_frames)]
    return torch.cat(in_pieces(_log_mel_frames, calls, split), dim=-1)


def _log_mel_frames(y: torch.Tensor, cfg: FeatureConfig, a: int, b: int) -> torch.Tensor:
    """Frames [a, b) of `log_mel(y, cfg)`: (n_mels, b - a), from the samples they cover."""
    n, half = int(y.shape[-1]), cfg.n_fft // 2
    lo, hi = a * cfg.hop_length - half, (b - 1) * cfg.hop_length + half
    part = y[max(lo, 0) : min(hi, n)]
    part = torch.nn.functional.pad(
        part[None, None], (max(-lo, 0), max(hi - n, 0)), mode=cfg.pad_mode
    )[0, 0]
    spec = torch.stft(
        part,
        n_fft=cfg.n_fft,
        hop_length=cfg.hop_length,
        window=hann_window(cfg.n_fft, y.device),
        center=False,
        return_complex=True,
    ).abs()
    basis = mel_basis(cfg.sample_rate, cfg.n_fft, cfg.n_mels, cfg.fmin, cfg.fmax, y.device)
    return torch.log10(1.0 + cfg.log_scale * torch.matmul(basis, spec))


def segment_starts(n_frames: int, cfg: FeatureConfig, hop: int | None = None) -> np.ndarray:
    """Start frame of every full segment: (n_segments,) int."""
    hop = hop or cfg.segment_hop
    if n_frames < cfg.segment_frames:
        return np.zeros(0, dtype=np.int64)
    return np.arange(0, n_frames - cfg.segment_frames + 1, hop, dtype=np.int64)


def segment_shares(
    voiced: np.ndarray, cfg: FeatureConfig, hop: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame voicing (frames,) bool -> (start frames (n_segments,) int64, share of voiced
    frames in each full segment (n_segments,) float64)."""
    starts = segment_starts(len(voiced), cfg, hop)
    cum = np.concatenate([[0.0], np.cumsum(voiced, dtype=np.float64)])
    return starts, (cum[starts + cfg.segment_frames] - cum[starts]) / cfg.segment_frames


def segment(mel: torch.Tensor, cfg: FeatureConfig, hop: int | None = None) -> torch.Tensor:
    """(n_mels, frames) -> (n_segments, n_mels, segment_frames) full segments, hop in frames."""
    hop = hop or cfg.segment_hop
    if mel.shape[-1] < cfg.segment_frames:
        return mel.new_zeros((0, mel.shape[0], cfg.segment_frames))
    return mel.unfold(-1, cfg.segment_frames, hop).permute(1, 0, 2).contiguous()
