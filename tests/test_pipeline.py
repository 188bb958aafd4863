"""Pipelines: stages in order, teachers by reference, generations, sweeps, reuse of finished stages."""

import json

import pytest
import yaml

from kdlab.cli import main
from kdlab.errors import KdlabError
from kdlab.experiments.pipeline import expand_stages, run_pipeline

BASE = {
    "data": {"source": "digits", "val_size": 0.1},
    "model": {"name": "cnn_small8"},
    "train": {"epochs": 2, "batch_size": 64},
    "optim": {"lr": 0.05},
    "schedule": {"name": "cosine"},
    "runtime": {"progress": False},
}
PIPELINE = {
    "base": BASE,
    "stages": {
        "teacher": {"model": {"name": "resnet8"}},
        "student": {"method": {"name": "kd", "teacher": "@teacher"}},
        "born_again": {"method": {"name": "kd", "alpha": 1.0, "teacher": "@teacher"}, "generations": 2,
                       "train": {"epochs": 1}},
    },
}


pytestmark = pytest.mark.usefixtures("private_cache")


def write(tmp_path, pipeline) -> str:
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(pipeline, sort_keys=False))
    return str(path)


def test_pipeline_runs_in_order_and_a_second_run_trains_nothing(tmp_path, capsys):
    out = tmp_path / "out"
    first = run_pipeline(write(tmp_path, PIPELINE), out, quiet=True)
    assert [s["run"] for s in first["stages"]] == ["teacher", "student", "born_again-g1", "born_again-g2"]
    assert [s["teacher"] for s in first["stages"]] == [None, "teacher", "teacher", "born_again-g1"]
    assert all(s["status"] == "trained" for s in first["stages"])
    assert json.loads((out / "student" / "summary.json").read_text())["method_params"]["teacher"] == str(out / "teacher")
    assert set(first["best_generation"]) == {"born_again"}
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("*/summary.json")}

    assert main(["pipeline", write(tmp_path, PIPELINE), "--out", str(out), "--quiet"]) == 0
    assert "4 stages, 0 trained, 4 reused" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/summary.json")} == stamps
    record = json.loads((out / "pipeline.json").read_text())
    assert all(s["status"] == "reused" for s in record["stages"])


def test_a_changed_stage_retrains_it_and_what_depends_on_it(tmp_path):
    out = tmp_path / "out"
    pipeline = {"base": BASE, "stages": {"teacher": {"model": {"name": "resnet8"}},
                                          "student": {"method": {"name": "kd", "teacher": "@teacher"}}}}
    run_pipeline(write(tmp_path, pipeline), out, quiet=True)
    old_teacher = json.loads((out / "teacher" / "summary.json").read_text())
    pipeline["stages"]["teacher"]["optim"] = {"lr": 0.04}
    statuses = [s["status"] for s in run_pipeline(write(tmp_path, pipeline), out, quiet=True)["stages"]]
    assert statuses == ["trained", "trained"]
    # the completed runs that were trained again are kept aside, whole, with their key files
    kept = sorted(p.name for p in (out / ".superseded").iterdir())
    assert [k.split("-")[0] for k in kept if not k.endswith(".json")] == ["student", "teacher"]
    assert len([k for k in kept if k.endswith(".stage-key.json")]) == 2
    teacher_kept = next(p for p in (out / ".superseded").iterdir() if p.name.startswith("teacher") and p.is_dir())
    assert json.loads((teacher_kept / "summary.json").read_text()) == old_teacher
    assert (teacher_kept / "checkpoint" / "model.safetensors").exists()
    pipeline["stages"]["student"]["method"]["tau"] = 2.0
    statuses = [s["status"] for s in run_pipeline(write(tmp_path, pipeline), out, quiet=True)["stages"]]
    assert statuses == ["reused", "trained"]


def test_an_interrupted_stage_is_resumed(tmp_path):
    out = tmp_path / "out"
    pipeline = {"base": BASE, "stages": {"only": {}}}
    run_pipeline(write(tmp_path, pipeline), out, quiet=True)
    summary_path = out / "only" / "summary.json"
    summary = json.loads(summary_path.read_text())
    summary_path.write_text(json.dumps({**summary, "status": "running"}))
    record = run_pipeline(write(tmp_path, pipeline), out, quiet=True)
    assert record["stages"][0]["status"] == "resumed"
    assert json.loads(summary_path.read_text())["status"] == "completed"


def test_sweeps_expand_into_one_stage_per_value():
    runs = expand_stages("p", {"base": BASE, "stages": {
        "teacher": {}, "kd": {"method": {"name": "kd", "teacher": "@teacher"}, "sweep": {"method.tau": [1, 4]}}}})
    assert [run.name for run in runs] == ["teacher", "kd-tau1", "kd-tau4"]
    assert [run.raw["method"]["tau"] for run in runs[1:]] == [1, 4]


@pytest.mark.parametrize(
    "pipeline, message",
    [
        ({"base": BASE, "stages": {"s": {"method": {"name": "kd", "teacher": "@nobody"}}}}, "names no earlier stage"),
        ({"base": BASE, "stages": {"s": {"optim": {"lrr": 1}}}}, "unknown key 'optim.lrr'"),
        ({"base": BASE, "stages": {"s": {"generations": 0}}}, "generations"),
        ({"base": BASE, "stagez": {}}, "unknown key 'stagez'"),
        ({"base": BASE, "stages": {}}, "non-empty"),
    ],
)
def test_bad_pipelines_fail_before_anything_trains(tmp_path, pipeline, message):
    with pytest.raises(KdlabError, match=message):
        run_pipeline(write(tmp_path, pipeline), tmp_path / "out", quiet=True)
    assert not (tmp_path / "out").exists()
