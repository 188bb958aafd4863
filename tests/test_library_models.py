"""Models and teachers from timm, torchvision and transformers (kdlab.models.libraries, kdlab.teacher.library).

Every network here is tiny and randomly initialised, built offline from its library's config (timm's ``test_*``
models, torchvision's resnet18 / mobilenet_v3_small, a 2-layer transformers ViT written with ``save_pretrained``);
the end-to-end runs train on real CIFAR-10 JPEG images copied from ``../shared/data``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from safetensors.torch import save_file

from kdlab import models
from kdlab.errors import KdlabError
from kdlab.models.libraries import LibraryClassifier
from tests._cli import CIFAR10_CLASSES, assert_user_error, kdlab_main, write_recipe

timm = pytest.importorskip("timm")
torchvision = pytest.importorskip("torchvision")
transformers = pytest.importorskip("transformers")



def tiny_vit_folder(folder: Path, labels: list[str], image_size: int = 32) -> Path:
    """A transformers ViT image classifier saved with ``save_pretrained`` (config, weights, image processor)."""
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    config = ViTConfig(image_size=image_size, patch_size=8, hidden_size=32, num_hidden_layers=2,
                       num_attention_heads=2, intermediate_size=64, num_labels=len(labels),
                       id2label=dict(enumerate(labels)), label2id={n: i for i, n in enumerate(labels)})
    torch.manual_seed(0)
    ViTForImageClassification(config).save_pretrained(folder)
    ViTImageProcessor(size={"height": image_size, "width": image_size}, image_mean=[0.5, 0.4, 0.3],
                      image_std=[0.25, 0.25, 0.25], resample=3).save_pretrained(folder)
    return folder


# ------------------------------------------------------------------------------------------------ the contract

@pytest.mark.parametrize("name, options", [("timm:test_resnet", {}), ("timm:test_vit", {"img_size": 32}),
                                           ("timm:test_convnext", {}), ("torchvision:resnet18", {}),
                                           ("torchvision:mobilenet_v3_small", {})])
def test_library_models_follow_the_zoo_contract(name, options):
    torch.manual_seed(0)
    model = models.create(name, num_classes=7, in_channels=3, options=options).eval()
    assert isinstance(model, LibraryClassifier)
    x = torch.randn(3, 3, 32, 32)
    logits, features = model(x, return_features=True)
    assert logits.shape == (3, 7) and features.shape == (3, model.feature_dim)
    assert isinstance(model.classifier, torch.nn.Linear) and model.classifier.out_features == 7
    torch.testing.assert_close(model.classifier(features), logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(model(x), logits, rtol=0, atol=0)


def test_each_library_gives_its_own_preprocessing():
    timm_model = models.create("timm:test_vit", 10, options={"img_size": 48})
    resolved = timm.data.resolve_data_config({}, model=timm_model.network)
    assert timm_model.preprocessing.input_size == (48, 48)
    assert timm_model.preprocessing.mean == tuple(resolved["mean"])
    assert timm_model.preprocessing.interpolation == resolved["interpolation"]
    tv = models.create("torchvision:resnet18", 10).preprocessing
    reference = torchvision.models.ResNet18_Weights.DEFAULT.transforms()
    assert tv.input_size == (224, 224) and list(tv.mean) == reference.mean and list(tv.std) == reference.std
    assert tv.crop_pct == pytest.approx(224 / 256)


def test_hf_model_from_a_folder_with_weights_and_a_fresh_head(tmp_path):
    folder = tiny_vit_folder(tmp_path / "vit", ["a", "b", "c"])
    from transformers import ViTForImageClassification

    reference = ViTForImageClassification.from_pretrained(folder).eval()
    model = models.create(f"hf:{folder}", 3, pretrained=str(folder)).eval()
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(model(x), reference(pixel_values=x).logits, rtol=0, atol=0)
    assert model.preprocessing.mean == (0.5, 0.4, 0.3) and model.preprocessing.interpolation == "bicubic"
    five = models.create(f"hf:{folder}", 5, pretrained=str(folder))
    assert five.classifier.out_features == 5
    trunk = {k: v for k, v in five.network.state_dict().items() if not k.startswith("classifier")}
    for key, value in trunk.items():
        assert torch.equal(value, model.network.state_dict()[key]), key


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_pretrained_weights_round_trip_and_head_replacement(tmp_path, suffix):
    torch.manual_seed(1)
    source = timm.create_model("test_resnet", num_classes=10)
    path = tmp_path / f"weights{suffix}"
    if suffix == ".safetensors":
        save_file(source.state_dict(), path)
    else:
        torch.save({"state_dict": source.state_dict()}, path)  # the usual training-script wrapper
    model = models.create("timm:test_resnet", 10, pretrained=str(path)).eval()
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(model(x), source.eval()(x), rtol=0, atol=0)
    fine_tune = models.create("timm:test_resnet", 4, pretrained=str(path))
    assert fine_tune.classifier.out_features == 4
    assert torch.equal(fine_tune.network.stem[0].weight if hasattr(fine_tune.network, "stem") else
                       next(fine_tune.network.parameters()), next(source.parameters()))


def test_bad_weights_and_names_are_one_line_errors(tmp_path):
    other = timm.create_model("test_convnext", num_classes=10)
    save_file(other.state_dict(), tmp_path / "convnext.safetensors")
    with pytest.raises(KdlabError, match="do not fit this architecture"):
        models.create("timm:test_resnet", 10, pretrained=str(tmp_path / "convnext.safetensors"))
    wide = timm.create_model("test_resnet", num_classes=10)
    state = {k: (torch.zeros(v.shape[0] + 1, *v.shape[1:]) if k == "conv1.0.weight" or k.endswith("stem.0.weight")
                 else v) for k, v in wide.state_dict().items()}
    first = next(iter(wide.state_dict()))
    state[first] = torch.zeros(wide.state_dict()[first].shape[0] + 1, *wide.state_dict()[first].shape[1:])
    save_file(state, tmp_path / "misshapen.safetensors")
    with pytest.raises(KdlabError, match=rf"{first} is \[\d+, .*\] in the file"):
        models.create("timm:test_resnet", 10, pretrained=str(tmp_path / "misshapen.safetensors"))
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(KdlabError, match="not a readable weights file"):
        models.create("timm:test_resnet", 10, pretrained=str(tmp_path / "junk.pth"))
    with pytest.raises(KdlabError, match="weights file not found"):
        models.create("timm:test_resnet", 10, pretrained=str(tmp_path / "missing.safetensors"))
    with pytest.raises(KdlabError, match="timm has no model 'resnet_nonexistent'"):
        models.check_name("timm:resnet_nonexistent")
    with pytest.raises(KdlabError, match="torchvision has no classification model 'resnet19'"):
        models.check_name("torchvision:resnet19")
    with pytest.raises(KdlabError, match="not a local folder with a config.json"):
        models.check_name(f"hf:{tmp_path / 'nowhere'}")
    with pytest.raises(KdlabError, match="takes 3-channel"):
        models.create("torchvision:resnet18", 10, in_channels=1)


def test_a_missing_library_says_which_extra_to_install(monkeypatch):
    import sys

    for library in ("timm", "transformers"):
        monkeypatch.setitem(sys.modules, library, None)  # what an uninstalled package looks like to import
    with pytest.raises(KdlabError, match=r"needs timm, which is not installed .*pip install 'kdlab\[timm\]'"):
        models.check_name("timm:resnet18")
    with pytest.raises(KdlabError, match=r"needs transformers, .*pip install 'kdlab\[hf\]'"):
        models.create("hf:/some/folder", 10)


# ------------------------------------------------------------------------------------- teachers from libraries

def _dataset(cifar_subset):
    from kdlab.data import load_dataset

    return load_dataset("folder", cifar_subset)


def test_library_teacher_sees_its_own_preprocessing_and_class_order(cifar_subset, tmp_path, private_cache):
    """The Teacher's logits equal an independent computation: the timm network itself on the student's crop,
    resized to the teacher's size (antialiased bicubic) and normalised with the teacher's statistics, its outputs
    permuted to the student's class order."""
    from kdlab.teacher.library import load_library_network
    from kdlab.teacher.module import Teacher
    from kdlab.teacher.spec import LibraryTeacherSpec

    torch.manual_seed(2)
    network = timm.create_model("test_resnet", num_classes=10).eval()
    save_file(network.state_dict(), tmp_path / "teacher.safetensors")
    shuffled = CIFAR10_CLASSES[::-1]
    (tmp_path / "classes.txt").write_text("\n".join(shuffled) + "\n")
    spec = LibraryTeacherSpec(model="timm:test_resnet", weights=str(tmp_path / "teacher.safetensors"),
                              classes=str(tmp_path / "classes.txt"), input_size=48, interpolation="bicubic")
    dataset = _dataset(cifar_subset)
    loaded, view, names = load_library_network(spec, dataset)
    assert names == shuffled and view.size == (48, 48) and view.mean == [0.5, 0.5, 0.5]
    assert view.class_index == [shuffled.index(c) for c in CIFAR10_CLASSES]
    s_mean, s_std = [0.49, 0.48, 0.45], [0.25, 0.24, 0.26]
    teacher = Teacher(loaded, renormalise=(s_mean, s_std, view.mean, view.std), resize=view.size,
                      interpolation=view.interpolation, class_index=view.class_index)
    images = torch.from_numpy(dataset.train.images[:6]).permute(0, 3, 1, 2).float() / 255
    student_inputs = (images - torch.tensor(s_mean).view(1, 3, 1, 1)) / torch.tensor(s_std).view(1, 3, 1, 1)
    resized = F.interpolate(images.double(), size=(48, 48), mode="bicubic", antialias=True, align_corners=False)
    teacher_inputs = ((resized - 0.5) / 0.5).float()
    with torch.no_grad():
        expected = network(teacher_inputs)[:, view.class_index]
    torch.testing.assert_close(teacher(student_inputs), expected, rtol=1e-4, atol=1e-4)


