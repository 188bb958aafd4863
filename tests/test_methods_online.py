"""Online distillation methods (dml, one, cl_ilr, okddip) as trained by the engine: attention, targets, gradients,
one trunk pass, heads in metrics and summary, the exported inference network, recipe errors."""

import json

import numpy as np
import pytest
import torch

from kdlab import losses, methods, models
from kdlab.cli import main
from kdlab.config import load_recipe
from kdlab.data import load_dataset
from kdlab.errors import KdlabError
from kdlab.methods.base import MethodContext
from kdlab.store.checkpoint import load_tensors
from kdlab.train.engine import train


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", None, val_size=0.1, seed=0)


def build(name, digits, model="resnet8", **params):
    cls = methods.get(name)
    context = MethodContext(digits, model_name=model)
    return cls(models.create(model, 10, in_channels=1), cls.Params(**params), context)


def batch(n=6, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 8, 8, generator=generator), torch.randint(0, 10, (n,), generator=generator)


def test_okddip_attention_is_per_sample_and_rows_sum_to_one(digits):
    method = build("okddip", digits)
    x, _ = batch(5)
    _, features = method.branches(x, return_features=True)
    alpha = method.attention(features[:-1])
    assert alpha.shape == (5, 3, 3)
    torch.testing.assert_close(alpha.sum(2), torch.ones(5, 3))
    assert not torch.allclose(alpha[0], alpha[1])  # each sample has its own weights


def test_okddip_with_zero_maps_targets_every_peer_at_the_peers_mean(digits):
    method = build("okddip", digits, rampup=0)
    with torch.no_grad():
        method.query.weight.zero_()
        method.key.weight.zero_()
    x, y = batch()
    logits, features = method.branches(x, return_features=True)
    alpha = method.attention(features[:-1])
    torch.testing.assert_close(alpha, torch.full_like(alpha, 1 / 3))
    peers = torch.stack(logits[:-1])
    mean = peers.mean(0)
    expected = sum(losses.kl_to_logits(mean, z, 3.0) for z in logits[:-1])
    terms = method.loss_terms(logits, features, None, y, 1.0)
    torch.testing.assert_close(terms["kd_peers"], expected)
    torch.testing.assert_close(terms["kd_leader"], losses.kl_to_logits(mean, logits[-1], 3.0))


def test_dml_loss_is_symmetric_in_its_peers(digits):
    method = build("dml", digits, branches=3)
    x, y = batch()
    logits = [z.detach() for z in method.branches(x)]
    reference = method.loss_terms(logits, None, None, y, 1.0)
    for order in ([2, 0, 1], [1, 2, 0], [0, 2, 1]):
        permuted = method.loss_terms([logits[i] for i in order], None, None, y, 1.0)
        for name in reference:
            torch.testing.assert_close(permuted[name], reference[name])


@pytest.mark.parametrize("name", ["okddip", "dml", "one", "cl_ilr", "bdkd"])
def test_detach_targets_changes_exactly_which_parameters_get_gradient(digits, name):
    """Only the distillation term, with CE removed: with detached targets, a branch's parameters get gradient only
    through its own prediction, so the attention maps / gate (which only shape targets) get none."""
    x, y = batch(8)
    grads = {}
    for detach in (False, True):
        torch.manual_seed(0)
        method = build(name, digits, detach_targets=detach, rampup=0)
        shared = method.branches.trunk(x)
        features = [method.branches.branch_features(shared, i) for i in range(method.branches.num_branches)]
        logits = [n.classifier(h) for n, h in zip(method.branches.networks, features)]
        terms = method.loss_terms(logits, features, shared, y, 1.0)
        kd = sum(v for k, v in terms.items() if k.startswith("kd"))
        kd.backward()
        grads[detach] = {k: (p.grad is not None and bool(p.grad.abs().sum() > 0)) for k, p in method.named_parameters()}
    target_only = {"okddip": ("query.", "key."), "one": ("gate.",)}.get(name, ())
    for key, has in grads[False].items():
        if key.startswith(target_only):
            assert has, key  # the reference code trains these through the targets
            assert not grads[True][key], key
    assert any(grads[False].values()) and any(grads[True].values())
    if not target_only:  # dml / cl_ilr: every branch still learns from its own prediction either way
        assert grads[False] == grads[True]


@pytest.mark.parametrize("name", ["okddip", "one", "cl_ilr"])
def test_the_trunk_runs_once_per_training_step(digits, name):
    method = build(name, digits)
    calls = []
    first_stage = method.branches.networks[0].stage_modules[0][0]
    handle = getattr(method.branches.networks[0], first_stage).register_forward_hook(lambda *a: calls.append(1))
    x, y = batch()
    method(x, y, 0)
    handle.remove()
    assert len(calls) == 1


def test_rampup_weights_the_distillation_terms(digits):
    method = build("okddip", digits)  # 80-epoch ramp-up
    assert method.weight(0) == pytest.approx(np.exp(-5.0))
    assert method.weight(80) == method.weight(200) == 1.0


def test_recipe_errors(digits):
    with pytest.raises(KdlabError, match="has no group leader"):
        build("dml", digits, inference="leader")
    with pytest.raises(KdlabError, match="peer5 does not exist"):
        build("okddip", digits, inference="peer5")
    with pytest.raises(Exception, match="best, leader or peerN"):
        build("dml", digits, inference="boss")
    with pytest.raises(KdlabError, match="cannot be split"):
        build("one", digits, model="cnn_small8")


def run_recipe(tmp_path, name, **params):
    recipe = load_recipe(raw={"data": {"source": "digits", "val_size": 0.1}, "model": {"name": "resnet8"},
                              "method": {"name": name, **params}, "train": {"epochs": 2, "batch_size": 64},
                              "runtime": {"progress": False}})
    out = tmp_path / name
    return train(recipe, out, quiet=True), out


