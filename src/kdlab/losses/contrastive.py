"""The NCE objective of contrastive representation distillation (CRD, Tian et al. 2020, "Contrastive Representation
Distillation"; docs/methods/feature_kd.md §7).

For an anchor embedding and a row of scores s = (s_0, s_1..s_K), s_0 the positive's and s_1..s_K the K negatives',
each s_j = exp(<v, m_j> / T) / Z (m_j unit vectors from the memory bank, Z a normaliser fixed on the first batch),
noise-contrastive estimation with a uniform noise distribution P_n = 1 / N over the N training samples gives

    L_NCE = -(1 / B) sum_batch [ log(s_0 / (s_0 + K P_n + eps)) + sum_{j>=1} log(K P_n / (s_j + K P_n + eps)) ]

with eps = 1e-7. CRD sums it over the two anchors (student embeddings against the teacher's bank, teacher embeddings
against the student's).
"""

from __future__ import annotations

import torch

from kdlab.losses._precision import upcast

NCE_EPS = 1e-7


def contrast_scores(anchors: torch.Tensor, bank_rows: torch.Tensor, temperature: float) -> torch.Tensor:
    """exp(<v_i, m_ij> / T) for anchors B x d and their bank rows B x (K+1) x d: B x (K+1), before normalising."""
    return torch.exp(torch.bmm(upcast(bank_rows), upcast(anchors).unsqueeze(2)).squeeze(2) / temperature)


def nce_loss(scores: torch.Tensor, num_data: int) -> torch.Tensor:
    """L_NCE of normalised scores B x (K+1), column 0 the positive, with noise probability 1 / ``num_data``."""
    scores = upcast(scores)
    k = scores.shape[1] - 1
    noise = k / num_data
    positive = torch.log(scores[:, 0] / (scores[:, 0] + noise + NCE_EPS))
    negative = torch.log(noise / (scores[:, 1:] + noise + NCE_EPS))
    return -(positive.sum() + negative.sum()) / scores.shape[0]
