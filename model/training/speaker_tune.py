"""A copy of the GE2E speaker encoder tuned for finished songs, by distillation from itself.

The served model's speaker encoder (`model.speaker`, trained on clean speech) carries 0.9 of
every score, and under a dense, mastered band it mostly hears the band. Its copy for the
mixed domain is tuned here: for the same 1.6-s partial, the student hears the mix and must
give what the frozen teacher gives for the clean vocal take alone (1 - cosine); on a share
of each batch the student hears the clean take itself and must keep the teacher's answer
(so what it knew of voices stays). Only the top LSTM layer(s) and the linear layer learn
(`TuneConfig.tuned_layers`); the lower layers stay the teacher's, which also makes a step
about 2.5 times cheaper on a CPU. The monophonic branch keeps the original encoder, so a
vocal take and a song still meet in one space.

Material (`TunePairs`): studio mixes of the training takes (`python -m model studio-mix
--split train`: each mix's `source`, `offset_s` and length give its clean take), and mixes
made on the fly: MIR-1K training vocals over their own karaoke accompaniment, at a
vocal-to-accompaniment ratio drawn from `karaoke_snr_db`. Everything at the encoder's 16
kHz, resampled as at inference (`model.speaker.fft_resample` from the model's 22.05 kHz);
each example is a 2.97-s segment, volume-normalised as `SpeakerEncoder.embed_crops` does,
and one of its three partials.

`tune_speaker` writes `speaker-mixed.pt` ({"model_state": GE2E state dict}, the format of
`model.speaker.export_weights`), resumable from `state.pt` (every `save_every` steps).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from model.audio import SAMPLE_RATE, load_audio
from model.features import FeatureConfig
from model.files import atomic_write_text
from model.manifest import ManifestRow
from model.mixing import mix_at_snr
from model.speaker import (
    GE2E,
    HOP,
    PARTIAL_FRAMES,
    fft_resample,
    front_end,
    model_state,
    partial_starts,
    power_mel,
    resampled_length,
)
from model.speaker import SAMPLE_RATE as SPEAKER_RATE

log = logging.getLogger(__name__)


@dataclass
class TuneConfig:
    """Options of `tune_speaker`."""

    seed: int = 0  # random seed (examples, order)
    steps: int = 1200  # optimiser steps
    batch_size: int = 48  # partials per step
    lr: float = 1e-4  # Adam learning rate
    tuned_layers: int = 1  # top LSTM layers that learn (with the linear layer); 1 to 3
    keep_share: float = 0.25  # share of each batch that hears the clean take (keep term)
    studio_share: float = 0.75  # share of the mixed examples from studio mixes, else karaoke
    karaoke_snr_low: float = -5.0  # vocal-to-accompaniment ratio of the karaoke mixes, dB
    karaoke_snr_high: float = 10.0
    min_voiced: float = 0.5  # share of a partial's frames the clean take must voice
    save_every: int = 100  # steps between resumable states

    def to_dict(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------------------------------------
# The student: GE2E split at a layer


class SplitGE2E(nn.Module):
    """GE2E as frozen lower LSTM layers, then trainable upper layers and the linear layer:
    the same function as `model.speaker.GE2E` with the same weights."""

    def __init__(self, state: dict[str, torch.Tensor], tuned_layers: int = 1):
        super().__init__()
        if not 1 <= tuned_layers <= 3:
            raise ValueError("tuned_layers: 1 to 3")
        n_low = 3 - tuned_layers
        self.low = nn.LSTM(40, 256, n_low, batch_first=True) if n_low else None
        self.top = nn.LSTM(40 if not n_low else 256, 256, tuned_layers, batch_first=True)
        self.linear = nn.Linear(256, 256)
        for name, t in state.items():
            part, _, rest = name.partition(".")
            if part == "linear":
                getattr(self.linear, rest).data.copy_(t)
                continue
            layer = int(rest.rsplit("_l", 1)[1])
            base = rest.rsplit("_l", 1)[0]
            if self.low is not None and layer < n_low:
                getattr(self.low, f"{base}_l{layer}").data.copy_(t)
            else:
                getattr(self.top, f"{base}_l{layer - n_low}").data.copy_(t)
        if self.low is not None:
            self.low.requires_grad_(False)

    def lower(self, mels: torch.Tensor) -> torch.Tensor:
        """(batch, frames, 40) power mel -> the frozen layers' output (no gradient)."""
        if self.low is None:
            return mels
        with torch.no_grad():
            return self.low(mels)[0]

    def upper(self, h: torch.Tensor) -> torch.Tensor:
        """The lower layers' output -> L2-normalised embedding (batch, 256)."""
        _, (hidden, _) = self.top(h)
        return nn.functional.normalize(torch.relu(self.linear(hidden[-1])), dim=1)

    def forward(self, mels: torch.Tensor) -> torch.Tensor:
        return self.upper(self.lower(mels))

    def ge2e_state(self) -> dict[str, torch.Tensor]:
        """The weights under `GE2E`'s names (what `model.speaker.SpeakerEncoder` loads)."""
        n_low = 0 if self.low is None else self.low.num_layers
        out = {}
        for module, shift in ((self.low, 0), (self.top, n_low)):
            if module is None:
                continue
            for name, t in module.state_dict().items():
                base, layer = name.rsplit("_l", 1)
                out[f"lstm.{base}_l{int(layer) + shift}"] = t.detach().clone()
        for name, t in self.linear.state_dict().items():
            out[f"linear.{name}"] = t.detach().clone()
        return out


