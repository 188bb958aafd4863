"""``vid``: variational information distillation (Ahn et al. 2019, "Variational Information Distillation for
Knowledge Transfer"): maximise a variational lower bound on the mutual information between student and teacher
features, i.e. minimise the teacher features' negative log-likelihood under a Gaussian predicted from the student's."""

from __future__ import annotations

import math

import torch
import torch.nn as nn
from pydantic import Field

from kdlab.losses.features import vid_loss
from kdlab.methods import register
from kdlab.methods.with_features import FeatureParams, WithFeatures


class GaussianRegressor(nn.Module):
    """mu(f_s): three 1x1 convolutions with ReLUs between (linear layers for vectors), the teacher's width in the
    middle and at the output, and a per-channel log-scale whose softplus is the variance, initialised so the
    variance starts at ``initial_variance``."""

    def __init__(self, student_shape: torch.Size, teacher_shape: torch.Size, initial_variance: float, eps: float):
        super().__init__()
        c_in, c_out = student_shape[1], teacher_shape[1]
        layer = (lambda i, o: nn.Conv2d(i, o, 1, bias=False)) if len(student_shape) == 4 else nn.Linear
        self.mean = nn.Sequential(layer(c_in, c_out), nn.ReLU(), layer(c_out, c_out), nn.ReLU(), layer(c_out, c_out))
        inverse_softplus = math.log(math.expm1(initial_variance - eps))
        self.log_scale = nn.Parameter(torch.full((c_out,), inverse_softplus))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mean(x)


@register("vid")
class VariationalInformation(WithFeatures):
    """L = gamma CE + beta sum_pairs NLL(f_t | N(mu(f_s), sigma^2)) (term ``vid``), one
    :class:`GaussianRegressor` per tapped pair, trained with the student and left out of the exported model.
    Defaults: RepDistiller's CIFAR-100 run (beta 1, the three residual stages ``feat[1:-1]``, initial variance 5,
    eps 1e-5; the pairs' terms are summed as there) (docs/methods/feature_kd.md §6)."""

    term = "vid"

    class Params(FeatureParams):
        beta: float = Field(1.0, ge=0, description="weight of the VID term")
        student_taps: list[str] = Field(default_factory=lambda: ["stage2", "stage3", "stage4"])
        teacher_taps: list[str] = Field(default_factory=lambda: ["stage2", "stage3", "stage4"])
        initial_variance: float = Field(5.0, gt=0, description="sigma^2 at the start of training")
        eps: float = Field(1e-5, gt=0, description="the variance's floor")

    def __init__(self, model, params, context):
        super().__init__(model, params, context)
        self.regressors = nn.ModuleList(GaussianRegressor(s, t, params.initial_variance, params.eps)
                                        for s, t in zip(*self.feature_shapes(context)))

    def feature_loss(self, student, teacher, keys=None):
        return sum(vid_loss(r(s), t, r.log_scale, self.params.eps)
                   for r, s, t in zip(self.regressors, student, teacher))
