"""Training: classification pre-training, then metric learning (paper, sections 3.2.2-3.2.3).

`train(config, rows, val_rows, backgrounds, out_dir)` is the library entry point; the CLI
`python -m model train` is a thin layer over it. Each epoch writes a resumable state file
(`state.pt`, weights_only-loadable) and the checkpoints `last.pt` and `best.pt` (best mean
validation singer-ID accuracy over the three scenarios on held-out singers).

Model types (which branch sees which domain):
- cross: anchors monophonic through the mono branch; positives/negatives mixed, mixed branch;
- mono: everything monophonic, one shared encoder; mixed: everything mixed, shared encoder.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from model.checkpoint import save_checkpoint
from model.devices import resolve_device
from model.domains import DOMAINS, SCENARIOS
from model.errors import AudioError
from model.features import FeatureConfig, log_mel
from model.manifest import ManifestRow
from model.mixing import nominal_mix
from model.network import EncoderDims, SingerNet
from model.segment_selection import extract_segments
from model.track_embedding import track_vector
from model.training.data import MixConfig, TrainingPool
from model.training.losses import hinge_rank_loss, in_batch_hinge_loss

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """Everything that defines a training run; recorded in the checkpoint's meta."""

    model_type: str = "cross"
    seed: int = 0  # random seed (data order, crops, weights)
    batch_size: int = 32  # anchors per step
    negatives: str = "random"  # "random": n_negatives drawn per anchor (paper); "in-batch": hardest
    n_negatives: int = 4  # negatives per anchor in the rank loss
    margin: float = 0.1  # hinge margin of the rank loss, in cosine
    lr: float = 1e-3  # Adam learning rate (the peak with lr_schedule cosine)
    weight_decay: float = 1e-4
    pretrain_epochs: int = 4  # classification pre-training epochs (the head is dropped after)
    epochs: int = 12  # metric-learning epochs
    steps_per_epoch: int = 100  # optimiser steps per epoch
    speeds: tuple[float, ...] = (1.0,)  # pseudo-singers by speed perturbation
    spec_augment: bool = False
    # weight of the distillation term (cosine to the teacher's embedding through a learned
    # projection, model.training.distill) beside the classification and rank losses; 0: off
    distill_weight: float = 0.0
    # weight of the classification / rank loss; 0 (with distill_weight > 0): distillation alone
    rank_weight: float = 1.0
    # "linear": the student's embedding meets the teacher's through a learned projection;
    # "identity": directly (the student's space becomes the teacher's; embed_dim must match)
    distill_projection: str = "linear"
    # checkpoint whose weights and input statistics start the run (same type and dims); "":
    # random initialisation
    init_checkpoint: str = ""
    lr_schedule: str = "constant"  # "cosine": lr decays to 0 over the metric-learning steps
    snapshot_every: int = 0  # also keep epoch-NNN.pt every this many epochs (0: never)
    mix: MixConfig = field(default_factory=MixConfig)
    dims: EncoderDims = field(default_factory=EncoderDims)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    workers: int = 2  # decoding threads while loading the training audio
    device: str = "auto"

    def to_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        d = dict(d)
        sub = {"mix": MixConfig, "dims": EncoderDims, "features": FeatureConfig}
        for k, klass in sub.items():
            if isinstance(d.get(k), dict):
                known = {f.name for f in fields(klass)}
                vals = {
                    a: tuple(b) if isinstance(b, list) else b for a, b in d[k].items() if a in known
                }
                d[k] = klass(**vals)
        if isinstance(d.get("speeds"), list):
            d["speeds"] = tuple(d["speeds"])
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown training options: {sorted(unknown)}")
        return cls(**d)

    @property
    def domains(self) -> tuple[str, str]:
        """(anchor domain, positive/negative domain)."""
        return {"cross": ("mono", "mixed"), "mono": ("mono", "mono"), "mixed": ("mixed", "mixed")}[
            self.model_type
        ]


