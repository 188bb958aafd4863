"""Pre-emption: SIGTERM and SIGINT stop a real run at a step boundary with a mid-epoch checkpoint, mark it
interrupted, exit with 128 + the signal's number, and ``--resume`` ends on exactly the uninterrupted result, for a
plain, a KD and an online run; a study passes the signal on to its workers and continues when run again."""

import json
import random
import signal
import time
from pathlib import Path

import _launch as launch
import pytest
import yaml
from test_reliability import assert_intact, assert_same_result

from kdlab.store import checkpoint

pytestmark = pytest.mark.usefixtures("private_cache")

BASE = {  # 4 epochs x 56 steps: long enough to land a signal inside an epoch
    "data": {"source": "digits", "val_size": 0.1, "train_size": 500},
    "model": {"name": "cnn_small8"},
    "train": {"epochs": 4, "batch_size": 8},
    "optim": {"lr": 0.05},
    "schedule": {"name": "cosine"},
    "runtime": {"progress": False, "threads": 1},
}
METHODS = {
    "plain": {"name": "ls", "eps": 0.1},
    "kd": {"name": "kd", "alpha": 0.9, "tau": 4.0},  # teacher filled in below
    "online": {"name": "okddip"},  # peers and a group leader on a shared trunk (resnet8: a net that branches)
}
MODELS = {"online": {"name": "resnet8"}}


