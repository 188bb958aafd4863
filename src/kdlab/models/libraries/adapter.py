"""What makes a network from another library a kdlab model: the zoo's contract, weights from a local file, the
network's own preprocessing.

The zoo's contract (:mod:`kdlab.models`) is ``forward(x)`` -> logits, ``forward(x, return_features=True)`` ->
(logits, penultimate features), ``.classifier`` (the final ``nn.Linear``) and ``.feature_dim``. A library network
gives the first; :class:`LibraryClassifier` adds the rest without knowing the architecture: the final linear layer
is the last ``nn.Linear`` whose outputs are the classes, and its input, caught by a forward pre-hook in the same
pass, is the feature vector. That holds for timm, torchvision and transformers classifiers alike (``fc``,
``classifier[-1]``, ``heads.head``, ``head.fc``, ...).

Weights are read from a local file without unrestricted pickle: safetensors, or a PyTorch file through torch's
restricted unpickler (``weights_only=True``, torch >= 2.6); a checkpoint wrapped as ``{"state_dict": ...}`` / ``{"model": ...}`` or saved from
``DataParallel`` (``module.`` prefixes) is unwrapped, and so is a kdlab run's ``model.safetensors`` of a library model
(``network.`` prefixes), so a student trained here can be the next run's teacher in its library's terms. A head of another class count than asked is replaced by a fresh
one (the usual fine-tuning start); every other mismatch is a one-line error naming the first tensor that differs.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn as nn

from kdlab.errors import KdlabError

INTERPOLATIONS = ("nearest", "bilinear", "bicubic")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocessing:
    """How a network expects its images: resized to ``input_size`` (H, W; None: any size) with ``interpolation``,
    then normalised per channel with ``mean`` / ``std`` on the [0, 1] scale. ``crop_pct`` is the centre-crop
    fraction of its evaluation transform (resize to size / crop_pct, centre crop to size)."""

    input_size: tuple[int, int] | None
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str = "bilinear"
    crop_pct: float = 1.0

    def record(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def final_linear(network: nn.Module, num_classes: int | None = None) -> tuple[str, nn.Linear]:
    """(name, module) of the network's classifier: the last ``nn.Linear`` (with ``num_classes`` outputs if given)."""
    found = [(name, m) for name, m in network.named_modules() if isinstance(m, nn.Linear)
             and (num_classes is None or m.out_features == num_classes)]
    if not found:
        raise KdlabError(f"{type(network).__name__} has no final linear layer"
                         + (f" with {num_classes} outputs" if num_classes is not None else ""))
    return found[-1]


def replace_head(network: nn.Module, num_classes: int) -> None:
    """Put a fresh ``nn.Linear`` with ``num_classes`` outputs in place of the network's classifier."""
    name, old = final_linear(network)
    parent_name, _, attribute = name.rpartition(".")
    parent = network.get_submodule(parent_name) if parent_name else network
    new = nn.Linear(old.in_features, num_classes, bias=old.bias is not None)
    setattr(parent, attribute, new.to(device=old.weight.device, dtype=old.weight.dtype))


class LibraryClassifier(nn.Module):
    """A library's classifier ``network`` under the zoo's contract (see the module docstring). ``label`` is the
    recipe's model name (``timm:resnet18``), ``preprocessing`` the network's own :class:`Preprocessing`."""

    def __init__(self, network: nn.Module, num_classes: int, label: str, preprocessing: Preprocessing,
                 call=None):
        super().__init__()
        self.network = network
        self.label = label
        self.preprocessing = preprocessing
        self._call = call  # how to get logits from the network (transformers models return an output object)
        self._head_name, _ = final_linear(network, num_classes)
        self._captured: list[torch.Tensor] = []
        self.classifier.register_forward_pre_hook(self._capture)

    @property
    def classifier(self) -> nn.Linear:
        return self.network.get_submodule(self._head_name)

    @property
    def feature_dim(self) -> int:
        return self.classifier.in_features

    def _capture(self, _module, args):
        if self._captured is not None:
            self._captured.append(args[0])

    def forward(self, x: torch.Tensor, return_features: bool = False):
        self._captured = []
        try:
            logits = self._call(self.network, x) if self._call is not None else self.network(x)
            if not return_features:
                return logits
            features = self._captured[-1]
        finally:
            self._captured = []
        return logits, features.flatten(1)


def read_state_dict(path: str | os.PathLike, label: str) -> dict[str, torch.Tensor]:
    """The tensors of the weights file ``path`` (safetensors, or a PyTorch state dict read without pickle)."""
    path = Path(path)
    if not path.is_file():
        raise KdlabError(f"{label}: weights file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = restricted_torch_load(path, label)
    except Exception as error:  # noqa: BLE001 - a foreign or damaged file fails in many ways; all are the file's
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise KdlabError(f"{label}: {path} is not a readable weights file ({reason[:200]})") from None
    for wrapper in ("state_dict", "model", "module"):
        if isinstance(state, dict) and set(state) >= {wrapper} and isinstance(state[wrapper], dict) \
                and not isinstance(state[wrapper], torch.Tensor) and len(state) <= 4:
            state = state[wrapper]
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise KdlabError(f"{label}: {path} holds no state dict of tensors")
    for prefix in ("module.", "network."):  # DataParallel; a kdlab run's model.safetensors of a library model
        if all(key.startswith(prefix) for key in state):
            state = {key.removeprefix(prefix): value for key, value in state.items()}
    return state


def restricted_torch_load(path: Path, label: str):
    """A PyTorch (zip or legacy) file through torch's restricted unpickler (``weights_only=True``: tensors and
    plain containers only, nothing else is constructed or run). Before torch 2.6 that unpickler could be escaped
    (CVE-2025-32434), so older torch refuses such files here: convert them to safetensors."""
    version = tuple(int(part) for part in torch.__version__.split("+")[0].split(".")[:2])
    if version < (2, 6):
        raise KdlabError(f"{label}: {path} is a PyTorch pickle file, which kdlab reads only with torch >= 2.6 "
                         f"(torch {torch.__version__} here); save it as .safetensors instead")
    return torch.load(path, map_location="cpu", weights_only=True)  # restricted: see the docstring


def head_classes(state: dict[str, torch.Tensor], network: nn.Module) -> int | None:
    """The class count of the classifier stored in ``state`` for ``network``'s architecture (None: not stored)."""
    name, _ = final_linear(network)
    weight = state.get(f"{name}.weight")
    return int(weight.shape[0]) if weight is not None and weight.ndim == 2 else None


def load_weights(network: nn.Module, state: dict[str, torch.Tensor], label: str, path) -> None:
    """Load ``state`` into ``network`` strictly; a missing, extra or misshapen tensor is a one-line error."""
    own = network.state_dict()
    missing = [key for key in own if key not in state]
    extra = [key for key in state if key not in own]
    if missing or extra:
        parts = ([f"missing {missing[0]}" + (f" and {len(missing) - 1} more" if len(missing) > 1 else "")]
                 if missing else []) + ([f"unexpected {extra[0]}" + (f" and {len(extra) - 1} more"
                                                                     if len(extra) > 1 else "")] if extra else [])
        raise KdlabError(f"{label}: weights {path} do not fit this architecture ({'; '.join(parts)})")
    for key, value in own.items():
        if tuple(state[key].shape) != tuple(value.shape):
            raise KdlabError(f"{label}: weights {path} do not fit this architecture: {key} is "
                             f"{list(state[key].shape)} in the file, {list(value.shape)} in the model")
    network.load_state_dict(state, strict=True)
