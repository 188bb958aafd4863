"""The open-world recipes run end to end at a tiny scale: recipes/imagenet_style_folder.yaml (torchvision ResNet-50
teacher from a weights file -> ResNet-18, image_folder streamed, RandomResizedCrop) on an ImageNet-layout copy of
real CIFAR-10 JPEGs, and recipes/pipelines/cifar10_jpeg_timm_stream.yaml (timm teacher, zoo students, live and FKD)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import yaml
from safetensors.torch import save_file

from kdlab.experiments.pipeline import run_pipeline
from tests._cli import CIFAR10_CLASSES, ROOT, kdlab_main, write_recipe

WNIDS = [f"n0{1440764 + i}" for i in range(10)]  # ImageNet-style folder names; classes.txt maps them in order


@pytest.fixture(scope="module")
def imagenet_layout(cifar_subset, tmp_path_factory):
    root = tmp_path_factory.mktemp("imagenet-layout")
    for split, target in (("train", "train"), ("test", "val")):
        for name, wnid in zip(CIFAR10_CLASSES, WNIDS):
            (root / target / wnid).mkdir(parents=True)
            for i, file in enumerate(sorted((cifar_subset / split / name).iterdir())):
                shutil.copy(file, root / target / wnid / f"{wnid}_{i}.JPEG")
    (root / "classes.txt").write_text("\n".join(WNIDS) + "\n")
    return root


@pytest.mark.slow
def test_the_imagenet_style_recipe_runs_on_an_imagenet_layout_folder(imagenet_layout, tmp_path, private_cache):
    import torchvision

    torch.manual_seed(0)
    save_file(torchvision.models.resnet50(num_classes=10).state_dict(), tmp_path / "resnet50.safetensors")
    recipe = yaml.safe_load((ROOT / "recipes" / "imagenet_style_folder.yaml").read_text())
    recipe["data"].update(path=str(imagenet_layout), options={"size": 40}, val_size=20, stream_workers=2)
    recipe["data"]["random_resized_crop"]["size"] = 32
    recipe["method"]["teacher"].update(weights=str(tmp_path / "resnet50.safetensors"),
                                       classes=str(imagenet_layout / "classes.txt"))
    recipe["train"].update(epochs=1, batch_size=64, eval_batch_size=100)
    recipe["runtime"] = {"progress": False}
    out = tmp_path / "run"
    result = kdlab_main("train", write_recipe(tmp_path, recipe), "--out", out)
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["data"]["residency"] == "stream"
    assert summary["data"]["class_names"] == WNIDS and summary["data"]["test"] == 60  # val/ is the test split
    assert summary["data"]["augment"]["eval_view"] == {"kind": "centre_crop", "size": 32, "fraction": 0.8}
    assert summary["teachers"]["teacher"]["model"] == "torchvision:resnet50"
    assert kdlab_main("eval", out).returncode == 0


@pytest.mark.slow
def test_the_timm_stream_pipeline_runs_and_fkd_equals_live_kd_on_its_views(cifar_subset, tmp_path, private_cache):
    raw = yaml.safe_load((ROOT / "recipes" / "pipelines" / "cifar10_jpeg_timm_stream.yaml").read_text())
    raw["base"]["data"].update(path=str(cifar_subset), val_size=20, options={"size": 40}, stream_workers=0)
    raw["base"]["data"]["random_resized_crop"]["size"] = 32
    raw["stages"]["fkd"]["data"]["random_resized_crop"]["size"] = 32
    raw["base"]["train"] = {"epochs": 1, "batch_size": 64}
    raw["base"]["runtime"] = {"progress": False, "threads": 1}
    raw["stages"]["fkd_live"] = {**raw["stages"]["fkd"], "runtime": {"teacher_cache": "off", "teacher_batch": 64}}
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))  # stages keep their order
    run_pipeline(path, tmp_path / "runs", quiet=True)
    summaries = {name: json.loads((tmp_path / "runs" / name / "summary.json").read_text())
                 for name in ("teacher", "ce", "kd", "fkd", "fkd_live")}
    assert all(s["status"] == "completed" and s["data"]["residency"] == "stream" for s in summaries.values())
    assert summaries["teacher"]["model"] == "timm:resnet18"
    assert summaries["fkd"]["teacher_cache"]["mode"] == "stored" and summaries["fkd"]["teacher_cache"]["exact"]
    assert summaries["fkd"]["final"] == summaries["fkd_live"]["final"]
