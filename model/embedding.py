"""`Embedder`: a loaded model, and the one path from audio to singer vectors (`embed_batch`).

    waveforms --select_many--> segments --choose_branch--> encode --mean--> track vectors
                (voice detector,            (auto)       (CROSS, speaker encoder,
                 refusal, flags)                           centres, fusion, projection)

Loading is `model.embedder_loading`; many files at a time, `model.batch_embedding`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from model.audio import AudioSource, load_audio
from model.concurrency import Split, in_pieces, pieces
from model.decode_pool import DecodePool
from model.devices import full_float32, resolve_device, to_device
from model.domains import DOMAINS, choose_branch
from model.errors import AudioError, CheckpointError
from model.features import FeatureConfig
from model.fusion import DomainCentres, NuisanceProjection
from model.network import SingerNet
from model.segment_selection import SegmentSelection, select_many
from model.speaker import EMBED_DIM as SPEAKER_DIM
from model.speaker import SpeakerEncoder
from model.track_embedding import TrackEmbedding
from model.vectors import fuse, l2_normalize
from model.voice import VoiceDetector

_NO_VECTOR = "the model produced no usable vector for this audio"


class Embedder:
    """A checkpoint ready for inference on one device, with the voice detector that chooses
    the segments it embeds (None: the energy rule of `model.energy_vad`) and, for a fused
    checkpoint (`model.fusion`), the speaker encoder beside the CROSS encoders, CROSS's
    share `fusion_weight` of every cosine, the domain centres subtracted before fusion and
    the nuisance directions removed after it (None: none)."""

    def __init__(
        self,
        net: SingerNet,
        features: FeatureConfig,
        meta: dict,
        device: torch.device,
        ckpt_id: str,
        detector: VoiceDetector | None = None,
        speaker: SpeakerEncoder | None = None,
        fusion_weight: float = 1.0,
        centres: DomainCentres | None = None,
        nuisance: NuisanceProjection | None = None,
    ):
        if speaker is not None and not features.segment_audio:
            raise CheckpointError("a fused model needs the segments' audio (segment_audio)")
        self.net = net
        self.features = features
        self.meta = meta
        self.device = device
        self.checkpoint_id = ckpt_id
        self.detector = detector
        self.speaker = speaker
        self.fusion_weight = fusion_weight
        self.centres = centres
        self.nuisance = nuisance
        # Whether `embed_many` chooses segments many recordings at a time (`select_many`) in
        # the thread that runs the encoder: on CUDA, where one recording's selection is a
        # string of small kernel launches. On the CPU, selections run in parallel threads.
        self.selects_in_batches = device.type == "cuda"

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path | None = None,
        device: str | torch.device | None = None,
        voice_detector: str | Path | None = None,
    ) -> Embedder:
        """Load a checkpoint and a voice detector (default: the shipped ones) on `device`
        ('auto' or None: CUDA when available). Raises CheckpointError when either cannot be
        loaded."""
        from model.embedder_loading import load_embedder_parts

        return cls(**load_embedder_parts(path, resolve_device(device), voice_detector))

    def warm_up(self) -> None:
        """Run every stage once, on silence, in both domains, and wait for the device.

        Constants cached on the device (mel filters, windows) and the device's libraries
        (cuDNN, cuFFT plans) are then set up before requests share the device from several
        threads and CUDA streams, and the first request does not pay for them."""
        y = np.zeros(2 * self.features.min_samples, np.float32)
        for domain in DOMAINS:
            self.embed_audio(y, domain, all_segments=True)  # silence: every segment, no voice
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def decode_pool(self, processes: int, features_in_workers: bool = False) -> DecodePool:
        """Worker processes that decode for this model (see `model.decode_pool`); with
        `features_in_workers` they also choose segments, with a CPU copy of the detector."""
        if not features_in_workers:
            return DecodePool(processes)
        return DecodePool(processes, self.features, self.detector)

    @property
    def embed_dim(self) -> int:
        """Length of a vector: the CROSS embedding's, plus the speaker encoder's if fused."""
        return self.net.dims.embed_dim + (SPEAKER_DIM if self.speaker is not None else 0)

    def encode(
        self,
        selections: Sequence[SegmentSelection],
        domain: str,
        batch_size: int = 256,
        split: Split | None = None,
    ) -> np.ndarray:
        """The segment vectors of some selections, in order: (total segments, embed_dim)
        float32 (`encode_segments` of their features and, fused, their audio); with a
        `split`, in runs at once (a segment's vector does not depend on its pass)."""
        feats = [s.features for s in selections]
        audio = [s.audio for s in selections if s.audio is not None]
        features = feats[0] if len(feats) == 1 else torch.cat(feats)
        waves = (audio[0] if len(audio) == 1 else torch.cat(audio)) if audio else None
        runs = [
            (features[a:b], domain, None if waves is None else waves[a:b], batch_size)
            for a, b in pieces(len(features), split)
        ]
        vectors = in_pieces(self.encode_segments, runs, split)
        return vectors[0] if len(vectors) == 1 else np.concatenate(vectors)

    def encode_segments(
        self,
        features: torch.Tensor,
        domain: str,
        audio: torch.Tensor | np.ndarray | None = None,
        batch_size: int = 256,
    ) -> np.ndarray:
        """Segments -> their vectors (n, embed_dim) float32. features: log-mel (n, n_mels,
        frames); audio: the same segments' waveforms (n, min_samples) at the model's rate,
        needed when fused. Unfused: the CROSS encoder's raw outputs (`embed_segments`).
        Fused: `model.vectors.fuse(cross, speaker, fusion_weight)` per segment, unit norm,
        each part first centred on its domain's centre and the result then rid of the nuisance
        directions, when the checkpoint has them."""
        cross = self.embed_segments(features, domain, batch_size)
        if self.speaker is None:
            return cross
        if audio is None or len(audio) != len(cross):
            raise ValueError("a fused model needs each segment's audio (segment_audio)")
        with full_float32(self.device):
            voices = self.speaker.embed_crops(audio, self.features.sample_rate, domain=domain)
        if self.centres is not None:
            cross, voices = self.centres.centre(cross, voices, domain)
        fused = fuse(cross, voices, self.fusion_weight)
        return fused if self.nuisance is None else self.nuisance.project(fused)

    @torch.inference_mode()
    def embed_segments(self, segs: torch.Tensor, domain: str, batch_size: int = 256) -> np.ndarray:
        """Log-mel segments (n, n_mels, frames) -> raw CROSS embeddings (n, 256) float32.

        Segments already on this device (what `select` gives) stay there: features and encoder
        share the device with no host round trip; host segments go through pinned memory.
        """
        with full_float32(self.device):
            out = [
                self.net(to_device(segs[i : i + batch_size], self.device), domain).float().cpu()
                for i in range(0, len(segs), batch_size)
            ]
        empty = np.zeros((0, self.net.dims.embed_dim), np.float32)
        return torch.cat(out).numpy() if out else empty

    def select(
        self,
        y: np.ndarray,
        all_segments: bool = False,
        path: str | None = None,
        domain: str | None = None,
    ) -> SegmentSelection:
        """Waveform at features.sample_rate -> the segments to embed, features on this device.

        `model.segment_selection.select_segments` with this voice detector; `domain` is the
        declared one (mono, mixed or auto), for the refusal rule and the quality flags.
        Raises AudioError.
        """
        (selection,) = self.select_many([y], all_segments, [path], [domain])
        if isinstance(selection, AudioError):
            raise selection
        return selection

    def select_many(
        self,
        ys: Sequence[np.ndarray],
        all_segments: bool = False,
        paths: Sequence[str | None] | None = None,
        domains: Sequence[str | None] | None = None,
        split: Split | None = None,
    ) -> list[SegmentSelection | AudioError]:
        """`select` of several waveforms together (`model.segment_selection.select_many`: one
        copy to the device, one voice-detector pass): a selection or the recording's
        AudioError each. `split`: features and detector in pieces at once."""
        with full_float32(self.device):
            return select_many(
                ys,
                self.features,
                all_segments,
                device=self.device,
                paths=paths,
                detector=self.detector,
                domains=domains,
                split=split,
            )

    def segments(
        self, y: np.ndarray, all_segments: bool = False, path: str | None = None
    ) -> torch.Tensor:
        """Waveform at features.sample_rate -> (n, n_mels, frames) on this device."""
        return self.select(y, all_segments, path).features

    def embed_batch(
        self,
        waves: Sequence[np.ndarray | SegmentSelection],
        domains: str | Sequence[str],
        *,
        all_segments: bool = False,
        names: Sequence[str | None] | None = None,
        batch_size: int = 256,
        split: Split | None = None,
    ) -> list[TrackEmbedding | AudioError]:
        """THE path from audio to track vectors: every caller (`embed_audio`, `embed_file`,
        `embed_many`, the service, the Ray indexer, the evaluation) goes through here.

        waves: float32 waveforms (samples,) at `features.sample_rate`, or selections already
        made by `select` of this embedder (in a decoding thread or process). domains: one
        declared domain (mono, mixed or auto) for all, or one per wave. all_segments: every
        full segment (the paper's protocol), not the voice detector's choice. names: file
        names for error messages (None: none). batch_size: segments per encoder pass.
        split: one recording's features, voice detection and encoding in pieces at once (the
        service's lone uploads on idle cores; the same vectors).

        Here and only here: the segments are chosen (`select_many`: the voice detector, the
        refusal of recordings without singing, quality flags), `auto` picks its branch
        (`model.domains.choose_branch`), and the segments of every recording of a branch
        go through the encoder together (`encode`: CROSS, the speaker encoder, centres,
        fusion, nuisance projection); a track vector is the normalised mean of its segment
        vectors. Returns, in input order, each recording's TrackEmbedding, or the AudioError
        it raises alone (too short, no singing, no usable vector): never raises AudioError.
        """
        n = len(waves)
        doms = [domains] * n if isinstance(domains, str) else list(domains)
        labels = list(names) if names is not None else [None] * n
        if len(doms) != n or len(labels) != n:
            raise ValueError("give one domain (or a single one) and one name per wave")
        out: dict[int, TrackEmbedding | AudioError] = {}
        branches: dict[str, list[tuple[int, SegmentSelection]]] = {}

        def chosen(i: int, sel: SegmentSelection | AudioError) -> None:
            if isinstance(sel, AudioError):
                out[i] = sel
                return
            sel, branch = choose_branch(sel, doms[i])
            branches.setdefault(branch, []).append((i, sel))

        ys: dict[int, np.ndarray] = {}
        for i, w in enumerate(waves):
            if isinstance(w, SegmentSelection):
                chosen(i, w)
            else:
                ys[i] = w
        if ys:
            picked = self.select_many(
                list(ys.values()),
                all_segments,
                [labels[i] for i in ys],
                [doms[i] for i in ys],
                split,
            )
            for i, sel in zip(ys, picked, strict=True):
                chosen(i, sel)
        for branch, items in sorted(branches.items()):
            vectors = self.encode([s for _, s in items], branch, batch_size, split)
            twins = [s.without_band for _, s in items]
            if all(t is not None for t in twins):  # the blend: both views, summed
                other = self.encode(twins, branch, batch_size, split)  # type: ignore[arg-type]
                vectors = l2_normalize(vectors + other)
            start = 0
            for i, sel in items:
                emb = TrackEmbedding.of(sel, vectors[start : start + len(sel)], branch)
                start += len(sel)
                usable = np.isfinite(emb.vector).all() and np.any(emb.vector)
                out[i] = emb if usable else AudioError(_NO_VECTOR, labels[i])
        return [out[i] for i in range(n)]

    def embed_audio(
        self, y: np.ndarray, domain: str, all_segments: bool = False, path: str | None = None
    ) -> TrackEmbedding:
        """Waveform (samples,) at `features.sample_rate` -> TrackEmbedding: `embed_batch` of
        one. `domain`: mono, mixed, or auto. Raises AudioError."""
        (result,) = self.embed_batch([y], domain, all_segments=all_segments, names=[path])
        if isinstance(result, AudioError):
            raise result
        return result

    def embed_file(
        self,
        source: AudioSource,
        domain: str,
        all_segments: bool = False,
        max_seconds: float | None = None,
    ) -> TrackEmbedding:
        """A file path or encoded bytes -> TrackEmbedding. Raises AudioError (AudioTooLongError
        beyond `max_seconds` of audio)."""
        name = None if isinstance(source, bytes) else str(source)
        y = load_audio(source, self.features.sample_rate, max_seconds)
        return self.embed_audio(y, domain, all_segments, path=name)

    def embed_many(
        self,
        sources: Sequence[AudioSource],
        domain: str,
        all_segments: bool = False,
        workers: int = 2,
        batch_size: int | None = None,
        progress: bool = False,
        max_seconds: float | None = None,
        pool: DecodePool | None = None,
    ) -> Iterator[tuple[int, TrackEmbedding | AudioError]]:
        """Embed many files: (index into sources, result or AudioError) in completion order;
        decoding threads (or `pool`'s processes) feed `embed_batch` (see
        `model.batch_embedding.embed_many`). Never raises AudioError."""
        from model.batch_embedding import embed_many

        return embed_many(
            self, sources, domain, all_segments, workers, batch_size, progress, max_seconds, pool
        )
