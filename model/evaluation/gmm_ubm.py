"""The paper's baseline: a GMM-UBM on MFCCs (Reynolds, Quatieri & Dunn, DSP 2000).

A universal background model (diagonal-covariance GMM, 256 components by default) is fitted by
EM on MFCC frames (13 coefficients) pooled over the singer-model tracks of one domain. A
singer (or a track) gets the UBM with MAP-adapted means:

    n_k = sum_t gamma_tk,  E_k = sum_t gamma_tk x_t / n_k,  alpha_k = n_k / (n_k + r),
    mu_k' = alpha_k E_k + (1 - alpha_k) mu_k           (weights and variances stay the UBM's)

A query scores against a model by the average per-frame log-likelihood ratio
log p(x | model) - log p(x | UBM). `score` does it exactly; with `top_c` only the C best UBM
components of each frame are evaluated in both models (Reynolds' fast scoring), which is what
makes scoring hundreds of per-track models affordable for query-by-singer.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

_LOG_2PI = float(np.log(2.0 * np.pi))


@dataclass(frozen=True)
class GmmUbmConfig:
    """Front end and model sizes. Frame lengths in samples at the audio's rate."""

    n_mfcc: int = 13
    n_mels: int = 40
    n_fft: int = 512  # 23 ms at 22.05 kHz
    hop_length: int = 256  # 11.6 ms
    frame_top_db: float | None = 40.0  # keep frames within this many dB of the loudest; None: all
    n_components: int = 256
    relevance: float = 16.0  # MAP relevance factor r
    ubm_max_frames: int = 100_000  # UBM frames, sampled uniformly from the pool (cost bound)
    ubm_max_iter: int = 100
    ubm_tol: float = 1e-3
    reg_covar: float = 1e-3
    qbs_top_c: int | None = 5  # top-C scoring of per-track models; None: exact
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def mfcc_frames(y: np.ndarray, sr: int, cfg: GmmUbmConfig = GmmUbmConfig()) -> np.ndarray:
    """Waveform (samples,) at `sr` -> MFCC frames (frames, n_mfcc) float32.

    Frames quieter than `frame_top_db` below the recording's loudest frame are dropped (silence
    carries no singer information and would only pull UBM components onto itself).
    """
    import librosa

    y = np.asarray(y, dtype=np.float32)
    mfcc = librosa.feature.mfcc(
        y=y, sr=sr, n_mfcc=cfg.n_mfcc, n_fft=cfg.n_fft, hop_length=cfg.hop_length, n_mels=cfg.n_mels
    ).T
    if cfg.frame_top_db is not None and len(mfcc):
        rms = librosa.feature.rms(y=y, frame_length=cfg.n_fft, hop_length=cfg.hop_length)[0]
        db = 20.0 * np.log10(np.maximum(rms[: len(mfcc)], 1e-10))
        mfcc = mfcc[db > db.max() - cfg.frame_top_db]
    return np.ascontiguousarray(mfcc, dtype=np.float32)


