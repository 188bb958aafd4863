"""Every registered method trains end to end on digits; teachers are checked against the student's data."""

import json

import numpy as np
import pytest
import yaml
from PIL import Image
from safetensors.torch import load_file

from kdlab import methods
from kdlab.cli import main

from conftest import DIGITS_RECIPE as DIGITS


pytestmark = pytest.mark.usefixtures("private_cache")


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    root = tmp_path_factory.mktemp("teacher")
    recipe = root / "teacher.yaml"
    recipe.write_text(yaml.safe_dump({**DIGITS, "model": {"name": "resnet8"}, "train": {"epochs": 3, "batch_size": 64}}))
    assert main(["train", str(recipe), "--out", str(root / "run"), "--quiet"]) == 0
    return root / "run"


def train(tmp_path, method: dict, **sections) -> dict:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({**DIGITS, "method": method, **sections}))
    assert main(["train", str(recipe), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    return json.loads((tmp_path / "run" / "summary.json").read_text())


TEACHER_FREE = [
    ({"name": "lsr_os", "eps": 0.1, "tau": 4.0}, ["ce", "os"]),
    ({"name": "lsr_os_tc", "eps": 0.1, "tau": 4.0, "beta": 0.3}, ["ce", "os"]),
    ({"name": "tfkd_reg"}, ["ce", "kd"]),
    ({"name": "tfkd_reg", "mode": "reference", "multiplier": 10.0, "alpha": 0.1, "tau": 40.0}, ["ce", "kd"]),
    ({"name": "mbls"}, ["ce", "margin"]),
    ({"name": "zipf_ls", "lam": 0.1}, ["ce", "zipf"]),
]


@pytest.mark.parametrize("method, terms", TEACHER_FREE, ids=[str(m) for m, _ in TEACHER_FREE])
def test_teacher_free_methods_train(tmp_path, method, terms):
    summary = train(tmp_path, method)
    assert summary["status"] == "completed" and summary["final"]["test_acc"] > 0.5
    line = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert [k for k in line if k.startswith("train_") and k not in ("train_loss", "train_acc")
            and not k.startswith("train_images")] == [f"train_{t}" for t in terms]
    assert line["train_loss"] == pytest.approx(sum(line[f"train_{t}"] for t in terms), rel=1e-12)


@pytest.mark.parametrize(
    "method, terms",
    [
        ({"name": "kd"}, ["ce", "kd"]),
        ({"name": "kd", "divergence": "mse", "alpha": 1.0}, ["ce", "kd"]),
        ({"name": "kd", "divergence": "reverse_kl", "tau": 2.0}, ["ce", "kd"]),
        ({"name": "dkd", "beta": 2.0, "warmup": 2}, ["ce", "tckd", "nckd"]),
    ],
)
def test_distillation_methods_train_and_leave_the_teacher_out_of_checkpoints(tmp_path, teacher, method, terms):
    summary = train(tmp_path, {**method, "teacher": str(teacher)})
    assert summary["status"] == "completed" and summary["final"]["test_acc"] > 0.5
    assert summary["method_params"]["teacher"] == str(teacher)
    line = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert all(f"train_{t}" in line for t in terms)
    state = json.loads((tmp_path / "run" / "checkpoint" / "state.json").read_text())
    saved = load_file(tmp_path / "run" / "checkpoint" / state["method_file"])
    assert saved and not any(key.startswith("teacher.") for key in saved)


def test_killed_distillation_run_resumes(tmp_path, teacher):
    method = {"name": "kd", "teacher": str(teacher)}
    summary = train(tmp_path, method)
    assert main(["train", "--resume", str(tmp_path / "run"), "--quiet"]) == 0
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["final"] == summary["final"]


def _recipe(tmp_path, method, **sections):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({**DIGITS, "method": method, **sections}))
    return recipe


def test_tfkd_self_needs_the_students_architecture(tmp_path, teacher, capsys):
    recipe = _recipe(tmp_path, {"name": "tfkd_self", "teacher": str(teacher)})  # cnn_small8 student, resnet8 teacher
    assert main(["train", str(recipe), "--out", str(tmp_path / "run"), "--quiet"]) == 2
    assert "own architecture" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
    (tmp_path / "same").mkdir()
    summary = train(tmp_path / "same", {"name": "tfkd_self", "teacher": str(teacher)}, model={"name": "resnet8"})
    assert summary["status"] == "completed"


def image_folder(root, classes, channels_mode="RGB"):
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for name in classes:
            (root / split / name).mkdir(parents=True)
            for i in range(3):
                Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).convert(channels_mode).save(
                    root / split / name / f"{i}.png")


