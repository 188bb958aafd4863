"""PGD and ARD: the attack against a closed-form signed-gradient step (float64), the eps-ball and pixel-range
projections in normalised input space, robust accuracy (reproducible, never above clean), ARD's reductions (no
perturbation and batchmean KL: KD's terms exactly) and end to end: terms logged, a killed run resumes to the same
result, robust accuracy in the summary of every run whose recipe asks for it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn as nn

from kdlab import losses, models
from kdlab.adversarial import pgd_attack, robust_accuracy
from kdlab.config import load_recipe
from kdlab.data import load_dataset
from kdlab.methods import MethodContext, get
from kdlab.teacher import Teacher
from kdlab.train.engine import train
from tests._cli import assert_user_error, kdlab_main, train_killed_and_resumed, write_recipe

rng = np.random.default_rng(17)


def _linear(weights, bias):
    model = nn.Sequential(nn.Flatten(), nn.Linear(weights.shape[1], weights.shape[0])).double()
    with torch.no_grad():
        model[1].weight.copy_(torch.from_numpy(weights))
        model[1].bias.copy_(torch.from_numpy(bias))
    return model


def test_one_step_without_a_random_start_is_the_signed_gradient_step_of_the_pixels():
    w, b = rng.normal(size=(3, 8)), rng.normal(size=3)
    mean, std = [0.4, 0.5], [0.2, 0.25]
    pixels = rng.uniform(0.1, 0.9, size=(5, 2, 2, 2))
    labels = rng.integers(0, 3, size=5)
    m, s = np.array(mean).reshape(1, 2, 1, 1), np.array(std).reshape(1, 2, 1, 1)
    x = (pixels - m) / s
    # d CE_sum / d pixels = (W^T (softmax(z) - onehot)) reshaped, divided by std (x = (p - mean) / std)
    z = x.reshape(5, -1) @ w.T + b
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    grad_x = ((p - np.eye(3)[labels]) @ w).reshape(x.shape)
    expected = np.clip(pixels + 0.05 * np.sign(grad_x / s), 0, 1)
    got = pgd_attack(_linear(w, b), torch.from_numpy(x), torch.from_numpy(labels), eps=0.1, step_size=0.05, steps=1,
                     mean=mean, std=std, random_start=False)
    np.testing.assert_allclose(got.numpy() * s + m, expected, rtol=0, atol=1e-12)


def test_many_steps_stay_in_the_ball_and_the_pixel_range():
    w, b = rng.normal(size=(3, 8)), rng.normal(size=3)
    pixels = torch.from_numpy(rng.uniform(0, 1, size=(6, 2, 2, 2)))
    labels = torch.from_numpy(rng.integers(0, 3, size=6))
    generator = torch.Generator().manual_seed(0)
    adv = pgd_attack(_linear(w, b), pixels, labels, eps=0.2, step_size=0.07, steps=7, generator=generator)
    assert float((adv - pixels).abs().max()) <= 0.2 + 1e-12 and float(adv.min()) >= 0 and float(adv.max()) <= 1
    again = pgd_attack(_linear(w, b), pixels, labels, eps=0.2, step_size=0.07, steps=7,
                       generator=torch.Generator().manual_seed(0))
    assert torch.equal(adv, again)
    loss = lambda x: float(nn.functional.cross_entropy(_linear(w, b)(x), labels).detach())  # noqa: E731
    assert loss(adv) > loss(pixels)  # the attack raised the loss
    unclamped = pgd_attack(_linear(w, b), pixels, labels, eps=5.0, step_size=1.0, steps=3, clamp=None,
                           random_start=False)
    assert float(unclamped.max()) > 1 or float(unclamped.min()) < 0
    zero = pgd_attack(_linear(w, b), pixels, labels, eps=0.0, step_size=0.07, steps=3)
    torch.testing.assert_close(zero, pixels, rtol=0, atol=1e-12)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    out = tmp_path_factory.mktemp("robust-teacher") / "run"
    train(load_recipe(raw={"data": {"source": "digits", "val_size": 0.1}, "model": {"name": "cnn_small8"},
                           "train": {"epochs": 2}, "runtime": {"progress": False, "threads": 1}}), out, quiet=True)
    return out


def _ard_and_kd(alpha, tau):
    dataset = load_dataset("digits")

    def load_teacher(run_dir, checkpoint="final"):
        torch.manual_seed(1)
        return Teacher(models.create("cnn_small8", 10, in_channels=1))

    context = MethodContext(dataset, mean=[0.3], std=[0.4], load_teacher=load_teacher)
    torch.manual_seed(0)
    student = models.create("cnn_small8", 10, in_channels=1).double()
    ard = get("ard")(student, get("ard").Params(teacher="t", alpha=alpha, tau=tau, eps=0.0, steps=1,
                                                kl_reduction="batchmean", attack_mode="eval"), context).double()
    return ard, student


def test_ard_without_perturbation_and_with_batchmean_is_kd():
    ard, student = _ard_and_kd(0.6, 4.0)
    ard.eval()  # BatchNorm in eval: both forward passes see the same function
    x = (torch.rand(8, 1, 8, 8, dtype=torch.float64) - 0.3) / 0.4  # pixels in [0, 1], normalised as the context says
    y = torch.arange(8) % 10
    logits, terms = ard(x, y, 0)
    kd = losses.kd_terms(student(x), ard.teacher(x), y, 0.6, 4.0)
    assert float(terms["ard"].detach()) == pytest.approx(float(kd["kd"].detach()), rel=1e-10)
    assert float(terms["ce"].detach()) == pytest.approx(float(kd["ce"].detach()), rel=1e-10)
    elementwise, _ = _ard_and_kd(0.6, 4.0)
    elementwise.params = elementwise.params.model_copy(update={"kl_reduction": "elementwise"})
    elementwise.eval()
    assert float(elementwise(x, y, 0)[1]["ard"].detach()) == pytest.approx(float(kd["kd"].detach()) / 10, rel=1e-10)


def _raw(teacher, method, epochs=2, robustness=None):
    raw = {"data": {"source": "digits", "val_size": 0.1}, "model": {"name": "cnn_small8"},
           "method": {"teacher": str(teacher), **method}, "train": {"epochs": epochs},
           "runtime": {"progress": False, "threads": 1, "precision": "fp32"}}
    if robustness is not None:
        raw["robustness"] = robustness
    return raw


def test_ard_resumes_exactly_and_reports_robust_accuracy(teacher, tmp_path):
    robustness = {"steps": 3, "eps": 0.1, "step_size": 0.04, "max_samples": 200}
    recipe = write_recipe(tmp_path, _raw(teacher, {"name": "ard", "eps": 0.1, "step_size": 0.04, "steps": 2},
                                         epochs=3, robustness=robustness))
    whole, resumed = train_killed_and_resumed(tmp_path, recipe)
    assert whole["final"] == resumed["final"] and whole["robustness"] == resumed["robustness"]
    record = whole["robustness"]
    assert record["attack"] == "pgd" and record["steps"] == 3 and record["samples"] == 200
    assert 0 <= record["robust_acc"] <= record["clean_acc"] <= 1
    assert whole["final"]["test_robust_acc"] == record["robust_acc"]
    first = json.loads((tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()[0])
    assert first["train_ard"] > 0 and "train_ce" in first


def test_robust_accuracy_is_reproducible_and_zero_eps_is_clean_accuracy(teacher, tmp_path):
    summary = train(load_recipe(raw=_raw(teacher, {"name": "kd"}, epochs=1,
                                         robustness={"eps": 0.0, "split": "val"})), tmp_path / "kd", quiet=True)
    assert summary["robustness"]["robust_acc"] == summary["robustness"]["clean_acc"] == summary["final"]["val_acc"]
    from kdlab.data.loader import DeviceLoader  # noqa: F401  (the loaders robust_accuracy takes)
    model = models.create("cnn_small8", 10, in_channels=1)

    class Batches:
        def batches(self, epoch):
            torch.manual_seed(5)
            for _ in range(2):
                yield torch.rand(16, 1, 8, 8), torch.randint(0, 10, (16,))

    runs = [robust_accuracy(model, Batches(), eps=0.3, step_size=0.1, steps=3, seed=4) for _ in range(2)]
    assert runs[0] == runs[1] and runs[0]["samples"] == 32 and runs[0]["robust_acc"] <= runs[0]["clean_acc"]


def test_a_bad_robustness_section_is_a_one_line_error(teacher, tmp_path):
    bad = _raw(teacher, {"name": "kd"}, robustness={"steps": 0})
    assert_user_error(kdlab_main("train", write_recipe(tmp_path, bad), "--out", tmp_path / "r"), "robustness.steps")
    no_val = _raw(teacher, {"name": "kd"}, robustness={"split": "val"})
    no_val["data"]["val_size"] = 0
    assert_user_error(kdlab_main("train", write_recipe(tmp_path, no_val, "v.yaml"), "--out", tmp_path / "v"),
                      "robustness.split is val")
    assert not (tmp_path / "r").exists() and not (tmp_path / "v").exists()


def test_the_report_tables_robust_accuracy_with_paired_differences(tmp_path):
    import yaml

    from kdlab.analysis.report import build_report
    from kdlab.experiments.study import run_study

    pgd = {"steps": 2, "eps": 0.05, "step_size": 0.03, "max_samples": 100}
    base = {"data": {"source": "digits", "val_size": 0.1}, "model": {"name": "cnn_small8"}, "train": {"epochs": 1},
            "runtime": {"progress": False, "threads": 1}, "robustness": pgd}
    study = {"seeds": 2, "baseline": "ce", "base": base, "stages": {
        "ce": {"method": {"name": "ce"}},
        "ls": {"method": {"name": "ls", "eps": 0.1}},
        "plain": {"method": {"name": "ce"}, "robustness": None, "optim": {"lr": 0.05}}}}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(study))
    run_study(tmp_path / "s.yaml", tmp_path / "out", quiet=True)
    record = build_report([tmp_path / "out"], tmp_path / "report", plots=False)
    groups = {g["group"]: g["metrics"] for g in record["groups"]}
    assert "robust_acc" in groups["ce"] and "robust_acc" in groups["ls"] and "robust_acc" not in groups["plain"]
    ls = next(r for r in record["paired"] if r["group"] == "ls")
    by_seed = [json.loads((tmp_path / "out" / f"{g}-s{seed}" / "summary.json").read_text())["robustness"]["robust_acc"]
               for g in ("ls", "ce") for seed in (0, 1)]
    assert ls["robust_acc"]["mean"] == pytest.approx(((by_seed[0] - by_seed[2]) + (by_seed[1] - by_seed[3])) / 2)
    text = (tmp_path / "report" / "report.md").read_text()
    assert "## Robust accuracy (PGD" in text and "| ls |" in text.split("## Robust accuracy")[1]
