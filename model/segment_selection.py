"""Segment selection: which 3-s segments of a recording the model embeds, and why.

With the voice detector (the service's pipeline): the segments where it hears singing, the
refusal of recordings without any, and quality flags; without one, the energy rule
(`model.energy_vad`). Many recordings at a time share one copy to the device and one pass of
the detector (`select_many`); each recording's choice is its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from model.concurrency import Split
from model.detector_frames import FrameDetector, FrameVerdict, detect_voice_many
from model.devices import as_tensor, as_tensors, to_device
from model.domains import branch_of, selection_domain
from model.energy_vad import frame_voicing
from model.errors import AudioError, AudioTooShortError, NoVoicedSegmentError
from model.features import DEFAULT_CHUNK_FRAMES, FeatureConfig, log_mel_chunked, segment_shares
from model.quality_flags import clipped_shares, quality_flags
from model.refusal import SignalStats, refusal, signal_stats
from model.repeating_background import remove_repeating_background


@dataclass
class SegmentSelection:
    """The segments of one recording that the model embeds, with where they lie and why.

    features: (n, n_mels, segment_frames) log-mel on the embedding device;
    starts_s, ends_s: (n,) float64 seconds from the start of the recording;
    voice: (n,) float64 in [0, 1], how voiced each kept segment is (share of voiced frames);
    voiced_fraction: share of the whole recording's frames judged voiced, in [0, 1];
    duration_s: length of the recording in seconds;
    flags: quality warnings, a subset of `model.quality_flags.QUALITY_FLAGS` in that order;
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
    # The mixed branch's front end (blend): the same segments from the mix without its
    # repeating band, (features, audio); each segment is embedded both ways and the two
    # vectors summed (`Embedder.embed_batch`).
    without_band: SegmentSelection | None = None

    def __len__(self) -> int:
        return len(self.features)


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
    kept and the selection is flagged `low_voice`, as is a finished song with little singing.
    NoVoicedSegmentError (NotMusicError for `mixed`) as `model.refusal` decides: a vocal take
    without singing, a finished song that is not music, a steady tone or noise.
    Without a detector: the energy rule of `frame_voicing`, strict `vad_min_voiced`.
    `all_segments` keeps every full segment (the paper's protocol). `domain`: the declared
    one (mono, mixed; `auto` is chosen as mono), for the quality flags. Features are computed
    `chunk_frames` at a time.
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
    split: Split | None = None,
) -> list[SegmentSelection | AudioError]:
    """`select_segments` of several waveforms: a selection, or the AudioError that recording
    raises alone, for each, in order. `split`: each recording's features and the detector's
    windows in pieces at once (the same frames and probabilities).

    The waveforms go to `device` in one pinned copy and the voice detector runs over the
    windows of all of them together, with one copy of its probabilities back: on a GPU, one
    recording at a time spends its time launching small kernels and waiting for copies (and,
    from many threads, queueing for the GIL). Each recording's choice is then its own.
    """
    paths = list(paths) if paths is not None else [None] * len(ys)
    raw_domains = list(domains) if domains is not None else [None] * len(ys)
    domains = [selection_domain(d) if d else None for d in raw_domains]
    out: dict[int, SegmentSelection | AudioError] = {}
    ok = []
    for i, y in enumerate(ys):
        n = int(y.shape[-1])
        if n < cfg.min_samples:
            out[i] = AudioTooShortError(n / cfg.sample_rate, cfg.segment_seconds, paths[i])
        else:
            ok.append(i)
    on_device = as_tensors([ys[i] for i in ok], device)
    mels = [log_mel_chunked(y, cfg, None, chunk_frames, split) for y in on_device]
    voicing: Sequence[FrameVerdict | None] = [None] * len(ok)
    stats: Sequence[SignalStats | None] = [None] * len(ok)
    if detector is not None and ok:
        voicing = detect_voice_many(on_device, mels, cfg, detector, chunk_frames, split)
        stats = signal_stats(on_device, mels, cfg.log_scale)
    # The waveforms are on the device: their clipping shares are computed there too, with
    # one copy back for all (on CUDA, not one host pass per recording).
    clipped = clipped_shares(on_device)
    for k, (i, y, mel) in enumerate(zip(ok, on_device, mels, strict=True)):
        try:
            chosen = _choose(
                y,
                mel,
                voicing[k],
                stats[k],
                clipped[k],
                cfg,
                all_segments,
                hop,
                detector,
                domains[i],
                paths[i],
            )
        except AudioError as err:
            out[i] = err
            continue
        declared = raw_domains[i]
        if cfg.mix_background_margin > 0 and declared and branch_of(chosen, declared) == "mixed":
            chosen = _without_repeating_background(chosen, y, cfg, chunk_frames, split)
        out[i] = chosen
    return [out[i] for i in range(len(ys))]


