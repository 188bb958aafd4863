"""``zipf_ls``: Zipf's label smoothing (Liang et al., ECCV 2022; megvii-research/zipfls; docs/methods/zipf_ls.md
§6.3)."""

import torch
from pydantic import BaseModel, ConfigDict, Field

from kdlab import losses
from kdlab.errors import KdlabError
from kdlab.methods import register
from kdlab.methods.base import Method


@register("zipf_ls")
class ZipfLabelSmoothing(Method):
    """L = CE(z, y) + lam KL(P || softmax(z_{-y})), P over the non-target classes proportional to (1/rank)^power.

    Ranks come from dense votes: the model's own classifier applied at every position of its last feature map (the
    same forward pass that gives the logits), argmax per position, classes ranked by vote count
    (:func:`kdlab.losses.zipf_ranks`). The target carries no gradient. Logged as ``ce`` and ``zipf``.
    """

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid")
        lam: float = Field(0.1, ge=0, description="weight of the Zipf KL term")
        power: float = Field(1.0, ge=0, description="Zipf exponent")

    def __init__(self, model, params, context):
        if not hasattr(model, "feature_map") or not hasattr(model, "dense_logits"):
            raise KdlabError(f"method zipf_ls needs a zoo model with a feature map; {type(model).__name__} has none")
        super().__init__(model, params, context)

    def forward(self, inputs, labels, epoch, keys=None):
        feature_map = self.model.feature_map(inputs)
        logits = self.model.classifier(feature_map.mean(dim=(2, 3)))
        with torch.no_grad():
            ranks = losses.zipf_ranks(self.model.dense_logits(feature_map))
        return logits, losses.zipf_ls_terms(logits, labels, ranks, self.params.lam, self.params.power)
