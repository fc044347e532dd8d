"""Training and held-out evaluation of the singing-voice detector (model/voice.py).

Material, all from `../shared/data`, split so that no held-out singer, take or track is seen in
training:

- solo voice: MIR-1K vocal stems, a cappella takes, sung vowels (concatenated with pauses);
- voice in a mixture: MIR-1K vocals over their own accompaniment, and vocals over instrumental
  tracks, at vocal-to-background ratios of -6..+6 dB;
- instrumental: MIR-1K accompaniments and the instrumental tracks alone;
- no voice: generated silence, DC, sine tones (steady, gliding, with vibrato), square and
  sawtooth waves (also synthesised at other rates and resampled), sweeps, sustained harmonic
  tones with vibrato, FM tones, chords of sines, white/pink/brown noise, mains hum, click
  trains (`model.training.nonvoice`);
- with `studio_manifest` (issue 33): studio mixes of the training takes (voice in a mixture
  where the take is voiced, else instrumental), and their mastered band tracks alone
  (instrumental), at record levels (up to -6 dBFS RMS).

Frame labels come from the clean stems: a frame of a vocal stem is voice where its energy
passes `FeatureConfig`'s voice-activity rule (35 dB below the take's loudest frame, above
-55 dBFS; 25 dB for the noisier a cappella phone takes), otherwise it takes the label of what
else sounds there (instrumental, or none). Every example is played at a random level.
"""

from __future__ import annotations

import csv
import logging
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from model.audio import load_audio
from model.energy_vad import frame_voicing
from model.features import FeatureConfig, log_mel
from model.manifest import ManifestRow, read_manifest
from model.mixing import mix_at_snr, mix_segment
from model.training.nonvoice import NONVOICE_KINDS, nonvoice
from model.voice import (
    CLASSES,
    INSTRUMENTAL,
    MIXTURE,
    NONE,
    SOLO,
    DetectorDims,
    DetectorRule,
    VoiceDetector,
    VoiceNet,
    save_detector,
)

log = logging.getLogger(__name__)

HOLDOUT_MIR1K = ("abjones", "bobon", "geniusturtle", "khair", "yifen")
HOLDOUT_VOWELS = ("Baritone2", "Mezzo4", "Soprano3")


@dataclass
class VoiceTrainConfig:
    """Options of `train_voice`. Durations in seconds."""

    seed: int = 0  # random seed (data and weights)
    steps: int = 1500  # optimiser steps
    batch_size: int = 128  # windows per step
    lr: float = 2e-3  # peak learning rate (one-cycle)
    weight_decay: float = 1e-4
    dims: DetectorDims = field(default_factory=DetectorDims)
    window_hop: int = 4  # frames between candidate training windows
    max_take_s: float = 20.0  # a cappella and instrumental crops
    instrumental_crops: int = 6  # 10-s crops per training instrumental track
    n_nonvoice: int = 600  # generated non-voice examples
    mir1k_every: int = 1  # use every n-th MIR-1K training clip (larger: faster, fewer clips)
    # manifest.csv of `python -m model studio-mix --split train` ("": no studio mixes)
    studio_manifest: str = ""
    studio_every: int = 2  # use every n-th studio mix
    band_crops: int = 3  # mastered 10-s crops per band track of the studio mixes' folder

    def to_dict(self) -> dict:
        d = asdict(self)
        d["dims"] = self.dims.to_dict()
        return d


@dataclass
class Example:
    """One recording's features and frame labels: mel float16 (n_mels, frames), labels int8."""

    mel: np.ndarray
    labels: np.ndarray
    source: str
    kind: str


# ---------------------------------------------------------------------------------------------
# Material


def _at_level(y: np.ndarray, rng: np.random.Generator, lo_db: float = -40.0, hi_db: float = -12.0):
    """`y` scaled to a random RMS in [lo_db, hi_db] dBFS, clipped to [-1, 1]."""
    r = float(np.sqrt(np.mean(np.square(y, dtype=np.float64)))) if len(y) else 0.0
    if r == 0.0:
        return y
    return np.clip(y * (10 ** (rng.uniform(lo_db, hi_db) / 20) / r), -1, 1).astype(np.float32)


