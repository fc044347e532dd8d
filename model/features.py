"""Log-mel features, segmentation and voice-activity selection.

The recipe is the one the authors' published weights expect (see
`../shared/reference/mono2mixed-singer/NOTES.md`): 22050 Hz mono, STFT with n_fft 1024,
hop 512, periodic Hann window, centred frames, magnitude (not power), 128 Slaney mel bands,
then `log10(1 + 10 * mel)`. Segments are 129 frames (about 2.99 s).

Everything here is a plain function of the audio and a `FeatureConfig`; the model never sees
audio, only mel tensors. The configuration travels inside each checkpoint.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any, Protocol

import numpy as np
import torch

from model.domains import AUTO
from model.errors import AudioError, AudioTooShortError, NoVoicedSegmentError
from model.stored import Stored

#: Frames per chunk of `log_mel_chunked` (about 3 minutes at 22050 Hz, hop 512).
DEFAULT_CHUNK_FRAMES = 8192
#: Quality flags a selection may carry (see `SegmentSelection`).
QUALITY_FLAGS = ("low_voice", "short", "clipped", "mostly_accompaniment", "domain_mismatch")
#: A recording is `clipped` when this share of its samples sits within 1 % of its peak.
CLIPPED_SHARE = 0.005


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
        window=hann_window(cfg.n_fft, y.device),
        center=True,
        pad_mode=cfg.pad_mode,
        return_complex=True,
    ).abs()  # (…, 1 + n_fft // 2, frames)
    basis = mel_basis(cfg.sample_rate, cfg.n_fft, cfg.n_mels, cfg.fmin, cfg.fmax, y.device)
    mel = torch.matmul(basis, spec)
    return torch.log10(1.0 + cfg.log_scale * mel)


def log_mel_chunked(
    y: np.ndarray | torch.Tensor,
    cfg: FeatureConfig,
    device: str | torch.device | None = None,
    chunk_frames: int | None = DEFAULT_CHUNK_FRAMES,
) -> torch.Tensor:
    """`log_mel` of one waveform (samples,) computed `chunk_frames` frames at a time.

    Same frames as `log_mel` (centred framing: frame i covers samples i * hop - n_fft / 2 ...
    + n_fft, padded at the true ends only), but the linear spectrogram, 4 x larger than the
    mel one and 8 x for its complex form, never exists for more than one chunk: a 30-minute
    file needs ~40 MB of mel frames, not ~0.5 GB of STFT. None: one shot.
    """
    n = int(y.shape[-1])
    n_frames = 1 + n // cfg.hop_length
    if chunk_frames is None or n_frames <= chunk_frames:
        return log_mel(y, cfg, device)
    y = _as_tensor(y, device)
    half = cfg.n_fft // 2
    window = hann_window(cfg.n_fft, y.device)
    basis = mel_basis(cfg.sample_rate, cfg.n_fft, cfg.n_mels, cfg.fmin, cfg.fmax, y.device)
    out = []
    for a in range(0, n_frames, chunk_frames):
        b = min(a + chunk_frames, n_frames)
        lo, hi = a * cfg.hop_length - half, (b - 1) * cfg.hop_length + half
        part = y[max(lo, 0) : min(hi, n)]
        part = torch.nn.functional.pad(
            part[None, None], (max(-lo, 0), max(hi - n, 0)), mode=cfg.pad_mode
        )[0, 0]
        spec = torch.stft(
            part,
            n_fft=cfg.n_fft,
            hop_length=cfg.hop_length,
            window=window,
            center=False,
            return_complex=True,
        ).abs()
        out.append(torch.log10(1.0 + cfg.log_scale * torch.matmul(basis, spec)))
    return torch.cat(out, dim=-1)


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
    duration_s: length of the recording in seconds;
    flags: quality warnings, a subset of QUALITY_FLAGS in that order;
    domain_score: P(the voice is in a mixture), mean over voiced frames, in [0, 1]; None
    without a voice detector or without voiced frames;
    audio: (n, min_samples) float32 waveform of each segment, on the waveform's device, when
    the recipe asks for it (`FeatureConfig.segment_audio`), else None.
    """

    features: torch.Tensor
    starts_s: np.ndarray
    ends_s: np.ndarray
    voice: np.ndarray
    voiced_fraction: float
    duration_s: float
    flags: tuple[str, ...] = ()
    domain_score: float | None = None
    audio: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.features)