def spec_augment(
    mel: torch.Tensor, gen: torch.Generator, max_f: int = 16, max_t: int = 16
) -> torch.Tensor:
    """One frequency and one time mask per example, filled with the example's mean."""
    b, n_mels, frames = mel.shape
    out = mel.clone()
    fill = mel.mean(dim=(1, 2))
    for i in range(b):
        f = int(torch.randint(0, max_f + 1, (1,), generator=gen))
        f0 = int(torch.randint(0, n_mels - f + 1, (1,), generator=gen))
        t = int(torch.randint(0, max_t + 1, (1,), generator=gen))
        t0 = int(torch.randint(0, frames - t + 1, (1,), generator=gen))
        out[i, f0 : f0 + f, :] = fill[i]
        out[i, :, t0 : t0 + t] = fill[i]
    return out


class Trainer:
    """Holds the network, the optimiser and the data pools of one run."""

    def __init__(
        self,
        config: TrainConfig,
        pool: TrainingPool,
        val_pool: TrainingPool | None,
        val_rows: list[ManifestRow],
        out_dir: Path,
    ):
        self.cfg = config
        self.pool = pool
        self.val_pool = val_pool
        self.val_rows = val_rows
        self.out = out_dir
        self.device = resolve_device(config.device)
        torch.manual_seed(config.seed)
        self.net = SingerNet(config.model_type, config.dims).to(self.device)
        if config.init_checkpoint:
            self._init_from(config.init_checkpoint)
        self.head = torch.nn.Linear(config.dims.embed_dim, pool.n_classes).to(self.device)
        if config.lr_schedule not in ("constant", "cosine"):
            raise ValueError(f"lr_schedule: constant or cosine, not {config.lr_schedule!r}")
        self.proj: torch.nn.Module | None = None
        extra: list[torch.nn.Parameter] = []
        if config.distill_weight > 0:
            from model.speaker import EMBED_DIM

            if config.distill_projection == "identity":
                if config.dims.embed_dim != EMBED_DIM:
                    raise ValueError(f"distill_projection identity needs embed_dim {EMBED_DIM}")
                self.proj = torch.nn.Identity()
            elif config.distill_projection == "linear":
                self.proj = torch.nn.Linear(config.dims.embed_dim, EMBED_DIM).to(self.device)
            else:
                raise ValueError(
                    f"distill_projection: linear or identity, not {config.distill_projection!r}"
                )
            extra = list(self.proj.parameters())
        self.opt = torch.optim.Adam(
            list(self.net.parameters()) + list(self.head.parameters()) + extra,
            lr=config.lr,
            weight_decay=config.weight_decay,
        )
        self.rng = np.random.default_rng(config.seed)
        self.gen = torch.Generator().manual_seed(config.seed)
        self.epoch = 0  # completed epochs, pre-training included
        self.history: list[dict] = []
        self.best = -1.0
        self._val_cache: dict | None = None
        self._distill: torch.Tensor | float = 0.0

    def _init_from(self, path: str) -> None:
        from model.checkpoint import load_checkpoint

        net, features, _ = load_checkpoint(path)
        if (net.model_type, net.dims, features) != (
            self.cfg.model_type,
            self.cfg.dims,
            self.cfg.features,
        ):
            raise ValueError(f"{path}: another model type, architecture or feature recipe")
        self.net.load_state_dict(net.state_dict())
        log.info("initialised from %s", path)

    # -- features ---------------------------------------------------------------------------

    def _mel(self, wave: torch.Tensor, augment: bool) -> torch.Tensor:
        mel = log_mel(wave, self.cfg.features, self.device)
        if augment and self.cfg.spec_augment:
            mel = spec_augment(mel.cpu(), self.gen).to(self.device)
        return mel

    def _embed(self, pool: TrainingPool, labels: np.ndarray, domain: str, rng, augment: bool):
        """Embeddings of fresh crops; with distillation on, the term of this batch is added to
        `self._distill` (the crops' teacher targets come from `pool.drawn`)."""
        sample = pool.sample_mono if domain == "mono" else pool.sample_mixed
        emb = self.net(self._mel(sample(labels, rng), augment), domain)
        if self.proj is not None:
            from model.training.distill import batch_targets, distill_loss

            target, mask = batch_targets(pool)
            self._distill = self._distill + distill_loss(emb, target, mask, self.proj)
        return emb

    def _with_distill(self, loss: torch.Tensor) -> torch.Tensor:
        """rank_weight * loss + distill_weight * the distillation terms gathered since the last
        call."""
        out = self.cfg.rank_weight * loss + self.cfg.distill_weight * self._distill
        self._distill = 0.0
        return out

    def set_normalization(self, n: int = 256) -> None:
        """Global mean / std of the training log-mels per domain (stored in the checkpoint)."""
        rng = np.random.default_rng(self.cfg.seed + 1)
        for domain in set(self.cfg.domains):
            labels = self.pool.sample_labels(n, rng, distinct=False)
            sample = self.pool.sample_mono if domain == "mono" else self.pool.sample_mixed
            mel = log_mel(sample(labels, rng), self.cfg.features)
            self.net.set_normalization(domain, float(mel.mean()), float(mel.std()))
        if (
            self.cfg.model_type != "cross"
        ):  # a shared encoder: the unused domain gets the same stats
            d = self.cfg.domains[0]
            other = "mixed" if d == "mono" else "mono"
            i = ("mono", "mixed").index(d)
            self.net.set_normalization(
                other, float(self.net.norm_mean[i]), float(self.net.norm_std[i])
            )

    # -- losses -----------------------------------------------------------------------------

    def classification_loss(self, pool, rng, augment=True) -> torch.Tensor:
        labels = pool.sample_labels(self.cfg.batch_size, rng, distinct=False)
        target = torch.from_numpy(labels).to(self.device)
        loss = 0.0
        for domain in sorted(set(self.cfg.domains)):  # CROSS: both branches, one shared head
            loss = loss + F.cross_entropy(
                self.head(self._embed(pool, labels, domain, rng, augment)), target
            )
        return self._with_distill(loss)

    def metric_loss(self, pool, rng, augment=True) -> torch.Tensor:
        a_dom, p_dom = self.cfg.domains
        labels = pool.sample_labels(self.cfg.batch_size, rng, distinct=True)
        anchor = self._embed(pool, labels, a_dom, rng, augment)
        positive = self._embed(pool, labels, p_dom, rng, augment)
        if self.cfg.negatives == "in-batch":
            return self._with_distill(
                in_batch_hinge_loss(
                    anchor,
                    positive,
                    torch.from_numpy(labels).to(self.device),
                    self.cfg.margin,
                    self.cfg.n_negatives,
                )
            )
        k = self.cfg.n_negatives
        neg_labels = np.stack([_others(pool.n_classes, int(c), k, rng) for c in labels])
        neg = self._embed(pool, neg_labels.reshape(-1), p_dom, rng, augment)
        return self._with_distill(
            hinge_rank_loss(anchor, positive, neg.reshape(len(labels), k, -1), self.cfg.margin)
        )

    # -- loop -------------------------------------------------------------------------------

    @property
    def total_epochs(self) -> int:
        return self.cfg.pretrain_epochs + self.cfg.epochs

    def run(self, progress: bool = False) -> dict:
        from tqdm import tqdm

        while self.epoch < self.total_epochs:
            phase = "pretrain" if self.epoch < self.cfg.pretrain_epochs else "metric"
            if phase == "metric" and self.epoch == self.cfg.pretrain_epochs:
                log.info("pre-training done: the classification layer is dropped")
            self.net.train()
            t0 = time.perf_counter()
            losses = []
            bar = tqdm(
                range(self.cfg.steps_per_epoch),
                desc=f"epoch {self.epoch + 1}/{self.total_epochs} {phase}",
                disable=not progress,
                unit="step",
            )
            for step in bar:
                if phase == "metric" and self.cfg.lr_schedule == "cosine":
                    self._set_lr(self.epoch - self.cfg.pretrain_epochs, step)
                loss = (self.classification_loss if phase == "pretrain" else self.metric_loss)(
                    self.pool, self.rng
                )
                self.opt.zero_grad(set_to_none=True)
                loss.backward()
                self.opt.step()
                losses.append(float(loss.detach()))
                bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
            record = {
                "epoch": self.epoch + 1,
                "phase": phase,
                "train_loss": float(np.mean(losses)),
                "seconds": round(time.perf_counter() - t0, 1),
            }
            record.update(self.validate(phase))
            self.epoch += 1
            self.history.append(record)
            log.info("%s", json.dumps(record))
            self.save(record)
        return {"history": self.history, "best": self.best}

    def _set_lr(self, epoch: int, step: int) -> None:
        """Cosine decay from cfg.lr to 0 over the metric epochs (epoch counted from 0)."""
        t = (epoch * self.cfg.steps_per_epoch + step) / (self.cfg.epochs * self.cfg.steps_per_epoch)
        for group in self.opt.param_groups:
            group["lr"] = self.cfg.lr * 0.5 * (1 + math.cos(math.pi * t))

    @torch.no_grad()
    def validate(self, phase: str) -> dict:
        """Validation loss on fixed batches and singer-ID accuracy on held-out singers."""
        if self.val_pool is None:
            return {}
        self.net.eval()
        rng = np.random.default_rng(12345)  # the same validation batches every epoch
        # The metric loss in both phases: the classifier's classes are the training singers.
        losses = [float(self.metric_loss(self.val_pool, rng, augment=False)) for _ in range(4)]
        out = {"val_loss": float(np.mean(losses))}
        out.update(self.val_singer_id())
        return out

    def val_singer_id(self) -> dict:
        """Top-1 singer ID on the validation singers: a cross-song split per singer (even-indexed
        songs build the singer model, odd-indexed ones are queries), all three scenarios."""
        from model.evaluation.retrieval_metrics import (
            cosine_scores,
            singer_identification,
            singer_models,
        )

        if self._val_cache is None:
            self._val_cache = _val_segments(self.val_pool, self.val_rows, self.cfg.features)
        if not self._val_cache:
            return {}
        vec: dict[str, list[np.ndarray]] = {d: [] for d in DOMAINS}
        for domain, vectors in vec.items():
            for segs in self._val_cache[domain]:
                vectors.append(
                    track_vector(self.net(segs.to(self.device), domain).float().cpu().numpy())
                )
        singers, roles = self._val_cache["singers"], self._val_cache["roles"]
        res = {}
        for name, (q, m) in SCENARIOS.items():
            mi = [i for i, r in enumerate(roles) if r == "model"]
            qi = [i for i, r in enumerate(roles) if r == "query"]
            names, models = singer_models(
                np.stack([vec[m][i] for i in mi]), [singers[i] for i in mi]
            )
            scores = cosine_scores(np.stack([vec[q][i] for i in qi]), models)
            truth = np.array([names.index(singers[i]) for i in qi])
            res[f"val_{name}"] = singer_identification(scores, truth, ks=(1,))["top1"]
        res["val_mean"] = float(np.mean([res[f"val_{s}"] for s in SCENARIOS]))
        return res

    # -- persistence ------------------------------------------------------------------------

    def _meta(self, record: dict) -> dict:
        return {
            "source": "trained",
            "train_config": self.cfg.to_dict(),
            "epoch": self.epoch,
            "n_train_singers": len(self.pool.singers),
            "n_classes": self.pool.n_classes,
            "train_singers": self.pool.singers,
            "validation": record,
        }

    def save(self, record: dict) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        save_checkpoint(self.net, self.out / "last.pt", self.cfg.features, self._meta(record))
        if self.cfg.snapshot_every and self.epoch % self.cfg.snapshot_every == 0:
            shutil.copyfile(self.out / "last.pt", self.out / f"epoch-{self.epoch:03d}.pt")
        score = record.get("val_mean", -record["train_loss"])
        if record["phase"] == "metric" and score >= self.best:
            self.best = score
            save_checkpoint(self.net, self.out / "best.pt", self.cfg.features, self._meta(record))
        state = {
            "config": self.cfg.to_dict(),
            "epoch": self.epoch,
            "best": self.best,
            "history": json.loads(json.dumps(self.history)),
            "net": self.net.state_dict(),
            "head": self.head.state_dict(),
            "proj": self.proj.state_dict() if self.proj is not None else {},
            "opt": self.opt.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "gen_rng": self.gen.get_state(),
            "np_rng": json.dumps(self.rng.bit_generator.state),
        }
        tmp = self.out / "state.pt.tmp"
        torch.save(state, tmp)
        tmp.replace(self.out / "state.pt")
        (self.out / "history.json").write_text(json.dumps(self.history, indent=1))

    def resume(self) -> bool:
        path = self.out / "state.pt"
        if not path.is_file():
            return False
        state = torch.load(path, map_location="cpu", weights_only=True)
        if state["config"] != self.cfg.to_dict():
            raise ValueError(f"{path} was written with another configuration; use a new --out")
        self.net.load_state_dict(state["net"])
        self.head.load_state_dict(state["head"])
        if self.proj is not None:
            self.proj.load_state_dict(state["proj"])
        self.opt.load_state_dict(state["opt"])
        torch.set_rng_state(state["torch_rng"])
        self.gen.set_state(state["gen_rng"])
        self.rng.bit_generator.state = json.loads(state["np_rng"])
        self.epoch, self.best, self.history = state["epoch"], state["best"], state["history"]
        log.info("resumed from %s after epoch %d", path, self.epoch)
        return True


