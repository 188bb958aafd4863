"""``ard``: adversarially robust distillation (Goldblum et al. 2020, "Adversarially Robust Distillation", AAAI): the
student, attacked by PGD, is trained to match the teacher's soft targets on the clean inputs
(docs/methods/robust_distillation.md)."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from kdlab import losses
from kdlab.adversarial import pgd_attack
from kdlab.methods import register
from kdlab.methods.with_teacher import TeacherParams, WithTeacher


@register("ard")
class AdversariallyRobustDistillation(WithTeacher):
    """L = alpha tau^2 KL(softmax(z^t(x) / tau) || softmax(z(x_adv) / tau)) + (1 - alpha) CE(z(x), y), terms ``ard``
    and ``ce``; x_adv = PGD on the student's cross-entropy from a random start (:func:`kdlab.adversarial.pgd_attack`).
    The teacher sees clean inputs only, so its logit cache serves. Defaults: the authors' CIFAR-10 code (alpha 1,
    tau 30, eps 8/255, step 2/255, 10 steps; KL averaged over N x K elements as ``nn.KLDivLoss()`` does,
    ``kl_reduction: batchmean`` for kdlab's usual sum over classes; the attack runs with the student in train mode
    as there, ``attack_mode: eval`` keeps BatchNorm statistics out of it). The clean forward pass always runs (it
    gives the logits the engine's train accuracy counts, and BatchNorm sees clean batches as in the reference).
    Random starts come from a generator seeded by (attack_seed, epoch, step), so a resumed run repeats them."""

    class Params(TeacherParams):
        alpha: float = Field(1.0, ge=0, le=1, description="weight of the adversarial distillation term")
        tau: float = Field(30.0, gt=0, description="temperature")
        eps: float = Field(8 / 255, ge=0, description="L-infinity radius in pixel units")
        step_size: float = Field(2 / 255, gt=0, description="PGD step in pixel units")
        steps: int = Field(10, ge=1, description="PGD steps")
        random_start: bool = True
        clamp: bool = Field(True, description="keep pixels in [0, 1]")
        kl_reduction: Literal["elementwise", "batchmean"] = Field("elementwise", description="elementwise: mean "
                                                                  "over N x K (the reference); batchmean: over N")
        attack_mode: Literal["train", "eval"] = Field("train", description="the student's mode while attacking")
        attack_seed: int = Field(0, ge=0, description="seed of the random starts (with the epoch and step)")

    def __init__(self, model, params, context):
        super().__init__(model, params, context)
        self._normalisation = (context.mean, context.std)  # as tensors on the inputs' device after the first step
        self._epoch, self._step = -1, 0

    def _mean_std(self, like: torch.Tensor):
        mean, std = self._normalisation
        if mean is not None and not (isinstance(mean, torch.Tensor) and mean.device == like.device):
            self._normalisation = mean, std = (torch.as_tensor(mean, dtype=torch.float32, device=like.device),
                                               torch.as_tensor(std, dtype=torch.float32, device=like.device))
        return mean, std

    def _generator(self, epoch: int, device) -> torch.Generator:
        if epoch != self._epoch:
            self._epoch, self._step = epoch, 0
        self._step += 1
        seed = (self.params.attack_seed * 1_000_003 + epoch) * 1_000_003 + self._step
        return torch.Generator(device=device).manual_seed(seed % 2**63)

    def forward(self, inputs, labels, epoch, keys=None):
        p = self.params
        training = self.model.training
        self.model.train(training and p.attack_mode == "train")
        mean, std = self._mean_std(inputs)
        adversarial = pgd_attack(self.model, inputs, labels, eps=p.eps, step_size=p.step_size, steps=p.steps,
                                 mean=mean, std=std, random_start=p.random_start,
                                 clamp=(0.0, 1.0) if p.clamp else None,
                                 generator=self._generator(epoch, inputs.device))
        self.model.train(training)
        adversarial_logits = self.model(adversarial)
        logits = self.model(inputs)
        kd = losses.kl_to_logits(self.teacher(inputs, keys), adversarial_logits, p.tau)
        if p.kl_reduction == "elementwise":
            kd = kd / logits.shape[1]
        return logits, {"ard": p.alpha * kd, "ce": (1.0 - p.alpha) * losses.cross_entropy(logits, labels)}
