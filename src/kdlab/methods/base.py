"""The method interface the engine trains.

A method is an ``nn.Module`` that owns what it trains (``self.model``, the network that is evaluated and exported)
and its frozen parts (teachers), and returns, for a batch, the logits of that model and a dict of named loss terms
whose sum is minimised. The engine never knows which method runs: it sums the terms, logs each one, and evaluates
``method.model``.

Frozen submodules (named in ``frozen``) stay in eval mode whatever ``train()`` says, and are left out of the
method's ``state_dict``: checkpoints hold only what the method trains; a teacher is rebuilt from its own run.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable, ClassVar, Sequence

import torch
import torch.nn as nn
from pydantic import BaseModel, ConfigDict

from kdlab.data import Dataset


class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class MethodContext:
    """What a method may need besides its model: the student's data (for checking teachers against it) and the
    per-channel mean and std its inputs are normalised with, and the way to get a teacher: methods never read run
    directories themselves."""

    dataset: Dataset
    mean: Sequence[float] | None = None
    std: Sequence[float] | None = None
    model_name: str | None = None  # recipe model.name (online methods build their branches from it)
    input_shape: tuple[int, int, int] | None = None  # (C, H, W) of the model inputs; None: the images' own
    features: dict | None = None  # audio: sample rate and log-mel settings (a teacher must have the same)
    #: ``load_teacher(run_dir, checkpoint)`` -> :class:`kdlab.teacher.Teacher`, checked against ``dataset``, ready
    #: for this run (re-normalised, compiled, cached). The engine fills it (:class:`kdlab.train.teachers.
    #: TeacherFactory`); a test or a user's loop may hand in any callable, e.g. one returning an in-memory teacher.
    load_teacher: Callable | None = None
    epochs: int | None = None  # the run's training epochs (schedules that span the run need them)
    has_validation: bool | None = None  # whether the run has a validation split (None: not known, a user's loop)

    @property
    def num_classes(self) -> int:
        return len(self.dataset.classes)

    @property
    def model_input_shape(self) -> tuple[int, int, int]:
        if self.input_shape is not None:
            return tuple(self.input_shape)
        h, w, c = self.dataset.image_shape
        return c, h, w

    @property
    def in_channels(self) -> int:
        return int(self.model_input_shape[0])


class Method(nn.Module, ABC):
    """Base class: subclasses set ``Params`` (a pydantic model with defaults) and implement ``forward``."""

    name: ClassVar[str] = ""
    Params: ClassVar[type[BaseModel]] = NoParams
    frozen: ClassVar[tuple[str, ...]] = ()
    has_heads: ClassVar[bool] = False  # trains several heads: head_logits() gives each one's logits
    needs_teacher: ClassVar[bool] = False  # distils from a teacher run (``method.teacher``)
    needs_sample_keys: ClassVar[bool] = False  # reads per-sample state (a memory bank): batches carry their keys

    def __init__(self, model: nn.Module, params: BaseModel, context: MethodContext):
        super().__init__()
        self.model = model
        self.params = params
        self.num_classes = context.num_classes

    @abstractmethod
    def forward(self, inputs: torch.Tensor, labels: torch.Tensor, epoch: int,
                keys: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Return (logits of ``self.model`` for ``inputs``, {term name: scalar loss, weights applied}); the loss is
        the sum of the terms. ``keys`` are the inputs' (sample, view) indices when the engine has them (discrete
        augmentation and a teacher cache): a method passes them to its teacher, ``self.teacher(inputs, keys)``."""

    def end_epoch(self, epoch: int, validation: Callable[[], tuple[torch.Tensor, torch.Tensor]] | None) -> None:
        """Called by the engine after each training epoch (0-based ``epoch``), before that epoch's checkpoint:
        methods whose state moves once an epoch update it here (CALS's multipliers). ``validation()`` returns the
        model's (logits, labels) on the whole validation split; None when the run has none."""

    def epoch_log(self) -> dict[str, float]:
        """Values the epoch's record logs as ``method_<name>`` (a schedule's current temperature or weight)."""
        return {}

    def head_logits(self, inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        """Methods with ``has_heads`` (online distillation) return each head's logits; the engine reports every
        head, and ``inference_head`` names the one that is the model."""
        raise TypeError(f"method {self.name} trains a single head; evaluate method.model")

    def export_state(self) -> dict[str, torch.Tensor]:
        """The weights written as the run's model (``model.safetensors``, ``best.safetensors``): a plain network of
        the recipe's ``model.name``."""
        return self.model.state_dict()

    def train(self, mode: bool = True):
        super().train(mode)
        for name in self.frozen:
            getattr(self, name).eval()
        return self

    def _frozen_key(self, key: str) -> bool:
        return any(key.startswith(f"{name}.") for name in self.frozen)

    def state_dict(self, *args, **kwargs):
        state = super().state_dict(*args, **kwargs)
        for key in [k for k in state if self._frozen_key(k)]:
            del state[key]
        return state

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        result = super().load_state_dict(state_dict, strict=False, assign=assign)
        missing = [k for k in result.missing_keys if not self._frozen_key(k)]
        if strict and (missing or result.unexpected_keys):
            raise RuntimeError(f"state dict does not fit {type(self).__name__}: missing {missing}, "
                               f"unexpected {result.unexpected_keys}")
        return result
