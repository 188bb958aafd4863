"""Every shipped recipe and pipeline recipe is valid, so none of them rots as the schema grows."""

from pathlib import Path

import pytest

from kdlab.config import load_recipe
from kdlab.experiments.pipeline import plan_pipeline
from kdlab.experiments.study import plan_study

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
STUDIES = Path(__file__).resolve().parents[1] / "studies"


@pytest.mark.parametrize("path", sorted([*RECIPES.glob("*.yaml"), *(RECIPES / "speedrun").glob("*.yaml")]),
                         ids=lambda p: p.name)
def test_recipe_is_valid(path):
    recipe = load_recipe(path)
    assert recipe.train.epochs >= 1


@pytest.mark.parametrize("path", sorted((RECIPES / "pipelines").glob("*.yaml")), ids=lambda p: p.name)
def test_pipeline_recipe_is_valid(path):
    runs = plan_pipeline(path)
    assert runs and len({run.name for run in runs}) == len(runs)


@pytest.mark.parametrize("path", sorted(p for p in STUDIES.glob("*.yaml") if p.name != "claims.yaml"),
                         ids=lambda p: p.name)  # claims.yaml is checked in tests/test_claims.py
def test_study_recipe_is_valid(path):
    runs, seeds, _ = plan_study(path)
    assert runs and len(seeds) >= 3 and len({run.name for run in runs}) == len(runs)


@pytest.mark.parametrize("path", sorted((STUDIES / "pilots").glob("*.yaml")), ids=lambda p: p.name)
def test_pilot_study_is_valid(path):
    """Pilots gate a larger study on one seed (issue 24's CIFAR-10 gate: teacher gap and CE's ECE)."""
    runs, seeds, _ = plan_study(path)
    assert runs and seeds and len({run.name for run in runs}) == len(runs)


@pytest.mark.parametrize("profile", sorted((STUDIES / "profiles").glob("*.yaml")), ids=lambda p: p.stem)
@pytest.mark.parametrize("path", sorted((STUDIES / "claims").glob("*.yaml")), ids=lambda p: p.stem)
def test_claim_study_is_valid_on_every_profile(path, profile):
    runs, seeds, baseline = plan_study(path, profiles=[profile])
    # the schedule check has one group (CE trained longer), compared with the offline study's ce in claims.md
    assert baseline == ("ce" if path.stem != "schedule" else None)
    assert len(seeds) >= 3 and len({run.name for run in runs}) == len(runs)


def test_cifar100_benchmark_pairs_use_the_published_hyper_parameters():
    runs = {run.name: run.raw for run in plan_pipeline(RECIPES / "pipelines" / "cifar100_kd_benchmark.yaml")}
    betas = {"resnet20_dkd": 2.0, "resnet32_dkd": 2.0, "wrn_16_2_dkd": 6.0, "resnet8x4_dkd": 8.0, "vgg8_dkd": 6.0}
    for name, beta in betas.items():
        assert runs[name]["method"]["beta"] == beta
    for name in ("resnet20_kd", "resnet32_kd", "wrn_16_2_kd", "resnet8x4_kd", "vgg8_kd"):
        assert (runs[name]["method"]["alpha"], runs[name]["method"]["tau"]) == (0.9, 4.0)
        assert runs[name]["train"] == {"epochs": 240, "batch_size": 64}
        assert runs[name]["schedule"]["milestones"] == [150, 180, 210] and runs[name]["optim"]["lr"] == 0.05


FEATURE_BETAS = {"fitnet": 100.0, "at": 1000.0, "sp": 3000.0, "vid": 1.0, "pkt": 30000.0, "crd": 0.8, "reviewkd": 1.0}