class GmmUbm:
    """A diagonal GMM (the UBM) with MAP mean adaptation and log-likelihood-ratio scoring.

    weights (K,), means (K, D), variances (K, D).
    """

    def __init__(self, weights: np.ndarray, means: np.ndarray, variances: np.ndarray):
        self.weights = np.asarray(weights, dtype=np.float64)
        self.means = np.asarray(means, dtype=np.float64)
        self.variances = np.asarray(variances, dtype=np.float64)
        self._precision = 1.0 / self.variances
        # log w_k - 0.5 * sum_d log(2 pi var_kd): the part of log N that does not depend on x or mu.
        self._const = np.log(self.weights) - 0.5 * (
            self.means.shape[1] * _LOG_2PI + np.log(self.variances).sum(axis=1)
        )

    @property
    def n_components(self) -> int:
        return len(self.weights)

    @classmethod
    def fit(
        cls, frames: np.ndarray, cfg: GmmUbmConfig = GmmUbmConfig(), n_components: int | None = None
    ) -> GmmUbm:
        """EM (sklearn GaussianMixture, k-means init) on (n_frames, D) frames.

        At most `cfg.ubm_max_frames` frames are used, drawn uniformly without replacement.
        """
        from sklearn.mixture import GaussianMixture

        frames = np.asarray(frames, dtype=np.float64)
        k = n_components or cfg.n_components
        if len(frames) < k:
            raise ValueError(f"{len(frames)} frames cannot fit a {k}-component UBM")
        rng = np.random.default_rng(cfg.seed)
        if len(frames) > cfg.ubm_max_frames:
            frames = frames[rng.choice(len(frames), cfg.ubm_max_frames, replace=False)]
        gmm = GaussianMixture(
            n_components=k,
            covariance_type="diag",
            max_iter=cfg.ubm_max_iter,
            tol=cfg.ubm_tol,
            reg_covar=cfg.reg_covar,
            random_state=cfg.seed,
        ).fit(frames)
        return cls(gmm.weights_, gmm.means_, gmm.covariances_)

    def component_log_likelihood(
        self, x: np.ndarray, means: np.ndarray | None = None
    ) -> np.ndarray:
        """log(w_k N(x_t; mu_k, var_k)): (T, D) -> (T, K). `means` (K, D) replaces the UBM's."""
        x = np.asarray(x, dtype=np.float64)
        mu = self.means if means is None else means
        p = self._precision
        quad = (x * x) @ p.T - 2.0 * x @ (mu * p).T + (mu * mu * p).sum(axis=1)
        return self._const - 0.5 * quad

    def log_likelihood(self, x: np.ndarray) -> np.ndarray:
        """Per-frame log p(x_t | UBM): (T, D) -> (T,)."""
        return _logsumexp(self.component_log_likelihood(x), axis=1)

    def adapt_means(self, x: np.ndarray, relevance: float = 16.0) -> np.ndarray:
        """MAP-adapted means (K, D) from frames (T, D) (see the module docstring)."""
        x = np.asarray(x, dtype=np.float64)
        ll = self.component_log_likelihood(x)
        gamma = np.exp(ll - _logsumexp(ll, axis=1)[:, None])  # (T, K) responsibilities
        n = gamma.sum(axis=0)
        first = gamma.T @ x  # (K, D) = n_k * E_k
        alpha = (n / (n + relevance))[:, None]
        expect = first / np.maximum(n, 1e-12)[:, None]
        return alpha * expect + (1.0 - alpha) * self.means

    def score(self, x: np.ndarray, means: np.ndarray, top_c: int | None = None) -> np.ndarray:
        """Average log-likelihood ratio of frames (T, D) for each adapted model.

        means: (S, K, D) adapted means of S models. Returns (S,) float64. `top_c`: evaluate only
        each frame's C best UBM components in both numerator and denominator; None: exact.
        """
        x = np.asarray(x, dtype=np.float64)
        means = np.asarray(means, dtype=np.float64)
        if len(x) == 0:
            raise ValueError("no frames to score")
        ubm_ll = self.component_log_likelihood(x)  # (T, K)
        # Only the means move, so with delta = mu_s - mu (per component k):
        #   log N(x; mu + delta) = log N(x; mu) + (x - mu) . (p * delta) - 0.5 * (p * delta) . delta
        delta = means - self.means[None]
        delta_p = delta * self._precision[None]  # (S, K, D)
        offset = 0.5 * (delta_p * delta).sum(axis=2)  # (S, K)
        if top_c is None or top_c >= self.n_components:
            return self._score_exact(x, ubm_ll, delta_p, offset)
        return self._score_top_c(x, ubm_ll, delta_p, offset, top_c)

    def _score_exact(
        self, x: np.ndarray, ubm_ll: np.ndarray, delta_p: np.ndarray, offset: np.ndarray
    ) -> np.ndarray:
        """Every component: one matrix product x @ (p * delta).T for a chunk of models."""
        base = _logsumexp(ubm_ll, axis=1).mean()
        shift = (delta_p * self.means[None]).sum(axis=2) + offset  # (S, K)
        out = np.empty(len(delta_p))
        chunk = max(1, int(1e7 // ubm_ll.size))  # bound (chunk, T, K) at ~80 MB
        for s0 in range(0, len(delta_p), chunk):
            dp = delta_p[s0 : s0 + chunk]
            gain = (x @ dp.reshape(-1, dp.shape[2]).T).reshape(len(x), len(dp), -1)
            ll = ubm_ll[None] + gain.transpose(1, 0, 2) - shift[s0 : s0 + chunk, None, :]
            out[s0 : s0 + chunk] = _logsumexp(ll, axis=2).mean(axis=1) - base
        return out

    def _score_top_c(
        self,
        x: np.ndarray,
        ubm_ll: np.ndarray,
        delta_p: np.ndarray,
        offset: np.ndarray,
        top_c: int,
    ) -> np.ndarray:
        """The C best UBM components of each frame, in both numerator and denominator."""
        top = np.argpartition(-ubm_ll, top_c - 1, axis=1)[:, :top_c]  # (T, C)
        ubm_top = np.take_along_axis(ubm_ll, top, axis=1)  # (T, C)
        base = _logsumexp(ubm_top, axis=1).mean()
        # One matrix product per component over the (frame, slot) pairs that use it, laid out
        # contiguously by sorting the pairs by component.
        n_t, n_c = top.shape
        flat = top.ravel()
        order = np.argsort(flat, kind="stable")
        comps = flat[order]
        resid = x[order // n_c] - self.means[comps]  # (N, D), N = T * C, grouped by component
        bounds = np.searchsorted(comps, np.arange(self.n_components + 1))
        ubm_sorted = ubm_top.ravel()[order]
        out = np.empty(len(delta_p))
        chunk = max(1, int(1e7 // flat.size))  # bound the (chunk, N) arrays at ~80 MB each
        for s0 in range(0, len(delta_p), chunk):
            sl = slice(s0, s0 + chunk)
            gain = np.empty((len(delta_p[sl]), flat.size))
            for k in np.flatnonzero(np.diff(bounds)):
                a, b = bounds[k], bounds[k + 1]
                gain[:, a:b] = delta_p[sl, k] @ resid[a:b].T - offset[sl, k][:, None]
            ll = np.empty_like(gain)
            ll[:, order] = gain + ubm_sorted  # back to (frame, slot) order
            out[sl] = _logsumexp(ll.reshape(-1, n_t, n_c), axis=2).mean(axis=1) - base
        return out


def _logsumexp(a: np.ndarray, axis: int) -> np.ndarray:
    m = a.max(axis=axis, keepdims=True)
    return (m + np.log(np.exp(a - m).sum(axis=axis, keepdims=True))).squeeze(axis)
