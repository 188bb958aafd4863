"""Representation-distillation losses on intermediate features (docs/methods/feature_kd.md).

Each function takes student and teacher features (the teacher's a constant) and returns a scalar; ``*_terms``
companions live with the methods. Shapes: feature maps N x C x H x W, embeddings N x D. Formulas and their sources:

* FitNet hint (Romero et al. 2015): mean over all elements of (r(f_s) - f_t)^2, r a trainable regressor
  (:class:`kdlab.methods.connectors.Connector`) mapping the student's channels to the teacher's (§1).
* Attention transfer AT (Zagoruyko & Komodakis 2017): a(f) = normalise_L2(mean_c f^p flattened), loss = mean over
  the N x HW entries of (a(f_s) - a(f_t))^2, averaged over the tapped pairs (§2). p = 2.
* Similarity-preserving SP (Tung & Mori 2019): G = row-normalise_L2(F F^T) with F = f flattened to N x CHW; loss =
  ||G_s - G_t||_F^2 / N^2 (§3).
* Probabilistic knowledge transfer PKT (Passalis & Tefas 2018): cosine similarities of L2-normalised embeddings,
  mapped to [0, 1] by (s + 1) / 2 and normalised per row into conditional probabilities P; loss = mean over N x N of
  P_t log((P_t + eps) / (P_s + eps)), eps = 1e-7 (§4).
* ReviewKD's hierarchical context loss (Chen et al. 2021): MSE at full resolution plus halving weights on 4x4,
  2x2 and 1x1 average pools, normalised by the weights' sum, summed over the fused pairs (§8).
* Relational KD RKD (Park et al. 2019): distance term: pairwise Euclidean distances divided by their mean over
  distinct pairs, compared with smooth-L1 (Huber, delta 1); angle term: cosines of the angles e_ij . e_kj of every
  triplet (e_ij = normalise(x_i - x_j)), compared with smooth-L1; loss = w_d L_d + w_a L_a (§5).

When a student and teacher map differ in spatial size, the larger is average-pooled to the smaller
(:func:`match_size`), as RepDistiller does for AT and hints between families.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kdlab.losses._precision import upcast


def match_size(student: torch.Tensor, teacher: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Both 4-D maps at the smaller spatial size of the two (adaptive average pooling of the larger)."""
    if student.dim() != 4 or student.shape[2:] == teacher.shape[2:]:
        return student, teacher
    h, w = min(student.shape[2], teacher.shape[2]), min(student.shape[3], teacher.shape[3])
    pool = lambda t: t if t.shape[2:] == (h, w) else F.adaptive_avg_pool2d(t, (h, w))  # noqa: E731
    return pool(student), pool(teacher)


