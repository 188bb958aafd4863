"""``ls``: label smoothing regularisation (Szegedy et al. 2016)."""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from kdlab import losses
from kdlab.methods import register
from kdlab.methods.base import Method


@register("ls")
class LabelSmoothing(Method):
    """L = H((1 - eps) q + eps s, p); s uniform over all classes (``split="uniform"``) or over the wrong ones
    (``split="others"``), see :func:`kdlab.losses.label_smoothing`; logged as ``ce`` ((1 - eps) H(q, p)) and
    ``smoothing`` (eps H(s, p))."""

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid")
        eps: float = Field(0.1, ge=0, lt=1, description="smoothing mass")
        split: Literal["uniform", "others"] = Field("uniform", description="eps/K on every class, or eps/(K-1) on the others")

    def forward(self, inputs, labels, epoch, keys=None):
        logits = self.model(inputs)
        return logits, losses.label_smoothing_terms(logits, labels, self.params.eps, self.params.split)
