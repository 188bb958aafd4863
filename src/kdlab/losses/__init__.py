"""kdlab's functional API: pure functions of logits and labels, like ``torch.nn.functional``.

Every loss returns the batch mean as a scalar tensor and takes the student logits ``z`` (N x K) first, then the
teacher logits ``zt`` where there is a teacher, then the labels ``y``. Conventions (KL ``batchmean``, the tau^2
factor, how smoothing mass is split) are explicit arguments, never hidden state; each function's docstring gives
its formula and its source in ``docs/methods/``.
"""

from kdlab.losses.cross_entropy import cross_entropy, soft_cross_entropy
from kdlab.losses.distillation import DIVERGENCES, divergence, kd_kl, kd_mse, kd_reverse_kl, kd_terms
from kdlab.losses.divergence import kl_from_probs, kl_to_logits
from kdlab.losses.dkd import dkd, dkd_parts
from kdlab.losses import online
from kdlab.losses.label_smoothing import label_smoothing, label_smoothing_terms
from kdlab.losses.targets import corrected_uniform_target, one_hot, smoothed_labels
from kdlab.losses.teacher_free import (lsr_os, lsr_os_tc, lsr_os_tc_terms, lsr_os_terms, mbls, mbls_terms, tfkd_reg,
                                       tfkd_reg_terms)
from kdlab.losses.zipf import zipf_ls, zipf_ls_terms, zipf_ranks

__all__ = [
    "DIVERGENCES",
    "corrected_uniform_target",
    "cross_entropy",
    "divergence",
    "dkd",
    "dkd_parts",
    "kd_kl",
    "kd_mse",
    "kd_reverse_kl",
    "kd_terms",
    "kl_from_probs",
    "kl_to_logits",
    "label_smoothing",
    "label_smoothing_terms",
    "lsr_os",
    "lsr_os_tc",
    "lsr_os_tc_terms",
    "lsr_os_terms",
    "mbls",
    "mbls_terms",
    "one_hot",
    "online",
    "smoothed_labels",
    "soft_cross_entropy",
    "tfkd_reg",
    "tfkd_reg_terms",
    "zipf_ls",
    "zipf_ls_terms",
    "zipf_ranks",
]