# ---------------------------------------------------------------------------------------------
# Material


def _to_speaker_rate(y: np.ndarray, sr: int) -> np.ndarray:
    return fft_resample(torch.from_numpy(np.ascontiguousarray(y, np.float32)), sr).numpy()


@dataclass
class Pair:
    """A clean take and its mix (None: mixed on the fly over `backing`), float16 at 16 kHz,
    and the partial starts (samples) where the take is voiced."""

    dry: np.ndarray
    mix: np.ndarray | None
    backing: np.ndarray | None
    starts: np.ndarray


def voiced_partials(dry: np.ndarray, min_voiced: float, top_db: float = 35.0) -> np.ndarray:
    """Start samples (every 10 ms hop x 10) of the partials of `dry` (16 kHz) whose 10-ms
    frames are within `top_db` of the loudest frame for at least `min_voiced` of them."""
    n = len(dry) // HOP
    if n < PARTIAL_FRAMES:
        return np.zeros(0, np.int64)
    frames = dry[: n * HOP].astype(np.float32).reshape(n, HOP)
    level = 10 * np.log10(np.mean(frames**2, axis=1) + 1e-12)
    on = (level > level.max() - top_db).astype(np.float64)
    share = np.convolve(on, np.ones(PARTIAL_FRAMES) / PARTIAL_FRAMES, "valid")
    starts = np.flatnonzero(share >= min_voiced)[::10]
    return starts.astype(np.int64) * HOP


class TunePairs:
    """The tuning material in memory (module docstring)."""

    def __init__(self, min_voiced: float = 0.5):
        self.min_voiced = min_voiced
        self.studio: list[Pair] = []
        self.karaoke: list[Pair] = []

    def _pair(
        self, dry: np.ndarray, mix: np.ndarray | None, backing: np.ndarray | None
    ) -> Pair | None:
        dry16 = _to_speaker_rate(dry, SAMPLE_RATE)
        starts = voiced_partials(dry16, self.min_voiced)
        if len(starts) == 0:
            return None
        to16 = lambda y: None if y is None else _to_speaker_rate(y, SAMPLE_RATE).astype(np.float16)
        return Pair(dry16.astype(np.float16), to16(mix), to16(backing), starts)

    def load(
        self,
        studio_rows: Sequence[ManifestRow],
        karaoke: Sequence[tuple[str, str]] = (),
        progress: bool = False,
    ) -> TunePairs:
        """Decode studio mixes (manifest rows of the generator) with their clean takes, and
        (vocal, accompaniment) file pairs for karaoke mixes."""
        from tqdm import tqdm

        takes: dict[str, np.ndarray] = {}
        for r in tqdm(studio_rows, desc="studio pairs", unit="mix", disable=not progress):
            mix = load_audio(r.path, SAMPLE_RATE)
            source = str(r.source)
            if source not in takes:
                takes.clear()  # rows come source by source: keep one decoded take
                takes[source] = load_audio(source, SAMPLE_RATE)
            start = round(float(r.extra.get("offset_s") or 0) * SAMPLE_RATE)
            dry = takes[source][start : start + len(mix)]
            n = min(len(dry), len(mix))
            pair = self._pair(dry[:n], mix[:n], None)
            if pair is not None:
                self.studio.append(pair)
        for vocal, acc in tqdm(karaoke, desc="karaoke pairs", unit="clip", disable=not progress):
            v, a = load_audio(vocal, SAMPLE_RATE), load_audio(acc, SAMPLE_RATE)
            n = min(len(v), len(a))
            pair = self._pair(v[:n], None, a[:n])
            if pair is not None:
                self.karaoke.append(pair)
        log.info("tuning pairs: %d studio, %d karaoke", len(self.studio), len(self.karaoke))
        if not self.studio and not self.karaoke:
            raise ValueError("no tuning material with a voiced partial")
        return self


