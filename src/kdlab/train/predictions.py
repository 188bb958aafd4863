"""Evaluation: logits of a model over a whole split, and the metrics every run reports."""

from __future__ import annotations

from dataclasses import replace

import torch

from kdlab import metrics
from kdlab.metrics import temperature_scaling
from kdlab.data.loader import DeviceLoader
from kdlab.train.runtime import Runtime


def _whole_split(loader: DeviceLoader, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits of the whole split, its labels) on the CPU: a data-parallel loader's shards gathered from every rank."""
    if loader.distributed is not None:
        logits = loader.distributed.gather_rows(logits, loader.num_split_samples)
    return logits.cpu(), loader.split_labels.cpu()


def _cat(chunks: list[torch.Tensor], loader: DeviceLoader, classes: int | None = None) -> torch.Tensor:
    if chunks:
        return torch.cat(chunks)
    return torch.zeros((0, classes or 0), device=loader.device)  # a rank whose shard of a tiny split is empty


def predict(model: torch.nn.Module, loader: DeviceLoader, runtime: Runtime) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits float32 N x K, labels N) on the CPU, model in eval mode, no augmentation, in split order."""
    was_training = model.training
    model.eval()
    outputs = []
    with torch.inference_mode(), runtime.autocast():
        for inputs, _ in loader.batches(0):
            outputs.append(model(inputs).float())
    model.train(was_training)
    return _whole_split(loader, _cat(outputs, loader, _num_classes(model)))


def _num_classes(model: torch.nn.Module) -> int | None:
    linear = getattr(model, "classifier", None)
    return getattr(linear, "out_features", None)


def predict_heads(method, loader: DeviceLoader, runtime: Runtime) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Every head's (logits float32 N x K, labels N) on the CPU from one pass per batch, for methods that train
    several heads (``method.head_logits``); method in eval mode, no augmentation, in split order."""
    was_training = method.training
    method.eval()
    outputs: dict[str, list[torch.Tensor]] = {}
    with torch.inference_mode(), runtime.autocast():
        for inputs, _ in loader.batches(0):
            for head, logits in method.head_logits(inputs).items():
                outputs.setdefault(head, []).append(logits.float())
    method.train(was_training)
    return {head: _whole_split(loader, torch.cat(chunks)) for head, chunks in outputs.items()}


def evaluate_method(method, loaders: dict[str, DeviceLoader], runtime: Runtime):
    """(predictions of the model per split, every head's predictions per split or None).

    For a method with several heads, the heads are evaluated first; with a ``val`` split the method may then choose
    its inference head from their validation accuracy (``choose_inference_head``), and the model's predictions are
    that head's."""
    if not method.has_heads:
        return {split: predict(method.model, loader, runtime) for split, loader in loaders.items()}, None
    heads = {split: predict_heads(method, loader, runtime) for split, loader in loaders.items()}
    if "val" in heads and hasattr(method, "choose_inference_head"):
        method.choose_inference_head({head: metrics.accuracy(*pred) for head, pred in heads["val"].items()})
    return {split: per_head[method.inference_head] for split, per_head in heads.items()}, heads


def head_metrics(heads: dict[str, dict[str, tuple[torch.Tensor, torch.Tensor]]],
                 groups: dict[str, torch.Tensor | None] | None = None) -> dict[str, float]:
    """``{split}_{acc|nll|ece}@{head}`` (and ``clip_acc`` for segmented audio) for every split and head (the keys
    of metrics.jsonl)."""
    groups = groups or {}
    return {f"{split}_{name}@{head}": value for split, per_head in heads.items()
            for head, pred in per_head.items() for name, value in split_metrics(*pred, groups.get(split)).items()}


def split_metrics(logits: torch.Tensor, labels: torch.Tensor, groups: torch.Tensor | None = None) -> dict[str, float]:
    """acc, nll, ece per epoch; with ``groups`` (segments of clips) also clip_acc (:mod:`kdlab.metrics.clips`)."""
    record = {
        "acc": metrics.accuracy(logits, labels),
        "nll": metrics.nll(logits, labels),
        "ece": metrics.ece(logits, labels),
    }
    if groups is not None:
        record["clip_acc"] = metrics.clip_accuracy(logits, labels, groups)
    return record


def evaluation_record(predictions: dict[str, tuple[torch.Tensor, torch.Tensor]],
                      teacher_predictions: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None,
                      groups: dict[str, torch.Tensor | None] | None = None) -> dict:
    """Every metric of :func:`kdlab.metrics.evaluate_all` per split (with clip-level metrics where ``groups`` has
    the split's recording of each segment); with a val and a test split, the temperature fitted on val (Guo et al.
    2017) and the test metrics before and after scaling; with a teacher, top-1 agreement and KL(teacher || student)
    per split (Stanton et al. 2021)."""
    groups = groups or {}
    record: dict = {split: metrics.evaluate_all(logits, labels, groups.get(split))
                    for split, (logits, labels) in predictions.items()}
    if "val" in predictions and "test" in predictions:
        record["calibration"] = {"fitted_on": "val", "evaluated_on": "test",
                                 **temperature_scaling.calibration_report(*predictions["val"], *predictions["test"])}
    if teacher_predictions:
        record["fidelity"] = {split: metrics.fidelity_all(predictions[split][0], logits)
                              for split, (logits, _) in teacher_predictions.items() if split in predictions}
    return record


def teacher_precision_record(teacher, loaders: dict[str, DeviceLoader], runtime: Runtime,
                             as_run: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> dict | None:
    """How far the teacher as training ran it (``as_run``: its logits per split under the run's precision, through
    its frozen compiled graph where it has one) is from the same network in fp32, eager: top-1 agreement and
    KL(fp32 || as run) at tau 1 (:mod:`kdlab.metrics.fidelity`) on the test split (else the last evaluated split).
    The cost of a cheap teacher is paid in these numbers; None when the teacher already ran in fp32 eager."""
    if runtime.precision == "fp32" and teacher.state != "compiled":
        return None
    split = "test" if "test" in as_run else list(as_run)[-1]
    reference, _ = predict(teacher.reference_graph, loaders[split], replace(runtime, precision="fp32"))
    return {"split": split, "precision": runtime.precision, "state": teacher.state, "reference": "fp32 eager",
            **metrics.fidelity_all(as_run[split][0], reference)}


def robustness_record(model: torch.nn.Module, loaders: dict[str, DeviceLoader], runtime: Runtime, config,
                      mean, std) -> dict:
    """PGD robust accuracy of ``model`` as ``recipe.robustness`` asks (kdlab.adversarial), with its settings; counts
    summed over the ranks of a data-parallel run."""
    from kdlab.adversarial import robust_accuracy

    if config.split not in loaders:
        from kdlab.errors import KdlabError

        raise KdlabError(f"robustness.split is {config.split}, and this run has no {config.split} split")
    loader = loaders[config.split]
    result = robust_accuracy(model, loader, eps=config.eps, step_size=config.step_size, steps=config.steps,
                             mean=mean, std=std, random_start=config.random_start,
                             clamp=(0.0, 1.0) if config.clamp else None, seed=config.seed,
                             max_samples=config.max_samples, autocast=runtime.autocast)
    if loader.distributed is not None:
        counts = torch.tensor([result["samples"], result["clean_acc"] * result["samples"],
                               result["robust_acc"] * result["samples"]], dtype=torch.float64, device=loader.device)
        samples, clean, robust = loader.distributed.all_reduce_sum(counts).tolist()
        result = {"samples": int(samples), "clean_acc": clean / samples, "robust_acc": robust / samples}
    return {"attack": "pgd", **config.model_dump(), **result}
