"""A pretrained speaker encoder: Resemblyzer's GE2E (Wan et al., ICASSP 2018), in batches.

It is the distillation teacher in training and, in a fused checkpoint, the second opinion
beside the CROSS encoders (`model.embedding.Embedder`: a segment's vector is the weighted
concatenation of both).

The network (3-layer LSTM 40 -> 256, linear 256 -> 256, ReLU, L2 norm) and its front end
(resampling to 16 kHz, volume normalisation, 40-band power mel with a 25-ms Hann window and a
10-ms hop, all in torch on the encoder's device) are re-implemented here against the
state dict that ships inside the `resemblyzer` package (`pretrained.pt`, Apache-2.0), so that
whole batches of crops run at once and the package's VAD dependency (webrtcvad) is not needed:
the weights file is located without importing the package. `tests/test_distill.py` checks
parity with `resemblyzer.VoiceEncoder.embed_utterance` where the package imports.

An utterance is cut into 1.6-s partials (160 frames) at `rate` partials per second, exactly as
`VoiceEncoder.compute_partial_slices` does; its embedding is the L2-normalised mean of the
partial embeddings.
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
from pathlib import Path

import numpy as np
import torch
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from scipy.fft import next_fast_len
from torch import nn

from model.features import hann_window, mel_basis
from model.speaker_precision import lowered, lstm_dtype
from model.vectors import l2_normalize

SAMPLE_RATE = 16000
N_MELS = 40
WINDOW = 400  # 25 ms
HOP = 160  # 10 ms
PARTIAL_FRAMES = 160  # 1.6 s
EMBED_DIM = 256
TARGET_DBFS = -30.0  # volume normalisation (increase only), as resemblyzer.preprocess_wav


WEIGHTS_ENV = "SINGER_SPEAKER_WEIGHTS"  # SpeakerSettings.weights


class SpeakerSettings(BaseSettings):
    """Where the encoder's weights come from, read from the environment when a checkpoint
    is loaded (service, indexer and CLI alike)."""

    model_config = SettingsConfigDict(
        env_prefix="SINGER_SPEAKER_", env_ignore_empty=True, extra="ignore"
    )

    weights: Path | None = Field(
        None,
        description="SINGER_SPEAKER_WEIGHTS: a file of the encoder's weights alone "
        '(`{"model_state": ...}`, as `export_weights` writes it, 5.7 MB) instead of the '
        "resemblyzer package's `pretrained.pt` (16 MB with the optimiser state): what a "
        "machine without the package carries",
    )


def weights_path() -> Path:
    """The weights file: `SpeakerSettings().weights` ($SINGER_SPEAKER_WEIGHTS), else
    `pretrained.pt` inside the installed resemblyzer package (the package is not imported)."""
    override = SpeakerSettings().weights
    if override is not None:
        if not override.is_file():
            raise FileNotFoundError(f"{WEIGHTS_ENV}={override}: no such file")
        return override
    spec = importlib.util.find_spec("resemblyzer")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "the speaker encoder's weights ship in the `resemblyzer` package: "
            "pip install --no-deps -r requirements/speaker.txt"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "pretrained.pt"
    if not path.is_file():
        raise FileNotFoundError(f"resemblyzer is installed but {path} is missing")
    return path


def model_state(path: str | Path | None = None) -> dict[str, torch.Tensor]:
    """The encoder's tensors from a weights file (default: `weights_path()`), on the CPU;
    GE2E's training-only similarity scale and bias are left out."""
    state = torch.load(path or weights_path(), map_location="cpu", weights_only=True)
    return {k: v for k, v in state["model_state"].items() if not k.startswith("similarity")}