def hint_loss(regressed: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """FitNet: mean squared error between the regressed student features and the teacher's."""
    regressed, teacher = match_size(regressed, teacher)
    return F.mse_loss(upcast(regressed), upcast(teacher))


def attention_map(features: torch.Tensor, p: float = 2.0) -> torch.Tensor:
    """a(f): the channel mean of |f|^p, flattened to N x HW and L2-normalised per sample."""
    return F.normalize(upcast(features).abs().pow(p).mean(1).flatten(1), dim=1)


def attention_loss(student: list[torch.Tensor], teacher: list[torch.Tensor], p: float = 2.0) -> torch.Tensor:
    """AT: the mean over tapped pairs of mean((a(f_s) - a(f_t))^2)."""
    terms = []
    for s, t in zip(student, teacher, strict=True):
        s, t = match_size(s, t)
        terms.append((attention_map(s, p) - attention_map(t, p)).pow(2).mean())
    return torch.stack(terms).mean()


def similarity_matrix(features: torch.Tensor) -> torch.Tensor:
    flat = upcast(features).flatten(1)
    return F.normalize(flat @ flat.t(), dim=1)


def similarity_loss(student: list[torch.Tensor], teacher: list[torch.Tensor]) -> torch.Tensor:
    """SP: the mean over tapped pairs of ||G_s - G_t||_F^2 / N^2."""
    terms = []
    for s, t in zip(student, teacher, strict=True):
        n = s.shape[0]
        terms.append((similarity_matrix(s) - similarity_matrix(t)).pow(2).sum() / (n * n))
    return torch.stack(terms).mean()


PKT_EPS = 1e-7


def _conditional_probabilities(embeddings: torch.Tensor) -> torch.Tensor:
    x = upcast(embeddings).flatten(1)
    x = x / (x.norm(dim=1, keepdim=True) + PKT_EPS)
    similarity = (x @ x.t() + 1.0) / 2.0
    return similarity / similarity.sum(dim=1, keepdim=True)


def pkt_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """PKT: mean over N x N of P_t log((P_t + eps) / (P_s + eps))."""
    p_s, p_t = _conditional_probabilities(student), _conditional_probabilities(teacher)
    return (p_t * torch.log((p_t + PKT_EPS) / (p_s + PKT_EPS))).mean()


def _normalised_distances(embeddings: torch.Tensor) -> torch.Tensor:
    x = upcast(embeddings).flatten(1)
    squared = (x.unsqueeze(0) - x.unsqueeze(1)).pow(2).sum(-1)
    distances = squared.clamp_min(1e-12).sqrt() * (1 - torch.eye(x.shape[0], device=x.device, dtype=x.dtype))
    mean = distances[distances > 0].mean()
    return distances / mean


def _angles(embeddings: torch.Tensor) -> torch.Tensor:
    x = upcast(embeddings).flatten(1)
    e = F.normalize(x.unsqueeze(0) - x.unsqueeze(1), p=2, dim=2)  # e[i, j] = normalise(x_j - x_i)
    return torch.bmm(e, e.transpose(1, 2)).flatten()


def rkd_loss(student: torch.Tensor, teacher: torch.Tensor, distance_weight: float = 25.0,
             angle_weight: float = 50.0) -> torch.Tensor:
    """RKD: w_d smoothL1(psi_D(s), psi_D(t)) + w_a smoothL1(psi_A(s), psi_A(t))."""
    distance = F.smooth_l1_loss(_normalised_distances(student), _normalised_distances(teacher))
    angle = F.smooth_l1_loss(_angles(student), _angles(teacher))
    return distance_weight * distance + angle_weight * angle


def vid_loss(mean: torch.Tensor, teacher: torch.Tensor, log_scale: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """VID: the mean over all elements of the Gaussian negative log-likelihood of the teacher's features under
    N(mu(f_s), sigma^2) without its constant, 0.5 ((mu - f_t)^2 / sigma^2 + log sigma^2), with one variance per
    channel sigma^2 = softplus(log_scale) + eps (Ahn et al. 2019, docs/methods/feature_kd.md §6)."""
    mean, teacher = match_size(mean, teacher)
    variance = F.softplus(upcast(log_scale)) + eps
    variance = variance.view(1, -1, *([1] * (teacher.dim() - 2)))
    return (0.5 * ((upcast(mean) - upcast(teacher)).pow(2) / variance + variance.log())).mean()


def review_loss(student: list[torch.Tensor], teacher: list[torch.Tensor], levels: tuple[int, ...] = (4, 2, 1)) -> torch.Tensor:
    """ReviewKD's hierarchical context loss (Chen et al. 2021, "Distilling Knowledge via Knowledge Review", CVPR),
    summed over the pairs: for maps of side h,

        L_hcl = (MSE(f_s, f_t) + sum_{l in levels, l < h} 2^-k(l) MSE(pool_l f_s, pool_l f_t)) / (1 + sum 2^-k(l)),

    pool_l the adaptive average pool to l x l and k(l) = 1, 2, ... the rank of l among the levels used (weights
    1/2, 1/4, 1/8). Vectors (N x D) and 1 x 1 maps take the plain MSE. Reduction (tested): with no level below h it is
    the MSE; maps equal up to their pooled means on every level give only the full-resolution term."""
    total = 0.0
    for fs, ft in zip(student, teacher, strict=True):
        fs, ft = match_size(upcast(fs), upcast(ft))
        loss, weight, norm = F.mse_loss(fs, ft), 1.0, 1.0
        side = fs.shape[-2] if fs.dim() == 4 else 1
        for level in levels:
            if level >= side:
                continue
            weight /= 2.0
            loss = loss + weight * F.mse_loss(F.adaptive_avg_pool2d(fs, level), F.adaptive_avg_pool2d(ft, level))
            norm += weight
        total = total + loss / norm
    return total