def _crop(y: np.ndarray, samples: int, rng: np.random.Generator) -> np.ndarray:
    if len(y) <= samples:
        return y
    start = int(rng.integers(0, len(y) - samples))
    return y[start : start + samples]


def _labels_for(
    vocal: np.ndarray | None,
    background: np.ndarray | None,
    cfg: FeatureConfig,
    strict: bool = False,
) -> np.ndarray:
    """Frame labels (int8) of vocal + background from their separate stems."""
    vcfg = replace(cfg, vad_top_db=25.0, vad_floor_db=-50.0) if strict else cfg
    ref = vocal if vocal is not None else background
    n = 1 + len(ref) // cfg.hop_length
    lab = np.full(n, NONE, np.int8)
    if background is not None:
        lab[frame_voicing(background, cfg)[:n]] = INSTRUMENTAL
    if vocal is not None:
        lab[frame_voicing(vocal, vcfg)[:n]] = MIXTURE if background is not None else SOLO
    return lab


def _example(y: np.ndarray, labels: np.ndarray, cfg: FeatureConfig, source: str, kind: str):
    mel = log_mel(y, cfg).numpy().astype(np.float16)
    return Example(mel, labels[: mel.shape[1]], source, kind)


def _rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def split_material(data: Path) -> dict[str, dict[str, list]]:
    """{'train' | 'test': {'mir1k': clips, 'acappella': files, 'vowels': rows,
    'instrumental': files}}: held-out singers, the held-out a cappella takes of the embedding
    model (`split_acappella`: its evaluations and the studio mixes' held-out split use them)
    and every 4th instrumental track (sorted by name) go to 'test'."""
    from model.training.datasets import acappella_rows, split_acappella
    from model.training.mashup import read_backgrounds

    mir = _rows(data / "mir1k" / "index.csv")
    held_takes = {
        Path(str(r.path)).name for r in split_acappella(acappella_rows(data / "acappella"))[1]
    }
    aca = sorted({r["file"] for r in _rows(data / "acappella" / "index.csv")})
    vow = _rows(data / "vowels" / "index.csv")
    ins = sorted(p.name for p in read_backgrounds(data / "instrumental"))
    out: dict[str, dict[str, list]] = {"train": {}, "test": {}}
    out["test"]["mir1k"] = [r["clip"] for r in mir if r["singer"] in HOLDOUT_MIR1K]
    out["train"]["mir1k"] = [r["clip"] for r in mir if r["singer"] not in HOLDOUT_MIR1K]
    out["test"]["acappella"] = [a for a in aca if a in held_takes]
    out["train"]["acappella"] = [a for a in aca if a not in held_takes]
    out["test"]["vowels"] = [r for r in vow if r["singer"] in HOLDOUT_VOWELS]
    out["train"]["vowels"] = [r for r in vow if r["singer"] not in HOLDOUT_VOWELS]
    out["test"]["instrumental"], out["train"]["instrumental"] = (
        ins[::4],
        [a for i, a in enumerate(ins) if i % 4],
    )
    return out


