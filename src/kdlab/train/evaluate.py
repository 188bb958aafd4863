"""Evaluation: logits of a model over a whole split, and the metrics every run reports."""

from __future__ import annotations

import torch

from kdlab import calibrate, metrics
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


def evaluation_record(predictions: dict[str, tuple[torch.Tensor, torch.Tensor]],
                      teacher_predictions: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None) -> dict:
    """Every metric of :func:`kdlab.metrics.evaluate_all` per split; with a val and a test split, the temperature
    fitted on val (Guo et al. 2017) and the test metrics before and after scaling; with a teacher, top-1 agreement
    and KL(teacher || student) per split (Stanton et al. 2021)."""
    record: dict = {split: metrics.evaluate_all(logits, labels) for split, (logits, labels) in predictions.items()}
    if "val" in predictions and "test" in predictions:
        record["calibration"] = {"fitted_on": "val", "evaluated_on": "test",
                                 **calibrate.calibration_report(*predictions["val"], *predictions["test"])}
    if teacher_predictions:
        record["fidelity"] = {split: metrics.fidelity_all(predictions[split][0], logits)
                              for split, (logits, _) in teacher_predictions.items() if split in predictions}
    return record