def studio_rows(manifest: str | Path) -> list[ManifestRow]:
    """The rows of a training studio-mix manifest. Raises ValueError for another split."""
    from model.manifest import read_manifest

    rows = read_manifest(manifest)
    if any(r.extra.get("split") != "train" for r in rows):
        raise ValueError(f"{manifest}: not the training split of the studio mixes")
    return rows


def karaoke_files(
    data_dir: str | Path, leave_out: Sequence[str] | None = None
) -> list[tuple[str, str]]:
    """(vocal, accompaniment) files of the MIR-1K clips of the training singers: all but
    `leave_out` (default: the default's held-out and validation singers)."""
    from model.training.studio_sources import HOLDOUT, VAL_SINGERS, mir1k_sources

    out = []
    left = (*HOLDOUT, *VAL_SINGERS) if leave_out is None else tuple(leave_out)
    for src in mir1k_sources(data_dir, None, left):
        out.append((src.path, src.path.replace("/vocals/", "/accompaniment/")))
    return out


def segment_length() -> int:
    """Samples at 16 kHz of one model segment (what `embed_crops` gets at inference)."""
    return resampled_length(FeatureConfig().min_samples, SAMPLE_RATE, SPEAKER_RATE)


def draw_batch(
    pairs: TunePairs, cfg: TuneConfig, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor, np.ndarray, np.ndarray]:
    """(clean segments, input segments) (batch, segment_length()) float32 at 16 kHz, the
    partial index of each (0-2, the partial the loss looks at) and whether the input is the
    clean take itself (keep term)."""
    length = segment_length()
    offsets = partial_starts(length) * HOP  # the partials of one segment, in samples
    clean, heard, which, keep = [], [], [], []
    for _ in range(cfg.batch_size):
        is_keep = rng.random() < cfg.keep_share
        studio = bool(pairs.studio) and (not pairs.karaoke or rng.random() < cfg.studio_share)
        pool = pairs.studio if studio else pairs.karaoke
        pair = pool[int(rng.integers(len(pool)))]
        p = int(rng.integers(len(offsets)))
        partial = int(rng.choice(pair.starts))
        start = int(np.clip(partial - offsets[p], 0, max(0, len(pair.dry) - length)))
        p = int(np.argmin(np.abs(start + offsets - partial)))  # after clipping at the edges
        dry = pair.dry[start : start + length].astype(np.float32)
        if is_keep:
            x = dry
        elif pair.mix is not None:
            x = pair.mix[start : start + length].astype(np.float32)
        else:
            assert pair.backing is not None
            acc = pair.backing[start : start + length].astype(np.float32)
            x = mix_at_snr(dry, acc, float(rng.uniform(cfg.karaoke_snr_low, cfg.karaoke_snr_high)))
        pad = length - len(dry)
        clean.append(np.pad(dry, (0, pad)))
        heard.append(np.pad(x, (0, pad)))
        which.append(p)
        keep.append(is_keep)
    return (
        torch.from_numpy(np.stack(clean)),
        torch.from_numpy(np.stack(heard)),
        np.asarray(which),
        np.asarray(keep),
    )