def test_class_lists_that_do_not_match_are_refused(cifar_subset, tmp_path, private_cache):
    from kdlab.teacher.library import load_library_network
    from kdlab.teacher.spec import LibraryTeacherSpec

    dataset = _dataset(cifar_subset)
    save_file(timm.create_model("test_resnet", num_classes=11).state_dict(), tmp_path / "t11.safetensors")
    save_file(timm.create_model("test_resnet", num_classes=10).state_dict(), tmp_path / "t10.safetensors")
    weights11, weights10 = str(tmp_path / "t11.safetensors"), str(tmp_path / "t10.safetensors")
    without_cat = [c if c != "cat" else "lynx" for c in CIFAR10_CLASSES]
    with pytest.raises(KdlabError, match="the teacher has no class 'cat' of the student's 10"):
        load_library_network(LibraryTeacherSpec(model="timm:test_resnet", weights=weights10, classes=without_cat),
                             dataset)
    with pytest.raises(KdlabError, match="1 class.*the student does not \\(tiger\\); set extra_classes: drop"):
        load_library_network(LibraryTeacherSpec(model="timm:test_resnet", weights=weights11,
                                                classes=CIFAR10_CLASSES + ["tiger"]), dataset)
    _, view, _ = load_library_network(LibraryTeacherSpec(model="timm:test_resnet", weights=weights11,
                                                         classes=["tiger"] + CIFAR10_CLASSES,
                                                         extra_classes="drop"), dataset)
    assert view.class_index == list(range(1, 11))
    with pytest.raises(KdlabError, match="have a 11-class head, but the teacher's classes list 10 names"):
        load_library_network(LibraryTeacherSpec(model="timm:test_resnet", weights=weights11,
                                                classes=CIFAR10_CLASSES), dataset)
    with pytest.raises(KdlabError, match="give the teacher's class names"):
        load_library_network(LibraryTeacherSpec(model="timm:test_resnet", weights=weights10), dataset)


