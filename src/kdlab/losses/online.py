"""Online distillation losses: peers that teach each other while they train (docs/methods/online.md §5).

Each ``*_terms`` function returns the named loss terms (batch means, scalar tensors) that its method logs; the
function without the suffix returns their sum. ``z_i`` are the logits (N x K) of the m peers, ``y`` the labels,
``tau`` the temperature and ``weight`` the distillation weight lambda * w(e) (w the ramp-up below). Every KL is
tau^2 KL(softmax(target / tau) || softmax(z_i / tau)) with ``batchmean`` (OKDDip's ``KL_Loss``, which also adds 1e-7
to the target probabilities; kdlab does not, a difference below 1e-6 per sample).

``detach_targets``: the reference code (DefangChen/OKDDip, ``train_GL.py``, ``train_one.py``, ``train_DML.py``) does
not detach the targets, so gradient also flows into the peers that form a target (and into the attention and gate
weights). ``False`` reproduces it; ``True`` treats every target as a constant, as offline KD does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from kdlab.losses.cross_entropy import cross_entropy
from kdlab.losses.divergence import kl_to_logits


def sigmoid_rampup(epoch: float, length: float = 80.0) -> float:
    """w(e) = exp(-5 (1 - clip(e / length, 0, 1))^2), the mean-teacher ramp-up OKDDip uses (e 0-based, length 80);
    1 from ``length`` on, and 1 throughout for ``length <= 0``."""
    if length <= 0:
        return 1.0
    phase = 1.0 - min(max(epoch / length, 0.0), 1.0)
    return math.exp(-5.0 * phase * phase)


def _check_peers(logits: Sequence[torch.Tensor], minimum: int = 2) -> None:
    if len(logits) < minimum:
        raise ValueError(f"online distillation needs at least {minimum} peers, got {len(logits)}")
    shapes = {tuple(z.shape) for z in logits}
    if len(shapes) != 1 or len(next(iter(shapes))) != 2:
        raise ValueError(f"every peer's logits must be the same N x K, got {sorted(shapes)}")


def dml_terms(logits: Sequence[torch.Tensor], y: torch.Tensor, tau: float = 3.0, weight: float = 1.0,
              detach_targets: bool = False) -> dict[str, torch.Tensor]:
    """Deep mutual learning (Zhang et al. 2018), all peers updated jointly (``train_DML.py``):
    ce = sum_i CE(z_i, y); kd = weight * sum_i 1/(m-1) sum_{j != i} tau^2 KL(softmax(z_j/tau) || softmax(z_i/tau))."""
    _check_peers(logits)
    m = len(logits)
    kd = sum(kl_to_logits(logits[j], logits[i], tau, detach_target=detach_targets)
             for i in range(m) for j in range(m) if j != i) / (m - 1)
    return {"ce": sum(cross_entropy(z, y) for z in logits), "kd": weight * kd}


def cl_ilr_terms(logits: Sequence[torch.Tensor], y: torch.Tensor, tau: float = 3.0, weight: float = 1.0,
                 detach_targets: bool = False) -> dict[str, torch.Tensor]:
    """Collaborative learning with intermediate-level representation sharing (Song & Chai 2018; OKDDip's
    ``--avg``): the target of peer i is the mean of the *other* peers' logits;
    ce = sum_i CE(z_i, y); kd = weight * sum_i tau^2 KL(softmax(t_i/tau) || softmax(z_i/tau)). (The 1/m gradient
    scaling into the shared trunk belongs to the multi-branch model, not to this loss.)"""
    _check_peers(logits)
    m = len(logits)
    total = torch.stack(list(logits)).sum(0)
    kd = sum(kl_to_logits((total - z) / (m - 1), z, tau, detach_target=detach_targets) for z in logits)
    return {"ce": sum(cross_entropy(z, y) for z in logits), "kd": weight * kd}


def one_terms(logits: Sequence[torch.Tensor], gate: torch.Tensor, y: torch.Tensor, tau: float = 3.0,
              weight: float = 1.0, detach_targets: bool = False) -> dict[str, torch.Tensor]:
    """ONE (Lan et al. 2018, ``train_one.py``): a gated ensemble teacher z_e = sum_i g_i z_i (gate N x m, rows summing
    to 1); ce = sum_i CE(z_i, y) + CE(z_e, y); kd = weight * sum_i tau^2 KL(softmax(z_e/tau) || softmax(z_i/tau))."""
    _check_peers(logits)
    stacked = torch.stack(list(logits), dim=1)  # N x m x K
    if gate.shape != stacked.shape[:2]:
        raise ValueError(f"gate must be N x m = {tuple(stacked.shape[:2])}, got {tuple(gate.shape)}")
    ensemble = (gate.unsqueeze(2) * stacked).sum(1)
    kd = sum(kl_to_logits(ensemble, z, tau, detach_target=detach_targets) for z in logits)
    return {"ce": sum(cross_entropy(z, y) for z in logits) + cross_entropy(ensemble, y), "kd": weight * kd}


def peer_attention(features: torch.Tensor, query_weight: torch.Tensor, key_weight: torch.Tensor) -> torch.Tensor:
    """OKDDip's per-sample attention among peers: alpha[n, a, b] = softmax_b((W_L h_a)^T (W_E h_b)) for peer
    features ``features`` (m x N x d) and bias-free maps W_L, W_E (d' x d); self included, no 1/sqrt(d) scaling
    (``resnet_GL.py``). Returns N x m x m, rows summing to 1."""
    if features.dim() != 3:
        raise ValueError(f"features must be m x N x d, got {tuple(features.shape)}")
    query = features @ query_weight.T  # m x N x d'
    key = features @ key_weight.T
    scores = torch.einsum("and,bnd->nab", query, key)
    return torch.softmax(scores.float() if scores.dtype in (torch.float16, torch.bfloat16) else scores, dim=2)


def okddip_terms(peer_logits: Sequence[torch.Tensor], leader_logits: torch.Tensor, attention: torch.Tensor,
                 y: torch.Tensor, tau: float = 3.0, weight: float = 1.0,
                 detach_targets: bool = False) -> dict[str, torch.Tensor]:
    """OKDDip's two-level distillation (Chen et al. 2020, ``train_GL.py``). Level 1: peer a distils from its own
    aggregate t_a = sum_b alpha[:, a, b] z_b; level 2: the group leader distils from the peers' mean z_bar.

    ce = sum_a CE(z_a, y) + CE(z_leader, y);
    kd_peers = weight * sum_a tau^2 KL(softmax(t_a/tau) || softmax(z_a/tau));
    kd_leader = weight * tau^2 KL(softmax(z_bar/tau) || softmax(z_leader/tau)).
    """
    _check_peers(list(peer_logits) + [leader_logits], minimum=2)
    stacked = torch.stack(list(peer_logits), dim=1)  # N x m x K
    m = stacked.shape[1]
    if attention.shape != (stacked.shape[0], m, m):
        raise ValueError(f"attention must be N x m x m = {(stacked.shape[0], m, m)}, got {tuple(attention.shape)}")
    targets = torch.bmm(attention.to(stacked.dtype), stacked)  # N x m x K: row a is t_a
    kd_peers = sum(kl_to_logits(targets[:, a], stacked[:, a], tau, detach_target=detach_targets) for a in range(m))
    kd_leader = kl_to_logits(stacked.mean(1), leader_logits, tau, detach_target=detach_targets)
    ce = sum(cross_entropy(z, y) for z in peer_logits) + cross_entropy(leader_logits, y)
    return {"ce": ce, "kd_peers": weight * kd_peers, "kd_leader": weight * kd_leader}


def bdkd_terms(student_logits: torch.Tensor, teacher_logits: torch.Tensor, y: torch.Tensor, tau: float = 1.0,
               weight: float = 1.0, sharpness: float = 1.0,
               detach_targets: bool = True) -> dict[str, torch.Tensor]:
    """EXPERIMENTAL: BD-KD (Amara et al. 2022, arXiv 2212.12965), an online teacher and student with sample-wise
    balanced forward and reverse KL. The paper's exact weighting is not published in reach (docs/methods/bdkd.md
    §6.8: no
    official code, UNVERIFIED); this is the placeholder of docs/methods/bdkd.md, with every free choice a parameter:

    p_s = softmax(z_s/tau), p_t = softmax(z_t/tau); w_n = sigmoid(sharpness * (H(p_s,n) - H(p_t,n))) (a constant);
    ce = CE(z_s, y) + CE(z_t, y);
    kd_student = weight * tau^2 * mean_n[(1 - w_n) KL(p_t || p_s)_n + w_n KL(p_s || p_t)_n]  (the student's term);
    kd_teacher = weight * tau^2 * mean_n KL(p_t || p_s)_n with p_s the target (the teacher's reverse-KL regulariser).
    With ``detach_targets`` (the default here) each term trains only the network it regularises."""
    _check_peers([student_logits, teacher_logits])
    if tau <= 0:
        raise ValueError(f"tau must be positive, got {tau}")
    zs, zt = student_logits.float() / tau, teacher_logits.float() / tau
    log_ps, log_pt = torch.log_softmax(zs, dim=1), torch.log_softmax(zt, dim=1)
    with torch.no_grad():
        entropy_s = -(log_ps.exp() * log_ps).sum(1)
        entropy_t = -(log_pt.exp() * log_pt).sum(1)
        w = torch.sigmoid(sharpness * (entropy_s - entropy_t))
    target_t = log_pt.detach() if detach_targets else log_pt
    target_s = log_ps.detach() if detach_targets else log_ps
    forward = (target_t.exp() * (target_t - log_ps)).sum(1)  # KL(p_t || p_s), trains the student
    reverse = (log_ps.exp() * (log_ps - target_t)).sum(1)  # KL(p_s || p_t), trains the student
    teacher_reg = (log_pt.exp() * (log_pt - target_s)).sum(1)  # KL(p_t || p_s) as a function of the teacher
    scale = weight * tau * tau
    return {"ce": cross_entropy(student_logits, y) + cross_entropy(teacher_logits, y),
            "kd_student": scale * ((1 - w) * forward + w * reverse).mean(),
            "kd_teacher": scale * teacher_reg.mean()}


def dml(logits, y, tau: float = 3.0, weight: float = 1.0, detach_targets: bool = False) -> torch.Tensor:
    """The sum of :func:`dml_terms`."""
    return sum(dml_terms(logits, y, tau, weight, detach_targets).values())


def cl_ilr(logits, y, tau: float = 3.0, weight: float = 1.0, detach_targets: bool = False) -> torch.Tensor:
    """The sum of :func:`cl_ilr_terms`."""
    return sum(cl_ilr_terms(logits, y, tau, weight, detach_targets).values())


def one(logits, gate, y, tau: float = 3.0, weight: float = 1.0, detach_targets: bool = False) -> torch.Tensor:
    """The sum of :func:`one_terms`."""
    return sum(one_terms(logits, gate, y, tau, weight, detach_targets).values())


def okddip(peer_logits, leader_logits, attention, y, tau: float = 3.0, weight: float = 1.0,
           detach_targets: bool = False) -> torch.Tensor:
    """The sum of :func:`okddip_terms`."""
    return sum(okddip_terms(peer_logits, leader_logits, attention, y, tau, weight, detach_targets).values())
