"""Zipf's label smoothing (Liang et al., ECCV 2022; docs/methods/zipf_ls.md §6.3, code megvii-research/zipfls).

The soft target over the wrong classes follows a Zipf law over the classes' ranks, where the ranks come from the
model's own dense predictions: the final linear classifier applied at every spatial position of the last feature map
votes for a class at each position (:func:`zipf_ranks`). :func:`zipf_ls` is the loss (without the optional auxiliary
heads' CE, which callers add themselves).
"""

from __future__ import annotations

import math

import torch

from kdlab.losses._precision import upcast
from kdlab.losses.cross_entropy import cross_entropy
from kdlab.losses.divergence import kl_from_probs


@torch.no_grad()
def zipf_ranks(dense_logits: torch.Tensor) -> torch.Tensor:
    """Per-sample class ranks from dense votes, as an int64 (N x K) tensor (rank 1 = most votes).

    ``dense_logits`` is (N x K x H x W): the classifier's logits at every spatial position. Each position votes for its
    argmax class; classes are ranked by their vote count, descending, and ties share the minimum rank
    (``scipy.stats.rankdata(-counts, method="min")``), so all classes with 0 votes share one rank too:
    rank_k = 1 + #{j : count_j > count_k}. Carries no gradient.
    """
    if dense_logits.ndim != 4:
        raise ValueError(f"dense_logits must be N x K x H x W, got shape {tuple(dense_logits.shape)}")
    n, k = dense_logits.shape[:2]
    if k < 2:
        raise ValueError(f"dense_logits needs at least 2 classes, got K={k}")
    votes = dense_logits.argmax(dim=1).reshape(n, -1)
    counts = torch.zeros(n, k, dtype=torch.int64, device=dense_logits.device)
    counts.scatter_add_(1, votes, torch.ones_like(votes))
    # #{j : count_j > count_k} = K - #{j : count_j <= count_k}, read off the ascending sort.
    ascending = counts.sort(dim=1).values
    not_greater = torch.searchsorted(ascending, counts, right=True)
    return 1 + k - not_greater


def zipf_ls(z: torch.Tensor, y: torch.Tensor, ranks: torch.Tensor, lam: float = 0.1,
            power: float = 1.0) -> torch.Tensor:
    """Zipf's LS, the sum of :func:`zipf_ls_terms`."""
    terms = zipf_ls_terms(z, y, ranks, lam, power)
    return terms["ce"] + terms["zipf"]


def zipf_ls_terms(z: torch.Tensor, y: torch.Tensor, ranks: torch.Tensor, lam: float = 0.1,
                  power: float = 1.0) -> dict[str, torch.Tensor]:
    """Zipf's LS as its two terms {"ce": CE, "zipf": lam KL(P || softmax(z_{-y}))}::

        CE(z, y) + lam * KL( P || softmax(z_{-y}) )        batchmean

    over the K - 1 non-target classes only: z_{-y} drops the true class's logit, so the softmax is over the other
    K - 1 logits, and P_k is proportional to (1 / rank_k)^power on those classes, renormalised to sum to 1 (the true
    class is removed before normalising). ``ranks`` (N x K, rank 1 = best) is usually :func:`zipf_ranks` of the
    dense logits. P is computed under no_grad. Defaults are the reference code's: lam 0.1, power 1.

    Arguments: lam >= 0, power >= 0, ranks of shape (N x K) with every rank >= 1.
    """
    if not (lam >= 0 and math.isfinite(lam)):
        raise ValueError(f"lam must be a finite number >= 0, got {lam}")
    if not (power >= 0 and math.isfinite(power)):
        raise ValueError(f"power must be a finite number >= 0, got {power}")
    if ranks.shape != z.shape:
        raise ValueError(f"ranks must have the logits' shape {tuple(z.shape)}, got {tuple(ranks.shape)}")
    if bool((ranks < 1).any()):
        raise ValueError("ranks must all be >= 1 (rank 1 = most votes)")
    z = upcast(z)
    n, k = z.shape
    if k < 2:
        raise ValueError(f"Zipf's LS needs at least 2 classes, got K={k}")
    non_target = torch.ones(n, k, dtype=torch.bool, device=z.device)
    non_target[torch.arange(n, device=z.device), y.long()] = False
    z_rest = z[non_target].reshape(n, k - 1)
    with torch.no_grad():
        weights = ranks.to(z.dtype)[non_target].reshape(n, k - 1).pow(-power)
        target = weights / weights.sum(dim=1, keepdim=True)
    return {"ce": cross_entropy(z, y), "zipf": lam * kl_from_probs(target, z_rest)}