# ------------------------------------------------------------------------------------------------ end to end

def _kd_recipe(cifar_subset, student: dict, teacher: dict) -> dict:
    return {
        "seed": 3,
        "data": {"source": "folder", "path": str(cifar_subset), "val_size": 40, "crop_padding": 2, "flip": True},
        "model": student,
        "method": {"name": "kd", "alpha": 0.7, "tau": 2.0, "teacher": teacher},
        "train": {"epochs": 2, "batch_size": 32, "eval_batch_size": 100},
        "optim": {"lr": 0.02},
        "runtime": {"progress": False, "precision": "fp32"},
    }


def _run_end_to_end(tmp_path, recipe: dict, name: str) -> dict:
    out = tmp_path / "runs" / name
    result = kdlab_main("train", write_recipe(tmp_path, recipe, f"{name}.yaml"), "--out", out)
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "completed" and 0 <= summary["evaluation"]["test"]["acc"] <= 1
    assert "fidelity" in json.dumps(summary["evaluation"])
    evaluated = kdlab_main("eval", out)
    assert evaluated.returncode == 0, evaluated.stderr
    record = json.loads((out / "eval-final" / "metrics.json").read_text())
    assert record["test"]["acc"] == pytest.approx(summary["evaluation"]["test"]["acc"], abs=1e-9)
    report = kdlab_main("report", tmp_path / "runs")
    assert report.returncode == 0, report.stderr
    assert "kd" in (tmp_path / "runs" / "report" / "report.md").read_text()
    return summary


