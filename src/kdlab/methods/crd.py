"""``crd``: contrastive representation distillation (Tian et al. 2020): the student's embedding of a sample must
pick out the teacher's embedding of the same sample among embeddings of other samples, by noise-contrastive
estimation against a memory bank (docs/methods/feature_kd.md §7)."""

from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F
from pydantic import Field

from kdlab.errors import KdlabError
from kdlab.losses.contrastive import contrast_scores, nce_loss
from kdlab.methods import register
from kdlab.methods.contrast_memory import ContrastMemory
from kdlab.methods.with_features import FeatureParams, WithFeatures


@register("crd")
class ContrastiveRepresentation(WithFeatures):
    """L = gamma CE + alpha KD + beta (L_NCE(student anchors, teacher bank) + L_NCE(teacher anchors, student bank))
    (term ``crd``). Embeddings v = normalise(W f) of the penultimate features, one trainable linear map W for the
    student and one for the teacher (trained with the student, not exported); scores exp(<v, m> / T) / Z against the
    sample's own bank row and ``negatives`` rows of other classes; banks updated with momentum after each step.
    Defaults: RepDistiller's CIFAR-100 run (beta 0.8, alpha 0; feature dimension 128, 16384 negatives, T 0.07,
    momentum 0.5); ``alpha: 1`` is its CRD+KD."""

    term = "crd"
    needs_sample_keys = True

    class Params(FeatureParams):
        beta: float = Field(0.8, ge=0, description="weight of the CRD term")
        embedding_dim: int = Field(128, ge=1, description="the embeddings' dimension (feat_dim)")
        negatives: int = Field(16384, ge=1, description="negatives per anchor (nce_k)")
        temperature: float = Field(0.07, gt=0, description="NCE temperature (nce_t)")
        momentum: float = Field(0.5, ge=0, lt=1, description="memory-bank momentum (nce_m)")

    def __init__(self, model, params, context):
        super().__init__(model, params, context)
        if len(params.student_taps) != 1:
            raise KdlabError(f"method crd: one student and one teacher tap (the embeddings), got {params.student_taps}")
        student, teacher = self.feature_shapes(context)
        self.embed_student = nn.Linear(student[0][1:].numel(), params.embedding_dim)
        self.embed_teacher = nn.Linear(teacher[0][1:].numel(), params.embedding_dim)
        train = context.dataset.train
        self.memory = ContrastMemory(train.source_index, train.labels, params.embedding_dim, params.negatives,
                                     params.momentum)

    def feature_loss(self, student, teacher, keys=None):
        if keys is None:
            raise KdlabError("method crd needs the batches' sample keys (the engine passes them; in your own loop "
                             "call it with keys=(sample indices, views))")
        p, memory = self.params, self.memory
        v_s = F.normalize(self.embed_student(student[0].flatten(1)).float(), dim=1)
        v_t = F.normalize(self.embed_teacher(teacher[0].flatten(1).float()).float(), dim=1)
        rows = memory.rows(keys[0])
        s_scores = memory.normalise(0, contrast_scores(v_s, memory.teacher[rows], p.temperature))
        t_scores = memory.normalise(1, contrast_scores(v_t, memory.student[rows], p.temperature))
        loss = nce_loss(s_scores, memory.num_data) + nce_loss(t_scores, memory.num_data)
        if self.training:
            memory.update(rows[:, 0], v_s, v_t)
        return loss
