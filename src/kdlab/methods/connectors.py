"""Trainable connectors between student and teacher features (FitNet's regressor, projection heads).

A connector belongs to the method, not to the model: it is trained with the student (its parameters are the
method's, so the optimizer steps them and the checkpoint's method state saves and resumes them), and it is absent
from the exported ``model.safetensors`` (``Method.export_state`` is the model's state alone).
"""

from __future__ import annotations

import torch
import torch.nn as nn


class Connector(nn.Module):
    """Student features -> the teacher's width: a 1x1 convolution + BatchNorm for maps (N x C x H x W; RepDistiller's
    hint regressor is a convolution with BatchNorm too), a linear layer for vectors (N x D)."""

    def __init__(self, student_shape: torch.Size, teacher_shape: torch.Size):
        super().__init__()
        if len(student_shape) == 4:
            self.body = nn.Sequential(nn.Conv2d(student_shape[1], teacher_shape[1], kernel_size=1, bias=False),
                                      nn.BatchNorm2d(teacher_shape[1]))
        else:
            self.body = nn.Linear(student_shape[-1], teacher_shape[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def probe_shapes(model: nn.Module, student_taps, teacher, teacher_taps, input_shape) -> tuple[list, list]:
    """The shapes of the tapped student and teacher features for a probe batch of two zero inputs (models in eval
    mode for the probe, so no BatchNorm statistics move)."""
    probe = torch.zeros(2, *input_shape)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        model(probe)
        student = [f.shape for f in student_taps.take()]
        _, features = teacher.features(probe, teacher_taps)
    model.train(was_training)
    return student, [f.shape for f in features]