@pytest.mark.slow
def test_kd_from_a_timm_teacher_into_a_torchvision_student(cifar_subset, tmp_path, private_cache):
    torch.manual_seed(4)
    network = timm.create_model("test_resnet", num_classes=10)
    save_file(network.state_dict(), tmp_path / "timm_teacher.safetensors")  # timm's own format
    recipe = _kd_recipe(cifar_subset, {"name": "torchvision:mobilenet_v3_small"},
                        {"model": "timm:test_resnet", "weights": str(tmp_path / "timm_teacher.safetensors"),
                         "classes": CIFAR10_CLASSES, "input_size": 48})
    summary = _run_end_to_end(tmp_path, recipe, "timm-to-torchvision")
    view = summary["teachers"]["teacher"]
    assert view["model"] == "timm:test_resnet" and view["input_size"] == [48, 48]
    assert view["interpolation"] == "bilinear" and view["mean"] == [0.5, 0.5, 0.5] and view["class_index"] is None
    config = yaml.safe_load((tmp_path / "runs" / "timm-to-torchvision" / "config.yaml").read_text())
    assert config["method"]["teacher"]["weights"] == str(tmp_path / "timm_teacher.safetensors")


@pytest.mark.slow
def test_kd_from_a_transformers_teacher_into_a_zoo_student(cifar_subset, tmp_path, private_cache):
    labels = CIFAR10_CLASSES[1:] + CIFAR10_CLASSES[:1]  # the teacher's head in another order: mapped by name
    folder = tiny_vit_folder(tmp_path / "vit-teacher", labels)
    recipe = _kd_recipe(cifar_subset, {"name": "cnn_small8"}, {"model": f"hf:{folder}", "weights": str(folder)})
    summary = _run_end_to_end(tmp_path, recipe, "hf-to-zoo")
    view = summary["teachers"]["teacher"]
    assert view["class_index"] == [labels.index(c) for c in CIFAR10_CLASSES]
    assert view["input_size"] is None and view["interpolation"] == "bicubic" and view["mean"] == [0.5, 0.4, 0.3]