@pytest.mark.parametrize(
    "classes, message",
    [(["a", "b"], "has 2 classes"), ([str(i) for i in range(10)], "(HxWxC) inputs")],
)
def test_teacher_of_another_task_is_refused(tmp_path, capsys, classes, message):
    image_folder(tmp_path / "imgs", classes)
    teacher_recipe = _recipe(tmp_path, {"name": "ce"}, data={"source": "folder", "path": str(tmp_path / "imgs")},
                             train={"epochs": 1, "batch_size": 8})
    assert main(["train", str(teacher_recipe), "--out", str(tmp_path / "teacher"), "--quiet"]) == 0
    student = _recipe(tmp_path, {"name": "kd", "teacher": str(tmp_path / "teacher")})
    assert main(["train", str(student), "--out", str(tmp_path / "run"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not (tmp_path / "run").exists()


def test_missing_or_unfinished_teacher_is_refused(tmp_path, teacher, capsys):
    missing = _recipe(tmp_path, {"name": "kd", "teacher": str(tmp_path / "nowhere")})
    assert main(["train", str(missing), "--out", str(tmp_path / "run"), "--quiet"]) == 2
    assert "teacher run directory not found" in capsys.readouterr().err
    summary = json.loads((teacher / "summary.json").read_text())
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "config.yaml").write_text((teacher / "config.yaml").read_text())
    (unfinished / "summary.json").write_text(json.dumps({**summary, "status": "running"}))
    assert main(["train", str(_recipe(tmp_path, {"name": "kd", "teacher": str(unfinished)})), "--out",
                 str(tmp_path / "run"), "--quiet"]) == 2
    assert "has not completed" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_every_registered_method_is_covered():
    online = {"dml", "one", "cl_ilr", "okddip", "bdkd"}  # trained end to end in tests/test_methods_online.py
    features = {"fitnet", "at", "sp", "pkt", "rkd", "vid", "crd", "reviewkd"}  # their own test files
    schemes = {"multi_kd", "mixup_kd", "mean_teacher",  # trained end to end in tests/test_training_schemes.py
               "kd_annealed", "ctkd", "cals", "ard"}  # test_schedules_and_cals.py, test_robust_distillation.py
    covered = ({m["name"] for m, _ in TEACHER_FREE} | {"kd", "dkd", "tfkd_self", "ce", "ls"} | online
               | features | schemes)
    assert set(methods.names()) <= covered


def test_zipf_method_computes_its_loss_from_one_forward_pass():
    import torch

    from kdlab import losses, models
    from kdlab.data import load_dataset
    from kdlab.methods import MethodContext

    dataset = load_dataset("digits")
    torch.manual_seed(0)
    model = models.create("cnn_small8", 10, in_channels=1).eval()
    method = methods.get("zipf_ls")(model, methods.get("zipf_ls").Params(), MethodContext(dataset))
    x = torch.randn(6, 1, 8, 8)
    y = torch.arange(6)
    logits, terms = method(x, y, 0)
    assert torch.allclose(logits, model(x), atol=1e-5)
    dense = model.dense_logits(model.feature_map(x))
    assert dense.shape == (6, 10, 4, 4)
    expected = losses.zipf_ls(model(x), y, losses.zipf_ranks(dense), 0.1, 1.0)
    assert torch.allclose(terms["ce"] + terms["zipf"], expected, atol=1e-5)
