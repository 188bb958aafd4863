"""The Python API (kdlab.train, kdlab.load_run, kdlab.batches, kdlab.evaluate, kdlab.losses): the example of
docs/python_api.md runs as written, and the functions behave as the command does."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import kdlab
from kdlab.errors import KdlabError

ROOT = Path(__file__).resolve().parents[1]
RECIPE = {"data": {"source": "digits", "val_size": 0.1}, "model": {"name": "cnn_small8"}, "method": {"name": "ce"},
          "train": {"epochs": 1, "batch_size": 64}, "runtime": {"progress": False, "threads": 1}}


def test_the_documented_example_runs(tmp_path, monkeypatch):
    code = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "python_api.md").read_text(), re.S)
    assert len(code) == 1
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code[0], "docs/python_api.md", "exec"), namespace)  # noqa: S102 - the repository's own doc
    assert json.loads((tmp_path / "runs/api-teacher/summary.json").read_text())["status"] == "completed"
    assert namespace["hits"] / namespace["seen"] > 0.5  # the hand-made loop did learn


def test_import_kdlab_is_light():
    """``import kdlab`` loads neither torch nor the engine; they come with the first name used."""
    out = subprocess.run([sys.executable, "-c", "import sys, kdlab; print('torch' in sys.modules); kdlab.losses; "
                          "print('torch' in sys.modules, callable(kdlab.train))"], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["False", "True", "True"]


def test_train_takes_a_path_a_dict_or_a_recipe_and_equals_the_command(tmp_path):
    from kdlab.cli import main

    path = tmp_path / "r.yaml"
    path.write_text(json.dumps(RECIPE))  # JSON is YAML
    by_dict = kdlab.train(RECIPE, out=tmp_path / "a")
    by_path = kdlab.train(path, out=tmp_path / "b")
    by_recipe = kdlab.train(kdlab.load_recipe(raw=RECIPE), out=tmp_path / "c")
    assert main(["train", str(path), "--out", str(tmp_path / "d"), "--quiet"]) == 0
    by_command = json.loads((tmp_path / "d/summary.json").read_text())
    assert by_dict["final"] == by_path["final"] == by_recipe["final"] == by_command["final"]
    again = kdlab.train(RECIPE, out=tmp_path / "a", resume=True)  # completed: returned as it is
    assert again["final"] == by_dict["final"]
    overridden = kdlab.train(RECIPE, out=tmp_path / "e", overrides=["train.epochs=2"])
    assert overridden["epochs_completed"] == 2


def test_load_run_batches_and_evaluate_agree_with_the_run(tmp_path):
    summary = kdlab.train(RECIPE, out=tmp_path / "run")
    run = kdlab.load_run(tmp_path / "run")
    import torch

    with torch.inference_mode(), run.runtime.autocast():  # in the run's precision, as its evaluation computed
        pairs = [(run.model(x).argmax(1) == y).sum().item() for x, y in kdlab.batches(run, "test")]
    n = sum(len(y) for _, y in kdlab.batches(run, "test"))
    assert sum(pairs) / n == pytest.approx(summary["final"]["test_acc"], abs=1e-9)
    record = kdlab.evaluate(tmp_path / "run")
    assert record["test"]["acc"] == pytest.approx(summary["final"]["test_acc"], abs=1e-9)


def test_bad_input_raises_the_commands_one_line_error(tmp_path):
    with pytest.raises(KdlabError, match="unknown key 'train.epoch'"):
        kdlab.train({**RECIPE, "train": {"epochs": 1, "epoch": 1}}, out=tmp_path / "x")
    with pytest.raises(KdlabError, match="not a kdlab run directory"):
        kdlab.load_run(tmp_path)
    with pytest.raises(KdlabError, match="needs out="):
        kdlab.train(RECIPE, resume=True)
    with pytest.raises(KdlabError, match="not int"):
        kdlab.train(3, out=tmp_path / "y")
    assert not (tmp_path / "x").exists()
