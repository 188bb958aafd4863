"""ReviewKD: the hierarchical context loss against NumPy in float64 and its reductions, the attention-based fusion
(deepest first, the residual carried up), and the method end to end: warm-up, resume after kill -9, fusion modules
out of model.safetensors, taps that go the wrong way refused in one line."""

from __future__ import annotations


import numpy as np
import pytest
import torch

from kdlab.losses.features import review_loss
from kdlab.methods.review_kd import AttentionFusion
from tests._cli import assert_user_error, kdlab_main, write_recipe
from tests.test_feature_kd import _recipe, resumed_method_run, teacher  # noqa: F401  (the teacher fixture)

rng = np.random.default_rng(5)


def t(a):
    return torch.from_numpy(np.asarray(a, dtype=np.float64))


def _pool(f, side):
    """Adaptive average pooling to side x side, for sides that divide the map's."""
    n, c, h, w = f.shape
    return f.reshape(n, c, side, h // side, side, w // side).mean(axis=(3, 5))


def _hcl(fs, ft):
    loss, weight, norm = ((fs - ft) ** 2).mean(), 1.0, 1.0
    for level in (4, 2, 1):
        if level < fs.shape[2]:
            weight /= 2
            loss += weight * ((_pool(fs, level) - _pool(ft, level)) ** 2).mean()
            norm += weight
    return loss / norm


def test_hierarchical_context_loss_matches_numpy():
    pairs = [(rng.normal(size=(3, 4, side, side)), rng.normal(size=(3, 4, side, side))) for side in (8, 4, 2, 1)]
    expected = sum(_hcl(s, u) for s, u in pairs)
    got = review_loss([t(s) for s, _ in pairs], [t(u) for _, u in pairs])
    assert float(got) == pytest.approx(expected, rel=1e-12)
    # the 8 x 8 map uses levels 4, 2, 1 (weights 1/2, 1/4, 1/8); the 2 x 2 map level 1 only
    s, u = pairs[0]
    by_hand = (((s - u) ** 2).mean() + sum(w * ((_pool(s, k) - _pool(u, k)) ** 2).mean()
                                          for w, k in ((0.5, 4), (0.25, 2), (0.125, 1)))) / 1.875
    assert float(review_loss([t(s)], [t(u)])) == pytest.approx(by_hand, rel=1e-12)


def test_reductions_of_the_context_loss():
    s, u = rng.normal(size=(2, 3, 1, 1)), rng.normal(size=(2, 3, 1, 1))
    assert float(review_loss([t(s)], [t(u)])) == pytest.approx(((s - u) ** 2).mean(), rel=1e-12)  # no level below 1
    v, w = rng.normal(size=(4, 6)), rng.normal(size=(4, 6))  # vectors: the plain MSE
    assert float(review_loss([t(v)], [t(w)])) == pytest.approx(((v - w) ** 2).mean(), rel=1e-12)
    f = rng.normal(size=(2, 3, 4, 4))
    same_pools = f + (np.indices((4, 4)).sum(0) % 2 * 2 - 1)  # +-1 checkerboard: every 2x2 (and 1x1) pool unchanged
    full = ((same_pools - f) ** 2).mean()
    assert float(review_loss([t(same_pools)], [t(f)])) == pytest.approx(full / 1.75, rel=1e-12)
    assert float(review_loss([t(f)], [t(f)])) == 0.0


def test_fusion_mixes_the_residual_by_its_attention_weights():
    torch.manual_seed(0)
    fusion = AttentionFusion(4, 6, 5, fuse=True).double().eval()
    x, residual = torch.randn(2, 4, 8, 8, dtype=torch.float64), torch.randn(2, 6, 4, 4, dtype=torch.float64)
    out, mixed = fusion(x, residual, (8, 8))
    reduced = fusion.reduce(x)
    up = residual.repeat_interleave(2, 2).repeat_interleave(2, 3)  # nearest upsampling by 2
    weights = torch.sigmoid(fusion.attention[0](torch.cat([reduced, up], 1)))
    torch.testing.assert_close(mixed, reduced * weights[:, :1] + up * weights[:, 1:])
    torch.testing.assert_close(out, fusion.expand(mixed))
    assert out.shape == (2, 5, 8, 8)
    deepest = AttentionFusion(4, 6, 5, fuse=False).double().eval()
    out, mixed = deepest(x, None, (4, 4))  # no residual; resized to the teacher's side before the expansion
    assert mixed.shape == (2, 6, 4, 4) and out.shape == (2, 5, 4, 4)


def test_reviewkd_warms_up_resumes_exactly_and_keeps_its_fusions_out_of_the_model(teacher, tmp_path):  # noqa: F811
    state, epochs = resumed_method_run(teacher, tmp_path, {"name": "reviewkd", "warmup_epochs": 2})
    assert {k.split(".")[1] for k in state if k.startswith("fusions.")} == {"0", "1", "2", "3"}
    assert not any(k.startswith("fusions.3.attention") for k in state)  # the deepest level fuses nothing
    assert all(e["train_review"] > 0 and "train_ce" in e for e in epochs)


def test_taps_that_do_not_go_deeper_are_refused(teacher, tmp_path):  # noqa: F811
    bad = _recipe(teacher, {"name": "reviewkd", "student_taps": ["penultimate", "stage2"],
                            "teacher_taps": ["penultimate", "stage2"]})
    assert_user_error(kdlab_main("train", write_recipe(tmp_path, bad), "--out", tmp_path / "r"),
                      "student_taps must go from shallow to deep")
    assert not (tmp_path / "r").exists()
