"""``reviewkd``: knowledge review (Chen et al. 2021, "Distilling Knowledge via Knowledge Review", CVPR): each student
stage is fused with everything deeper than it (attention-based fusion, deepest first) before it is compared with the
teacher's same stage under the hierarchical context loss (docs/methods/feature_kd.md §8)."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import Field

from kdlab.errors import KdlabError
from kdlab.losses.features import review_loss
from kdlab.methods import register
from kdlab.methods.with_features import FeatureParams, WithFeatures


def as_map(features: torch.Tensor) -> torch.Tensor:
    """N x D vectors as N x D x 1 x 1 maps; maps unchanged."""
    return features if features.dim() == 4 else features.view(*features.shape, 1, 1)


class AttentionFusion(nn.Module):
    """ReviewKD's ABF: the student map is reduced to ``mid`` channels (1x1 conv + BN); with ``fuse``, the residual from
    the deeper levels is resized (nearest) to its size and the two are mixed by two per-pixel sigmoid weights from a
    1x1 conv over both; the mix, resized to the teacher's side, is expanded to the teacher's channels (3x3 conv + BN).
    Returns (the output compared with the teacher, the mix passed on as the next level's residual)."""

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, fuse: bool):
        super().__init__()
        self.reduce = nn.Sequential(nn.Conv2d(in_channels, mid_channels, 1, bias=False), nn.BatchNorm2d(mid_channels))
        self.attention = nn.Sequential(nn.Conv2d(2 * mid_channels, 2, 1), nn.Sigmoid()) if fuse else None
        self.expand = nn.Sequential(nn.Conv2d(mid_channels, out_channels, 3, padding=1, bias=False),
                                    nn.BatchNorm2d(out_channels))

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None, out_size: tuple[int, int]):
        x = self.reduce(x)
        if self.attention is not None:
            residual = F.interpolate(residual, size=x.shape[-2:], mode="nearest")
            weights = self.attention(torch.cat([x, residual], dim=1))
            x = x * weights[:, :1] + residual * weights[:, 1:]
        if x.shape[-2:] != out_size:
            x = F.interpolate(x, size=out_size, mode="nearest")
        return self.expand(x), x


@register("reviewkd")
class KnowledgeReview(WithFeatures):
    """L = gamma CE + beta w(epoch) sum_levels HCL(fused_s, f_t) (term ``review``), w = min((epoch + 1) /
    warmup_epochs, 1). The fusion modules belong to the method (trained, resumed, never exported). Defaults:
    mdistiller's CIFAR-100 ReviewKD (taps stage2..stage4 and the pooled penultimate features as a 1 x 1 map, beta 1,
    20 warm-up epochs of 240, mid channels min(512, the deepest student tap's channels)). Deviation, said in the
    docs: kdlab taps the stages' outputs after their last ReLU, where mdistiller takes the teacher's pre-activations."""

    term = "review"

    class Params(FeatureParams):
        beta: float = Field(1.0, ge=0, description="weight of the review term")
        student_taps: list[str] = Field(default_factory=lambda: ["stage2", "stage3", "stage4", "penultimate"])
        teacher_taps: list[str] = Field(default_factory=lambda: ["stage2", "stage3", "stage4", "penultimate"])
        warmup_epochs: int = Field(20, ge=0, description="the review weight rises linearly over this many epochs")
        max_mid_channels: int = Field(512, ge=1, description="cap of the fusion width")

    def __init__(self, model, params, context):
        super().__init__(model, params, context)
        student, teacher = self.feature_shapes(context)
        sides = [shape[2:] if len(shape) == 4 else (1, 1) for shape in student]
        if any(a[0] < b[0] or a[1] < b[1] for a, b in zip(sides, sides[1:])):
            raise KdlabError(f"method reviewkd: student_taps must go from shallow to deep (sizes that do not grow), "
                             f"got {params.student_taps} with sizes {[tuple(s) for s in sides]}")
        mid = min(params.max_mid_channels, student[-1][1])
        self.fusions = nn.ModuleList(AttentionFusion(s[1], mid, t[1], fuse=i < len(student) - 1)
                                     for i, (s, t) in enumerate(zip(student, teacher)))
        self._out_sizes = [tuple(t[2:]) if len(t) == 4 else (1, 1) for t in teacher]

    def review(self, student: list[torch.Tensor]) -> list[torch.Tensor]:
        """The fused student features, shallow to deep (computed deepest first)."""
        outputs, residual = [], None
        for fusion, features, size in zip(reversed(self.fusions), reversed(student), reversed(self._out_sizes)):
            out, residual = fusion(as_map(features), residual, size)
            outputs.append(out)
        return outputs[::-1]

    def feature_loss(self, student, teacher, keys=None):
        return review_loss(self.review(student), [as_map(t) for t in teacher])

    def forward(self, inputs, labels, epoch, keys=None):
        logits, terms = super().forward(inputs, labels, epoch, keys)
        warmup = self.params.warmup_epochs
        if warmup > 0:
            terms[self.term] = terms[self.term] * min((epoch + 1) / warmup, 1.0)
        return logits, terms
