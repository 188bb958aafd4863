"""``tfkd_reg`` and ``tfkd_self``: teacher-free knowledge distillation (Yuan et al., CVPR 2020)."""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from kdlab import losses
from kdlab.errors import KdlabError
from kdlab.methods import register
from kdlab.methods.base import Method
from kdlab.methods.kd import KnowledgeDistillation


@register("tfkd_reg")
class TeacherFreeRegularisation(Method):
    """L = (1 - alpha) CE + alpha tau^2 KL(p^d_tau || p_tau) with the hand-made teacher p^d (a on the true class).

    ``mode: paper`` reads Eq. 9 literally; ``mode: reference`` reproduces the authors' code (softmax of the
    probability vector / tau, unsoftened student, KL averaged over N*K, times ``multiplier``); see
    :func:`kdlab.losses.tfkd_reg` and docs/methods/tfkd.md §2. Logged as ``ce`` and ``kd``, each weighted.
    """

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid")
        alpha: float = Field(0.1, ge=0, le=1)
        tau: float = Field(20.0, gt=0)
        a: float = Field(0.99, gt=0, lt=1, description="the hand-made teacher's true-class probability")
        mode: Literal["paper", "reference"] = "paper"
        multiplier: float = Field(1.0, gt=0, description="reference mode only: the code's KL multiplier")

    def forward(self, inputs, labels, epoch, keys=None):
        logits = self.model(inputs)
        p = self.params
        return logits, losses.tfkd_reg_terms(logits, labels, p.alpha, p.tau, p.a, p.mode, p.multiplier)


@register("tfkd_self")
class TeacherFreeSelf(KnowledgeDistillation):
    """Tf-KD self (Eq. 7): KD whose teacher is a trained run of the student's own architecture."""

    def __init__(self, model, params, context):
        super().__init__(model, params, context)
        student = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        network = self.teacher.network
        teacher = {k: tuple(v.shape) for k, v in network.state_dict().items()}
        if type(network) is not type(model) or student != teacher:
            raise KdlabError(f"method.teacher: tfkd_self needs a teacher of the student's own architecture; "
                             f"{params.teacher} holds a different network")
