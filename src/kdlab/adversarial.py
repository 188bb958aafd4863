"""Projected gradient descent (PGD) attacks in pixel space, and robust accuracy under them (Madry et al. 2018; the
attack of Goldblum et al. 2020, "Adversarially Robust Distillation", AAAI, whose code this follows: a uniform random
start in the L-infinity ball, signed-gradient ascent on the student's summed cross-entropy, projection onto the ball
and onto [0, 1] after every step). docs/methods/robust_distillation.md.

Inputs arrive normalised, x = (p - mean) / std; the attack moves the pixels p (so ``eps`` and ``step_size`` are in
pixel units, 8/255 and 2/255 for CIFAR) and returns normalised inputs. The model is used as given: callers put it in
eval mode so that the attack's forward passes do not move BatchNorm statistics.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def _channel_view(values: Sequence[float] | None, like: torch.Tensor) -> torch.Tensor | None:
    if values is None:
        return None
    values = values if isinstance(values, torch.Tensor) else torch.as_tensor(values, dtype=like.dtype)
    return values.to(device=like.device, dtype=like.dtype).view(1, -1, *([1] * (like.dim() - 2)))


def pgd_attack(model, inputs: torch.Tensor, labels: torch.Tensor, *, eps: float, step_size: float, steps: int,
               mean: Sequence[float] | None = None, std: Sequence[float] | None = None, random_start: bool = True,
               clamp: tuple[float, float] | None = (0.0, 1.0), generator: torch.Generator | None = None) -> torch.Tensor:
    """Adversarial versions of ``inputs`` (normalised like them, detached): ``steps`` steps of
    p <- Proj_{||p - p0||_inf <= eps, clamp}(p + step_size sign(grad_p CE_sum(model(p), y)))."""
    mean_, std_ = _channel_view(mean, inputs), _channel_view(std, inputs)
    to_pixels = (lambda x: x * std_ + mean_) if mean_ is not None else (lambda x: x)
    to_inputs = (lambda p: (p - mean_) / std_) if mean_ is not None else (lambda p: p)
    x = inputs.detach()
    original = to_pixels(x if x.dtype in (torch.float32, torch.float64) else x.float())
    pixels = original.clone()
    if random_start and eps > 0:
        noise = torch.rand(original.shape, generator=generator, device=original.device, dtype=original.dtype)
        pixels = pixels + (2 * noise - 1) * eps
    pixels = _project(pixels, original, eps, clamp)
    for _ in range(steps):
        pixels.requires_grad_(True)
        with torch.enable_grad():
            loss = F.cross_entropy(model(to_inputs(pixels).to(inputs.dtype)).float(), labels, reduction="sum")
            grad, = torch.autograd.grad(loss, [pixels])
        pixels = _project(pixels.detach() + step_size * grad.sign(), original, eps, clamp)
    return to_inputs(pixels).to(inputs.dtype).detach()


def _project(pixels, original, eps, clamp):
    pixels = torch.minimum(torch.maximum(pixels, original - eps), original + eps)
    return pixels.clamp(*clamp) if clamp is not None else pixels


def robust_accuracy(model, loader, *, eps: float, step_size: float, steps: int, mean=None, std=None,
                    random_start: bool = True, clamp=(0.0, 1.0), seed: int = 0, max_samples: int | None = None,
                    autocast=None) -> dict:
    """Clean and PGD accuracy of ``model`` on the first ``max_samples`` samples of ``loader`` (all: None), in split
    order, the random starts drawn from a generator seeded with ``seed`` (so the number is reproducible). Model in
    eval mode throughout; data-parallel loaders count their rank's shard, summed by the caller."""
    was_training = model.training
    model.eval()
    correct = robust = seen = 0
    generator = None
    for inputs, labels in loader.batches(0):
        if generator is None:
            generator = torch.Generator(device=inputs.device).manual_seed(seed)
        if max_samples is not None and seen >= max_samples:
            break
        if max_samples is not None:
            inputs, labels = inputs[: max_samples - seen], labels[: max_samples - seen]
        context = autocast() if autocast is not None else torch.autocast("cpu", enabled=False)
        with context:
            adversarial = pgd_attack(model, inputs, labels, eps=eps, step_size=step_size, steps=steps, mean=mean,
                                     std=std, random_start=random_start, clamp=clamp, generator=generator)
            with torch.no_grad():
                correct += int((model(inputs).argmax(1) == labels).sum())
                robust += int((model(adversarial).argmax(1) == labels).sum())
        seen += len(labels)
    model.train(was_training)
    return {"samples": seen, "clean_acc": correct / seen if seen else float("nan"),
            "robust_acc": robust / seen if seen else float("nan")}
