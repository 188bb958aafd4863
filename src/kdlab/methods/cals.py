"""``cals``: class-adaptive label smoothing via an augmented Lagrangian (Liu et al. 2023, "Class Adaptive Network
Calibration", CVPR; docs/methods/margin_smoothing.md §6.7)."""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field

from kdlab import losses
from kdlab.errors import KdlabError
from kdlab.losses.lagrangian import cals_penalty, updated_multipliers
from kdlab.methods import register
from kdlab.methods.base import Method


@register("cals")
class ClassAdaptiveSmoothing(Method):
    """L = CE + sum_k PHR(h_ik; lambda_k, rho) averaged over samples (terms ``ce`` and ``penalty``), h the normalised
    logit-margin constraints. After every epoch the per-class multipliers lambda_k move to the mean penalty gradient
    on the validation split, and every ``rho_step`` epochs rho grows by ``rho_growth`` when the validation penalty
    did not fall below ``tao`` times the previous epoch's (:mod:`kdlab.losses.lagrangian`). lambda, rho and the
    previous penalty are buffers: checkpointed, resumed exactly, logged per epoch (``method_lambda_mean``,
    ``method_lambda_max``, ``method_rho``). Defaults: the authors' config (margin 20, rho 1..10, step 10, growth
    1.2, tao 0.9, lambda in [1e-6, 1e6])."""

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid")
        margin: float = Field(20.0, gt=0, description="m of the constraints max_j z_j - z_k <= m")
        normalise: bool = Field(True, description="divide the constraints by m")
        lambd_min: float = Field(1e-6, gt=0, description="the multipliers' floor (and start)")
        lambd_max: float = Field(1e6, gt=0, description="the multipliers' ceiling")
        rho_min: float = Field(1.0, gt=0, description="the penalty parameter's start and floor")
        rho_max: float = Field(10.0, gt=0, description="its ceiling")
        rho_step: int = Field(10, ge=0, description="epochs between rho updates (0: rho stays at rho_min)")
        rho_growth: float = Field(1.2, ge=1, description="rho's factor when the penalty does not fall enough (gamma)")
        tao: float = Field(0.9, gt=0, description="the penalty must fall below tao x the previous one")

    def __init__(self, model, params, context):
        super().__init__(model, params, context)
        if context.has_validation is False:
            raise KdlabError("method cals updates its multipliers on the validation split: set data.val_size")
        self.register_buffer("lambd", torch.full((context.num_classes,), params.lambd_min, dtype=torch.float32))
        self.register_buffer("rho", torch.tensor(params.rho_min, dtype=torch.float32))
        self.register_buffer("previous_penalty", torch.tensor(float("nan")))  # nan: none yet

    def forward(self, inputs, labels, epoch, keys=None):
        logits = self.model(inputs)
        p = self.params
        return logits, {"ce": losses.cross_entropy(logits, labels),
                        "penalty": cals_penalty(logits, self.lambd, self.rho, p.margin, p.normalise)}

    @torch.no_grad()
    def end_epoch(self, epoch, validation):
        if validation is None:
            raise KdlabError("method cals updates its multipliers on the validation split, and this run has none")
        p = self.params
        logits, _ = validation()
        logits = logits.to(self.lambd.device)
        penalty = cals_penalty(logits, self.lambd, self.rho, p.margin, p.normalise)
        self.lambd.copy_(updated_multipliers(logits, self.lambd, self.rho, p.margin, p.normalise, p.lambd_min,
                                             p.lambd_max))
        previous = self.previous_penalty
        if p.rho_step > 0 and (epoch + 1) % p.rho_step == 0:
            grow = bool(~previous.isnan() & (previous > 0) & (penalty > 0) & (penalty > p.tao * previous))
            if grow:
                self.rho.copy_(torch.clamp(self.rho * p.rho_growth, max=p.rho_max))
        self.previous_penalty.copy_(penalty)

    def epoch_log(self):
        return {"lambda_mean": float(self.lambd.mean()), "lambda_max": float(self.lambd.max()),
                "rho": float(self.rho)}