def test_cifar100_feature_pipeline_runs_every_method_on_the_benchmark_pairs_with_repdistiller_settings():
    """Every pair and method of recipes/pipelines/cifar100_feature_kd.yaml: the RepDistiller weights (gamma 1,
    alpha 0, beta per method), and taps that exist on both networks and give features the method can compare (each
    method built on randomly initialised zoo networks and run on a batch)."""
    import torch

    from kdlab import methods, models
    from kdlab.data import load_dataset
    from kdlab.methods import MethodContext
    from kdlab.teacher import Teacher

    runs = {run.name: run for run in plan_pipeline(RECIPES / "pipelines" / "cifar100_feature_kd.yaml")}
    pairs = {"resnet20": "resnet56", "resnet32": "resnet110", "resnet8x4": "resnet32x4", "wrn_16_2": "wrn_40_2",
             "vgg8": "vgg13"}
    digits = load_dataset("digits")  # only its class count and names matter to building the methods
    for student, teacher in pairs.items():
        for name in ("fitnet", "at", "sp", "vid", "rkd", "pkt", "crd", "reviewkd"):
            run = runs[f"{student}_{name}"]
            method = run.raw["method"]
            assert run.teacher == f"teacher_{teacher}" and run.raw["model"]["name"] == student
            assert run.raw["train"] == {"epochs": 240, "batch_size": 64} and run.raw["optim"]["lr"] == 0.05
            cls = methods.get(name)
            given = {k: v for k, v in method.items() if k != "name"}
            params = cls.Params.model_validate({**given, "teacher": "t", **({"negatives": 32} if name == "crd" else {})})
            assert (params.gamma, params.alpha) == (1.0, 0.0)
            if name in FEATURE_BETAS:
                assert params.beta == FEATURE_BETAS[name]
            else:
                assert (params.distance_weight, params.angle_weight) == (25.0, 50.0)
            torch.manual_seed(0)
            built = cls(models.create(student, 10, in_channels=3), params, MethodContext(
                digits, input_shape=(3, 32, 32), epochs=240,
                load_teacher=lambda *_: Teacher(models.create(teacher, 10, in_channels=3))))
            keys = (torch.arange(4), torch.zeros(4, dtype=torch.int64))
            _, terms = built(torch.randn(4, 3, 32, 32), torch.arange(4), 0, keys)  # shapes that compare, finite
            assert all(torch.isfinite(v) for v in terms.values()), (student, name)
    cross = {"mobilenetv2_half": "vgg13", "shufflenetv1": "resnet32x4", "shufflenetv2": "resnet32x4"}
    for student, teacher in cross.items():
        for name in ("kd", "crd", "pkt", "rkd"):
            run = runs[f"{student}_from_{teacher}_{name}"]
            assert run.raw["optim"]["lr"] == 0.01 and run.teacher == f"teacher_{teacher}"
    assert runs["shufflenetv1_from_wrn_40_2_crd"].teacher == "teacher_wrn_40_2"


def test_cifar100_online_pipeline_uses_okddip_recipe():
    runs = {run.name: run.raw for run in plan_pipeline(RECIPES / "pipelines" / "cifar100_online.yaml")}
    models = {"resnet32": "resnet32", "resnet110": "resnet110_bottleneck", "vgg16": "vgg16", "wrn_20_8": "wrn_20_8"}
    for arch, model in models.items():
        assert {f"{arch}_{m}" for m in ("ce", "dml", "one", "cl_ilr", "okddip")} <= set(runs)
        assert {runs[f"{arch}_{m}"]["model"]["name"] for m in ("ce", "dml", "okddip")} == {model}
        okddip = runs[f"{arch}_okddip"]
        assert okddip["train"] == {"epochs": 300, "batch_size": 128}
        assert okddip["schedule"]["milestones"] == [150, 225]
        assert okddip["optim"]["lr"] == 0.1 and okddip["optim"]["nesterov"] is True
        assert okddip["method"] == {"name": "okddip", "branches": 4}  # tau 3, lambda 1, ramp-up 80: the defaults


def test_claim_studies_run_unchanged_on_cifar100_pickles(tmp_path, monkeypatch):
    """The CIFAR-100 profile with only the data path (and, to keep the test short, the size of the validation
    split, one epoch and one seed) changed: runs of the offline and online claim studies train on the official
    pickle layout with the profile's models, augmentation and schedule."""
    from _cli import cifar100_folder
    from kdlab.config import load_recipe
    from kdlab.train.engine import train

    monkeypatch.setenv("KDLAB_CACHE_DIR", str(tmp_path / "cache"))
    data = cifar100_folder(tmp_path)
    overrides = [f"base.data.path={data}", "base.data.val_size=100", "base.train.epochs=1", "seeds=1"]
    picked = {}
    for study, names in (("offline", ("ce-resnet8-s0", "lsr_os_tc-resnet20-s0")), ("online", ("okddip-resnet20-s0",))):
        runs, _, _ = plan_study(STUDIES / "claims" / f"{study}.yaml", profiles=[STUDIES / "profiles" / "cifar100.yaml"],
                                overrides=overrides)
        picked.update({run.name: run.raw for run in runs if run.name in names})
    assert len(picked) == 3
    for name, raw in picked.items():
        recipe = load_recipe(raw=raw)
        assert (recipe.train.batch_size, recipe.optim.lr, recipe.schedule.milestones) == (64, 0.05, [150, 180, 210])
        summary = train(recipe, tmp_path / name, quiet=True)
        assert summary["status"] == "completed" and summary["dataset"] == "cifar100" and summary["data"]["classes"] == 100
