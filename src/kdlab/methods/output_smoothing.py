"""``lsr_os`` and ``lsr_os_tc``: label smoothing with output smoothing and teacher correction (Wang et al. 2021).

RECONSTRUCTED from the paper's abstract and Tf-KD (docs/methods/lsr_os_tc.md §1.2); the switches for its open
ambiguities
are parameters of :func:`kdlab.losses.lsr_os_tc` and of these methods.
"""

from pydantic import BaseModel, ConfigDict, Field

from kdlab import losses
from kdlab.errors import KdlabError
from kdlab.methods import register
from kdlab.methods.base import Method


class OutputSmoothingParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    eps: float = Field(0.1, ge=0, lt=1, description="weight of the smoothing term (LSR's epsilon)")
    tau: float = Field(1.0, gt=0, description="output-smoothing temperature on the student's softmax")


@register("lsr_os")
class LabelSmoothingOutputSmoothing(Method):
    """L = (1 - eps) CE(z, y) + eps tau^2 KL(u || softmax(z / tau)), u uniform; logged as ``ce`` and ``os``."""

    Params = OutputSmoothingParams

    def forward(self, inputs, labels, epoch, keys=None):
        logits = self.model(inputs)
        return logits, losses.lsr_os_terms(logits, labels, self.params.eps, self.params.tau)


@register("lsr_os_tc")
class LabelSmoothingOutputSmoothingTeacherCorrection(Method):
    """L = (1 - eps) CE(z, y) + eps tau^2 KL(t_beta || softmax(z / tau)); t_beta puts beta on the true class. Logged
    as ``ce`` and ``os`` (the weighted output-smoothing KL).

    ``beta: null`` is the uniform teacher (LSR-OS). ``tau_squared`` and ``teacher_tau`` are docs/methods/lsr_os_tc.md
    §1.2's
    ambiguities 1 and 2 (defaults: tau^2 on, teacher used as is).
    """

    class Params(OutputSmoothingParams):
        beta: float | None = Field(None, gt=0, lt=1, description="true-class share of the corrected teacher (>= 1/K)")
        tau_squared: bool = True
        teacher_tau: float | None = Field(None, gt=0)

    def __init__(self, model, params, context):
        if params.beta is not None and params.beta < 1 / context.num_classes:
            raise KdlabError(f"method.beta: {params.beta} is below 1/K = {1 / context.num_classes:.4g} for "
                             f"{context.num_classes} classes")
        super().__init__(model, params, context)

    def forward(self, inputs, labels, epoch, keys=None):
        logits = self.model(inputs)
        p = self.params
        return logits, losses.lsr_os_tc_terms(logits, labels, p.eps, p.tau, p.beta, p.tau_squared, p.teacher_tau)
