"""Several networks that share their first stages: the models of online distillation (docs/methods/online.md §5.1).

``MultiBranch("resnet32", num_classes, branches=4)`` builds four copies of a zoo network whose stage list
(:attr:`Classifier.stage_modules`) is split after ``trunk_stages`` stages: the first copy keeps the trunk, and
every copy keeps its own remaining stages, pooling and classifier (a branch). The trunk runs once per batch; each
branch continues from its output. ``trunk_stages`` defaults to every stage but the last, which for the CIFAR
ResNets is OKDDip's split (conv1 + layer1 + layer2 shared, one layer3 per branch); ``trunk_stages=0`` gives fully
independent networks (OKDDip's network-based mode, DML).

``export(i)`` returns branch ``i`` as a plain network of the zoo (trunk weights + that branch's), which
``kdlab eval`` and functional-API users load like any other model.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from kdlab.errors import KdlabError
from kdlab.models._base import Classifier


class _ScaleGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, factor: float) -> torch.Tensor:
        ctx.factor = factor
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad * ctx.factor, None


def scale_gradient(x: torch.Tensor, factor: float) -> torch.Tensor:
    """Identity forward; multiplies the gradient by ``factor`` backward (CL-ILR's 1/m into the shared trunk)."""
    return _ScaleGradient.apply(x, factor)


class MultiBranch(nn.Module):
    """``branches`` copies of the zoo network ``name`` sharing their first ``trunk_stages`` stages."""

    def __init__(self, name: str, num_classes: int, in_channels: int = 3, branches: int = 4,
                 trunk_stages: int | None = None):
        super().__init__()
        from kdlab import models

        if branches < 2:
            raise KdlabError(f"a multi-branch model needs at least 2 branches, got {branches}")
        networks = [models.create(name, num_classes=num_classes, in_channels=in_channels) for _ in range(branches)]
        stages = networks[0].stage_modules
        if not isinstance(networks[0], Classifier) or not stages:
            raise KdlabError(f"model {name} cannot be split into a trunk and branches (only the resnet, wrn, vgg and "
                             f"audio_cnn families can)")
        trunk_stages = len(stages) - 1 if trunk_stages is None else trunk_stages
        if not 0 <= trunk_stages < len(stages):
            raise KdlabError(f"model {name} has {len(stages)} stages: the trunk takes 0 to {len(stages) - 1}, "
                             f"got {trunk_stages}")
        for network in networks[1:]:  # the trunk lives in the first network only
            for stage in stages[:trunk_stages]:
                for attribute in stage:
                    delattr(network, attribute)
        self.name = name
        self.trunk_stages = trunk_stages
        self.gradient_scale = 1.0  # CL-ILR sets 1/m: the trunk's gradient is scaled by it
        self.networks = nn.ModuleList(networks)

    @property
    def num_branches(self) -> int:
        return len(self.networks)

    @property
    def feature_dim(self) -> int:
        return self.networks[0].feature_dim

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        for index in range(self.trunk_stages):
            x = self.networks[0].run_stage(index, x)
        if self.trunk_stages and self.gradient_scale != 1.0:
            x = scale_gradient(x, self.gradient_scale)
        return x

    def branch_features(self, shared: torch.Tensor, index: int) -> torch.Tensor:
        network = self.networks[index]
        x = shared
        for stage in range(self.trunk_stages, len(network.stage_modules)):
            x = network.run_stage(stage, x)
        return x.mean(dim=(2, 3))

    def forward(self, x: torch.Tensor, return_features: bool = False):
        """The list of every branch's logits (each N x K), and with ``return_features`` their pooled features."""
        shared = self.trunk(x)
        features = [self.branch_features(shared, i) for i in range(self.num_branches)]
        logits = [network.classifier(h) for network, h in zip(self.networks, features)]
        return (logits, features) if return_features else logits

    def export(self, index: int) -> Classifier:
        """Branch ``index`` as a plain network ``self.name`` (a copy: trunk weights + the branch's own)."""
        from kdlab import models

        if not 0 <= index < self.num_branches:
            raise KdlabError(f"branch {index} does not exist (0 to {self.num_branches - 1})")
        first = self.networks[0]
        network = models.create(self.name, num_classes=first.classifier.out_features,
                                in_channels=self._in_channels())
        state = dict(self.networks[index].state_dict())
        trunk_prefixes = tuple(f"{a}." for stage in first.stage_modules[:self.trunk_stages] for a in stage)
        state.update({k: v for k, v in first.state_dict().items() if k.startswith(trunk_prefixes)})
        network.load_state_dict(state)
        return network.to(first.classifier.weight.device)

    def _in_channels(self) -> int:
        first_conv = next(m for m in self.networks[0].modules() if isinstance(m, nn.Conv2d))
        return first_conv.in_channels