@pytest.fixture(scope="module")
def okddip_run(tmp_path_factory):
    return run_recipe(tmp_path_factory.mktemp("okddip"), "okddip")


def test_okddip_run_reports_every_head_and_exports_the_leader(tmp_path, digits, okddip_run):
    summary, out = okddip_run
    assert summary["inference_head"] == "leader"
    assert set(summary["heads"]) == {"peer1", "peer2", "peer3", "leader", "ensemble"}
    for head in summary["heads"].values():
        assert {"acc", "nll", "ece"} <= set(head["test"]) and {"acc", "nll", "ece"} <= set(head["val"])
    assert summary["evaluation"]["test"]["acc"] == summary["heads"]["leader"]["test"]["acc"]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    for row in rows:
        assert row["inference_head"] == "leader" and row["test_acc"] == row["test_acc@leader"]
        assert {"val_nll@peer2", "test_ece@ensemble", "val_acc@leader"} <= set(row)
    # model.safetensors is the leader alone, a plain resnet8 that kdlab eval loads like any run's model.
    plain = models.create("resnet8", 10, in_channels=1).eval()
    plain.load_state_dict(load_tensors(out / "checkpoint" / "model.safetensors"))
    predictions = np.load(out / "predictions" / "test.npz")
    assert main(["eval", str(out), "--out", str(tmp_path / "eval")]) == 0
    evaluated = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert evaluated["test"]["acc"] == pytest.approx(summary["heads"]["leader"]["test"]["acc"])
    assert predictions["logits"].shape == (len(digits.test.labels), 10)


def test_exported_network_equals_its_head_inside_the_wrapper(digits):
    method = build("okddip", digits).eval()
    x, _ = batch(7)
    with torch.no_grad():
        heads = method.head_logits(x)
        for head in ("peer2", "leader"):
            torch.testing.assert_close(method.export_network(head).eval()(x), heads[head])
        torch.testing.assert_close(heads["ensemble"], torch.stack([heads[f"peer{i}"] for i in (1, 2, 3)]).mean(0))
    with pytest.raises(KdlabError, match="cannot be exported"):
        method.export_network("ensemble")


def test_dml_best_peer_is_chosen_on_validation(tmp_path):
    summary, _ = run_recipe(tmp_path, "dml", branches=3)
    accuracies = {h: summary["heads"][h]["val"]["acc"] for h in ("peer1", "peer2", "peer3")}
    best = max(accuracies, key=lambda h: (accuracies[h], -int(h[4:])))
    assert summary["inference_head"] == best
    assert summary["evaluation"]["val"]["acc"] == accuracies[best]


def test_export_writes_any_head_as_a_run_that_eval_and_teachers_load(tmp_path, capsys, okddip_run):
    summary, out = okddip_run
    assert main(["export", str(out), "--head", "peer2", "--out", str(tmp_path / "peer2")]) == 0
    exported = json.loads((tmp_path / "peer2" / "summary.json").read_text())
    assert exported["exported_from"]["head"] == "peer2" and exported["status"] == "completed"
    assert main(["eval", str(tmp_path / "peer2"), "--out", str(tmp_path / "peer2-eval")]) == 0
    evaluated = json.loads((tmp_path / "peer2-eval" / "metrics.json").read_text())
    assert evaluated["test"]["acc"] == pytest.approx(summary["heads"]["peer2"]["test"]["acc"])
    # The exported peer teaches like any run.
    student = load_recipe(raw={"data": {"source": "digits", "val_size": 0.1}, "model": {"name": "resnet8"},
                               "method": {"name": "kd", "teacher": str(tmp_path / "peer2")}, "train": {"epochs": 1},
                               "runtime": {"progress": False}})
    assert train(student, tmp_path / "student", quiet=True)["status"] == "completed"
    capsys.readouterr()
    assert main(["export", str(out), "--head", "ensemble", "--out", str(tmp_path / "e")]) == 2
    assert "cannot be exported" in capsys.readouterr().err and not (tmp_path / "e").exists()
    assert main(["export", str(tmp_path / "student"), "--head", "peer1", "--out", str(tmp_path / "x")]) == 2
    assert "trained a single network" in capsys.readouterr().err


def test_report_shows_every_head_against_the_baseline(tmp_path, okddip_run):
    from kdlab.analysis.report import build_report

    summary, out = okddip_run
    _, ce = run_recipe(tmp_path, "ce")
    record = build_report([ce, out], tmp_path / "report", baseline="ce", plots=False)
    group = next(g for g in record["groups"] if g["method"] == "okddip")
    assert group["metrics"]["acc@leader"]["mean"] == summary["heads"]["leader"]["test"]["acc"]
    assert {"acc@peer1", "nll@ensemble", "ece@leader"} <= set(group["metrics"])
    paired = next(r for r in record["paired"] if r["group"] == group["group"])
    ce_acc = json.loads((ce / "summary.json").read_text())["evaluation"]["test"]["acc"]
    assert paired["acc@peer2"]["mean"] == pytest.approx(summary["heads"]["peer2"]["test"]["acc"] - ce_acc)
    text = (tmp_path / "report" / "report.md").read_text()
    assert "## Heads of online runs" in text and "| leader |" in text and "| ensemble |" in text


def test_one_trains_on_a_last_batch_of_one_sample(digits):
    method = build("one", digits).train()
    x, y = batch(1)
    logits, terms = method(x, y, 0)
    assert logits.shape == (1, 10) and all(torch.isfinite(v) for v in terms.values())