class FrameDetector(Protocol):
    """What `select_segments` needs of a voice detector (model.voice.VoiceDetector)."""

    features: FeatureConfig
    rule: Any  # threshold, singing_threshold, min_voice_s, domain_threshold

    def frame_probs_many(self, mels: Sequence[torch.Tensor]) -> list[np.ndarray]: ...
    def voice_probability(self, probs: np.ndarray) -> np.ndarray: ...
    def domain_probability(self, probs: np.ndarray) -> np.ndarray: ...


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
    return detect_voice_many([y], [mel], cfg, detector, chunk_frames)[0]


def detect_voice_many(
    ys: Sequence[np.ndarray | torch.Tensor],
    mels: Sequence[torch.Tensor],
    cfg: FeatureConfig,
    detector: FrameDetector,
    chunk_frames: int | None = DEFAULT_CHUNK_FRAMES,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """`detect_voice` of several recordings, the detector run over all their windows at once."""
    dcfg = detector.features
    if all(getattr(dcfg, f) == getattr(cfg, f) for f in _MEL_FIELDS):
        return [
            (detector.voice_probability(p), detector.domain_probability(p))
            for p in detector.frame_probs_many(mels)
        ]
    if dcfg.sample_rate != cfg.sample_rate:
        raise ValueError("the voice detector and the model need audio at the same sample rate")
    own = [
        log_mel_chunked(y, dcfg, mel.device, chunk_frames) for y, mel in zip(ys, mels, strict=True)
    ]
    out = []
    for probs, mel in zip(detector.frame_probs_many(own), mels, strict=True):
        t_det = np.arange(len(probs)) * dcfg.hop_length
        t_mel = np.arange(mel.shape[-1]) * cfg.hop_length
        out.append(
            (
                np.interp(t_mel, t_det, detector.voice_probability(probs)),
                np.interp(t_mel, t_det, detector.domain_probability(probs)),
            )
        )
    return out


def clipped_share(y: np.ndarray | torch.Tensor, chunk: int = 1 << 20) -> float:
    """Share of samples within 1 % of the recording's peak (flat tops of clipping)."""
    return float(clipped_shares([y], chunk)[0])


def clipped_shares(ys: Sequence[np.ndarray | torch.Tensor], chunk: int = 1 << 20) -> np.ndarray:
    """`clipped_share` of each waveform: (n,) float64.

    Computed where each waveform is, `chunk` samples at a time (no full-length temporary for
    a long file), and copied to the host once for all of them: on CUDA, a copy per recording
    stalled the thread that chooses segments for a whole batch.
    """
    ts = [_as_tensor(y, None) for y in ys]
    if not ts:
        return np.zeros(0)
    counts = []
    for t in ts:
        n = int(t.numel())
        if n == 0:
            counts.append(torch.zeros(2, dtype=torch.float64, device=t.device))
            continue
        peak = torch.stack([t[i : i + chunk].abs().max() for i in range(0, n, chunk)]).max()
        # The threshold in float64, rounded once to the samples' float32, as a Python scalar is.
        limit = 0.99 * peak.double()
        near = torch.stack([(t[i : i + chunk].abs() >= limit).sum() for i in range(0, n, chunk)])
        counts.append(torch.stack([peak.double(), near.sum().double()]))
    host = torch.stack([c.to(ts[0].device) for c in counts]).cpu().numpy()
    sizes = np.array([max(int(t.numel()), 1) for t in ts], np.float64)
    return np.where(host[:, 0] > 0, host[:, 1] / sizes, 0.0)


def quality_flags(
    selection: SegmentSelection,
    clipped: float,
    cfg: FeatureConfig,
    low_voice: bool,
    domain: str | None,
    domain_threshold: float = 0.5,
) -> tuple[str, ...]:
    """Flags of `QUALITY_FLAGS` for a selection (see service/README.md, "quality");
    `clipped`: the recording's `clipped_share`."""
    flags = set()
    if low_voice:
        flags.add("low_voice")
    if selection.duration_s < 2 * cfg.segment_seconds:
        flags.add("short")
    if clipped >= CLIPPED_SHARE:
        flags.add("clipped")
    score = selection.domain_score
    if score is not None and domain == "mono" and score > domain_threshold:
        flags |= {"mostly_accompaniment", "domain_mismatch"}
    if score is not None and domain == "mixed" and score < 1.0 - domain_threshold:
        flags.add("domain_mismatch")
    return tuple(f for f in QUALITY_FLAGS if f in flags)


def selection_domain(domain: str) -> str:
    """The domain a query's segments are chosen (and its flags computed) as: `auto` as mono."""
    return "mono" if domain == AUTO else domain


def choose_branch(selection: SegmentSelection, domain: str) -> tuple[SegmentSelection, str]:
    """The encoder branch for a query declared `domain`, and its selection as reported.

    `mono` / `mixed`: that branch, the selection unchanged. `auto` (selected as mono): the
    mixed branch when the voice detector heard mostly accompaniment (`mostly_accompaniment`,
    domain_score over its threshold), else mono. Takes with a backing track bleeding in found
    their singer more often that way on some sets, less on others (model card, voice
    detector: `bench/bleed_branches.py`). `domain_mismatch` is dropped, since the branch
    follows the audio; `mostly_accompaniment` stays, to say why.
    """
    if domain != AUTO:
        return selection, domain
    if "mostly_accompaniment" not in selection.flags:
        return selection, "mono"
    flags = tuple(f for f in selection.flags if f != "domain_mismatch")
    return replace(selection, flags=flags), "mixed"


def select_segments(
    y: np.ndarray | torch.Tensor,
    cfg: FeatureConfig,
    all_segments: bool = False,
    hop: int | None = None,
    device: str | torch.device | None = None,
    path: str | None = None,
    *,
    detector: FrameDetector | None = None,
    domain: str | None = None,
    chunk_frames: int | None = DEFAULT_CHUNK_FRAMES,
) -> SegmentSelection:
    """Waveform (samples,) at cfg.sample_rate -> the segments to embed, with their times.

    With a `detector` (the service's pipeline): a frame is voiced when the detector's P(voice)
    passes its `threshold`. Segments with at least `vad_min_voiced` voiced frames are kept;
    when none has that much, the most voiced ones (at least half the best segment's share) are
    kept and the selection is flagged `low_voice`. NoVoicedSegmentError only when the whole
    recording holds less than `min_voice_s` of frames above the stricter
    `singing_threshold`: no singing at all.
    Without a detector: the energy rule of `frame_voicing`, strict `vad_min_voiced`.
    `all_segments` keeps every full segment (the paper's protocol). `domain` (the declared
    one, mono or mixed) only sets flags. Features are computed `chunk_frames` at a time.
    Raises AudioTooShortError below one segment.
    """
    (result,) = select_many(
        [y],
        cfg,
        all_segments,
        hop,
        device,
        [path],
        detector=detector,
        domains=[domain],
        chunk_frames=chunk_frames,
    )
    if isinstance(result, AudioError):
        raise result
    return result


def select_many(
    ys: Sequence[np.ndarray | torch.Tensor],
    cfg: FeatureConfig,
    all_segments: bool = False,
    hop: int | None = None,
    device: str | torch.device | None = None,
    paths: Sequence[str | None] | None = None,
    *,
    detector: FrameDetector | None = None,
    domains: Sequence[str | None] | None = None,
    chunk_frames: int | None = DEFAULT_CHUNK_FRAMES,
) -> list[SegmentSelection | AudioError]:
    """`select_segments` of several waveforms: a selection, or the AudioError that recording
    raises alone, for each, in order.

    The waveforms go to `device` in one pinned copy and the voice detector runs over the
    windows of all of them together, with one copy of its probabilities back: on a GPU, one
    recording at a time spends its time launching small kernels and waiting for copies (and,
    from many threads, queueing for the GIL). Each recording's choice is then its own.
    """
    paths = list(paths) if paths is not None else [None] * len(ys)
    domains = list(domains) if domains is not None else [None] * len(ys)
    out: dict[int, SegmentSelection | AudioError] = {}
    ok = []
    for i, y in enumerate(ys):
        n = int(y.shape[-1])
        if n < cfg.min_samples:
            out[i] = AudioTooShortError(n / cfg.sample_rate, cfg.segment_seconds, paths[i])
        else:
            ok.append(i)
    on_device = _as_tensors([ys[i] for i in ok], device)
    mels = [log_mel_chunked(y, cfg, None, chunk_frames) for y in on_device]
    voicing = (
        detect_voice_many(on_device, mels, cfg, detector, chunk_frames)
        if detector is not None and ok
        else [None] * len(ok)
    )
    # The waveforms are on the device: their clipping shares are computed there too, with
    # one copy back for all (on CUDA, not one host pass per recording).
    clipped = clipped_shares(on_device)
    for k, (i, y, mel, voice) in enumerate(zip(ok, on_device, mels, voicing, strict=True)):
        try:
            out[i] = _choose(
                y, mel, voice, clipped[k], cfg, all_segments, hop, detector, domains[i], paths[i]
            )
        except AudioError as err:
            out[i] = err
    return [out[i] for i in range(len(ys))]


def _as_tensors(
    ys: Sequence[np.ndarray | torch.Tensor], device: str | torch.device | None
) -> list[torch.Tensor]:
    """Waveforms as float32 tensors on `device`; host waveforms bound for CUDA travel
    together, in one pinned copy (pinning is paid per call, not per recording)."""
    if len(ys) < 2 or device is None or torch.device(device).type != "cuda":
        return [_as_tensor(y, device) for y in ys]
    host = [torch.as_tensor(y, dtype=torch.float32) for y in ys]
    if any(t.device.type != "cpu" for t in host):
        return [to_device(t, device) for t in host]
    # Joined straight into page-locked memory: one host copy, not a join and then a pin
    # (a batch of 85 10-s files is 75 MB).
    pinned = torch.empty(sum(len(t) for t in host), dtype=torch.float32, pin_memory=True)
    torch.cat(host, out=pinned)
    on_device = pinned.to(device, non_blocking=True)
    return list(on_device.split([len(t) for t in host]))


def _choose(
    y: np.ndarray | torch.Tensor,
    mel: torch.Tensor,
    voice: tuple[np.ndarray, np.ndarray] | None,
    clipped: float,
    cfg: FeatureConfig,
    all_segments: bool,
    hop: int | None,
    detector: FrameDetector | None,
    domain: str | None,
    path: str | None,
) -> SegmentSelection:
    """One recording's selection from its log-mel (n_mels, frames), with a detector its
    (P(voice), P(mixture | voice)) per frame, and its `clipped_share`; see `select_segments`.
    Index arrays go to the device without waiting for it (`to_device`)."""
    n = int(y.shape[-1])
    frame_s = cfg.hop_length / cfg.sample_rate
    domain_score, low_voice = None, False
    if detector is not None and voice is not None:
        p_voice, p_mix = voice
        voiced = p_voice > detector.rule.threshold
        sung_s = float((p_voice > detector.rule.singing_threshold).sum()) * frame_s
        if voiced.any():
            domain_score = float(np.mean(p_mix[voiced]))
    else:
        voiced = frame_voicing(y, cfg)[: mel.shape[-1]]
    starts, share = _segment_shares(voiced, cfg, hop)
    if all_segments:
        keep = np.arange(len(starts))
    elif detector is not None:
        if sung_s < detector.rule.min_voice_s or share.max() <= 0:
            raise NoVoicedSegmentError(
                f"no singing voice detected: {sung_s:.1f} s of the {n / cfg.sample_rate:.1f}-s "
                f"recording sound like singing, at least {detector.rule.min_voice_s:.1f} s is "
                "needed (silence, tones, noise or instrumental music only)",
                path,
            )
        keep = np.flatnonzero(share >= cfg.vad_min_voiced)
        if keep.size == 0:
            low_voice = True
            keep = np.flatnonzero(share >= 0.5 * share.max())
    else:
        keep = np.flatnonzero(share >= cfg.vad_min_voiced)
        if keep.size == 0:
            raise NoVoicedSegmentError(
                f"no {cfg.segment_seconds:.1f}-s segment has {cfg.vad_min_voiced:.0%} voiced "
                f"frames (best: {share.max():.0%}); the recording is silent or holds too "
                "little voice",
                path,
            )
    # Index the unfolded view: only the kept segments are copied.
    view = mel.unfold(-1, cfg.segment_frames, hop or cfg.segment_hop).permute(1, 0, 2)
    segs = view[to_device(torch.from_numpy(keep), view.device)].contiguous()
    starts_s = starts[keep] * frame_s
    audio = None
    if cfg.segment_audio:
        # A segment's frames are centred on samples start * hop ... + min_samples (its
        # last frame); index the unfolded view so only the kept segments are copied.
        y_t = _as_tensor(y, None)
        windows = y_t.unfold(0, cfg.min_samples, cfg.hop_length)
        audio = windows[to_device(torch.from_numpy(starts[keep]), y_t.device)].contiguous()
    selection = SegmentSelection(
        features=segs,
        starts_s=starts_s,
        ends_s=starts_s + cfg.segment_frames * frame_s,
        voice=share[keep],
        voiced_fraction=float(voiced.mean()) if len(voiced) else 0.0,
        duration_s=n / cfg.sample_rate,
        domain_score=domain_score,
        audio=audio,
    )
    threshold = detector.rule.domain_threshold if detector is not None else 0.5
    selection.flags = quality_flags(selection, clipped, cfg, low_voice, domain, threshold)
    return selection


def extract_segments(
    y: np.ndarray | torch.Tensor, cfg: FeatureConfig, *args: Any, **kwargs: Any
) -> torch.Tensor:
    """Waveform (samples,) -> the segments the model embeds: (n, n_mels, segment_frames).

    The features of `select_segments`; same arguments, same errors.
    """
    return select_segments(y, cfg, *args, **kwargs).features
