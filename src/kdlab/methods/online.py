"""The base of online distillation: peers that teach each other while they train (docs/methods/online.md §5).

An online method trains a :class:`~kdlab.models.multibranch.MultiBranch` network (``model.name`` split into a shared
trunk and branches, or ``trunk_stages: 0`` for independent networks) and names its heads: the branches
(``peer1``..``peerM``, and ``leader`` for OKDDip) and ``ensemble``, the mean of the peers' logits. The engine
evaluates every head (``head_logits``) and treats one as *the* model (``inference``): metrics without a head suffix,
``model.safetensors`` and ``best.safetensors`` are that head exported as a plain ``model.name`` network
(:meth:`MultiBranch.export`), so ``kdlab eval``, teachers and functional-API users load it like any other run. The
whole multi-branch state stays in the resumable checkpoint; ``kdlab export`` writes any other head.

Every term follows ``kdlab.losses.online``: temperature ``tau``, weight ``weight * w(e)`` with the sigmoid ramp-up
``w`` over ``rampup`` epochs, and ``detach_targets`` (False reproduces the reference code, which lets gradient flow
into the targets).
"""

from __future__ import annotations

from abc import abstractmethod
from typing import ClassVar

import torch
import torch.nn as nn
from pydantic import BaseModel, ConfigDict, Field, field_validator

from kdlab.errors import KdlabError
from kdlab.losses.online import sigmoid_rampup
from kdlab.methods.base import Method, MethodContext
from kdlab.models.multibranch import MultiBranch


class OnlineParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    branches: int = Field(4, ge=2, le=16, description="networks or branches trained together")
    trunk_stages: int | None = Field(None, ge=0, description="stages shared by every branch: None = all but the "
                                     "last (OKDDip's split for the CIFAR ResNets), 0 = independent networks")
    tau: float = Field(3.0, gt=0, description="temperature of every distillation term")
    weight: float = Field(1.0, ge=0, description="lambda: weight of the distillation terms")
    rampup: float = Field(80.0, ge=0, description="epochs of the sigmoid ramp-up of the weight (0: none)")
    detach_targets: bool = Field(False, description="treat targets as constants (False reproduces the reference "
                                 "code: gradient flows into the peers that form a target)")
    inference: str = Field("best", description="the head used as the model: peerN (1-based), leader (OKDDip) or "
                           "best (the peer with the highest validation accuracy at each evaluation)")

    @field_validator("inference")
    @classmethod
    def _known_form(cls, value: str) -> str:
        if value not in ("best", "leader") and not (value.startswith("peer") and value[4:].isdigit()):
            raise ValueError(f"must be best, leader or peerN, got {value!r}")
        return value


class OnlineModel(nn.Module):
    """The multi-branch network as the engine sees it: ``forward`` gives the logits of branch ``head``."""

    def __init__(self, branches: MultiBranch, head: int):
        super().__init__()
        self.branches = branches
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.branches(x)[self.head]


class OnlineMethod(Method):
    """Subclasses implement ``loss_terms(logits, features, shared, labels, weight)`` and may set ``has_leader``."""

    Params = OnlineParams
    has_heads = True
    has_leader: ClassVar[bool] = False  # the last branch is a group leader, not a peer
    gradient_scale_trunk: ClassVar[bool] = False  # CL-ILR: the trunk's gradient divided by the branch count

    def __init__(self, model, params, context: MethodContext):
        if context.model_name is None:
            raise KdlabError(f"method {self.name} needs the model's name to build its branches")
        branches = MultiBranch(context.model_name, context.num_classes, in_channels=context.in_channels,
                               branches=params.branches, trunk_stages=params.trunk_stages)
        if self.gradient_scale_trunk:
            branches.gradient_scale = 1.0 / params.branches
        self.head_names = [f"peer{i + 1}" for i in range(params.branches - self.has_leader)] + \
            (["leader"] if self.has_leader else [])
        inference = params.inference
        if inference == "leader" and not self.has_leader:
            raise KdlabError(f"method.inference: {self.name} has no group leader; use best or peer1..peer"
                             f"{params.branches}")
        if inference.startswith("peer") and inference not in self.head_names:
            raise KdlabError(f"method.inference: {inference} does not exist; the peers are peer1..peer"
                             f"{params.branches - self.has_leader}")
        first = 0 if inference == "best" else self.head_names.index(inference)
        super().__init__(OnlineModel(branches, first), params, context)

    @property
    def branches(self) -> MultiBranch:
        return self.model.branches

    @property
    def inference_head(self) -> str:
        return self.head_names[self.model.head]

    def weight(self, epoch: int) -> float:
        return self.params.weight * sigmoid_rampup(epoch, self.params.rampup)

    def forward(self, inputs, labels, epoch, keys=None):
        shared = self.branches.trunk(inputs)
        features = [self.branches.branch_features(shared, i) for i in range(self.branches.num_branches)]
        logits = [network.classifier(h) for network, h in zip(self.branches.networks, features)]
        terms = self.loss_terms(logits, features, shared, labels, self.weight(epoch))
        return logits[self.model.head], terms

    @abstractmethod
    def loss_terms(self, logits, features, shared, labels, weight) -> dict[str, torch.Tensor]:
        """The named loss terms from every branch's logits and pooled features, the trunk output and the ramped
        weight lambda * w(e)."""

    def peer_logits(self, logits: list[torch.Tensor]) -> list[torch.Tensor]:
        return logits[:-1] if self.has_leader else logits

    # ---------------------------------------------------------------- evaluation and export (used by the engine)

    def head_logits(self, inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every head's logits from one pass: the branches by name and ``ensemble`` (mean of the peers' logits)."""
        logits = self.branches(inputs)
        heads = dict(zip(self.head_names, logits))
        heads["ensemble"] = torch.stack(self.peer_logits(logits)).mean(0)
        return heads

    def choose_inference_head(self, val_accuracy: dict[str, float]) -> None:
        """With ``inference: best``, make the peer with the highest validation accuracy the model."""
        if self.params.inference == "best":
            peers = [name for name in self.head_names if name.startswith("peer")]
            best = max(peers, key=lambda name: (val_accuracy[name], -peers.index(name)))
            self.model.head = self.head_names.index(best)

    def export_network(self, head: str | None = None) -> nn.Module:
        """Head ``head`` (default: the inference head) as a plain ``model.name`` network."""
        head = head or self.inference_head
        if head not in self.head_names:
            raise KdlabError(f"head {head!r} cannot be exported; the branches are {', '.join(self.head_names)}")
        return self.branches.export(self.head_names.index(head))

    def export_state(self) -> dict[str, torch.Tensor]:
        return self.export_network().state_dict()
