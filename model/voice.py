"""Singing-voice detection: per-frame probabilities of {no voice, solo voice, voice in a mixture,
instrumental} from the same log-mel features the embedding model uses.

A small 2-D CNN (`VoiceNet`, about 15 k parameters) classifies 32-frame windows (0.74 s);
`VoiceDetector.frame_probs` slides it over a recording and averages the windows that cover
each frame. From those probabilities:

- a frame is *voiced* when P(solo) + P(mixture) exceeds `threshold`;
- `domain_score` = P(mixture | voice), averaged over voiced frames: 0 sounds like a vocal
  take, 1 like a finished song.

The weights (`model/weights/voice-detector.pt`) are trained by `python -m model train-voice`
(model/training/voice.py); the checkpoint holds the network's dimensions, its feature recipe
and its decision thresholds, and loads with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from model.checkpoint import checkpoint_id, save_payload
from model.concurrency import Split, in_pieces
from model.errors import CheckpointError
from model.features import FeatureConfig
from model.stored import Stored

FORMAT = "singer-voice-detector"
VERSION = 1
CLASSES = ("none", "solo", "mixture", "instrumental")
NONE, SOLO, MIXTURE, INSTRUMENTAL = range(4)
DEFAULT_VOICE_DETECTOR = Path(__file__).resolve().parent / "weights" / "voice-detector.pt"


@dataclass(frozen=True)
class DetectorDims(Stored):
    """Network shape: input (n_mels, window_frames) log-mel, `channels` per conv block."""

    n_mels: int = 128
    window_frames: int = 32
    channels: tuple[int, ...] = (8, 16, 32, 32)
    n_classes: int = len(CLASSES)


@dataclass(frozen=True)
class DetectorRule(Stored):
    """Decision thresholds, measured on held-out material (see MODEL_CARD.md).

    threshold: P(voice) above which a frame counts as voiced when segments are chosen;
    singing_threshold and min_voice_s: a recording with under `min_voice_s` seconds of frames
    above `singing_threshold` holds no singing (refused). Choosing wants recall, refusing
    wants precision, hence two thresholds. hop_frames: window hop at inference;
    domain_threshold: domain_score above which audio sounds mixed (below 1 - it, solo).
    music_threshold, min_music_s, min_music_share: a recording declared a finished song is
    music when at least `min_music_s` seconds and `min_music_share` of its frames have
    P(music) = 1 - P(none) above `music_threshold` (`model.refusal`); detector files written
    before these fields load with these defaults.
    """

    threshold: float = 0.5  # P(voice) of a voiced frame when segments are chosen
    singing_threshold: float = 0.7  # P(voice) of a sung frame when deciding on refusal
    min_voice_s: float = 1.0  # seconds of sung frames below which a recording is refused
    hop_frames: int = 16
    domain_threshold: float = 0.5
    music_threshold: float = 0.5  # P(music) of a frame that counts as music
    min_music_s: float = 1.0  # seconds of music frames a finished song needs at least ...
    min_music_share: float = 0.5  # ... and this share of its frames


class MaxPool2x2(nn.Module):
    """`nn.MaxPool2d(2)` (odd last rows and columns dropped) as the maximum of four strided
    views: the same values, about five times faster on the CPU, where the detector runs in
    the indexer's worker processes (torch's CPU max-pool kernel was 30 % of its time)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2] - x.shape[-2] % 2, x.shape[-1] - x.shape[-1] % 2
        top = torch.maximum(x[..., 0:h:2, 0:w:2], x[..., 0:h:2, 1:w:2])
        return torch.maximum(top, torch.maximum(x[..., 1:h:2, 0:w:2], x[..., 1:h:2, 1:w:2]))


