"""Studies: seeds x stages expansion, shared teachers, reuse on re-run, continuing after a kill, parallel jobs."""

import json
import signal
import time
from pathlib import Path

import _launch as launch
import pytest
import yaml

from kdlab.errors import KdlabError
from kdlab.pipeline import expand_stages
from kdlab.study import plan_study, run_study, study_seeds

BASE = {"data": {"source": "digits", "val_size": 0.1}, "model": {"name": "cnn_small8"}, "train": {"epochs": 1},
        "runtime": {"progress": False, "threads": 1}}
STUDY = {
    "seeds": 2,
    "baseline": "ce",
    "base": BASE,
    "stages": {
        "teacher": {"shared": True, "train": {"epochs": 2}},
        "ce": {"method": {"name": "ce"}},
        "kd": {"method": {"name": "kd", "teacher": "@teacher"}, "sweep": {"method.tau": [1, 4]}},
    },
}


def write(tmp_path: Path, spec: dict, name: str = "study.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def test_expansion_names_seeds_and_teachers(tmp_path):
    runs, seeds, baseline = plan_study(write(tmp_path, STUDY))
    assert seeds == [0, 1] and baseline == "ce"
    assert [r.name for r in runs] == ["teacher", "ce-s0", "ce-s1", "kd-tau1-s0", "kd-tau1-s1", "kd-tau4-s0", "kd-tau4-s1"]
    by_name = {r.name: r for r in runs}
    assert by_name["teacher"].seed is None and "seed" not in by_name["teacher"].raw
    assert by_name["kd-tau4-s1"].raw["seed"] == 1 and by_name["kd-tau4-s1"].group == "kd-tau4"
    assert by_name["kd-tau4-s1"].teacher == "teacher"
    # --seeds overrides the recipe's seeds; a list keeps its own values.
    assert [r.name for r in plan_study(write(tmp_path, STUDY), seeds=1)[0]][:2] == ["teacher", "ce-s0"]
    assert plan_study(write(tmp_path, {**STUDY, "seeds": [7, 3]}))[1] == [7, 3]


def test_per_seed_teachers_pair_by_seed():
    spec = {"base": BASE, "stages": {"teacher": {}, "student": {"method": {"name": "kd", "teacher": "@teacher"}}}}
    runs = expand_stages("s", spec, seeds=[0, 5], extra_keys=("seeds",))
    assert {r.name: r.teacher for r in runs if r.stage == "student"} == {"student-s0": "teacher-s0", "student-s5": "teacher-s5"}


@pytest.mark.parametrize("change,match", [
    ({"seeds": 0}, "seeds"),
    ({"seeds": [1, 1]}, "seeds"),
    ({"seeds": "three"}, "seeds"),
    ({"baseline": "nope"}, "baseline 'nope'"),
    ({"baseline": "teacher"}, "baseline 'teacher'"),
    ({"extra": 1}, "unknown key 'extra'"),
    ({"stages": {"t": {}, "s": {"shared": True, "method": {"name": "kd", "teacher": "@t"}}}}, "shared stage cannot"),
    ({"stages": {"s": {"shared": "yes"}}}, "shared must be"),
    ({"stages": {"s": {"method": {"name": "ls", "eps": 2}}}}, "eps"),
])
def test_bad_studies(tmp_path, change, match):
    with pytest.raises(KdlabError, match=match):
        plan_study(write(tmp_path, {**STUDY, **change}))


def test_shared_is_refused_in_a_pipeline():
    with pytest.raises(KdlabError, match="only applies to a study"):
        expand_stages("p", {"base": BASE, "stages": {"t": {"shared": True}}})


def test_study_seeds_helper():
    assert study_seeds("x", 3) == [0, 1, 2]
    with pytest.raises(KdlabError):
        study_seeds("x", True)


def test_run_twice_reuses_everything(tmp_path):
    path, out = write(tmp_path, STUDY), tmp_path / "out"
    first = run_study(path, out, quiet=True)
    assert [r["status"] for r in first["runs"]] == ["trained"] * 7
    second = run_study(path, out, quiet=True)
    assert [r["status"] for r in second["runs"]] == ["reused"] * 7
    record = json.loads((out / "study.json").read_text())
    assert record["baseline"] == "ce" and record["seeds"] == [0, 1]
    assert {r["group"] for r in record["runs"]} == {"teacher", "ce", "kd-tau1", "kd-tau4"}
    assert (out / "study.yaml").is_file()
    # Adding a seed trains only the new seed's runs.
    third = run_study(path, out, seeds=3, quiet=True)
    assert sorted(r["run"] for r in third["runs"] if r["status"] == "trained") == ["ce-s2", "kd-tau1-s2", "kd-tau4-s2"]


def test_parallel_jobs_match_sequential(tmp_path):
    spec = {**STUDY, "seeds": 1}
    sequential = run_study(write(tmp_path, spec), tmp_path / "seq", quiet=True)
    parallel = run_study(write(tmp_path, spec), tmp_path / "par", jobs=2, quiet=True)
    acc = {r["run"]: r["final"]["test_acc"] for r in sequential["runs"]}
    # One thread per run in both, so the runs are bit-identical on the CPU.
    assert {r["run"]: r["final"]["test_acc"] for r in parallel["runs"]} == acc


def test_killed_study_continues(tmp_path):
    spec = {**STUDY, "base": {**BASE, "train": {"epochs": 3}}}
    path, out = write(tmp_path, spec), tmp_path / "out"
    process = launch.start("study", path, "--out", out, "--quiet")
    deadline = time.time() + 120
    def completed(name):
        try:
            return json.loads((out / name / "summary.json").read_text())["status"] == "completed"
        except (OSError, ValueError, KeyError):
            return False
    while time.time() < deadline and not completed("ce-s0"):
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert completed("teacher") and completed("ce-s0")
    record = run_study(path, out, quiet=True)
    statuses = {r["run"]: r["status"] for r in record["runs"]}
    assert statuses["teacher"] == "reused" and statuses["ce-s0"] == "reused"
    assert all(completed(name) for name in statuses)
