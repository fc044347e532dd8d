"""From audio to singer vectors: a track is the mean of its segment embeddings.

`Embedder` wraps a loaded checkpoint and its feature recipe. `embed_many` is the batch path
used by the indexer and the CLI: worker threads decode, resample and choose segments (or
hand that to the worker processes of a `model.decode_pool.DecodePool`), and an encoder thread
runs the encoder on batches of segments gathered across files.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from model.audio import AudioSource, load_audio
from model.checkpoint import checkpoint_id, load_checkpoint
from model.concurrency import completed_in_threads
from model.decode_pool import DecodePool
from model.domains import DOMAINS
from model.errors import AudioError, CheckpointError
from model.features import (
    FeatureConfig,
    SegmentSelection,
    choose_branch,
    select_many,
    selection_domain,
    to_device,
)
from model.fusion import (
    FUSION_KEY,
    DomainCentres,
    NuisanceProjection,
    load_centres,
    load_nuisance,
    load_speaker,
)
from model.network import SingerNet
from model.speaker import EMBED_DIM as SPEAKER_DIM
from model.speaker import SpeakerEncoder
from model.vectors import fuse, normalized_mean
from model.voice import VoiceDetector

log = logging.getLogger(__name__)


_NO_VECTOR = "the model produced no usable vector for this audio"

# What `embed_many` yields: (index into its sources, the file's embedding or its error).
_Results = list[tuple[int, "TrackEmbedding | AudioError"]]


def resolve_device(device: str | None = None) -> torch.device:
    """'auto' or None: CUDA when available, else CPU."""
    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def inference_threads(workers: int) -> int:
    """Torch intra-op threads that leave a core to each decoding worker (at least 1).

    Decoding threads and torch's own thread pool otherwise oversubscribe the CPU: on 2 cores
    with 2 workers, 2 torch threads cost about a third of the throughput (bench/bench_indexer.py).
    """
    return max(1, (os.cpu_count() or 1) - max(1, workers))


@dataclass
class TrackEmbedding:
    """A track's singer vector and the segment embeddings it is the mean of.

    vector: float32 (embed_dim,), L2-normalised; segment_vectors: float32 (n_segments,
    embed_dim), what `Embedder.encode` gives (raw encoder outputs, or fused unit vectors);
    starts_s / ends_s / voice: (n_segments,) as in `SegmentSelection`; voiced_fraction in
    [0, 1]; duration_s in seconds; flags and domain_score: the selection's quality
    (`model.features.SegmentSelection`); domain: the encoder branch that embedded it, where
    known (a query declared `auto` learns it here).
    """

    vector: np.ndarray
    n_segments: int
    duration_s: float
    segment_vectors: np.ndarray | None = None
    starts_s: np.ndarray | None = None
    ends_s: np.ndarray | None = None
    voice: np.ndarray | None = None
    voiced_fraction: float = 1.0
    flags: tuple[str, ...] = ()
    domain_score: float | None = None
    domain: str | None = None

    @classmethod
    def of(
        cls, selection: SegmentSelection, segment_vectors: np.ndarray, domain: str | None = None
    ) -> TrackEmbedding:
        """The track embedding of a selection and its (n, embed_dim) segment embeddings, made
        by the `domain` branch."""
        return cls(
            vector=track_vector(segment_vectors),
            n_segments=len(segment_vectors),
            duration_s=selection.duration_s,
            segment_vectors=segment_vectors,
            starts_s=selection.starts_s,
            ends_s=selection.ends_s,
            voice=selection.voice,
            voiced_fraction=selection.voiced_fraction,
            flags=selection.flags,
            domain_score=selection.domain_score,
            domain=domain,
        )


def track_vector(segment_embeddings: np.ndarray) -> np.ndarray:
    """(n, dim) segment embeddings -> (dim,) L2-normalised mean (the paper's track vector)."""
    return normalized_mean(segment_embeddings)


class Embedder:
    """A checkpoint ready for inference on one device, with the voice detector that chooses
    the segments it embeds (None: the energy rule of `model.features.frame_voicing`) and, for
    a fused checkpoint (`model.fusion`), the speaker encoder beside the CROSS encoders,
    CROSS's share `fusion_weight` of every cosine, the domain centres subtracted before
    fusion and the nuisance directions removed after it (None: none)."""

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
        device: str | None = None,
        voice_detector: str | Path | None = None,
    ) -> Embedder:
        """Load a checkpoint and a voice detector (default: the shipped ones) on `device`.

        Raises CheckpointError when either cannot be loaded.
        """
        from model import DEFAULT_CHECKPOINT

        path = Path(path) if path else DEFAULT_CHECKPOINT
        dev = resolve_device(device)
        if dev.type == "cuda":
            # cuDNN convolutions default to TF32, which moves vectors by about 5e-4 (measured
            # on an H100) and makes a segment's vector depend on the batch it shares: catalogue
            # vectors made on CPU and queries made on GPU would disagree. Full float32 keeps
            # both within 1e-5. This is a process-wide switch.
            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cuda.matmul.allow_tf32 = False
        net, features, meta = load_checkpoint(path, dev)
        detector = VoiceDetector.load(voice_detector, dev)
        if detector.features.sample_rate != features.sample_rate:
            raise CheckpointError(
                f"the voice detector expects {detector.features.sample_rate} Hz audio, the "
                f"checkpoint {features.sample_rate} Hz"
            )
        speaker, weight, centres, nuisance = None, 1.0, None, None
        if FUSION_KEY in meta:
            speaker, weight = load_speaker(meta[FUSION_KEY], dev)
            centres = load_centres(meta[FUSION_KEY], net.dims.embed_dim)
            nuisance = load_nuisance(meta[FUSION_KEY], net.dims.embed_dim + SPEAKER_DIM)
        return cls(
            net,
            features,
            meta,
            dev,
            checkpoint_id(path),
            detector,
            speaker,
            weight,
            centres,
            nuisance,
        )

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
        self, selections: Sequence[SegmentSelection], domain: str, batch_size: int = 256
    ) -> np.ndarray:
        """The segment vectors of some selections, in order: (total segments, embed_dim)
        float32 (`encode_segments` of their features and, fused, their audio)."""
        feats = [s.features for s in selections]
        audio = [s.audio for s in selections if s.audio is not None]
        return self.encode_segments(
            feats[0] if len(feats) == 1 else torch.cat(feats),
            domain,
            (audio[0] if len(audio) == 1 else torch.cat(audio)) if audio else None,
            batch_size,
        )

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
        voices = self.speaker.embed_crops(audio, self.features.sample_rate)
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

        The service's selection (`model.features.select_segments` with this voice detector);
        `domain` is the declared one, for the quality flags. Raises AudioError.
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
    ) -> list[SegmentSelection | AudioError]:
        """`select` of several waveforms together (`model.features.select_many`: one copy to
        the device, one voice-detector pass): a selection or the recording's AudioError each."""
        return select_many(
            ys,
            self.features,
            all_segments,
            device=self.device,
            paths=paths,
            detector=self.detector,
            domains=domains,
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
    ) -> list[TrackEmbedding | AudioError]:
        """THE path from audio to track vectors: every caller (`embed_audio`, `embed_file`,
        `embed_many`, the service, the Ray indexer, the evaluation) goes through here.

        waves: float32 waveforms (samples,) at `features.sample_rate`, or selections already
        made by `select` of this embedder (in a decoding thread or process). domains: one
        declared domain (mono, mixed or auto) for all, or one per wave. all_segments: every
        full segment (the paper's protocol), not the voice detector's choice. names: file
        names for error messages (None: none). batch_size: segments per encoder pass.

        Here and only here: the segments are chosen (`select_many`: the voice detector, the
        refusal of recordings without singing, quality flags), `auto` picks its branch
        (`model.features.choose_branch`), and the segments of every recording of a branch
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
                [selection_domain(doms[i]) for i in ys],
            )
            for i, sel in zip(ys, picked, strict=True):
                chosen(i, sel)
        for branch, items in sorted(branches.items()):
            vectors = self.encode([s for _, s in items], branch, batch_size)
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
        batch_size: int = 64,
        progress: bool = False,
        max_seconds: float | None = None,
        pool: DecodePool | None = None,
    ) -> Iterator[tuple[int, TrackEmbedding | AudioError]]:
        """Embed many files; yields (index into sources, result or AudioError) as they finish.

        Decoding, features and voice detection run in `workers` threads with a bounded queue
        (on CUDA, decoding only: the encoder thread chooses the segments of several files at
        once, `select_many`); segments of several files are run through the encoder together
        in batches of about `batch_size`, in a thread of their own, so the next batch is
        gathered while one is encoded. Results come in completion order, not input order,
        and a prepared file waits until `batch_size` segments are buffered (or the input
        ends): use the index to place each result. In memory at once: the files in flight,
        the batch being gathered and the one being encoded. On CPU, give torch
        `inference_threads(workers)` threads so decoding and inference do not oversubscribe
        the cores. Never raises AudioError: a bad file comes back as its error, so batch jobs
        can skip and report it. `max_seconds` bounds each file's decoded duration.
        `pool`: decode in its worker processes instead (and choose segments there too when it
        was made with features); `workers` threads then wait on them, at least one per process.
        """
        from tqdm import tqdm

        sr = self.features.sample_rate
        in_workers = pool is not None and pool.features is not None
        # On CUDA, waveforms come back from the threads and the encoder thread chooses their
        # segments many at a time, beside the encoder (`selects_in_batches`).
        batch_select = self.selects_in_batches and not in_workers
        bar = tqdm(total=len(sources), unit="file", disable=not progress)

        def name(i: int) -> str | None:
            return None if isinstance(sources[i], bytes) else str(sources[i])

        def run(
            waiting: list[tuple[int, np.ndarray]], ready: list[tuple[int, SegmentSelection]]
        ) -> _Results:
            """One batch, in the encoder thread: `embed_batch` of the selections made in the
            decoding threads (`ready`) and the decoded waveforms (`waiting`), whose segments
            it chooses together."""
            idx = [i for i, _ in ready] + [i for i, _ in waiting]
            items: list[np.ndarray | SegmentSelection] = [s for _, s in ready]
            items += [y for _, y in waiting]
            got = self.embed_batch(
                items,
                domain,
                all_segments=all_segments,
                names=[name(i) for i in idx],
                batch_size=batch_size,
            )
            return list(zip(idx, got, strict=True))

        def finished(
            batch: cf.Future[_Results],
        ) -> Iterator[tuple[int, TrackEmbedding | AudioError]]:
            for item in batch.result():  # raises what the batch raised (not AudioError)
                bar.update(1)
                yield item

        def prepare(i: int) -> SegmentSelection | np.ndarray:
            # On the CPU, features and voice detection run here, in parallel threads. On CUDA,
            # one recording at a time in the consuming thread, they held indexing to 41 % of
            # the decode-only rate on a 16-core GPU machine: there they run in batches.
            if in_workers and pool is not None:
                return pool.select(sources[i], all_segments, max_seconds, domain)
            if pool is not None:
                y = pool.load_audio(sources[i], sr, max_seconds)
            else:
                y = load_audio(sources[i], sr, max_seconds)
            return y if batch_select else self.select(y, all_segments, name(i), domain)

        threads = max(workers, pool.processes if pool is not None else 0)
        waiting: list[tuple[int, np.ndarray]] = []  # decoded, segments not chosen yet
        ready: list[tuple[int, SegmentSelection]] = []
        n_buffered = 0  # segments gathered (for waveforms: at most this many)
        encoding: cf.Future[_Results] | None = None  # the batch in the encoder thread
        # One encoder thread: with the encoder in the thread that gathers, the decoders stopped
        # once `lookahead` files were ready while a batch ran on the GPU.
        with cf.ThreadPoolExecutor(1, thread_name_prefix="encoder") as encoder:
            for i, fut in completed_in_threads(prepare, range(len(sources)), workers=threads):
                if encoding is not None and encoding.done():
                    yield from finished(encoding)
                    encoding = None
                try:
                    got = fut.result()
                except AudioError as err:
                    bar.update(1)
                    yield i, err
                    continue
                if isinstance(got, np.ndarray):
                    waiting.append((i, got))
                    n_buffered += max(1, len(got) // self.features.min_samples)
                else:
                    ready.append((i, got))
                    n_buffered += len(got)
                if n_buffered >= batch_size:
                    if encoding is not None:  # one batch encodes while the next gathers
                        yield from finished(encoding)
                    encoding = encoder.submit(run, waiting, ready)
                    waiting, ready, n_buffered = [], [], 0
            if encoding is not None:
                yield from finished(encoding)
            if waiting or ready:
                yield from finished(encoder.submit(run, waiting, ready))
        bar.close()