def state_digest(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 (hex) of the encoder's tensors (names, shapes and float32 bytes, sorted by
    name): which weights a fused checkpoint was made with, whichever file holds them."""
    h = hashlib.sha256()
    for name, tensor in sorted(state.items()):
        h.update(f"{name}{tuple(tensor.shape)}".encode())
        h.update(tensor.float().contiguous().numpy().tobytes())
    return h.hexdigest()


def weights_digest(path: str | Path | None = None) -> str:
    """`state_digest` of a weights file (default: `weights_path()`)."""
    return state_digest(model_state(path))


def export_weights(out: str | Path) -> Path:
    """Write the encoder's weights alone to `out` (for $SINGER_SPEAKER_WEIGHTS), atomically."""
    from model.checkpoint import save_payload

    return save_payload({"model_state": model_state()}, out)


class GE2E(nn.Module):
    """Power mel (batch, frames, 40) -> L2-normalised embedding (batch, 256), values >= 0."""

    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(N_MELS, 256, 3, batch_first=True)
        self.linear = nn.Linear(256, EMBED_DIM)

    def forward(self, mels: torch.Tensor) -> torch.Tensor:
        _, (hidden, _) = self.lstm(mels)
        return self.head(hidden[-1])

    def head(self, hidden: torch.Tensor) -> torch.Tensor:
        """The LSTM's last hidden state (batch, 256) -> the embedding (batch, 256)."""
        return nn.functional.normalize(torch.relu(self.linear(hidden)), dim=1)


def power_mel(wav: torch.Tensor) -> torch.Tensor:
    """(batch, samples) at 16 kHz -> (batch, frames, 40); librosa.feature.melspectrogram's
    defaults (centred frames, zero padding, power 2), frames = 1 + samples // 160."""
    window = hann_window(WINDOW, wav.device)
    spec = torch.stft(
        wav, WINDOW, HOP, window=window, center=True, pad_mode="constant", return_complex=True
    )
    # The mel filters and window stay on the device (one copy each, not one per batch).
    basis = mel_basis(SAMPLE_RATE, WINDOW, N_MELS, 0.0, None, wav.device)
    return torch.matmul(basis, spec.abs() ** 2).transpose(1, 2)


def partial_starts(n_samples: int, rate: float = 1.3, min_coverage: float = 0.75) -> np.ndarray:
    """Start frames of the 160-frame partials of an utterance of `n_samples` (16 kHz), as
    `VoiceEncoder.compute_partial_slices` (the last partial is kept when it covers >=
    min_coverage of its span with audio; at least one partial)."""
    n_frames = int(np.ceil((n_samples + 1) / HOP))
    step = round(SAMPLE_RATE / rate / HOP)
    starts = np.arange(0, max(1, n_frames - PARTIAL_FRAMES + step + 1), step)
    coverage = (n_samples - starts[-1] * HOP) / (PARTIAL_FRAMES * HOP)
    if coverage < min_coverage and len(starts) > 1:
        starts = starts[:-1]
    return starts