@pytest.mark.slow
def test_a_timm_student_trains_and_its_run_is_the_next_teacher(cifar_subset, tmp_path, private_cache):
    """A library student's run directory is an ordinary kdlab teacher, and its model.safetensors loads as the
    library's own weights."""
    recipe = _kd_recipe(cifar_subset, {"name": "timm:test_vit", "options": {"img_size": 32}}, {})
    recipe["method"] = {"name": "ls", "eps": 0.1}
    out = tmp_path / "runs" / "vit"
    assert kdlab_main("train", write_recipe(tmp_path, recipe), "--out", out).returncode == 0
    student = _kd_recipe(cifar_subset, {"name": "cnn_small8"}, str(out))
    assert kdlab_main("train", write_recipe(tmp_path, student, "s.yaml"), "--out", tmp_path / "s").returncode == 0
    again = models.create("timm:test_vit", 10, pretrained=str(out / "checkpoint" / "model.safetensors"),
                          options={"img_size": 32})
    from kdlab.analysis.runs import load_run

    loaded = load_run(out)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(again.eval()(x), loaded.model.cpu()(x), rtol=0, atol=0)


@pytest.mark.parametrize("case", ["unknown timm name", "weights of the wrong shape", "class lists that differ",
                                  "missing weights file", "student class count"])
def test_bad_library_inputs_are_one_line_and_write_nothing(cifar_subset, tmp_path, private_cache, case):
    save_file(timm.create_model("test_resnet", num_classes=10).state_dict(), tmp_path / "t.safetensors")
    save_file(timm.create_model("test_convnext", num_classes=10).state_dict(), tmp_path / "c.safetensors")
    teacher = {"model": "timm:test_resnet", "weights": str(tmp_path / "t.safetensors"), "classes": CIFAR10_CLASSES}
    student = {"name": "cnn_small8"}
    expected = {
        "unknown timm name": "timm has no model 'resnet_nonexistent'",
        "weights of the wrong shape": "do not fit this architecture",
        "class lists that differ": "the teacher has no class 'truck'",
        "missing weights file": "weights file not found",
        "student class count": "model.num_classes is 5",
    }[case]
    if case == "unknown timm name":
        student = {"name": "timm:resnet_nonexistent"}
    elif case == "weights of the wrong shape":
        teacher["weights"] = str(tmp_path / "c.safetensors")
    elif case == "class lists that differ":
        teacher["classes"] = CIFAR10_CLASSES[:9] + ["lorry"]
    elif case == "missing weights file":
        teacher["weights"] = str(tmp_path / "gone.safetensors")
    else:
        student = {"name": "cnn_small8", "num_classes": 5}
    out = tmp_path / "runs" / "bad"
    result = kdlab_main("train", write_recipe(tmp_path, _kd_recipe(cifar_subset, student, teacher)), "--out", out)
    assert_user_error(result, expected)
    assert not out.exists()


def test_feature_taps_on_a_hugging_face_model(tmp_path):
    """Module paths inside a transformers network (its encoder layers return tuples: the hidden states are tapped)
    and ``penultimate`` (the pooled features the classifier reads) on an ``hf:`` model."""
    from kdlab.models.taps import FeatureTaps

    folder = tiny_vit_folder(tmp_path / "vit", ["a", "b", "c"])
    model = models.create(f"hf:{folder}", 3, pretrained=str(folder)).eval()
    import re

    # the transformer blocks' paths differ between transformers versions (vit.encoder.layer.N, vit.layers.N)
    blocks = [n for n, _ in model.network.named_modules() if re.fullmatch(r"vit\.(encoder\.layer|layers)\.\d+", n)]
    assert len(blocks) == 2
    taps = FeatureTaps(model, [blocks[0], f"network.{blocks[1]}", "penultimate"])
    x = torch.randn(2, 3, 32, 32)
    logits, penultimate = model(x, return_features=True)
    first, second, pooled = taps.take()
    assert first.shape == second.shape == (2, 17, 32)  # 16 patches of 8 x 8 and the class token, width 32
    torch.testing.assert_close(pooled, penultimate)
    torch.testing.assert_close(model.classifier(pooled), logits)
    assert not torch.equal(first, second)
