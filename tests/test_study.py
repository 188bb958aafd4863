"""Studies: seeds x stages expansion, shared teachers, reuse on re-run, continuing after a kill, parallel jobs."""

import json
import signal
import time
from pathlib import Path

import _launch as launch
import pytest
import yaml

from kdlab.errors import KdlabError
from kdlab.experiments.pipeline import expand_stages
from kdlab.experiments.study import plan_study, run_study, study_seeds

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
    ({"stages": {"t": {}, "s": {"shared": True, "method": {"name": "kd", "teacher": "@t"}}}}, "needs a shared teacher"),
    ({"models": "resnet8"}, "'models' must be"),
    ({"models": ["resnet8", "resnet8"]}, "'models' must be"),
    ({"stages": {"s": {"shared": "yes"}}}, "shared must be"),
    ({"stages": {"s": {"method": {"name": "ls", "eps": 2}}}}, "eps"),
])
def test_bad_studies(tmp_path, change, match):
    with pytest.raises(KdlabError, match=match):
        plan_study(write(tmp_path, {**STUDY, **change}))


def test_models_axis_runs_each_stage_per_model_with_that_models_teachers():
    spec = {"seeds": [0, 1], "baseline": "ce", "base": BASE, "models": ["cnn_small8", "resnet8"],
            "stages": {"big": {"model": {"name": "resnet14"}, "shared": True},
                       "ce": {"method": {"name": "ce"}},
                       "self": {"method": {"name": "kd", "teacher": "@ce"}},
                       "kd": {"method": {"name": "kd", "teacher": "@big"}}}}
    runs = expand_stages("s", spec, seeds=[0, 1], extra_keys=("seeds", "baseline"))
    by_name = {r.name: r for r in runs}
    assert [r.name for r in runs if r.stage == "ce"] == ["ce-cnn_small8-s0", "ce-cnn_small8-s1", "ce-resnet8-s0",
                                                          "ce-resnet8-s1"]
    assert by_name["big"].raw["model"]["name"] == "resnet14"  # a stage naming its own model is not multiplied
    assert by_name["self-resnet8-s1"].teacher == "ce-resnet8-s1" and by_name["kd-cnn_small8-s0"].teacher == "big"
    assert by_name["ce-resnet8-s0"].raw["model"]["name"] == "resnet8" and by_name["ce-resnet8-s0"].group == "ce"


def test_generations_are_groups_of_their_own():
    spec = {"base": BASE, "stages": {"t": {}, "ban": {"method": {"name": "kd", "teacher": "@t"}, "generations": 2}}}
    runs = expand_stages("s", spec, seeds=[0], extra_keys=())
    assert [(r.name, r.group, r.teacher) for r in runs] == [("t-s0", "t", None), ("ban-s0-g1", "ban-g1", "t-s0"),
                                                            ("ban-s0-g2", "ban-g2", "ban-s0-g1")]


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


def test_profiles_and_overrides_change_the_study_and_travel_with_it(tmp_path):
    profile = write(tmp_path, {"base": {"train": {"epochs": 2}}, "seeds": 1, "models": ["cnn_small8", "resnet8"],
                               "stages": {"teacher": {"model": {"name": "resnet14"}}}},  # no teacher here: left out
                    name="profile.yaml")
    path, out = write(tmp_path, {**STUDY, "stages": {"ce": {"method": {"name": "ce"}}}}), tmp_path / "out"
    runs, seeds, _ = plan_study(path, profiles=[profile], overrides=["base.method.name=ls", "stages.ce.train.epochs=1"])
    assert seeds == [0] and [r.name for r in runs] == ["ce-cnn_small8-s0", "ce-resnet8-s0"]
    assert runs[0].raw["train"]["epochs"] == 1 and runs[0].raw["method"]["name"] == "ce"
    record = run_study(path, out, quiet=True, profiles=[profile], overrides=["stages.ce.train.epochs=1"])
    assert [r["run"] for r in record["runs"]] == ["ce-cnn_small8-s0", "ce-resnet8-s0"]
    again = run_study(out / "study.yaml", out, quiet=True)  # the recipe as it ran: nothing left to train
    assert {r["status"] for r in again["runs"]} == {"reused"}


