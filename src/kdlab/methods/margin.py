"""``mbls``: margin-based label smoothing (Liu et al., CVPR 2022)."""

from pydantic import BaseModel, ConfigDict, Field

from kdlab import losses
from kdlab.methods import register
from kdlab.methods.base import Method


@register("mbls")
class MarginLabelSmoothing(Method):
    """L = CE + lam mean_{i,k} relu(max_j z_ij - z_ik - margin); see :func:`kdlab.losses.mbls`; logged as
    ``ce`` and ``margin``."""

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid")
        margin: float = Field(10.0, ge=0)
        lam: float = Field(0.1, ge=0)

    def forward(self, inputs, labels, epoch, keys=None):
        logits = self.model(inputs)
        return logits, losses.mbls_terms(logits, labels, self.params.margin, self.params.lam)
