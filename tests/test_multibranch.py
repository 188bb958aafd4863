"""Shared-trunk multi-branch models: parameter sharing, one trunk pass, export, gradient scaling."""

import pytest
import torch

from kdlab import models
from kdlab.errors import KdlabError
from kdlab.models.multibranch import MultiBranch, scale_gradient


def count(module):
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("name", ["resnet8", "wrn_10_1", "vgg8", "resnet110_bottleneck"])
def test_branches_equal_their_exported_networks(name):
    torch.manual_seed(0)
    model = MultiBranch(name, num_classes=5, branches=3).eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        logits, features = model(x, return_features=True)
        for i in range(3):
            single = model.export(i).eval()
            z, h = single(x, return_features=True)
            torch.testing.assert_close(logits[i], z)
            torch.testing.assert_close(features[i], h)
    assert len({tuple(z[0].tolist()) for z in logits}) == 3  # branches differ (own initialisation)


def test_parameters_are_shared_in_the_trunk_only():
    single = models.create("resnet32", num_classes=100)
    tail = count(single.layer3) + count(single.classifier)
    model = MultiBranch("resnet32", num_classes=100, branches=4)
    assert model.trunk_stages == 3
    assert count(model) == count(single) + 3 * tail
    independent = MultiBranch("resnet32", num_classes=100, branches=4, trunk_stages=0)
    assert count(independent) == 4 * count(single)


def test_the_trunk_runs_once_per_batch():
    model = MultiBranch("resnet8", num_classes=10, branches=4)
    calls = []
    model.networks[0].layer2.register_forward_hook(lambda *args: calls.append(1))
    model(torch.randn(2, 3, 32, 32))
    assert len(calls) == 1


def test_gradient_scale_divides_the_trunk_gradient():
    torch.manual_seed(0)
    model = MultiBranch("resnet8", num_classes=10, branches=4)
    x = torch.randn(2, 3, 32, 32)

    def trunk_and_branch_grads(scale):
        model.zero_grad()
        model.gradient_scale = scale
        sum(z.sum() for z in model(x)).backward()
        return model.networks[0].conv1.weight.grad.clone(), model.networks[1].classifier.weight.grad.clone()

    trunk_full, branch_full = trunk_and_branch_grads(1.0)
    trunk_scaled, branch_scaled = trunk_and_branch_grads(0.25)
    torch.testing.assert_close(trunk_scaled, 0.25 * trunk_full)
    torch.testing.assert_close(branch_scaled, branch_full)


def test_scale_gradient_is_identity_forward():
    x = torch.randn(3, requires_grad=True)
    y = scale_gradient(x, 0.5)
    assert torch.equal(y, x)
    y.sum().backward()
    assert torch.equal(x.grad, torch.full((3,), 0.5))


def test_errors():
    with pytest.raises(KdlabError, match="cannot be split"):
        MultiBranch("mobilenetv2", num_classes=10)
    with pytest.raises(KdlabError, match="stages"):
        MultiBranch("resnet8", num_classes=10, trunk_stages=4)
    with pytest.raises(KdlabError, match="at least 2"):
        MultiBranch("resnet8", num_classes=10, branches=1)
    with pytest.raises(KdlabError, match="does not exist"):
        MultiBranch("resnet8", num_classes=10, branches=2).export(2)
