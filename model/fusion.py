"""Fused checkpoints: the CROSS encoders with a pretrained speaker encoder beside them.

A fused checkpoint is a CROSS checkpoint whose `meta["fusion"]` names the speaker encoder
(`model.speaker`, Resemblyzer's GE2E, weights read from the installed package and pinned by
the SHA-256 of their tensors) and the CROSS share `weight` of the score. Its feature recipe
keeps each segment's waveform (`FeatureConfig.segment_audio`) for the speaker encoder's own
front end.
A segment's vector is then `model.vectors.fuse(cross, speaker, weight)`, (256 + 256,) and of
unit norm: the cosine of two is weight x the CROSS cosine + (1 - weight) x the speaker cosine
(of the centred parts, when there are centres; a projection then bends it slightly).

It may also hold each domain's centres (`DomainCentres`): the mean unit CROSS and speaker
vectors of the training segments of that domain, subtracted before fusion. The speaker
encoder, trained on speech, gives every sung segment a large shared component (the mean of
its unit vectors has norm 0.8) and mixtures one more of their own; left in, they lift every
cross-domain score alike and bury the singer in it (model card, "Stage 4: domain centres").
And it may hold a nuisance projection (`NuisanceProjection`): the few directions of the fused
space along which the same performance moves when accompaniment is added, removed from every
fused segment vector (nuisance attribute projection; model card, "Stage 5").
And the speaker encoder may have weights of its own for mixed segments (a copy tuned for
finished songs, `model.training.speaker_tune`): they live in the checkpoint itself, under
the payload's `SPEAKER_STATES` key, pinned by their digest in `meta["fusion"]["mixed_speaker"]`
(`load_speaker` reads them from the checkpoint's file).
Format version 2 (`FUSED_VERSION`): older readers refuse the file instead of serving half of it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from model.checkpoint import FUSED_VERSION, VERSION, load_checkpoint, save_payload
from model.domains import DOMAINS
from model.errors import CheckpointError
from model.speaker import EMBED_DIM as SPEAKER_DIM
from model.speaker import SpeakerEncoder, weights_digest, weights_path
from model.speaker_precision import served_precision
from model.vectors import l2_normalize

log = logging.getLogger(__name__)

#: `meta` key of a fused checkpoint, and the speaker encoder it names.
FUSION_KEY = "fusion"
#: key of the domain centres inside it (absent: none subtracted)
CENTRES_KEY = "centres"
#: key of the nuisance projection inside it (absent: none applied)
NUISANCE_KEY = "nuisance"
SPEAKER = "resemblyzer-ge2e"
#: key of the tuned mixed-domain speaker weights' digest inside it (absent: the packaged ones)
MIXED_SPEAKER_KEY = "mixed_speaker"
#: payload key of the speaker encoder's per-domain weights ({domain: state dict})
SPEAKER_STATES = "speaker_states"


def unit_parts(cross: np.ndarray, speaker: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Segment vectors (n, cross_dim) and (n, SPEAKER_DIM), any norm -> unit float32 rows."""
    return (
        l2_normalize(np.asarray(cross, np.float32)),
        l2_normalize(np.asarray(speaker, np.float32)),
    )


@dataclass(frozen=True)
class DomainCentres:
    """Per domain, the mean of the unit CROSS vectors (cross_dim,) and of the unit speaker
    vectors (SPEAKER_DIM,) of training segments: what `centre` subtracts before fusion."""

    cross: Mapping[str, np.ndarray]
    speaker: Mapping[str, np.ndarray]

    def centre(
        self, cross: np.ndarray, speaker: np.ndarray, domain: str
    ) -> tuple[np.ndarray, np.ndarray]:
        """(n, cross_dim) and (n, SPEAKER_DIM) segment vectors of `domain`, any norm -> their
        unit vectors minus the domain's centres (float32; `model.vectors.fuse` normalises)."""
        c, s = unit_parts(cross, speaker)
        return c - self.cross[domain], s - self.speaker[domain]

    def to_dict(self) -> dict:
        return {
            d: {"cross": self.cross[d].tolist(), "speaker": self.speaker[d].tolist()}
            for d in DOMAINS
        }

    @classmethod
    def from_dict(cls, data: Mapping, cross_dim: int) -> DomainCentres:
        """Read `to_dict`'s form, checked: every domain, the right lengths, finite values,
        each a mean of unit vectors (norm <= 1). Raises CheckpointError."""
        parts: dict[str, dict[str, np.ndarray]] = {"cross": {}, "speaker": {}}
        try:
            for domain in DOMAINS:
                for part, dim in (("cross", cross_dim), ("speaker", SPEAKER_DIM)):
                    v = np.asarray(data[domain][part], np.float32)
                    if v.shape != (dim,):
                        raise ValueError(f"{domain} {part}: shape {v.shape}, expected ({dim},)")
                    if not np.isfinite(v).all():
                        raise ValueError(f"{domain} {part}: values that are not finite")
                    if np.linalg.norm(v) > 1 + 1e-4:
                        raise ValueError(f"{domain} {part}: norm above 1")
                    parts[part][domain] = v
        except (KeyError, TypeError, ValueError) as err:
            raise CheckpointError(f"the fusion's domain centres are malformed: {err}") from err
        return cls(parts["cross"], parts["speaker"])