def write(path: Path, raw: dict) -> Path:
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A trained teacher, and for each kind the recipe, its uninterrupted run and the seconds its loop took."""
    folder = tmp_path_factory.mktemp("preemption")
    teacher = folder / "teacher"
    teacher_recipe = write(folder / "teacher.yaml", {**BASE, "method": {"name": "ce"}, "train": {"epochs": 2, "batch_size": 32}})
    assert launch.run("train", teacher_recipe, "--out", teacher, "--quiet").returncode == 0
    kinds = {}
    for kind, method in METHODS.items():
        method = {**method, "teacher": str(teacher)} if kind == "kd" else method
        recipe = write(folder / f"{kind}.yaml", {**BASE, "model": MODELS.get(kind, BASE["model"]), "method": method})
        assert launch.run("train", recipe, "--out", folder / f"{kind}-reference", "--quiet").returncode == 0
        kinds[kind] = (recipe, folder / f"{kind}-reference", summary(folder / f"{kind}-reference")["wall_seconds"])
    return kinds


def summary(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())


def stop_when_training(proc, run: Path, seconds: float, rng: random.Random, sig: int) -> bool:
    """Wait until the run is training (its summary says running: a resumed run's summary said interrupted), then a
    random part of its time; send ``sig``. False when the process ended first."""
    while proc.poll() is None:
        try:
            if summary(run)["status"] == "running":
                break
        except (OSError, ValueError):
            pass
        time.sleep(0.005)
    deadline = time.time() + rng.uniform(0.05, 0.6) * seconds
    while time.time() < deadline and proc.poll() is None:
        time.sleep(0.005)
    if proc.poll() is not None:
        return False
    proc.send_signal(sig)
    return True


@pytest.mark.parametrize("kind", list(METHODS))
def test_sigterm_at_a_random_step_then_resume_gives_the_uninterrupted_result(setup, kind, tmp_path):
    recipe, reference, seconds = setup[kind]
    rng = random.Random(f"sigterm-{kind}")
    stops = mid_epoch = 0
    run = tmp_path / "run"
    proc = launch.start("train", recipe, "--out", run, "--quiet")
    for _ in range(2):  # stop it twice, resuming after each
        if not stop_when_training(proc, run, seconds, rng, signal.SIGTERM):
            break
        assert proc.wait(timeout=120) == 128 + signal.SIGTERM, proc.output()
        stderr = proc.output()[1]
        assert "SIGTERM received" in stderr and "Traceback" not in stderr
        record = summary(run)
        assert record["status"] == "interrupted" and record["interrupted_by"] == "SIGTERM"
        assert "--resume" in record["error"]
        assert_intact(run)
        state = checkpoint.read_state(run / "checkpoint")
        mid_epoch += state.get("partial") is not None
        stops += 1
        proc = launch.start("train", "--resume", run, "--quiet")
    assert proc.wait(timeout=300) == 0, proc.output()
    assert stops >= 1 and mid_epoch >= 1, "at least one stop must land inside an epoch"
    assert_same_result(run, reference)
    leftovers = [p.name for p in (run / "checkpoint").glob("*-[0-9]*.safetensors")]
    assert len(leftovers) == 2, leftovers  # the last checkpoint's method and optimizer files, nothing stale


def test_sigint_checkpoints_exits_130_and_resumes(setup, tmp_path):
    recipe, reference, seconds = setup["plain"]
    run = tmp_path / "run"
    proc = launch.start("train", recipe, "--out", run, "--quiet")
    assert stop_when_training(proc, run, seconds, random.Random(7), signal.SIGINT)
    assert proc.wait(timeout=120) == 128 + signal.SIGINT
    assert summary(run)["interrupted_by"] == "SIGINT"
    assert launch.run("train", "--resume", run, "--quiet").returncode == 0
    assert_same_result(run, reference)


def test_a_repeated_sigterm_does_not_cut_the_checkpoint_short(setup, tmp_path):
    """A scheduler may signal every process of a job and a parent forward the same signal: the second SIGTERM is
    ignored, the run still checkpoints and resumes exactly."""
    recipe, reference, seconds = setup["plain"]
    run = tmp_path / "run"
    proc = launch.start("train", recipe, "--out", run, "--quiet")
    assert stop_when_training(proc, run, seconds, random.Random(11), signal.SIGTERM)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 128 + signal.SIGTERM
    assert_intact(run)
    assert launch.run("train", "--resume", run, "--quiet").returncode == 0
    assert_same_result(run, reference)


def test_a_run_stopped_before_its_first_checkpoint_says_how_to_start_it(setup, tmp_path):
    """SIGTERM during start-up (before the loop listens) ends the process; the folder it leaves is resumed (which
    starts it afresh) or, given to train --out again, refused in one line that says how."""
    recipe, reference, _ = setup["plain"]
    run = tmp_path / "run"
    proc = launch.start("train", recipe, "--out", run, "--quiet")
    while not (run / "config.yaml").exists() and proc.poll() is None:
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    again = launch.run("train", recipe, "--out", run, "--quiet")
    if (run / "config.yaml").exists():
        assert again.returncode == 2 and "--resume" in again.stderr and len(again.stderr.strip().splitlines()) == 1
        assert launch.run("train", "--resume", run, "--quiet").returncode == 0
    else:
        assert again.returncode == 0
    assert_same_result(run, reference)


def test_a_study_passes_sigterm_to_its_workers_and_continues(setup, tmp_path):
    """kdlab study --jobs 2: SIGTERM to the study stops both workers' runs at a step with a checkpoint (exit 143);
    the same command again finishes the study, and every run equals one trained without interruption."""
    recipe, reference, seconds = setup["plain"]
    study = write(tmp_path / "study.yaml", {"base": {**BASE, "method": {"name": "ce"}}, "seeds": [0],
                                            "stages": {"ls": {"method": METHODS["plain"]},
                                                       "ce": {"method": {"name": "ce"}}}})
    out = tmp_path / "study"
    proc = launch.start("study", study, "--out", out, "--jobs", "2", "--quiet")
    deadline = time.time() + 120
    while time.time() < deadline and len(list(out.glob("*/summary.json"))) < 2 and proc.poll() is None:
        time.sleep(0.01)
    time.sleep(0.3 * seconds)
    assert proc.poll() is None, proc.output()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 128 + signal.SIGTERM, proc.output()
    states = {path.parent.name: json.loads(path.read_text())["status"] for path in out.glob("*/summary.json")}
    assert "interrupted" in states.values(), states
    assert not [pid for pid in _children_of(proc.pid)], "no worker outlives the study"
    assert launch.run("study", study, "--out", out, "--jobs", "2", "--quiet").returncode == 0
    ls_run = next(p.parent for p in out.glob("*/summary.json") if json.loads(p.read_text())["method"] == "ls")
    assert_same_result(ls_run, reference)


def _children_of(pid: int) -> list[int]:
    children = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines() if ":\t" in line)
        except OSError:
            continue
        if fields.get("PPid", "").strip() == str(pid):
            children.append(int(status.parent.name))
    return children


def test_interrupt_exit_status_is_distinct():
    from kdlab.train.interrupt import RunInterrupted

    codes = {RunInterrupted(signal.SIGTERM, "x").exit_status, RunInterrupted(signal.SIGINT, "x").exit_status}
    assert codes == {143, 130} and not codes & {0, 1, 2}


def test_a_pipeline_stopped_by_sigterm_continues_where_it_stopped(tmp_path):
    """SIGTERM while the pipeline's student trains: exit 143, the student interrupted with a checkpoint; the same
    command again reuses the finished teacher and resumes the student to the uninterrupted result."""
    pipeline = write(tmp_path / "pipeline.yaml", {
        "base": BASE, "stages": {"teacher": {"method": {"name": "ce"}},
                                 "student": {"method": {"name": "kd", "teacher": "@teacher", "alpha": 0.9, "tau": 4.0}}}})
    whole = tmp_path / "whole"
    assert launch.run("pipeline", pipeline, "--out", whole, "--quiet").returncode == 0
    cut = tmp_path / "cut"
    proc = launch.start("pipeline", pipeline, "--out", cut, "--quiet")
    seconds = summary(whole / "student")["wall_seconds"]
    assert stop_when_training(proc, cut / "student", seconds, random.Random(3), signal.SIGTERM)
    assert proc.wait(timeout=120) == 128 + signal.SIGTERM, proc.output()
    assert summary(cut / "student")["status"] == "interrupted"
    teacher_mtime = (cut / "teacher" / "summary.json").stat().st_mtime_ns
    assert launch.run("pipeline", pipeline, "--out", cut, "--quiet").returncode == 0
    assert (cut / "teacher" / "summary.json").stat().st_mtime_ns == teacher_mtime
    for name in ("teacher", "student"):
        assert_same_result(cut / name, whole / name)
