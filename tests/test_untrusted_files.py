"""Untrusted files never run code: checkpoints are safetensors + JSON, predictions are read without pickle, recipes
with a safe YAML loader, CIFAR pickles with a restricted unpickler (tests/test_data_sources.py, test_bad_inputs.py);
and nothing in kdlab's source calls an unrestricted loader."""

import json
import os
import pickle
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml

from kdlab.cli import main

ROOT = Path(__file__).resolve().parents[1]
RECIPE = {"data": {"source": "digits", "val_size": 0.1}, "model": {"name": "cnn_small8"}, "train": {"epochs": 1},
          "runtime": {"progress": False}}


class Payload:
    """Unpickling this creates ``marker``: proof that a loader ran code."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


pytestmark = pytest.mark.usefixtures("private_cache")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("run")
    recipe = folder / "r.yaml"
    recipe.write_text(yaml.safe_dump(RECIPE))
    assert main(["train", str(recipe), "--out", str(folder / "run"), "--quiet"]) == 0
    return folder / "run"


def copy_run(run: Path, to: Path) -> Path:
    subprocess.run(["cp", "-r", str(run), str(to)], check=True)
    return to


def test_source_never_calls_an_unrestricted_loader():
    forbidden = re.compile(r"torch\.load\(|pickle\.loads?\(|allow_pickle\s*=\s*True|yaml\.(load|unsafe_load|full_load)\(|"
                           r"marshal\.loads?\(|shelve\.open\(|dill\.|joblib\.load\(")
    offenders = []
    for path in (ROOT / "src" / "kdlab").rglob("*.py"):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#")[0]
            if "weights_only=True" in code and "restricted_torch_load" in path.read_text():
                continue  # torch's restricted unpickler, behind a torch >= 2.6 check (models/libraries/adapter.py)
            if forbidden.search(code) and "restricted_pickle" not in path.name:
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not offenders, offenders


def test_a_pickled_model_file_in_a_run_is_refused_without_running_it(run, tmp_path, capsys):
    bad = copy_run(run, tmp_path / "bad")
    marker = tmp_path / "ran"
    (bad / "checkpoint" / "model.safetensors").write_bytes(pickle.dumps(Payload(marker)))
    assert main(["eval", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "model.safetensors" in err[0]
    assert not marker.exists()


def test_a_pickled_checkpoint_state_is_refused_on_resume(run, tmp_path, capsys):
    bad = copy_run(run, tmp_path / "bad")
    summary = json.loads((bad / "summary.json").read_text())
    (bad / "summary.json").write_text(json.dumps({**summary, "status": "running"}))
    marker = tmp_path / "ran"
    for tensors in (bad / "checkpoint").glob("method-*.safetensors"):
        tensors.write_bytes(pickle.dumps(Payload(marker)))
    assert main(["train", "--resume", str(bad), "--quiet"]) == 2
    assert "method-0001.safetensors" in capsys.readouterr().err
    assert not marker.exists()


def test_predictions_with_pickled_objects_are_refused_by_the_report(run, tmp_path, capsys):
    bad = copy_run(run, tmp_path / "bad")
    marker = tmp_path / "ran"
    np.savez(bad / "predictions" / "test.npz", logits=np.array([Payload(marker)], dtype=object),
             labels=np.zeros(1, dtype=np.int64))
    assert main(["report", str(bad), "--out", str(tmp_path / "report"), "--no-plots"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "test.npz" in err[0] and "not a readable predictions file" in err[0]
    assert not marker.exists()


def test_a_recipe_with_python_tags_is_refused_by_the_safe_loader(tmp_path, capsys):
    marker = tmp_path / "ran"
    recipe = tmp_path / "evil.yaml"
    recipe.write_text(f"data: !!python/object/apply:os.system ['touch {marker}']\nmodel: {{name: cnn_small8}}\n"
                      f"train: {{epochs: 1}}\n")
    assert main(["train", str(recipe), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not valid YAML" in err[0]
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_a_pickled_payload_as_library_weights_is_refused_without_running_it(tmp_path):
    """A .pth 'weights' file that would run code when unpickled: torch's restricted unpickler refuses it, and the
    error is one line naming the file."""
    from kdlab.errors import KdlabError
    from kdlab.models.libraries.adapter import read_state_dict

    marker = tmp_path / "ran"
    path = tmp_path / "evil.pth"
    path.write_bytes(pickle.dumps(Payload(marker)))
    import pytest

    with pytest.raises(KdlabError, match="evil.pth is not a readable weights file"):
        read_state_dict(path, "model timm:resnet18")
    assert not marker.exists()