@dataclass(frozen=True)
class NuisanceProjection:
    """k orthonormal directions (k, dim) of the fused space that carry the domain, not the
    voice: the main axes of the differences between a performance's mono and mixed vectors.
    `project` removes them (I - U^T U) and renormalises."""

    directions: np.ndarray

    @classmethod
    def fit(cls, differences: np.ndarray, k: int) -> NuisanceProjection:
        """The top `k` principal axes (uncentred, as in NAP) of (n, dim) differences between
        vectors of the same performance in the two domains. Raises ValueError."""
        d = np.asarray(differences, np.float64)
        if d.ndim != 2 or not 0 < k <= min(d.shape[0], d.shape[1] - 1):
            raise ValueError(f"cannot fit {k} nuisance directions on differences {d.shape}")
        _, _, vt = np.linalg.svd(d, full_matrices=False)
        return cls(vt[:k].astype(np.float32))

    def project(self, vectors: np.ndarray) -> np.ndarray:
        """(n, dim) vectors -> (n, dim) float32 unit vectors without the nuisance directions."""
        v = np.asarray(vectors, np.float32)
        u = self.directions
        return l2_normalize(v - (v @ u.T) @ u).astype(np.float32)

    def to_dict(self) -> dict:
        return {"directions": self.directions.tolist()}

    @classmethod
    def from_dict(cls, data: Mapping, dim: int) -> NuisanceProjection:
        """Read `to_dict`'s form, checked: (k, dim) with 0 < k < dim, finite, orthonormal
        rows. Raises CheckpointError."""
        try:
            u = np.asarray(data["directions"], np.float32)
            if u.ndim != 2 or u.shape[1] != dim or not 0 < u.shape[0] < dim:
                raise ValueError(f"shape {u.shape}, expected (k, {dim}) with 0 < k < {dim}")
            if not np.isfinite(u).all():
                raise ValueError("values that are not finite")
            if np.abs(u @ u.T - np.eye(len(u))).max() > 1e-3:
                raise ValueError("directions that are not orthonormal")
        except (KeyError, TypeError, ValueError) as err:
            raise CheckpointError(f"the fusion's nuisance projection is malformed: {err}") from err
        return cls(u)


def fuse_checkpoint(
    cross: str | Path,
    out: str | Path,
    weight: float,
    centres: DomainCentres | None = None,
    nuisance: NuisanceProjection | None = None,
    mixed_speaker: str | Path | None = None,
    mix_background_margin: float | None = None,
) -> Path:
    """Write `out`: the CROSS checkpoint `cross` fused with the installed speaker encoder,
    CROSS weighing `weight` in [0, 1] of every cosine. A fused `cross` is re-weighted and keeps
    its domain centres unless `centres` replaces them. Its nuisance projection is kept only at
    the same weight with the same centres: it holds the principal axes of the fused space it
    was fitted in, whose two parts a new weight scales differently (refit with
    `model.training.centres.centre_checkpoint`). `nuisance` sets a new one. Weight 1 writes
    the CROSS model alone, unfused (no speaker encoder, centres or projection).
    `mixed_speaker`: a file of speaker-encoder weights (`{"model_state": ...}`) for mixed
    segments, stored in the checkpoint; else a fused `cross` keeps its own, if any.
    `mix_background_margin`: the mixed branch's front end (`FeatureConfig`, 0: off; None:
    `cross`'s own). Raises CheckpointError."""
    if not 0.0 <= weight <= 1.0:
        raise CheckpointError(f"fusion weight {weight} is outside [0, 1]")
    net, features, meta = load_checkpoint(cross)
    if mix_background_margin is not None:
        if mix_background_margin < 0:
            raise CheckpointError(f"background margin {mix_background_margin} is negative")
        features = replace(features, mix_background_margin=float(mix_background_margin))
    if net.model_type != "cross":
        raise CheckpointError(f"{cross}: a {net.model_type} checkpoint; fusion needs CROSS")
    payload = torch.load(cross, map_location="cpu", weights_only=True)
    old = meta.pop(FUSION_KEY, {})
    kept, kept_nuisance = old.get(CENTRES_KEY), old.get(NUISANCE_KEY)
    if weight == 1.0:
        payload.pop(SPEAKER_STATES, None)
        payload.update(
            version=VERSION, features=replace(features, segment_audio=False).to_dict(), meta=meta
        )
        return save_payload(payload, out)
    payload["version"] = FUSED_VERSION
    payload["features"] = replace(features, segment_audio=True).to_dict()
    spec = {"speaker": SPEAKER, "sha256": weights_digest(), "weight": float(weight)}
    if centres is not None or kept is not None:
        spec[CENTRES_KEY] = centres.to_dict() if centres is not None else kept
    if mixed_speaker is not None:
        from model.speaker import model_state, state_digest

        tuned = model_state(mixed_speaker)
        payload[SPEAKER_STATES] = {"mixed": tuned}
        spec[MIXED_SPEAKER_KEY] = {"sha256": state_digest(tuned)}
    elif MIXED_SPEAKER_KEY in old and SPEAKER_STATES in payload:
        spec[MIXED_SPEAKER_KEY] = old[MIXED_SPEAKER_KEY]
    if nuisance is not None:
        spec[NUISANCE_KEY] = nuisance.to_dict()
    elif kept_nuisance is not None:
        if centres is None and old.get("weight") == spec["weight"]:
            spec[NUISANCE_KEY] = kept_nuisance
        else:
            log.warning(
                "%s: its nuisance projection was fitted at CROSS weight %s with its old "
                "centres; the new checkpoint has none (python -m model fuse --centres refits)",
                cross,
                old.get("weight"),
            )
    payload["meta"] = {**meta, FUSION_KEY: spec}
    return save_payload(payload, out)