def build_examples(
    data: Path, part: dict[str, list], cfg: FeatureConfig, tc: VoiceTrainConfig, seed: int
) -> list[Example]:
    """Features and frame labels of one part of `split_material` (see the module docstring)."""
    rng = np.random.default_rng(seed)
    sr = cfg.sample_rate
    out: list[Example] = []

    def add(y: np.ndarray, labels: np.ndarray, source: str, kind: str) -> Example:
        return _example(y, labels, cfg, source, kind)

    max_n = int(tc.max_take_s * sr)
    ins = [load_audio(data / "instrumental" / f, sr) for f in part["instrumental"]]
    for clip in part["mir1k"][:: tc.mir1k_every]:
        v = load_audio(data / "mir1k" / "vocals" / f"{clip}.opus", sr)
        a = load_audio(data / "mir1k" / "accompaniment" / f"{clip}.opus", sr)
        n = min(len(v), len(a))
        v, a = v[:n], a[:n]
        gain = 10 ** (rng.uniform(-24, 0) / 20)
        out.append(
            add(np.clip(v * gain * 2, -1, 1), _labels_for(v, None, cfg), clip, "mir1k-vocals")
        )
        snr = rng.uniform(-6, 6)
        mix = _at_level(mix_at_snr(v, a, snr), rng)
        out.append(add(mix, _labels_for(v, a, cfg), clip, "mir1k-mix"))
        if rng.random() < 0.35:
            out.append(
                add(_at_level(a, rng), _labels_for(None, a, cfg), clip, "mir1k-accompaniment")
            )
        if ins and rng.random() < 0.35:  # the vocals over another background
            b = _crop(ins[rng.integers(len(ins))], n, rng)
            if len(b) == n:
                m, vg, bg = mix_segment(v, b, rng.uniform(-6, 6))
                out.append(
                    add(
                        _at_level(m, rng),
                        _labels_for(v * vg, b * bg, cfg),
                        clip,
                        "vocals-over-instrumental",
                    )
                )
    for f in part["acappella"]:
        y = _crop(load_audio(data / "acappella" / f, sr), max_n, rng)
        out.append(add(_at_level(y, rng), _labels_for(y, None, cfg, strict=True), f, "acappella"))
        if ins and rng.random() < 0.3:
            b = _crop(ins[rng.integers(len(ins))], len(y), rng)
            if len(b) == len(y):
                m, vg, bg = mix_segment(y, b, rng.uniform(-6, 6))
                lab = _labels_for(y * vg, b * bg, cfg)
                out.append(add(_at_level(m, rng), lab, f, "acappella-over-instrumental"))
    by_singer: dict[str, list[str]] = {}
    for r in part["vowels"]:
        by_singer.setdefault(r["singer"], []).append(r["file"])
    for singer, files in sorted(by_singer.items()):
        order = rng.permutation(len(files))
        for k in range(0, len(files), 6):  # ~6 vowels with pauses between them
            pieces = []
            for j in order[k : k + 6]:
                pieces.append(load_audio(data / "vowels" / files[j], sr))
                pieces.append(np.zeros(int(rng.uniform(0.1, 0.6) * sr), np.float32))
            y = np.concatenate(pieces)
            if len(y) >= cfg.n_fft:
                out.append(add(_at_level(y, rng), _labels_for(y, None, cfg), singer, "vowels"))
    for f, y in zip(part["instrumental"], ins, strict=True):
        for _ in range(tc.instrumental_crops):
            c = _crop(y, max_n // 2, rng)
            out.append(add(_at_level(c, rng), _labels_for(None, c, cfg), f, "instrumental"))
    for i in range(tc.n_nonvoice):
        kind = NONVOICE_KINDS[i % len(NONVOICE_KINDS)]
        y = nonvoice(kind, rng.uniform(1.0, 4.0), rng, sr)
        out.append(add(y, np.full(1 + len(y) // cfg.hop_length, NONE, np.int8), kind, "nonvoice"))
    return out


def studio_examples(
    rows: list[ManifestRow], cfg: FeatureConfig, tc: VoiceTrainConfig, seed: int
) -> list[Example]:
    """Examples of studio mixes (every `studio_every`-th row of a studio-mix manifest):
    voice in a mixture where the clean take is voiced (25 dB below its peak: the quieter
    frames are buried under the band), else instrumental; and `band_crops` mastered 10-s
    crops of each band track of the manifest's folder, instrumental. Levels up to -6 dBFS
    RMS, as records are mastered."""
    from model.training.mastering import band_bus, draw_master, master

    rng = np.random.default_rng(seed)
    sr = cfg.sample_rate
    out: list[Example] = []
    takes: dict[str, np.ndarray] = {}
    for r in rows[:: tc.studio_every]:
        mix = load_audio(str(r.path), sr)
        source = str(r.source)
        if source not in takes:
            takes.clear()  # rows come source by source
            takes[source] = load_audio(source, sr)
        start = round(float(r.extra.get("offset_s") or 0.0) * sr)
        dry = takes[source][start : start + len(mix)]
        n = min(len(dry), len(mix))
        if n < cfg.n_fft:
            continue
        lab = _labels_for(dry[:n], None, cfg, strict=True)
        lab[lab == NONE] = INSTRUMENTAL  # the band plays throughout
        lab[lab == SOLO] = MIXTURE
        out.append(
            _example(
                _at_level(mix[:n], rng, -30, -6), lab, cfg, r.extra.get("take", ""), "studio-mix"
            )
        )
    bands = sorted((Path(str(rows[0].path)).parent.parent / "bands").glob("*.flac")) if rows else []
    for f in bands:
        y = load_audio(f, sr)
        for _ in range(tc.band_crops):
            c = _crop(y, 10 * sr, rng)
            m = draw_master(rng)
            c = master(band_bus(c, sr, m), sr, m)
            lab = _labels_for(None, c, cfg)
            out.append(_example(_at_level(c, rng, -30, -6), lab, cfg, f.stem, "studio-band"))
    return out


# ---------------------------------------------------------------------------------------------
# Training


def _window_table(examples: list[Example], w: int, hop: int) -> tuple[np.ndarray, np.ndarray]:
    """Candidate windows: (n, 2) [example, start frame] and their class (n,).

    A window is voice (solo or mixture, whichever it holds) when at least half its frames are
    voiced, no voice when at most a fifth are; between the two it is ambiguous and unused.
    Otherwise instrumental when half its frames are, else none.
    """
    rows, labels = [], []
    for i, ex in enumerate(examples):
        n = len(ex.labels)
        if n < w:
            continue
        onehot = np.eye(len(CLASSES), dtype=np.float64)[ex.labels]
        cum = np.concatenate([np.zeros((1, len(CLASSES))), np.cumsum(onehot, 0)])
        starts = np.arange(0, n - w + 1, hop)
        share = (cum[starts + w] - cum[starts]) / w
        voice = share[:, SOLO] + share[:, MIXTURE]
        lab = np.where(share[:, INSTRUMENTAL] >= 0.5, INSTRUMENTAL, NONE)
        lab = np.where(
            voice >= 0.5, np.where(share[:, MIXTURE] > share[:, SOLO], MIXTURE, SOLO), lab
        )
        ok = (voice >= 0.5) | (voice <= 0.2)
        rows.append(np.stack([np.full(ok.sum(), i), starts[ok]], 1))
        labels.append(lab[ok])
    return np.concatenate(rows), np.concatenate(labels)


def train_voice(
    train: list[Example], tc: VoiceTrainConfig, progress: bool = False
) -> tuple[VoiceNet, dict]:
    """Fit a VoiceNet on class-balanced random windows of `train`. Returns (net, log)."""
    torch.manual_seed(tc.seed)
    rng = np.random.default_rng(tc.seed)
    w = tc.dims.window_frames
    table, labels = _window_table(train, w, tc.window_hop)
    per_class = [np.flatnonzero(labels == c) for c in range(len(CLASSES))]
    counts = {CLASSES[c]: len(ix) for c, ix in enumerate(per_class)}
    log.info("training windows per class: %s", counts)
    net = VoiceNet(tc.dims)
    frames = np.concatenate([ex.mel[:, ::7] for ex in train], axis=1).astype(np.float32)
    net.mean.copy_(torch.from_numpy(frames.mean(1, keepdims=True)))
    net.std.copy_(torch.from_numpy(frames.std(1, keepdims=True) + 1e-3))
    opt = torch.optim.AdamW(net.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, tc.lr, total_steps=tc.steps)
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=0.05)
    net.train()
    t0, running = time.perf_counter(), 0.0
    per = tc.batch_size // len(CLASSES)
    for step in range(tc.steps):
        pick = np.concatenate([rng.choice(ix, per) for ix in per_class if len(ix)])
        x = np.stack([train[e].mel[:, s : s + w] for e, s in table[pick]]).astype(np.float32)
        logits = net(torch.from_numpy(x))
        loss = loss_fn(logits, torch.from_numpy(labels[pick].astype(np.int64)))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        running = 0.98 * running + 0.02 * loss.item() if step else loss.item()
        if progress and step % 100 == 0:
            log.info(
                "step %d/%d loss %.3f (%.0f s)", step, tc.steps, running, time.perf_counter() - t0
            )
    net.eval()
    return net, {
        "windows_per_class": counts,
        "final_loss": running,
        "seconds": time.perf_counter() - t0,
    }


# ---------------------------------------------------------------------------------------------
# Held-out evaluation


def _prf(pred: np.ndarray, truth: np.ndarray) -> dict:
    tp = int(np.sum(pred & truth))
    p = tp / max(int(pred.sum()), 1)
    r = tp / max(int(truth.sum()), 1)
    return {
        "precision": round(p, 4),
        "recall": round(r, 4),
        "f1": round(2 * p * r / max(p + r, 1e-9), 4),
    }


def frame_metrics(detector: VoiceDetector, examples: list[Example]) -> dict:
    """Frame-level voice precision/recall and solo-vs-mixture accuracy on voiced frames."""
    preds, truths, dom_pred, dom_truth = [], [], [], []
    for ex in examples:
        probs = detector.frame_probs(torch.from_numpy(ex.mel.astype(np.float32)))
        voiced = detector.voice_probability(probs) > detector.rule.threshold
        truth = np.isin(ex.labels, (SOLO, MIXTURE))
        preds.append(voiced)
        truths.append(truth)
        both = voiced & truth
        dom_pred.append(probs[both, MIXTURE] > probs[both, SOLO])
        dom_truth.append(ex.labels[both] == MIXTURE)
    pred, truth = np.concatenate(preds), np.concatenate(truths)
    dp, dt = np.concatenate(dom_pred), np.concatenate(dom_truth)
    return {
        "voice": _prf(pred, truth),
        "n_frames": len(pred),
        "voiced_frames": int(truth.sum()),
        "domain_accuracy_on_voiced_frames": round(float(np.mean(dp == dt)), 4),
    }


def run(
    data: Path,
    out: Path,
    tc: VoiceTrainConfig,
    cfg: FeatureConfig | None = None,
    rule: DetectorRule | None = None,
    progress: bool = False,
) -> dict:
    """Build the material, train, evaluate frame metrics on the held-out part, save `out`."""
    cfg = cfg or FeatureConfig()
    rule = rule or DetectorRule()
    t0 = time.perf_counter()
    parts = split_material(data)
    train = build_examples(data, parts["train"], cfg, tc, tc.seed)
    if tc.studio_manifest:
        rows = read_manifest(tc.studio_manifest)
        if any(r.extra.get("split") != "train" for r in rows):
            raise ValueError(f"{tc.studio_manifest}: not a training split of studio mixes")
        train += studio_examples(rows, cfg, tc, tc.seed + 2)
    test = build_examples(data, parts["test"], cfg, tc, tc.seed + 1)
    build_s = time.perf_counter() - t0
    log.info("built %d training and %d held-out examples in %.0f s", len(train), len(test), build_s)
    net, train_log = train_voice(train, tc, progress)
    meta = {
        "train_config": tc.to_dict(),
        "holdout": {
            "mir1k_singers": list(HOLDOUT_MIR1K),
            "vowel_singers": list(HOLDOUT_VOWELS),
            "acappella": "the held-out takes of split_acappella",
            "studio": "held-out grooves and soundfont never rendered for training",
            "instrumental": "every 4th track by sorted file name",
        },
        "train_log": train_log,
        "n_parameters": sum(p.numel() for p in net.parameters()),
    }
    detector = VoiceDetector(net, cfg, rule, meta)
    by_kind: dict[str, list[Example]] = {}
    for ex in test:
        by_kind.setdefault(ex.kind, []).append(ex)
    meta["heldout_frames"] = {
        "all": frame_metrics(detector, test),
        **{k: frame_metrics(detector, v) for k, v in sorted(by_kind.items())},
    }
    meta["build_seconds"] = round(build_s, 1)
    save_detector(net, out, cfg, rule, meta)
    log.info("saved %s (%d parameters)", out, meta["n_parameters"])
    return meta


def file_decisions(
    detector: VoiceDetector,
    data: Path,
    seed: int = 7,
    thresholds: tuple[float, ...] = (0.5, 0.6, 0.7),
    min_voice_s: tuple[float, ...] = (1.0, 2.0, 3.0),
) -> dict:
    """Answer-or-refuse decisions of the service's selection on the held-out material.

    `rule`: per group n, answered (not refused), flagged low_voice, and for sung groups how
    many got the declared domain confirmed (no domain_mismatch), with the detector's own rule.
    `sweep`: answered count per group for each (threshold, min_voice_s) pair. Positives are
    the sung recordings; precision/recall of 'answered' over all groups.
    """
    from model.detector_frames import detect_voice
    from model.errors import NoVoicedSegmentError
    from model.features import log_mel_chunked
    from model.mixing import nominal_mix
    from model.segment_selection import select_segments

    cfg = detector.features
    sr = cfg.sample_rate
    frame_s = cfg.hop_length / sr
    rng = np.random.default_rng(seed)
    test = split_material(data)["test"]
    groups: dict[str, list[tuple[np.ndarray, str]]] = {}
    mir = data / "mir1k"
    for clip in test["mir1k"]:
        v = load_audio(mir / "vocals" / f"{clip}.opus", sr)
        a = load_audio(mir / "accompaniment" / f"{clip}.opus", sr)
        groups.setdefault("mir1k vocals (mono)", []).append((v, "mono"))
        groups.setdefault("mir1k 0 dB mix (mixed)", []).append((nominal_mix(v, a), "mixed"))
        groups.setdefault("mir1k accompaniment (mono)", []).append((a, "mono"))
    for f in test["acappella"]:
        groups.setdefault("a cappella takes (mono)", []).append(
            (load_audio(data / "acappella" / f, sr), "mono")
        )
    for f in test["instrumental"]:
        y = load_audio(data / "instrumental" / f, sr)
        for _ in range(4):
            groups.setdefault("instrumental 20-s crops (mono)", []).append(
                (_crop(y, 20 * sr, rng), "mono")
            )
    for kind in NONVOICE_KINDS:
        for _ in range(3):
            groups.setdefault("generated non-voice 10 s (mono)", []).append(
                (nonvoice(kind, 10.0, rng, sr), "mono")
            )
    sung = {"mir1k vocals (mono)", "mir1k 0 dB mix (mixed)", "a cappella takes (mono)"}
    out: dict = {"rule": detector.rule.to_dict(), "groups": {}, "sweep": {}}
    tp = fp = fn = 0
    for name, items in groups.items():
        items = [(y, d) for y, d in items if len(y) >= cfg.min_samples]
        answered = low = right_domain = 0
        for y, domain in items:
            p_voice, _ = detect_voice(y, log_mel_chunked(y, cfg), cfg, detector)
            for t in thresholds:
                for m in min_voice_s:
                    key = f"threshold {t:g}, min_voice_s {m:g}"
                    cell = out["sweep"].setdefault(key, {}).setdefault(name, 0)
                    out["sweep"][key][name] = cell + int((p_voice > t).sum() * frame_s >= m)
            try:
                sel = select_segments(y, cfg, detector=detector, domain=domain)
            except NoVoicedSegmentError:
                continue
            answered += 1
            low += "low_voice" in sel.flags
            right_domain += "domain_mismatch" not in sel.flags
        out["groups"][name] = {
            "n": len(items),
            "answered": answered,
            "low_voice": low,
            "right_domain": right_domain if name in sung else None,
        }
        if name in sung:
            tp, fn = tp + answered, fn + len(items) - answered
        else:
            fp += answered
    out["answered_precision"] = round(tp / max(tp + fp, 1), 4)
    out["answered_recall"] = round(tp / max(tp + fn, 1), 4)
    return out
