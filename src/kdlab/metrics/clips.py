"""Clip-level evaluation of audio cut into segments (GTZAN's usual protocol): a clip's prediction is the mean of its
segments' softmax probabilities.

``clip_probabilities`` gives, per distinct group g (in increasing order of g), p_g = mean_{i in g} softmax(z_i) and
the group's label; a group whose segments carry different labels is an error. ``clip_accuracy`` is the top-1
accuracy of those predictions, and ``clip_nll`` the mean of -log p_g[y_g].
"""

from __future__ import annotations

import numpy as np
import torch

from kdlab.metrics._inputs import as_logits_and_labels


def clip_probabilities(logits, labels, groups) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean segment probabilities G x K, clip labels G) over the distinct values of ``groups`` (N integers)."""
    z, y = as_logits_and_labels(logits, labels)
    g = torch.as_tensor(np.asarray(groups.cpu() if isinstance(groups, torch.Tensor) else groups), dtype=torch.int64)
    if g.shape != y.shape:
        raise ValueError(f"groups must be one per sample ({tuple(y.shape)}), got {tuple(g.shape)}")
    values, inverse = torch.unique(g, return_inverse=True)
    counts = torch.bincount(inverse, minlength=len(values)).to(torch.float64)
    sums = torch.zeros(len(values), z.shape[1], dtype=torch.float64).index_add_(0, inverse, torch.softmax(z, dim=1))
    clip_labels = torch.full((len(values),), -1, dtype=torch.int64).scatter_(0, inverse, y)
    if not torch.equal(clip_labels[inverse], y):
        raise ValueError("the segments of one clip (group) have different labels")
    return sums / counts[:, None], clip_labels


def clip_accuracy(logits, labels, groups) -> float:
    """Top-1 accuracy of the clips: argmax of the mean segment probabilities against the clip label."""
    p, y = clip_probabilities(logits, labels, groups)
    return (p.argmax(dim=1) == y).double().mean().item()


def clip_nll(logits, labels, groups) -> float:
    """Mean over clips of -log(mean segment probability of the clip's label)."""
    p, y = clip_probabilities(logits, labels, groups)
    return (-torch.log(p.gather(1, y[:, None]).clamp_min(1e-300))).mean().item()