def test_study_command_takes_overrides_and_profiles(tmp_path):
    from _cli import assert_user_error, kdlab_main

    path = write(tmp_path, {**STUDY, "stages": {"ce": {"method": {"name": "ce"}}}})
    assert_user_error(kdlab_main("study", path, "--out", tmp_path / "o", "stages.ce.method.name=nope"), "nope")
    assert_user_error(kdlab_main("study", path, "--out", tmp_path / "o", "--profile", tmp_path / "none.yaml"),
                      "none.yaml")
    assert not (tmp_path / "o").exists()
    assert kdlab_main("study", path, "--out", tmp_path / "o", "seeds=1", "--quiet").returncode == 0
    assert sorted(p.name for p in (tmp_path / "o").iterdir() if p.is_dir()) == ["ce-s0"]


def test_study_json_is_written_after_every_run(tmp_path, monkeypatch):
    """An unfinished study can be reported (and archived): study.json lists the finished runs, the others pending."""
    import kdlab.experiments.study

    real, calls = kdlab.experiments.study.run_stage, []

    def stop_at_the_third(out, run, quiet=False):
        calls.append(run.name)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(out, run, quiet)

    monkeypatch.setattr(kdlab.experiments.study, "run_stage", stop_at_the_third)
    path, out = write(tmp_path, {**STUDY, "stages": {"ce": {"method": {"name": "ce"}}, "ls": {"method": {"name": "ls"}}}}), tmp_path / "o"
    with pytest.raises(KeyboardInterrupt):
        run_study(path, out, quiet=True)
    record = json.loads((out / "study.json").read_text())
    assert [(r["run"], r["status"]) for r in record["runs"]] == [("ce-s0", "trained"), ("ce-s1", "trained"),
                                                                  ("ls-s0", "pending"), ("ls-s1", "pending")]


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and "spawn_main" in (stat.parent / "cmdline").read_bytes().decode(errors="replace"):
            found.append(int(stat.parent.name))
    return found


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux's /proc")
def test_workers_die_with_a_killed_study(tmp_path):
    """A study killed with SIGKILL takes its worker processes with it (no orphan keeps training)."""
    spec = {**STUDY, "base": {**BASE, "train": {"epochs": 50}}, "stages": {"ce": {"method": {"name": "ce"}}}}
    path, out = write(tmp_path, spec), tmp_path / "out"
    study = launch.start("study", path, "--out", out, "--jobs", "2", "--quiet")
    deadline = time.time() + 120
    while time.time() < deadline and len(_children(study.pid)) < 2:
        time.sleep(0.1)
    workers = _children(study.pid)
    assert len(workers) == 2
    study.send_signal(signal.SIGKILL)
    study.wait()
    deadline = time.time() + 20
    while time.time() < deadline and any(Path(f"/proc/{pid}").exists() for pid in workers):
        time.sleep(0.1)
    assert not any(Path(f"/proc/{pid}/stat").exists() and " Z " not in Path(f"/proc/{pid}/stat").read_text()
                   for pid in workers)