def _others(n: int, label: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """k labels in [0, n) other than `label` (distinct when possible)."""
    choices = rng.choice(n - 1, size=k, replace=k > n - 1)
    return choices + (choices >= label)


def _val_segments(pool: TrainingPool, rows: list[ManifestRow], cfg: FeatureConfig) -> dict:
    """Log-mel segments of each validation recording, mono and karaoke-mixed, with roles."""
    songs: dict[str, list[str]] = defaultdict(list)
    recs = []
    for s_idx, singer in enumerate(pool.singers):
        for r_idx, rec in enumerate(pool.mono[s_idx]):
            song = rec.song or f"{singer}#{r_idx}"
            recs.append((singer, song, rec))
            if song not in songs[singer]:
                songs[singer].append(song)
    role_of = {}
    for singer, ss in songs.items():
        for i, s in enumerate(sorted(ss)):
            role_of[(singer, s)] = "model" if i % 2 == 0 else "query"
    out = {"mono": [], "mixed": [], "singers": [], "roles": []}
    for singer, song, rec in recs:
        if len(songs[singer]) < 2:
            continue
        mixed = (
            rec.audio if rec.accompaniment is None else nominal_mix(rec.audio, rec.accompaniment)
        )
        try:
            out["mono"].append(extract_segments(rec.audio, cfg))
            out["mixed"].append(extract_segments(mixed, cfg, all_segments=True))
        except AudioError as err:  # too short or unvoiced clips cannot take part
            log.debug("validation skips %s", err)
            continue
        out["singers"].append(singer)
        out["roles"].append(role_of[(singer, song)])
    if "query" not in out["roles"] or "model" not in out["roles"]:
        return {}
    return out


def train(
    config: TrainConfig,
    rows: list[ManifestRow],
    val_rows: list[ManifestRow],
    backgrounds: list,
    out_dir: str | Path,
    resume: bool = True,
    progress: bool = False,
    cache_dir: str | Path | None = None,
    teacher_cache_dir: str | Path | None = None,
) -> dict:
    """Train a model; returns {"history": [...], "best": float, "best_checkpoint": path}.

    cache_dir: where decoded audio is memoised between runs (None: no cache).
    teacher_cache_dir: where the teacher's embeddings of the recordings are memoised when
    `config.distill_weight` > 0 (None: no cache)."""
    out = Path(out_dir)
    t0 = time.perf_counter()
    pool = TrainingPool(config.features, config.speeds, config.mix).load(
        rows, backgrounds, config.workers, progress, cache_dir
    )
    val_pool = None
    if val_rows:
        val_pool = TrainingPool(config.features, (1.0,), config.mix).load(
            val_rows, backgrounds[:4], config.workers, cache_dir=cache_dir
        )
    if config.distill_weight > 0:
        from model.speaker import SpeakerEncoder
        from model.training.distill import attach_targets

        teacher = SpeakerEncoder(resolve_device(config.device))
        attach_targets(pool, teacher, teacher_cache_dir, progress)
    log.info("data loaded in %.0f s", time.perf_counter() - t0)
    trainer = Trainer(config, pool, val_pool, val_rows, out)
    if not (resume and trainer.resume()) and not config.init_checkpoint:
        trainer.set_normalization()
    result = trainer.run(progress)
    result["best_checkpoint"] = str(out / ("best.pt" if (out / "best.pt").exists() else "last.pt"))
    result["seconds"] = round(time.perf_counter() - t0, 1)
    return result