class VoiceNet(nn.Module):
    """(batch, n_mels, window_frames) log-mel -> (batch, n_classes) logits.

    Per-band standardisation (buffers fitted on the training set), mel bands averaged in
    pairs, then conv 3x3 / batch norm / ReLU / 2x2 max-pool blocks, global mean and max
    pooling, one linear layer.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, dims: DetectorDims):
        super().__init__()
        self.dims = dims
        self.register_buffer("mean", torch.zeros(dims.n_mels, 1))
        self.register_buffer("std", torch.ones(dims.n_mels, 1))
        blocks: list[nn.Module] = [nn.AvgPool2d((2, 1))]
        c_in = 1
        for i, c in enumerate(dims.channels):
            blocks += [nn.Conv2d(c_in, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU()]
            if i < len(dims.channels) - 1:
                blocks.append(MaxPool2x2())  # parameter-free: state-dict keys unchanged
            c_in = c
        self.body = nn.Sequential(*blocks)
        self.dropout = nn.Dropout(0.2)
        self.head = nn.Linear(2 * c_in, dims.n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.body(((x - self.mean) / self.std).unsqueeze(1)).flatten(2)
        return self.head(self.dropout(torch.cat([h.mean(-1), h.amax(-1)], dim=1)))


def inference_copy(net: VoiceNet) -> VoiceNet:
    """A copy of `net` (in eval mode) that computes the same probabilities faster: each
    convolution with its batch norm folded in (`torch.nn.utils.fusion.fuse_conv_bn_eval`),
    ReLU in place and, on the CPU, channels-last memory, oneDNN's fast layout for these small
    convolutions. On a CPU core, 2.2 times faster over many recordings' windows and 1.2
    times over one clip's, probabilities within 1e-6 (tests/test_voice.py;
    docs/benchmarks/indexing.md). Made once: later changes to `net` do not reach it."""
    fast = copy.deepcopy(net).eval()
    layers: list[nn.Module] = []
    for layer in fast.body:
        if isinstance(layer, nn.BatchNorm2d) and isinstance(layers[-1], nn.Conv2d):
            layers[-1] = fuse_conv_bn_eval(layers[-1], layer)
        else:
            layers.append(nn.ReLU(inplace=True) if isinstance(layer, nn.ReLU) else layer)
    fast.body = nn.Sequential(*layers)
    if next(fast.parameters()).device.type == "cpu":
        fast = fast.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    return fast


def save_detector(
    net: VoiceNet, path: str | Path, features: FeatureConfig, rule: DetectorRule, meta: dict
) -> Path:
    """Write a detector checkpoint atomically (plain types and tensors only)."""
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "classes": list(CLASSES),
        "dims": net.dims.to_dict(),
        "features": features.to_dict(),
        "rule": rule.to_dict(),
        "meta": json.loads(json.dumps(meta)),
        "state_dict": {k: v.detach().cpu().clone() for k, v in net.state_dict().items()},
    }
    return save_payload(payload, path)


class VoiceDetector:
    """A loaded detector: network, feature recipe and decision rule, on one device."""

    def __init__(
        self,
        net: VoiceNet,
        features: FeatureConfig,
        rule: DetectorRule,
        meta: dict,
        detector_id: str = "",
    ):
        self.net = net.eval()
        # What frame_probs runs: the same network, rearranged for inference (`inference_copy`).
        self.runner = inference_copy(self.net)
        self.features = features
        self.rule = rule
        self.meta = meta
        self.detector_id = detector_id

    @classmethod
    def load(
        cls, path: str | Path | None = None, device: str | torch.device = "cpu"
    ) -> VoiceDetector:
        """Load a detector checkpoint (default: the shipped one). Raises CheckpointError."""
        path = Path(path) if path else DEFAULT_VOICE_DETECTOR
        if not path.is_file():
            raise CheckpointError(f"voice detector not found: {path}")
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # torch raises many types for a corrupt or foreign file
            raise CheckpointError(f"{path}: not a readable voice detector ({err})") from err
        if not isinstance(payload, dict) or payload.get("format") != FORMAT:
            raise CheckpointError(f"{path}: not a {FORMAT} checkpoint")
        if payload.get("version", 0) > VERSION:
            raise CheckpointError(f"{path}: detector version {payload['version']} is too new")
        try:
            net = VoiceNet(DetectorDims.from_dict(payload["dims"]))
            net.load_state_dict(payload["state_dict"])
            features = FeatureConfig.from_dict(payload["features"])
            rule = DetectorRule.from_dict(payload.get("rule") or {})
        except (KeyError, RuntimeError, TypeError, ValueError) as err:
            raise CheckpointError(f"{path}: inconsistent voice detector: {err}") from err
        return cls(
            net.to(device), features, rule, dict(payload.get("meta") or {}), checkpoint_id(path)
        )

    def to(self, device: str | torch.device) -> VoiceDetector:
        """This detector on `device`: itself when it is there already, else a copy."""
        if next(self.net.parameters()).device == torch.device(device):
            return self
        net = copy.deepcopy(self.net).to(device)
        return VoiceDetector(net, self.features, self.rule, self.meta, self.detector_id)

    def frame_probs(self, mel: torch.Tensor, batch_size: int = 512) -> np.ndarray:
        """Log-mel (n_mels, frames) of `self.features` -> class probabilities (frames, 4).

        Windows of `window_frames` every `rule.hop_frames` frames (the last one flush with the
        end); each frame gets the mean of the windows that cover it. A recording shorter than
        one window is classified as one zero-padded window.
        """
        return self.frame_probs_many([mel], batch_size=batch_size)[0]

    @torch.inference_mode()
    def frame_probs_many(
        self, mels: Sequence[torch.Tensor], split: Split | None = None, batch_size: int = 512
    ) -> list[np.ndarray]:
        """`frame_probs` of several recordings, their windows run through the network
        together, `batch_size` at a time, with one copy of the probabilities to the host: on
        a GPU, one recording's few windows per pass would leave it idle between launches.
        Windows are gathered batch by batch, never all at once (bounded memory); with a
        `split`, up to `split.parts` smaller batches run at once."""
        w, hop = self.net.dims.window_frames, self.rule.hop_frames
        dev = next(self.net.parameters()).device
        views, picks, lengths = [], [], []
        for mel in mels:
            lengths.append(mel.shape[-1])
            mel = mel.to(dev, torch.float32)
            if mel.shape[-1] < w:
                mel = torch.nn.functional.pad(mel, (0, w - mel.shape[-1]))
            starts = list(range(0, max(1, mel.shape[-1] - w + 1), hop))
            if starts[-1] != mel.shape[-1] - w:
                starts.append(mel.shape[-1] - w)
            views.append(mel.unfold(-1, w, 1).permute(1, 0, 2))  # (positions, n_mels, w)
            picks.append(np.asarray(starts))
        offsets = np.cumsum([0] + [len(s) for s in picks])
        total, k = int(offsets[-1]), 1 if split is None else split.parts
        step = max(1, min(batch_size, -(-total // k)))

        def windows(a: int) -> torch.Tensor:  # windows a ... a + step of all recordings
            b, parts = min(a + step, total), []
            for f in range(int(np.searchsorted(offsets, a, side="right")) - 1, len(views)):
                if offsets[f] >= b:
                    break
                lo, hi = max(a, offsets[f]) - offsets[f], min(b, offsets[f + 1]) - offsets[f]
                parts.append(views[f][torch.from_numpy(picks[f][lo:hi]).to(dev)])
            return parts[0] if len(parts) == 1 else torch.cat(parts)

        out: list[torch.Tensor] = []
        starts = list(range(0, total, step))
        for g in range(0, len(starts), k):  # k batches at a time, at once with a split
            calls = [(windows(a),) for a in starts[g : g + k]]
            out += in_pieces(self._probs, calls, split)
        probs = torch.cat(out).cpu().numpy()
        return [
            _cover_mean(probs[offsets[f] : offsets[f + 1]], picks[f], w, n)
            for f, n in enumerate(lengths)
        ]

    @torch.inference_mode()  # thread-local: a split's helper threads need it too
    def _probs(self, windows: torch.Tensor) -> torch.Tensor:
        """(n, n_mels, window_frames) windows -> (n, 4) class probabilities, float32."""
        return self.runner(windows).softmax(-1).float()

    def voice_probability(self, probs: np.ndarray) -> np.ndarray:
        """(frames, 4) class probabilities -> (frames,) P(singing voice, solo or mixed)."""
        return probs[:, SOLO] + probs[:, MIXTURE]

    def domain_probability(self, probs: np.ndarray) -> np.ndarray:
        """(frames, 4) class probabilities -> (frames,) P(mixture | voice)."""
        return probs[:, MIXTURE] / np.maximum(probs[:, SOLO] + probs[:, MIXTURE], 1e-9)

    def music_probability(self, probs: np.ndarray) -> np.ndarray:
        """(frames, 4) class probabilities -> (frames,) P(music: voice or instruments), that
        is 1 - P(none); `none` is silence, noise, tones and DC."""
        return 1.0 - probs[:, NONE]


def _cover_mean(probs: np.ndarray, starts: np.ndarray, w: int, n: int) -> np.ndarray:
    """Window probabilities (windows, 4) at `starts` -> per-frame means over the windows that
    cover each of the first `n` frames (frames, 4) float32, by cumulative sums."""
    size = max(n, w) + 1
    total = np.zeros((size, probs.shape[1]))
    count = np.zeros(size)
    np.add.at(total, starts, probs)
    np.add.at(total, starts + w, -probs)
    np.add.at(count, starts, 1.0)
    np.add.at(count, starts + w, -1.0)
    return (np.cumsum(total, 0)[:n] / np.cumsum(count)[:n, None]).astype(np.float32)
