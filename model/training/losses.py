"""Metric-learning losses on cosine similarity (paper, equations (1)-(2))."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def hinge_rank_loss(
    anchor: torch.Tensor, positive: torch.Tensor, negatives: torch.Tensor, margin: float = 0.1
) -> torch.Tensor:
    """Mean over the batch of sum_i max(0, margin - s(a, p) + s(a, n_i)).

    anchor, positive: (batch, dim); negatives: (batch, n_neg, dim); s is cosine similarity.
    """
    a = F.normalize(anchor, dim=-1)
    s_pos = (a * F.normalize(positive, dim=-1)).sum(-1)  # (batch,)
    s_neg = torch.einsum("bd,bnd->bn", a, F.normalize(negatives, dim=-1))  # (batch, n_neg)
    return F.relu(margin - s_pos[:, None] + s_neg).sum(dim=1).mean()


def in_batch_hinge_loss(
    anchor: torch.Tensor,
    positive: torch.Tensor,
    labels: torch.Tensor,
    margin: float = 0.1,
    n_hardest: int = 4,
) -> torch.Tensor:
    """Hinge rank loss whose negatives are the batch's other positives.

    For anchor i the candidates are positives j of another singer (labels[j] != labels[i]);
    the `n_hardest` most similar ones enter the sum of equation (1). anchor, positive:
    (batch, dim); labels: (batch,) singer ids. Anchors with no candidate contribute nothing.
    """
    a = F.normalize(anchor, dim=-1)
    p = F.normalize(positive, dim=-1)
    sim = a @ p.T  # (batch, batch)
    s_pos = sim.diagonal()
    other = labels[:, None] != labels[None, :]
    s_neg = sim.masked_fill(~other, float("-inf"))
    k = min(n_hardest, sim.shape[1])
    hardest = s_neg.topk(k, dim=1).values  # (batch, k); -inf where fewer candidates
    terms = F.relu(margin - s_pos[:, None] + hardest)
    terms = torch.where(torch.isfinite(hardest), terms, torch.zeros_like(terms))
    return terms.sum(dim=1).mean()
