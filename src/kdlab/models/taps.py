"""Feature taps: the intermediate outputs a representation-distillation method reads, by name, on any model.

A tap name is one of

* ``stage1`` .. ``stageN``: the output of stage i of a zoo network (its ``stage_modules``; for the CIFAR ResNets
  stage1 is the stem and stage2..4 the three residual stages, for WRNs stage1 is the first convolution, stage4
  the last block after its BatchNorm) or of a timm network (the i-th entry of timm's ``feature_info``);
* ``penultimate``: the features entering the final linear layer (N x D), for every model;
* a module path (``layer3``, ``network.layer3.1``, ``network.encoder.layer.5``): any submodule, of the model or of
  the library network a :class:`~kdlab.models.libraries.adapter.LibraryClassifier` wraps.

:class:`FeatureTaps` registers forward hooks (a pre-hook on the classifier for ``penultimate``) and keeps what
the last forward pass produced; a module that returns a tuple (transformers layers) gives its first element.
Hooks see the eager network: a compiled frozen graph has no modules left, so a teacher's features are read from its
plain network (:meth:`kdlab.teacher.module.Teacher.features`).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from kdlab.errors import KdlabError


def _classifier(model: nn.Module) -> nn.Module:
    head = getattr(model, "classifier", None)
    if isinstance(head, nn.Linear):
        return head
    from kdlab.models.libraries.adapter import final_linear

    return final_linear(model)[1]


def resolve_tap(model: nn.Module, name: str) -> tuple[nn.Module, bool]:
    """(module, whether its *input* is the tap) of tap ``name`` on ``model``; an unknown name is a one-line error
    listing what the model offers."""
    if name == "penultimate":
        return _classifier(model), True
    if name.startswith("stage") and name[5:].isdigit():
        index = int(name[5:])
        stages = getattr(model, "stage_modules", ())
        if stages:
            if not 1 <= index <= len(stages):
                raise KdlabError(f"{type(model).__name__} has stages 1..{len(stages)}, not {name}")
            return model.get_submodule(stages[index - 1][-1]), False
        info = getattr(getattr(model, "network", model), "feature_info", None)
        if info is not None:
            modules = [entry["module"] for entry in info] if isinstance(info, list) else list(info.module_name())
            if not 1 <= index <= len(modules):
                raise KdlabError(f"{type(getattr(model, 'network', model)).__name__} has stages 1..{len(modules)} "
                                 f"(timm feature_info), not {name}")
            return getattr(model, "network", model).get_submodule(modules[index - 1]), False
        raise KdlabError(f"{type(model).__name__} names no stages; tap a module path instead (e.g. "
                         f"{_example_paths(model)})")
    for owner in (model, getattr(model, "network", None)):
        if owner is None:
            continue
        try:
            return owner.get_submodule(name), False
        except AttributeError:
            continue
    raise KdlabError(f"{type(model).__name__} has no module {name!r} to tap (stage1.., penultimate, or a module path "
                     f"such as {_example_paths(model)})")


def _example_paths(model: nn.Module) -> str:
    names = [n for n, _ in model.named_children()][:4]
    return ", ".join(names) or "none"


class FeatureTaps:
    """Forward hooks on ``model`` that keep the outputs of the taps ``names`` of its latest forward pass."""

    def __init__(self, model: nn.Module, names):
        self.names = list(names)
        self.captured: dict[str, torch.Tensor] = {}
        self._handles = []
        for name in self.names:
            module, is_input = resolve_tap(model, name)
            if is_input:
                hook = module.register_forward_pre_hook(lambda _m, args, n=name: self._keep(n, args[0]))
            else:
                hook = module.register_forward_hook(lambda _m, _args, out, n=name: self._keep(n, out))
            self._handles.append(hook)

    def _keep(self, name: str, value) -> None:
        if isinstance(value, (tuple, list)):
            value = value[0]
        elif hasattr(value, "last_hidden_state"):
            value = value.last_hidden_state
        self.captured[name] = value

    def take(self) -> list[torch.Tensor]:
        """The captured features in the order of ``names`` (then forgotten); a tap that did not fire is an error."""
        missing = [n for n in self.names if n not in self.captured]
        if missing:
            raise KdlabError(f"feature tap {missing[0]} saw no output in the forward pass")
        out = [self.captured[n] for n in self.names]
        self.captured = {}
        return out

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
