"""The check every ``kdlab export --format`` file passes before it is published: loaded back the way a user loads
it and run on real test images of the run's own data, against the run's PyTorch network in fp32 eval mode.

The inputs are the first :data:`CHECK_IMAGES` test samples as the run's evaluation loader prepares them
(:func:`kdlab.analysis.runs.eval_loader`: the centre crop of a RandomResizedCrop run, per-channel normalisation,
log-mel features for audio), so the file is judged on the inputs it will see, not on random noise, which
exercises none of a trained network's real activation ranges.

Tolerance: every logit must satisfy ``|exported - pytorch| <= ATOL + RTOL * |pytorch|``, NumPy's ``allclose`` rule.
fp32 kernels that order their sums differently (onnxruntime's, a traced graph's) differ by a few 1e-6 on the
logits of a trained network; a changed weight, a wrong layer or a lost normalisation differs by 1e-2 and more.
The relative term keeps networks with very large logits (untrained deep ResNets reach 1e4) from failing on
rounding alone. Top-1 agreement is reported but not a condition: two near-equal logits may swap on rounding.
"""

from __future__ import annotations

import numpy as np
import torch

from kdlab.analysis.runs import LoadedRun, eval_loader
from kdlab.data import Dataset
from kdlab.errors import KdlabError

CHECK_IMAGES = 256
ATOL = 1e-3
RTOL = 1e-4


def check_inputs(run: LoadedRun, dataset: Dataset, count: int = CHECK_IMAGES) -> tuple[np.ndarray, np.ndarray, str]:
    """(inputs N x C x H x W float32 C-contiguous, labels N, split name) of the first ``count`` samples of the
    test split (the validation split if the data have no test split), as the run's evaluation loader makes them."""
    name = "test" if dataset.test is not None else "val"
    split = getattr(dataset, name)
    if split is None or len(split) == 0:
        raise KdlabError(f"{dataset.name} has no test or validation samples to check an export on")
    n = min(count, len(split))
    loader = eval_loader(run, split.take(np.arange(n)), batch_size=n)
    parts, labels = [], []
    with torch.inference_mode():
        for inputs, targets in loader.batches(0):
            parts.append(inputs.float().cpu().contiguous())
            labels.append(targets.cpu())
    return torch.cat(parts).numpy(), torch.cat(labels).numpy(), name


def pytorch_logits(network: torch.nn.Module, inputs: np.ndarray) -> np.ndarray:
    """The logits of ``network`` (fp32, eval mode, no autocast) on ``inputs``."""
    with torch.inference_mode():
        return network(torch.from_numpy(inputs)).float().numpy()


def compare(exported: np.ndarray, reference: np.ndarray, labels: np.ndarray, split: str) -> dict:
    """The check's numbers: max and mean |diff| over every logit, top-1 agreement, both accuracies on these
    samples, and whether every logit is within the tolerance (see the module docstring)."""
    exported = np.asarray(exported)
    tolerance = {"atol": ATOL, "rtol": RTOL, "rule": "|exported - pytorch| <= atol + rtol * |pytorch|, every logit"}
    if exported.shape != reference.shape:
        return {"split": split, "images": int(len(reference)), "passed": False, "tolerance": tolerance,
                "problem": f"the export gives logits of shape {list(exported.shape)}, PyTorch {list(reference.shape)}"}
    exported64, reference64 = exported.astype(np.float64), reference.astype(np.float64)
    diff = np.abs(exported64 - reference64)
    within = diff <= ATOL + RTOL * np.abs(reference64)  # NaN compares False: a NaN logit fails
    top_exported, top_reference = exported64.argmax(1), reference64.argmax(1)
    return {
        "split": split,
        "images": int(len(reference)),
        "max_abs_diff": float(np.nan_to_num(diff, nan=np.inf).max()),
        "mean_abs_diff": float(np.nan_to_num(diff, nan=np.inf).mean()),
        "top1_agreement": float(np.mean(top_exported == top_reference)),
        "accuracy_exported": float(np.mean(top_exported == labels)),
        "accuracy_pytorch": float(np.mean(top_reference == labels)),
        "passed": bool(within.all()),
        "tolerance": tolerance,
    }


def failure_message(check: dict) -> str:
    """Why a check failed, in words."""
    if "problem" in check:
        return check["problem"]
    return (f"max |diff| {check['max_abs_diff']:.1e} against the PyTorch model over {check['images']} "
            f"{check['split']} images is above the tolerance ({ATOL:g} + {RTOL:g} x |logit|), top-1 agreement "
            f"{check['top1_agreement']:.4f}")
