"""Post-hoc temperature scaling (Guo et al., ICML 2017; docs/methods/calibration.md §6.5).

One scalar T > 0 is fitted on held-out (validation) logits by minimising the NLL of softmax(z / T); test logits
are then divided by T. Accuracy is unchanged (argmax is invariant to a positive scale).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from kdlab import metrics
from kdlab.metrics._inputs import as_logits_and_labels

T_MIN = 1e-2
T_MAX = 1e2
_STEP_TOL = 1e-8  # convergence test: remaining Newton step |g / h| in log T, i.e. the relative error left in T


def _nll_and_grad(d: torch.Tensor, log_t: float | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """NLL and its derivative in log T, from the label-relative logits d_ik = z_ik - z_iy (so d_iy = 0).

    NLL(T) = mean_i logsumexp_k(d_ik / T), evaluated as m_i + log1p(sum of exp(d_ik / T - m_i) over all k but
    one argmax), m_i = max_k d_ik / T, so that a near-zero NLL keeps its precision;
    g = d NLL / d log T = -(1/T) mean_i sum_k softmax(d_i / T)_k d_ik. Each term of g has the exact sign of d_ik
    (the label's own term is exactly 0), so g never has a wrong sign from cancellation: when every sample is
    correct g >= 0, and it underflows to exactly 0 rather than to a spurious negative value.
    """
    log_t = torch.as_tensor(log_t, dtype=torch.float64)
    t = torch.exp(log_t)
    u = d / t
    m, top = u.max(dim=1, keepdim=True)
    e = torch.exp(u - m)
    nll = (m.squeeze(1) + torch.log1p(e.scatter(1, top, 0.0).sum(dim=1))).mean()
    p = e / e.sum(dim=1, keepdim=True)
    grad = -(p * d).sum(dim=1).mean() / t
    return nll, grad


def _label_relative_logits(logits, labels) -> torch.Tensor:
    z, y = as_logits_and_labels(logits, labels)
    if not torch.isfinite(z).all():
        raise ValueError("logits must be finite to fit a temperature")
    return z - z.gather(1, y.unsqueeze(1))


def fit_temperature(logits, labels, init: float = 1.5, max_iter: int = 200) -> float:
    """Temperature T minimising NLL(T) = mean_i -log softmax(z_i / T)_{y_i} (Guo et al. 2017), clamped to [1e-2, 1e2].

    gpleiss/temperature_scaling runs LBFGS (lr 0.01, max_iter 200) on T itself from T = 1.5. Here, for
    robustness and accuracy:

    * the variable is log T (T stays positive), everything is float64, and LBFGS uses
      ``line_search_fn="strong_wolfe"`` (lr 1, at most ``max_iter`` iterations) from log(``init``), with an
      analytic gradient that is free of cancellation (see ``_nll_and_grad``);
    * NLL is convex in 1/T (a log-sum-exp of functions linear in 1/T), so it is unimodal in log T and the sign
      of g = d NLL / d log T is non-decreasing in T. The sign at the ends of the clamp range decides first:
      if g >= 0 already at T = T_MIN = 0.01 (e.g. every sample correct with a margin, so NLL -> 0 as T -> 0),
      the result is T_MIN; if g <= 0 still at T = T_MAX = 100 (e.g. every label the least likely class, so
      NLL keeps decreasing as T -> infinity), the result is T_MAX;
    * otherwise the minimiser is interior. LBFGS convergence is verified: T must lie inside the range and the
      remaining Newton step |g / h| in log T (h = dg / d log T by central difference) must be <= 1e-8, i.e. T
      is the minimiser to ~1e-8 relative. If not, a bisection on the sign of g over the bracket finishes the
      job, so the returned T is the minimiser either way;
    * if NLL does not depend on T at all (every row of logits constant), ``init`` (clamped) is returned.

    A single sample is allowed (it gives T_MIN or T_MAX, or ``init`` for constant logits); an empty input,
    non-finite logits, labels outside [0, K) or a non-positive ``init`` raise ValueError.
    """
    try:
        init = float(init)
    except (TypeError, ValueError):
        raise ValueError(f"init must be a finite positive temperature, got {init!r}") from None
    if not (math.isfinite(init) and init > 0):
        raise ValueError(f"init must be a finite positive temperature, got {init!r}")
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise ValueError(f"max_iter must be a positive integer, got {max_iter!r}")
    d = _label_relative_logits(logits, labels)
    lo, hi = math.log(T_MIN), math.log(T_MAX)
    if bool((d.max(dim=1).values == d.min(dim=1).values).all()):
        return float(min(max(init, T_MIN), T_MAX))
    if _nll_and_grad(d, lo)[1] >= 0:
        return T_MIN
    if _nll_and_grad(d, hi)[1] <= 0:
        return T_MAX

    log_t = torch.tensor(min(max(math.log(init), lo), hi), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS(
        [log_t],
        lr=1.0,
        max_iter=max_iter,
        tolerance_grad=1e-12,
        tolerance_change=0.0,  # stop on the gradient (or a line search that cannot move), not on a flat loss
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        nll, grad = _nll_and_grad(d, log_t.detach())
        log_t.grad = grad.reshape_as(log_t)
        return nll

    optimizer.step(closure)
    candidate = log_t.item()
    if math.isfinite(candidate) and lo < candidate < hi and _newton_step(d, candidate) <= _STEP_TOL:
        return math.exp(candidate)
    return math.exp(_bisect_derivative(d, lo, hi))


def _newton_step(d: torch.Tensor, log_t: float, delta: float = 1e-4) -> float:
    """|g / h| at log_t, with h the central-difference derivative of g; inf unless h > 0 (a flat region)."""
    grad = _nll_and_grad(d, log_t)[1].item()
    curvature = (_nll_and_grad(d, log_t + delta)[1] - _nll_and_grad(d, log_t - delta)[1]).item() / (2 * delta)
    return abs(grad / curvature) if curvature > 0 else math.inf


def _bisect_derivative(d: torch.Tensor, lo: float, hi: float) -> float:
    """Where g = d NLL / d log T changes sign in (lo, hi), given g(lo) < 0 < g(hi) and g non-decreasing.

    g = 0 exactly is treated as g >= 0 (it only arises from underflow when every sample is correct, where the
    true g is positive).
    """
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):
            break
        if _nll_and_grad(d, mid)[1] >= 0:
            hi = mid
        else:
            lo = mid
    return 0.5 * (lo + hi)


def scale(logits, temperature: float):
    """logits / T, returned as the input's type: a torch tensor stays a tensor (same dtype and device),
    anything else comes back as a NumPy array."""
    try:
        t = float(temperature)
    except (TypeError, ValueError):
        raise ValueError(f"temperature must be a finite positive number, got {temperature!r}") from None
    if not (math.isfinite(t) and t > 0):
        raise ValueError(f"temperature must be a finite positive number, got {temperature!r}")
    if isinstance(logits, torch.Tensor):
        return logits / t
    return np.asarray(logits) / t


def calibration_report(val_logits, val_labels, test_logits, test_labels) -> dict:
    """Fit T on the validation split and report the test metrics before and after scaling.

    Returns {"temperature": T, "before": evaluate_all(test), "after": evaluate_all(test / T)}, where
    evaluate_all is :func:`kdlab.metrics.evaluate_all` (acc, top5 when K > 5, nll, brier, ece, adaptive_ece,
    classwise_ece, mce). The test logits are scaled in float64.
    """
    temperature = fit_temperature(val_logits, val_labels)
    z, y = as_logits_and_labels(test_logits, test_labels)
    return {
        "temperature": temperature,
        "before": metrics.evaluate_all(z, y),
        "after": metrics.evaluate_all(scale(z, temperature), y),
    }