def fft_resample(wav: torch.Tensor, orig_sr: int, sr: int = SAMPLE_RATE) -> torch.Tensor:
    """(..., n) at orig_sr -> (..., ceil(n * sr / orig_sr)) at sr, on wav's device.

    Band-limited by truncating the spectrum. The signal is zero-extended first (to a multiple
    of the rates' ratio, plus at least ten periods of it) so the FFT's wrap-around falls into
    silence, as a streaming resampler assumes silence beyond the ends. The number of periods
    is rounded up to one with no prime factor above 5 (`scipy.fft.next_fast_len`): both FFT
    lengths are then products of small primes (3-s crops at 22.05 kHz: 70,560 and 51,200
    points, not 70,119 = 3^3 7^2 53), which made the resampling 14 times faster on a CPU core
    and moves the speaker vectors by under 1e-5 cosine (docs/benchmarks/indexing.md). Why not
    soxr: it runs on the host only, in the thread that feeds the GPU; on an H100 the fused
    default's indexing kept 16-22 % of its decode floor with it and 42-59 % with this
    (README, GPU figures). Against soxr_hq the speaker embeddings keep a cosine above 0.99999.
    """
    if orig_sr == sr:
        return wav
    g = math.gcd(orig_sr, sr)
    down, up = orig_sr // g, sr // g
    n = wav.shape[-1]
    periods = next_fast_len(-(-n // down) + 10, real=True)
    padded, out = periods * down, periods * up
    rows = wav.reshape(-1, n)
    if len(rows) == 1:
        # MKL rounds a lone transform differently (1e-7) from the same row in a batch, and
        # the bfloat16 LSTM after it (`model.speaker_precision`) turns that into 1e-3: a
        # crop is transformed as one of two, so its vector is the same in any batch.
        rows = rows.repeat(2, 1)
    spectrum = torch.fft.rfft(rows, n=padded)[..., : out // 2 + 1]
    y = torch.fft.irfft(spectrum, n=out)[: wav[..., :1].numel()] * (out / padded)
    return y.reshape(*wav.shape[:-1], out)[..., : resampled_length(n, orig_sr, sr)]


def normalize_volume(wav: torch.Tensor) -> torch.Tensor:
    """Raise the level of each signal (..., samples) to TARGET_DBFS RMS (never lower it), as
    resemblyzer does; the mean square is accumulated in float64."""
    level = wav.double().square().mean(dim=-1, keepdim=True).sqrt()
    change = TARGET_DBFS - 20.0 * torch.log10(level.clamp_min(1e-20))
    gain = torch.where((change > 0) & (level > 0), 10.0 ** (change / 20.0), 1.0)
    return (wav * gain).float()


def front_end(wav: torch.Tensor, sr: int, min_samples: int = 0) -> torch.Tensor:
    """Waveforms (batch, samples) at `sr` -> 16 kHz, volume-normalised, zero-padded to at
    least `min_samples`: the network's input before `power_mel`, on wav's device."""
    y = normalize_volume(fft_resample(wav.float(), sr))
    return nn.functional.pad(y, (0, max(0, min_samples - y.shape[-1])))


def resampled_length(n_samples: int, orig_sr: int, sr: int = SAMPLE_RATE) -> int:
    """Samples at `sr` of `n_samples` at `orig_sr`, rounded up, as `fft_resample` gives them
    (and soxr)."""
    g = math.gcd(orig_sr, sr)
    return -(-n_samples * (sr // g) // (orig_sr // g))


class SpeakerEncoder:
    """GE2E with the packaged weights, on `device`, in eval mode; optionally other weights of
    the same network for some domains (`domain_states`, e.g. {"mixed": a copy tuned for
    finished songs, `model.training.speaker_tune`}), used by `embed_crops(..., domain=)`.

    `precision`: `float32`, or `auto` (the served model's, `model.fusion.load_speaker`): the
    LSTM in bfloat16 on a CPU that has it natively (`model.speaker_precision`). `net` and
    `domain_nets` stay float32 whichever runs."""

    def __init__(
        self,
        device: str | torch.device = "cpu",
        path: str | Path | None = None,
        domain_states: dict[str, dict[str, torch.Tensor]] | None = None,
        precision: str = "float32",
    ):
        state = model_state(path)
        self.digest = state_digest(state)  # the weights, read once (`weights_digest`)
        self.net = GE2E()
        self.net.load_state_dict(state)
        self.device = torch.device(device)
        self.net.to(self.device).eval()
        self.domain_nets: dict[str, GE2E] = {}
        for domain, weights in (domain_states or {}).items():
            net = GE2E()
            net.load_state_dict(weights)
            self.domain_nets[domain] = net.to(self.device).eval()
        self.lstm_dtype = lstm_dtype(self.device, precision)
        # The LSTM each network runs in `lstm_dtype`, made once (requests share them).
        self._lstms = {
            id(net): lowered(net.lstm, self.lstm_dtype)
            for net in (self.net, *self.domain_nets.values())
        }

    def net_for(self, domain: str | None) -> GE2E:
        """The network that embeds `domain`'s crops: its own weights, else the packaged."""
        return self.domain_nets.get(domain, self.net) if domain else self.net

    def run(self, net: GE2E, mels: torch.Tensor) -> torch.Tensor:
        """`net` (this encoder's) on (n, 160, 40) float32 mels -> (n, 256) float32 partial
        embeddings, its LSTM in `lstm_dtype` (the rest in float32)."""
        if self.lstm_dtype == torch.float32:
            return net(mels)
        _, (hidden, _) = self._lstms[id(net)](mels.to(self.lstm_dtype))
        return net.head(hidden[-1].float())

    def partial_mels(
        self, wav: np.ndarray, sr: int, rate: float = 1.3, max_partials: int | None = None
    ) -> tuple[torch.Tensor, np.ndarray]:
        """The partials of one utterance as network input: ((n, 160, 40) mels, start samples
        at `sr` (n,)). Resampled to 16 kHz and volume-normalised first. max_partials: keep at
        most this many, evenly spaced (None: all)."""
        starts = partial_starts(resampled_length(len(wav), sr), rate)
        if max_partials is not None and len(starts) > max_partials:
            starts = starts[np.linspace(0, len(starts) - 1, max_partials).round().astype(int)]
        y = front_end(torch.as_tensor(wav)[None], sr, (starts[-1] + PARTIAL_FRAMES) * HOP)
        mel = power_mel(y)[0]
        mels = torch.stack([mel[s : s + PARTIAL_FRAMES] for s in starts])
        return mels, np.round(starts * HOP * sr / SAMPLE_RATE).astype(np.int64)

    @torch.no_grad()
    def embed_mels(self, mels: torch.Tensor, batch_size: int = 512) -> np.ndarray:
        """(n, 160, 40) partial mels -> (n, 256) float32; large batches keep the LSTM's
        per-step cost small on a CPU."""
        out = [
            self.run(self.net, mels[i : i + batch_size].to(self.device)).cpu()
            for i in range(0, len(mels), batch_size)
        ]
        return torch.cat(out).numpy().astype(np.float32)

    def partials(
        self, wav: np.ndarray, sr: int, rate: float = 1.3, max_partials: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Embeddings of the partials of one utterance ((n, 256), start samples at `sr`)."""
        mels, starts = self.partial_mels(wav, sr, rate, max_partials)
        return self.embed_mels(mels), starts

    def embed(self, wav: np.ndarray, sr: int, rate: float = 1.3) -> np.ndarray:
        """Utterance embedding (256,): normalised mean of its partials' embeddings."""
        return l2_normalize(self.partials(wav, sr, rate)[0].mean(axis=0)).astype(np.float32)

    @torch.no_grad()
    def embed_crops(
        self,
        crops: np.ndarray | torch.Tensor,
        sr: int,
        rate: float = 1.3,
        batch_size: int | None = None,
        domain: str | None = None,
    ) -> np.ndarray:
        """Equal-length crops (batch, samples) at `sr`, on the host or a device -> (batch, 256)
        float32 utterance embeddings, each as `embed` would give it. The whole front end runs
        on this encoder's device, `batch_size` crops per pass (default 64 on a CPU, 512 on a
        GPU). `domain`: the crops' domain, for weights of its own (`net_for`)."""
        crops = torch.as_tensor(crops)
        if len(crops) == 0:
            return np.zeros((0, EMBED_DIM), np.float32)
        if batch_size is None:
            batch_size = 64 if self.device.type == "cpu" else 512
        starts = partial_starts(resampled_length(crops.shape[1], sr), rate)
        stop = (starts[-1] + PARTIAL_FRAMES) * HOP
        net = self.net_for(domain)
        out = []
        for i in range(0, len(crops), batch_size):
            mel = power_mel(front_end(crops[i : i + batch_size].to(self.device), sr, stop))
            parts = torch.stack([mel[:, s : s + PARTIAL_FRAMES] for s in starts], dim=1)
            emb = self.run(net, parts.flatten(0, 1)).reshape(len(mel), len(starts), -1).mean(1)
            out.append(nn.functional.normalize(emb, dim=1).cpu())
        return torch.cat(out).numpy().astype(np.float32)