def partial_mels(segments: torch.Tensor, which: np.ndarray) -> torch.Tensor:
    """Segments (batch, samples) at 16 kHz -> the chosen partial's power mel of each (batch,
    160, 40), the segment volume-normalised and padded first (as `embed_crops`)."""
    firsts = partial_starts(segments.shape[1])
    stop = (int(firsts[-1]) + PARTIAL_FRAMES) * HOP  # zero-padded to the last partial's end
    mel = power_mel(front_end(segments, SPEAKER_RATE, stop))
    return torch.stack(
        [mel[i, firsts[w] : firsts[w] + PARTIAL_FRAMES] for i, w in enumerate(which)]
    )


# ---------------------------------------------------------------------------------------------
# Training


def tune_speaker(
    pairs: TunePairs, cfg: TuneConfig, out_dir: str | Path, progress: bool = False
) -> Path:
    """Tune a copy of the speaker encoder on `pairs` (module docstring); resumes from
    `out_dir/state.pt`. Returns `out_dir/speaker-mixed.pt`."""
    from tqdm import tqdm

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    state = model_state()
    teacher = GE2E()
    teacher.load_state_dict(state)
    teacher.eval().requires_grad_(False)
    student = SplitGE2E(state, cfg.tuned_layers)
    params = [p for p in student.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=cfg.lr)
    rng = np.random.default_rng(cfg.seed)
    step, history = 0, []
    saved = out / "state.pt"
    if saved.is_file():
        s = torch.load(saved, map_location="cpu", weights_only=True)
        if s["config"] != cfg.to_dict():
            raise ValueError(f"{saved} was written with another configuration; use a new --out")
        student.load_state_dict(s["student"])
        opt.load_state_dict(s["opt"])
        rng.bit_generator.state = json.loads(s["rng"])
        step, history = int(s["step"]), json.loads(s["history"])
        log.info("resumed after step %d", step)
    student.train()
    t0, recent = time.perf_counter(), []
    bar = tqdm(total=cfg.steps, initial=step, desc="speaker tune", disable=not progress)
    while step < cfg.steps:
        clean, heard, which, keep = draw_batch(pairs, cfg, rng)
        with torch.no_grad():
            target = teacher(partial_mels(clean, which))
        got = student(partial_mels(heard, which))
        cos = (got * target).sum(dim=1)
        loss = (1.0 - cos).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        keep_t = torch.from_numpy(keep)
        cos = cos.detach()
        mix_cos = float(cos[~keep_t].mean()) if (~keep_t).any() else float("nan")
        recent.append((float(loss.detach()), mix_cos))
        bar.update(1)
        if step % 25 == 0 or step == cfg.steps:
            loss_m, cos_m = np.nanmean(np.asarray(recent), axis=0)
            history.append(
                {
                    "step": step,
                    "loss": round(float(loss_m), 5),
                    "mix_cos": round(float(cos_m), 4),
                    "seconds": round(time.perf_counter() - t0, 1),
                }
            )
            bar.set_postfix(loss=f"{loss_m:.4f}", mix_cos=f"{cos_m:.3f}")
            recent = []
        if step % cfg.save_every == 0 or step == cfg.steps:
            _save(out, student, opt, rng, step, history, cfg)
    bar.close()
    weights = out / "speaker-mixed.pt"
    from model.checkpoint import save_payload

    save_payload({"model_state": student.ge2e_state(), "tune_config": cfg.to_dict()}, weights)
    atomic_write_text(out / "history.json", json.dumps(history, indent=1))
    return weights


def _save(
    out: Path,
    student: SplitGE2E,
    opt: torch.optim.Optimizer,
    rng: np.random.Generator,
    step: int,
    history: list,
    cfg: TuneConfig,
) -> None:
    from model.checkpoint import save_payload

    save_payload(
        {
            "config": cfg.to_dict(),
            "student": student.state_dict(),
            "opt": opt.state_dict(),
            "rng": json.dumps(rng.bit_generator.state),
            "step": step,
            "history": json.dumps(history),
        },
        out / "state.pt",
    )
    atomic_write_text(out / "history.json", json.dumps(history, indent=1))