def load_speaker(
    spec: dict, device: torch.device, checkpoint: str | Path | None = None
) -> tuple[SpeakerEncoder, float]:
    """The speaker encoder a fused checkpoint's `meta["fusion"]` names, on `device`, and the
    CROSS weight; with its mixed-domain weights, read from the `checkpoint` file, when the
    spec names some; its LSTM at the served precision (`model.speaker_precision`: bfloat16
    on a CPU that has it, unless $SINGER_SPEAKER_PRECISION=float32). Raises CheckpointError
    when it is not installed or not the same weights."""
    if spec.get("speaker") != SPEAKER:
        raise CheckpointError(f"unknown speaker encoder {spec.get('speaker')!r} in the fusion")
    try:
        path = weights_path()
    except (ModuleNotFoundError, FileNotFoundError) as err:
        raise CheckpointError(f"this checkpoint fuses a speaker encoder: {err}") from err
    domain_states = _domain_states(spec, checkpoint)
    try:
        precision = served_precision()
    except ValueError as err:
        raise CheckpointError(str(err)) from err
    try:
        # reads the weights once, digest included; bfloat16 where the CPU has it
        encoder = SpeakerEncoder(device, path, domain_states, precision)
    except Exception as err:  # torch raises many types for a corrupt or foreign file
        raise CheckpointError(
            f"the speaker encoder's weights at {path} are not readable ({type(err).__name__})"
        ) from err
    if encoder.digest != spec.get("sha256"):
        raise CheckpointError(
            f"the speaker encoder's weights at {path} are not the ones this checkpoint was "
            "fused with (another resemblyzer version?); install requirements/speaker.txt"
        )
    weight = float(spec["weight"])
    if not 0.0 <= weight <= 1.0:
        raise CheckpointError(f"fusion weight {weight} is outside [0, 1]")
    return encoder, weight


def _domain_states(spec: dict, checkpoint: str | Path | None) -> dict | None:
    """{"mixed": state dict} when the fusion names tuned mixed-domain weights (checked
    against their digest), else None. Raises CheckpointError."""
    wanted = spec.get(MIXED_SPEAKER_KEY)
    if wanted is None:
        return None
    if checkpoint is None:
        raise CheckpointError(
            "this checkpoint's speaker encoder has weights of its own for "
            "mixed segments: load it from its file"
        )
    from model.speaker import state_digest

    payload = torch.load(checkpoint, map_location="cpu", weights_only=True)
    state = (payload.get(SPEAKER_STATES) or {}).get("mixed")
    if not isinstance(state, dict) or state_digest(state) != wanted.get("sha256"):
        raise CheckpointError(
            f"{checkpoint}: the mixed-domain speaker weights are missing or not those its "
            "fusion names"
        )
    return {"mixed": state}


def load_centres(spec: dict, cross_dim: int) -> DomainCentres | None:
    """The domain centres a fused checkpoint's `meta["fusion"]` holds, or None. Raises
    CheckpointError when they are malformed."""
    data = spec.get(CENTRES_KEY)
    return None if data is None else DomainCentres.from_dict(data, cross_dim)


def load_nuisance(spec: dict, dim: int) -> NuisanceProjection | None:
    """The nuisance projection a fused checkpoint's `meta["fusion"]` holds for its `dim`-d
    vectors, or None. Raises CheckpointError when it is malformed."""
    data = spec.get(NUISANCE_KEY)
    return None if data is None else NuisanceProjection.from_dict(data, dim)