def _without_repeating_background(
    selection: SegmentSelection,
    y: torch.Tensor,
    cfg: FeatureConfig,
    chunk_frames: int | None,
    split: Split | None,
) -> SegmentSelection:
    """The mixed branch's front end: `selection` (chosen, refused and flagged on the mix
    itself) with, as `without_band`, the same segments' features and audio taken from the
    mix without its repeating background (`model.repeating_background`)."""
    fg = remove_repeating_background(y, cfg)
    mel = log_mel_chunked(fg, cfg, None, chunk_frames, split)
    starts = np.rint(selection.starts_s * cfg.sample_rate / cfg.hop_length).astype(np.int64)
    features, audio = _segments_at(mel, fg, starts, cfg)
    return replace(selection, without_band=replace(selection, features=features, audio=audio))


def _segments_at(
    mel: torch.Tensor, y: np.ndarray | torch.Tensor, starts: np.ndarray, cfg: FeatureConfig
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The segments starting at frames `starts` (n,): their log-mel (n, n_mels,
    segment_frames) from `mel` and, when the recipe keeps it, their waveform (n, min_samples)
    from `y`. Unfolded views are indexed, so only these segments are copied."""
    idx = to_device(torch.from_numpy(starts), mel.device)
    features = mel.unfold(-1, cfg.segment_frames, 1)[:, idx].permute(1, 0, 2).contiguous()
    if not cfg.segment_audio:
        return features, None
    # A segment's frames are centred on samples start * hop ... + min_samples (its last frame).
    y_t = as_tensor(y, None)
    windows = y_t.unfold(0, cfg.min_samples, cfg.hop_length)
    return features, windows[to_device(torch.from_numpy(starts), y_t.device)].contiguous()


def _choose(
    y: np.ndarray | torch.Tensor,
    mel: torch.Tensor,
    verdict: FrameVerdict | None,
    stats: SignalStats | None,
    clipped: float,
    cfg: FeatureConfig,
    all_segments: bool,
    hop: int | None,
    detector: FrameDetector | None,
    domain: str | None,
    path: str | None,
) -> SegmentSelection:
    """One recording's selection from its log-mel (n_mels, frames), with a detector its
    `FrameVerdict` and `SignalStats`, and its `clipped_share`; see `select_segments`.
    Index arrays go to the device without waiting for it (`to_device`)."""
    n = int(y.shape[-1])
    frame_s = cfg.hop_length / cfg.sample_rate
    domain_score, low_voice = None, False
    if detector is not None and verdict is not None:
        voiced = verdict.voice > detector.rule.threshold
        if voiced.any():
            domain_score = float(np.mean(verdict.mixture[voiced]))
    else:
        voiced = frame_voicing(y, cfg)[: mel.shape[-1]]
    starts, share = segment_shares(voiced, cfg, hop)
    if all_segments:
        keep = np.arange(len(starts))
    elif detector is not None and verdict is not None and stats is not None:
        refused = refusal(domain, verdict, stats, detector.rule, cfg, share.max() > 0, path)
        if refused is not None:
            raise refused
        keep = np.flatnonzero(share >= cfg.vad_min_voiced)
        sung_s = float((verdict.voice > detector.rule.singing_threshold).sum()) * frame_s
        low_voice = keep.size == 0 or sung_s < detector.rule.min_voice_s
        if keep.size == 0:  # the most voiced (a finished song with no voiced frame: all)
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
    segs, audio = _segments_at(mel, y, starts[keep], cfg)
    starts_s = starts[keep] * frame_s
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
