"""Every shipped recipe and pipeline recipe is valid, so none of them rots as the schema grows."""

from pathlib import Path

import pytest

from kdlab.config import load_recipe
from kdlab.experiments.pipeline import plan_pipeline
from kdlab.experiments.study import plan_study

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
STUDIES = Path(__file__).resolve().parents[1] / "studies"


@pytest.mark.parametrize("path", sorted(RECIPES.glob("*.yaml")), ids=lambda p: p.name)
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
