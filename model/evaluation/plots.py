"""Figures: the t-SNE embedding map of the paper's section 5 and the SNR-sweep curves. PNG only.

matplotlib runs on the Agg backend (no display needed); figures are closed after saving.
"""

from __future__ import annotations

import colorsys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def singer_colours(n: int) -> list[tuple[float, float, float]]:
    """n well-separated saturated colours (RGB in [0, 1]), the mixed-track shade."""
    golden = 0.618033988749895  # hue steps by the golden ratio stay apart for any n
    return [colorsys.hsv_to_rgb((i * golden) % 1.0, 0.85, 0.80 - 0.25 * (i % 2)) for i in range(n)]


def lighter(rgb: tuple[float, float, float], amount: float = 0.55) -> tuple[float, float, float]:
    """Blend towards white: the monophonic-track shade of a singer's colour."""
    return tuple(c + (1.0 - c) * amount for c in rgb)  # type: ignore[return-value]


def tsne_2d(vectors: np.ndarray, seed: int = 0, perplexity: float = 30.0) -> np.ndarray:
    """t-SNE of (n, d) vectors on cosine distance -> (n, 2). Perplexity is capped for small n."""
    from sklearn.manifold import TSNE

    n = len(vectors)
    if n < 3:
        raise ValueError("t-SNE needs at least 3 points")
    perplexity = min(perplexity, (n - 1) / 3.0)
    return TSNE(
        n_components=2, perplexity=perplexity, metric="cosine", init="pca", random_state=seed
    ).fit_transform(np.asarray(vectors, dtype=np.float32))


def embedding_map(
    vectors: np.ndarray,
    singers: Sequence[str],
    domains: Sequence[str],
    path: str | Path,
    title: str = "",
    seed: int = 0,
) -> Path:
    """Save a t-SNE map of track vectors: one colour per singer, monophonic lighter, mixed darker.

    vectors: (n, d); singers, domains ("mono" | "mixed"): n labels each. Returns the PNG path.
    """
    plt = _pyplot()
    xy = tsne_2d(vectors, seed=seed)
    names = sorted(set(singers))
    colours = dict(zip(names, singer_colours(len(names)), strict=True))
    singers_arr, domains_arr = np.asarray(singers), np.asarray(domains)
    fig, ax = plt.subplots(figsize=(8, 7), dpi=110)
    for name in names:
        for domain, shade, marker in (
            ("mixed", colours[name], "o"),
            ("mono", lighter(colours[name]), "^"),
        ):
            sel = (singers_arr == name) & (domains_arr == domain)
            if sel.any():
                ax.scatter(
                    xy[sel, 0],
                    xy[sel, 1],
                    s=14,
                    color=shade,
                    marker=marker,
                    edgecolors="none",
                    label=f"{name} ({domain})",
                )
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title or "t-SNE of track vectors (light ^ = monophonic, dark o = mixed)")
    if len(names) <= 24:
        ax.legend(fontsize=6, ncol=2, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    fig.tight_layout()
    return _save(fig, plt, path)


def snr_curves(
    curves: dict[str, dict[float, float]],
    path: str | Path,
    ylabel: str = "singer-ID top-1",
    title: str = "",
) -> Path:
    """Line plot of a figure against the vocal-to-accompaniment ratio.

    curves: {label: {snr_db: value}}. Returns the PNG path.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
    for label, points in curves.items():
        xs = sorted(points)
        ax.plot(xs, [points[x] for x in xs], marker="o", label=label)
    ax.set_xlabel("vocal-to-accompaniment ratio (dB)")
    ax.set_ylabel(ylabel)
    ax.set_ylim(0.0, 1.0)
    ax.grid(alpha=0.3)
    ax.set_title(title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, plt, path)


def det_curves(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: str | Path) -> Path:
    """Open-set DET plot: label -> (false-alarm rate, detection-and-identification rate),
    drawn as miss (1 - DIR) against false alarm on normal-deviate axes."""
    from scipy.stats import norm

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 5), dpi=110)
    ticks = np.array([0.001, 0.01, 0.05, 0.2, 0.5, 0.8, 0.95])
    for label, (fa, dir_) in curves.items():
        fa_c = np.clip(fa, 1e-4, 1 - 1e-4)
        miss = np.clip(1.0 - dir_, 1e-4, 1 - 1e-4)
        ax.plot(norm.ppf(fa_c), norm.ppf(miss), label=label, drawstyle="steps-post")
    lim = norm.ppf([5e-4, 0.99])
    ax.set_xlim(*lim)
    ax.set_ylim(*lim)
    ax.set_xticks(norm.ppf(ticks), [f"{t:g}" for t in ticks])
    ax.set_yticks(norm.ppf(ticks), [f"{t:g}" for t in ticks])
    ax.set_xlabel("false-alarm rate (impostor query accepted)")
    ax.set_ylabel("miss rate (known query not accepted as its singer)")
    ax.grid(alpha=0.3)
    ax.set_title("Open-set identification (DET)")
    ax.legend(fontsize=6)
    fig.tight_layout()
    return _save(fig, plt, path)


def _save(fig: Any, plt: Any, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", bbox_inches="tight")
    plt.close(fig)
    return path
