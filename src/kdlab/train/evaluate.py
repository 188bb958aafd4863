"""Evaluation: logits of a model over a whole split, and the metrics every run reports."""

from __future__ import annotations

import torch

from kdlab import metrics
from kdlab.data.loader import DeviceLoader
from kdlab.train.runtime import Runtime


def predict(model: torch.nn.Module, loader: DeviceLoader, runtime: Runtime) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits float32 N x K, labels N) on the CPU, model in eval mode, no augmentation, in split order."""
    was_training = model.training
    model.eval()
    outputs = []
    with torch.inference_mode(), runtime.autocast():
        for inputs, _ in loader.batches(0):
            outputs.append(model(inputs).float())
    model.train(was_training)
    return torch.cat(outputs).cpu(), loader.labels.cpu()


def split_metrics(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    return {
        "acc": metrics.accuracy(logits, labels),
        "nll": metrics.nll(logits, labels),
        "ece": metrics.ece(logits, labels),
    }
