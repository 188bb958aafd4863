"""The foundation losses against independent computations and their known reductions (docs/methods/test_checklist.md
§9)."""

import pytest
import torch
import torch.nn.functional as F

from kdlab import losses


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(16, 7, generator=g) * 3
    y = torch.randint(0, 7, (16,), generator=g)
    return z, y


def test_cross_entropy_matches_explicit_formula(batch):
    z, y = batch
    expected = -torch.log(torch.softmax(z.double(), 1)[torch.arange(16), y]).mean()
    assert losses.cross_entropy(z, y).item() == pytest.approx(expected.item(), rel=1e-6)


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.37, 0.9])
def test_uniform_label_smoothing_equals_torch(batch, eps):
    z, y = batch
    assert losses.label_smoothing(z, y, eps).item() == pytest.approx(F.cross_entropy(z, y, label_smoothing=eps).item(), rel=1e-6)


def test_label_smoothing_zero_is_cross_entropy(batch):
    z, y = batch
    for split in ("uniform", "others"):
        assert losses.label_smoothing(z, y, 0.0, split).item() == pytest.approx(losses.cross_entropy(z, y).item(), rel=1e-6)


def test_others_split_puts_eps_over_k_minus_1_on_wrong_classes(batch):
    z, y = batch
    eps, k = 0.2, z.shape[1]
    target = losses.smoothed_labels(y, k, eps, "others")
    assert torch.allclose(target.sum(1), torch.ones(16))
    assert torch.allclose(target[torch.arange(16), y], torch.full((16,), 1 - eps))
    wrong = target.clone()
    wrong[torch.arange(16), y] = 0
    assert torch.allclose(wrong.sum(1), torch.full((16,), eps))
    assert torch.allclose(wrong[wrong > 0], torch.tensor(eps / (k - 1)))
    # Independent value: (1 - eps) CE + eps * mean over wrong classes of -log p.
    log_p = torch.log_softmax(z.double(), 1)
    mask = torch.ones_like(log_p, dtype=torch.bool)
    mask[torch.arange(16), y] = False
    expected = ((1 - eps) * -log_p[torch.arange(16), y] + eps * -(log_p * mask).sum(1) / (k - 1)).mean()
    assert losses.label_smoothing(z, y, eps, "others").item() == pytest.approx(expected.item(), rel=1e-6)


def test_label_smoothing_gradient_is_softmax_minus_smoothed_target(batch):
    z, y = batch
    z = z.clone().requires_grad_(True)
    eps = 0.3
    losses.label_smoothing(z, y, eps).backward()
    expected = (torch.softmax(z.detach(), 1) - losses.smoothed_labels(y, 7, eps)) / 16
    assert torch.allclose(z.grad, expected, atol=1e-6)


def test_label_smoothing_decomposes_into_ce_and_uniform_term(batch):
    z, y = batch
    eps = 0.25
    log_p = torch.log_softmax(z.double(), 1)
    expected = (1 - eps) * F.nll_loss(log_p, y) + eps * (-log_p.mean(1)).mean()
    assert losses.label_smoothing(z, y, eps).item() == pytest.approx(expected.item(), rel=1e-6)


def test_bf16_logits_are_computed_in_float32(batch):
    z, y = batch
    value = losses.label_smoothing(z.bfloat16(), y, 0.1)
    assert value.dtype == torch.float32


@pytest.mark.parametrize("eps", [-0.1, 1.0, 1.5])
def test_eps_out_of_range_is_refused(batch, eps):
    z, y = batch
    with pytest.raises(ValueError, match="eps"):
        losses.label_smoothing(z, y, eps)


def test_unknown_split_is_refused(batch):
    z, y = batch
    with pytest.raises(ValueError, match="split"):
        losses.label_smoothing(z, y, 0.1, "wrong_only")