def test_reuse_from_adopts_the_same_runs_of_another_study(tmp_path):
    first = run_study(write(tmp_path, {**STUDY, "seeds": 1}, "a.yaml"), tmp_path / "a", quiet=True)
    ce = next(r for r in first["runs"] if r["run"] == "ce-s0")
    other = {"seeds": 2, "baseline": "ce", "base": BASE,
             "stages": {"teacher": {"shared": True, "train": {"epochs": 2}},
                        "ce": {"method": {"name": "ce"}},
                        "ls": {"method": {"name": "ls", "eps": 0.1}},
                        "kd": {"method": {"name": "kd", "teacher": "@teacher"}}}}
    second = run_study(write(tmp_path, other, "b.yaml"), tmp_path / "b", quiet=True, reuse_from=[tmp_path / "a"])
    status = {r["run"]: r["status"] for r in second["runs"]}
    # ce-s0 is a's run (same key); ce-s1 (another seed), ls and the distilled run are new. The teacher is a
    # teacher-free run with a's recipe and seed, so it is adopted too, and kd-s0 then hashes the same teacher.
    assert status == {"teacher": "reused", "ce-s0": "reused", "ce-s1": "trained", "ls-s0": "trained",
                      "ls-s1": "trained", "kd-s0": "trained", "kd-s1": "trained"}
    adopted = next(r for r in second["runs"] if r["run"] == "ce-s0")
    assert adopted["final"] == ce["final"] and adopted["dir"] == str(tmp_path / "b" / "ce-s0")
    assert not list((tmp_path / "b").glob(".*adopting"))
    # A changed recipe changes the key: ce is no longer a's ce-s0 (the teacher, which sets its own epochs, is
    # unchanged). With 2 epochs, though, ce-s0 is exactly a's teacher (CE, 2 epochs, seed 0), found by its key.
    changed = {**STUDY, "seeds": 1, "base": {**BASE, "train": {"epochs": 2}}}
    third = run_study(write(tmp_path, changed, "c.yaml"), tmp_path / "c", quiet=True, reuse_from=[tmp_path / "a"])
    assert {r["run"]: r["status"] for r in third["runs"]} == {"teacher": "reused", "ce-s0": "reused",
                                                              "kd-tau1-s0": "trained", "kd-tau4-s0": "trained"}
    teacher = next(r for r in first["runs"] if r["run"] == "teacher")
    assert next(r for r in third["runs"] if r["run"] == "ce-s0")["final"] == teacher["final"]
    changed["base"] = {**BASE, "train": {"epochs": 3}}  # a recipe no run of a has: trained
    assert {r["run"]: r["status"] for r in run_study(write(tmp_path, changed, "f.yaml"), tmp_path / "f", quiet=True,
                                                     reuse_from=[tmp_path / "a"])["runs"]}["ce-s0"] == "trained"
    # The same run under another name (a study with a models list names it ce-cnn_small8-s0): found by its key.
    named = {"seeds": 1, "baseline": "ce", "models": [BASE["model"]["name"]],
             "base": {k: v for k, v in BASE.items() if k != "model"}, "stages": {"ce": {"method": {"name": "ce"}}}}
    fourth = run_study(write(tmp_path, named, "e.yaml"), tmp_path / "e", quiet=True, reuse_from=[tmp_path / "a"])
    run, = fourth["runs"]
    assert run["run"] == f"ce-{BASE['model']['name']}-s0" and run["status"] == "reused"
    assert run["final"] == ce["final"]
    with pytest.raises(KdlabError, match="--reuse-from .*not a folder"):
        run_study(write(tmp_path, STUDY, "d.yaml"), tmp_path / "d", quiet=True, reuse_from=[tmp_path / "missing"])


def test_teachers_lists_take_stage_references_per_seed(tmp_path):
    """``method.teachers`` entries may be ``@stage`` like ``method.teacher``: resolved per seed (or to a shared stage),
    waited for, and hashed into the stage key (a changed teacher's weights re-run the student)."""
    spec = {"seeds": 2, "baseline": "ce", "base": BASE, "stages": {
        "shared_teacher": {"shared": True},
        "teacher": {},
        "ce": {"method": {"name": "ce"}},
        "ensemble": {"method": {"name": "multi_kd", "teachers": ["@shared_teacher", "@teacher"], "tau": 2.0}},
    }}
    runs, _, _ = plan_study(write(tmp_path, spec))
    by_name = {r.name: r for r in runs}
    assert by_name["ensemble-s1"].raw["method"]["teachers"] == ["@shared_teacher", "@teacher-s1"]
    assert by_name["ensemble-s1"].teachers == ("shared_teacher", "teacher-s1") and by_name["ensemble-s1"].teacher is None
    with pytest.raises(KdlabError, match="teacher @nope names no earlier stage"):
        plan_study(write(tmp_path, {**spec, "stages": {**spec["stages"], "bad": {
            "method": {"name": "multi_kd", "teachers": ["@teacher", "@nope"]}}}}))
    out = tmp_path / "out"
    record = run_study(write(tmp_path, spec), out, quiet=True)
    assert {r["run"]: r["status"] for r in record["runs"]}["ensemble-s0"] == "trained"
    summary = json.loads((out / "ensemble-s0" / "summary.json").read_text())
    assert summary["method_params"]["teachers"] == [str(out / "shared_teacher"), str(out / "teacher-s0")]
    # the second teacher's weights change: its students are trained again, the others reused
    from kdlab.experiments.pipeline import _recipe_and_key
    before = {name: _recipe_and_key(out, by_name[name])[1] for name in ("ensemble-s0", "ensemble-s1")}
    weights = out / "teacher-s0" / "checkpoint" / "model.safetensors"
    weights.write_bytes(weights.read_bytes() + b" ")
    assert _recipe_and_key(out, by_name["ensemble-s0"])[1] != before["ensemble-s0"]
    assert _recipe_and_key(out, by_name["ensemble-s1"])[1] == before["ensemble-s1"]
