"""Faults injected into real runs: kills anywhere (random moments and inside every kind of write), a full disk,
NaN and infinite losses and gradients, two processes on one run directory, an interrupted study and pipeline.

Each test compares with an uninterrupted run of the same recipe: on the CPU, with the same seed, a resumed run's
final metrics and predictions equal it exactly, and no file of a run directory is ever found truncated.
"""

import json
import random
import signal
import time
from pathlib import Path

import _launch as launch
import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

from kdlab.config import load_recipe
from kdlab.store import checkpoint
from kdlab.train.engine import TrainingDiverged, train

ROOT = Path(__file__).resolve().parents[1]
RECIPE = {  # small enough that a process is mostly its start-up, long enough (4 epochs x 56 steps) to kill inside
    "data": {"source": "digits", "val_size": 0.1, "train_size": 500},
    "model": {"name": "cnn_small8"},
    "method": {"name": "ls", "eps": 0.1},
    "train": {"epochs": 4, "batch_size": 8},
    "optim": {"lr": 0.05, "nesterov": True},
    "schedule": {"name": "cosine"},
    "runtime": {"progress": False, "threads": 1},
}


pytestmark = pytest.mark.usefixtures("private_cache")


def kdlab(*args, fault: str | None = None, timeout: int = 300):
    """``kdlab ARGS`` as its own process (forked from a preloaded server, see tests/_launch.py), with the fault rule
    ``fault`` (:mod:`kdlab.faults`); returns its exit status, stdout and stderr."""
    extra = {"KDLAB_FAULT": fault} if fault else {}
    return launch.run(*args, env=launch.environment(**extra), timeout=timeout)


def start(*args):
    return launch.start(*args)


def write_recipe(path: Path, raw: dict) -> Path:
    path.write_text(yaml.safe_dump(raw, sort_keys=False))  # stage order matters in pipelines
    return path


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One uninterrupted run of RECIPE (in a process of its own, like the interrupted ones): (recipe, run folder,
    seconds the process took)."""
    folder = tmp_path_factory.mktemp("reference")
    recipe = write_recipe(folder / "r.yaml", RECIPE)
    kdlab("train", recipe, "--out", folder / "warm-up", "--quiet")  # the first command also starts the fork server
    begin = time.perf_counter()
    assert kdlab("train", recipe, "--out", folder / "run", "--quiet").returncode == 0
    return recipe, folder / "run", time.perf_counter() - begin


def assert_intact(run: Path) -> None:
    """Every file kdlab wrote parses completely: JSON, JSON lines, safetensors, npz."""
    for path in run.rglob("*"):
        if path.is_dir() or path.name == ".lock" or path.name.endswith(".tmp"):
            continue
        if path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".jsonl":
            [json.loads(line) for line in path.read_text().splitlines()]
        elif path.suffix == ".safetensors":
            load_file(path)
        elif path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as npz:
                [npz[k] for k in npz.files]
        elif path.suffix == ".yaml":
            yaml.safe_load(path.read_text())
    if (run / "checkpoint" / checkpoint.STATE_FILE).is_file():
        state = checkpoint.read_state(run / "checkpoint")
        for name, digest in state["sha256"].items():
            checkpoint.load_tensors(run / "checkpoint" / name, digest)


def assert_same_result(run: Path, reference_run: Path) -> None:
    a, b = (json.loads((r / "summary.json").read_text()) for r in (run, reference_run))
    assert a["status"] == "completed"
    assert a["final"] == b["final"] and a["best"] == b["best"]
    assert a["evaluation"]["test"] == b["evaluation"]["test"]
    for split in ("val", "test"):
        np.testing.assert_array_equal(np.load(run / f"predictions/{split}.npz")["logits"],
                                      np.load(reference_run / f"predictions/{split}.npz")["logits"])
    strip = lambda path: [{k: v for k, v in json.loads(line).items() if "second" not in k}
                          for line in path.read_text().splitlines()]
    assert strip(run / "metrics.jsonl") == strip(reference_run / "metrics.jsonl")
    assert not list(run.rglob("*.tmp")), "a resumed run leaves no temporary file behind"


def test_killed_at_random_moments_resumes_to_the_uninterrupted_result(reference, tmp_path):
    """SIGKILL the run three times at seeded random moments (inside epochs, evaluations or writes), resume after
    each kill: every file is intact at every kill, and the final result equals the uninterrupted run's. The moments
    are random fractions of the reference run's time; a run that ends before its first kill (the machine was faster
    than when the reference ran) is started again in a new folder with the next draw."""
    recipe, reference_run, seconds = reference
    rng = random.Random(1234)
    for attempt in range(5):
        run = tmp_path / f"run{attempt}"
        kills = 0
        proc = start("train", recipe, "--out", run, "--quiet")
        for _ in range(3):
            deadline = time.time() + rng.uniform(0.05, 0.6) * seconds
            while time.time() < deadline and proc.poll() is None:
                time.sleep(0.005)
            if proc.poll() is not None:
                break
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += 1
            assert_intact(run)
            # a kill before the config was written leaves nothing to resume: the same command starts the run again
            proc = start("train", "--resume", run, "--quiet") if (run / "config.yaml").exists() else \
                start("train", recipe, "--out", run, "--quiet")
        assert proc.wait(timeout=300) == 0
        if kills:
            break
    assert kills >= 1
    assert_same_result(run, reference_run)


# One run killed inside every kind of write, one after the other: each process of the chain gets the next fault
# (counted from its own start), the folder is checked intact after each kill, and the next process continues it.
KILL_CHAIN = [
    ("train", "kill@config.yaml#1"),               # before the run has anything but its folder
    ("train", "kill@summary.json#1"),              # the first summary
    ("resume", "kill@method-0001.safetensors#1"),  # inside the first checkpoint (its first tensor file)
    ("resume", "kill@optimizer-0002.safetensors#1"),  # inside the second (method tensors written, no pointer)
    ("resume", "kill@state.json#1"),               # publishing the second checkpoint
    ("resume", "kill@metrics.jsonl#2"),            # after epoch 2's checkpoint, before its metrics line
    ("resume", "kill@best.safetensors#1"),         # a best-epoch model file
    ("resume", "kill@test.npz#1"),                 # the final predictions, after the last checkpoint
    ("resume", "kill@model.safetensors#1"),        # the final model file
    ("resume", "kill@summary.json#2"),             # the completed summary itself
]


def test_killed_inside_every_kind_of_write_resumes_to_the_uninterrupted_result(reference, tmp_path):
    recipe, reference_run, _ = reference
    run = tmp_path / "run"
    for command, fault in KILL_CHAIN:
        if command == "resume" and not (run / "config.yaml").exists():
            command = "train"  # killed before the config existed: the same train command starts it again
        args = ("train", recipe, "--out", run, "--quiet") if command == "train" else ("train", "--resume", run,
                                                                                         "--quiet")
        killed = kdlab(*args, fault=fault)
        assert killed.returncode == -signal.SIGKILL, (fault, killed.returncode, killed.stderr)
        assert_intact(run)
        if fault == "kill@config.yaml#1":
            refused = kdlab("train", "--resume", run, "--quiet")
            assert refused.returncode == 2 and "stopped before it started" in refused.stderr
    resumed = kdlab("train", "--resume", run, "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    assert_same_result(run, reference_run)


def test_full_disk_stops_with_one_line_and_keeps_the_last_checkpoint(reference, tmp_path):
    recipe, reference_run, _ = reference
    run = tmp_path / "run"
    failed = kdlab("train", recipe, "--out", run, "--quiet", fault="enospc@state.json#2")
    assert failed.returncode == 2
    lines = failed.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in failed.stderr
    assert "state.json" in lines[0] and "No space left on device" in lines[0] and "previous version is intact" in lines[0]
    assert_intact(run)
    state = checkpoint.read_state(run / "checkpoint")
    assert state["epoch"] == 1  # the epoch-1 checkpoint stays the published one, loadable
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["last_checkpoint_epoch"] == 1
    assert not list(run.rglob("*.tmp"))
    assert kdlab("train", "--resume", run, "--quiet").returncode == 0  # space again: it continues
    assert_same_result(run, reference_run)


def test_a_full_disk_for_the_summary_too_still_gives_one_line(reference, tmp_path):
    recipe, _, _ = reference
    failed = kdlab("train", recipe, "--out", tmp_path / "run", "--quiet", fault="enospc@*#4")
    assert failed.returncode == 2 and len(failed.stderr.strip().splitlines()) == 1
    assert "No space left on device" in failed.stderr


# ------------------------------------------------------------------------------------------------ numerical faults


def poison(monkeypatch, at: set[tuple[int, int]], term: str | None = "smoothing", gradient: bool = False):
    """Make the method's loss term ``term`` NaN (or, with ``gradient``, the gradient infinite while the loss stays
    finite) at the given (epoch, step) pairs, 1-based."""
    from kdlab.methods.label_smoothing import LabelSmoothing

    real = LabelSmoothing.forward
    counter = {"epoch": None, "step": 0}

    def forward(self, inputs, labels, epoch, keys=None):
        if counter["epoch"] != epoch:
            counter.update(epoch=epoch, step=0)
        counter["step"] += 1
        logits, terms = real(self, inputs, labels, epoch, keys)
        if (epoch + 1, counter["step"]) in at:
            if gradient:
                logits.register_hook(lambda g: g * float("inf"))
            else:
                terms = {**terms, term: terms[term] * float("nan")}
        return logits, terms

    monkeypatch.setattr(LabelSmoothing, "forward", forward)


def test_nan_loss_stops_naming_epoch_step_and_term_and_keeps_the_last_checkpoint(monkeypatch, tmp_path):
    poison(monkeypatch, {(3, 5)})
    run = tmp_path / "run"
    with pytest.raises(TrainingDiverged, match=r"epoch 3, step 5: loss term 'smoothing' is nan"):
        train(load_recipe(raw=RECIPE), run, quiet=True)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "failed" and "epoch 3, step 5" in summary["error"]
    assert summary["last_checkpoint_epoch"] == 2 and summary["epochs_completed"] == 2
    assert checkpoint.read_state(run / "checkpoint")["epoch"] == 2
    assert_intact(run)
    weights = checkpoint.load_tensors(run / "checkpoint" / "best.safetensors")
    assert all(torch.isfinite(t).all() for t in weights.values())


def test_infinite_gradient_with_a_finite_loss_is_caught(monkeypatch, tmp_path):
    poison(monkeypatch, {(1, 7)}, gradient=True)
    with pytest.raises(TrainingDiverged, match=r"epoch 1, step 7: the gradient is (inf|nan) \(every loss term is finite\)"):
        train(load_recipe(raw=RECIPE), tmp_path / "run", quiet=True)


def test_skip_mode_skips_bad_steps_up_to_the_limit(monkeypatch, tmp_path):
    bad = {(1, 3), (2, 4), (2, 9)}
    poison(monkeypatch, bad)
    raw = {**RECIPE, "train": {**RECIPE["train"], "nonfinite": "skip", "max_skipped_steps": 3}}
    summary = train(load_recipe(raw=raw), tmp_path / "run", quiet=True)
    assert summary["status"] == "completed"
    assert [(s["epoch"], s["step"]) for s in summary["skipped_steps"]] == sorted(bad)
    assert "loss term 'smoothing' is nan" in summary["skipped_steps"][0]["problem"]
    assert all(np.isfinite(line["train_loss"]) for line in map(json.loads, (tmp_path / "run" / "metrics.jsonl")
                                                                .read_text().splitlines()))
    # one more bad step than the limit allows: the run stops at it
    poison(monkeypatch, bad | {(3, 1)})
    with pytest.raises(TrainingDiverged, match=r"epoch 3, step 1: .*after 3 skipped steps, the limit"):
        train(load_recipe(raw=raw), tmp_path / "again", quiet=True)


def test_diverged_run_through_the_command_is_one_line_and_failed(tmp_path):
    raw = {**RECIPE, "optim": {"lr": 1.0e12}, "train": {**RECIPE["train"], "epochs": 1}}
    recipe = write_recipe(tmp_path / "r.yaml", raw)
    result = kdlab("train", recipe, "--out", tmp_path / "run", "--quiet")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert "epoch 1, step" in lines[0] and "training diverged" in lines[0]
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["status"] == "failed"


# ----------------------------------------------------------------------------------------------------- concurrency


def test_a_second_process_on_the_same_run_directory_is_refused(tmp_path):
    long = {**RECIPE, "train": {"epochs": 30, "batch_size": 4}}
    recipe = write_recipe(tmp_path / "r.yaml", long)
    run = tmp_path / "run"
    first = start("train", recipe, "--out", run, "--quiet")
    try:
        deadline = time.time() + 120
        while not (run / "summary.json").exists() and time.time() < deadline:
            time.sleep(0.02)
        for args in (("train", "--resume", run, "--quiet"), ("train", recipe, "--out", run, "--force", "--quiet")):
            second = kdlab(*args)
            assert second.returncode == 2, second.stderr
            lines = second.stderr.strip().splitlines()
            assert len(lines) == 1 and "is in use by another kdlab process" in lines[0]
            assert f"pid {first.pid}" in lines[0]
        assert first.poll() is None and (run / "config.yaml").is_file()  # the first run was not disturbed
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    # the lock went away with the killed process: the run can be resumed (here: one epoch more is enough to see)
    shorter = yaml.safe_load((run / "config.yaml").read_text())
    assert shorter["train"]["epochs"] == 30
    resumed = start("train", "--resume", run, "--quiet")
    time.sleep(0.5)
    deadline = time.time() + 120
    while time.time() < deadline and resumed.poll() is None:
        summary = json.loads((run / "summary.json").read_text())
        if summary.get("status") == "running" and summary.get("epochs_completed", 0) >= 1:
            break
        time.sleep(0.05)
    assert resumed.poll() is None  # it runs: it got the lock
    resumed.send_signal(signal.SIGKILL)
    resumed.wait()


# ------------------------------------------------------------------------------------------- studies and pipelines


STUDY = {
    "seeds": 2,
    "baseline": "ce",
    "base": {k: v for k, v in RECIPE.items() if k != "method"},
    "stages": {"ce": {"method": {"name": "ce"}}, "ls": {"method": {"name": "ls", "eps": 0.1}}},
}


def test_killed_study_continues_without_repeating_finished_runs(tmp_path):
    recipe = write_recipe(tmp_path / "study.yaml", STUDY)
    whole = tmp_path / "whole"
    assert kdlab("study", recipe, "--out", whole, "--quiet").returncode == 0
    cut = tmp_path / "cut"
    proc = start("study", recipe, "--out", cut, "--quiet")
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:  # kill inside the third run (ls-s0), two runs finished
        if (cut / "ls-s0" / "metrics.jsonl").exists():
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = {name: (cut / name / "summary.json").stat().st_mtime_ns for name in ("ce-s0", "ce-s1")}
    for name in finished:
        assert json.loads((cut / name / "summary.json").read_text())["status"] == "completed"
    assert kdlab("study", recipe, "--out", cut, "--quiet").returncode == 0
    for name, mtime in finished.items():
        assert (cut / name / "summary.json").stat().st_mtime_ns == mtime, f"{name} was run again"
    for name in ("ce-s0", "ce-s1", "ls-s0", "ls-s1"):
        assert_same_result(cut / name, whole / name)


def test_killed_pipeline_continues_without_repeating_finished_stages(tmp_path):
    pipeline = {"base": {k: v for k, v in RECIPE.items() if k != "method"},
                "stages": {"teacher": {"method": {"name": "ce"}},
                           "student": {"method": {"name": "kd", "teacher": "@teacher", "alpha": 0.9, "tau": 4.0}}}}
    recipe = write_recipe(tmp_path / "pipeline.yaml", pipeline)
    whole = tmp_path / "whole"
    assert kdlab("pipeline", recipe, "--out", whole, "--quiet").returncode == 0
    cut = tmp_path / "cut"
    killed = kdlab("pipeline", recipe, "--out", cut, "--quiet", fault="kill@state.json#6")  # epoch 2 of the student
    assert killed.returncode == -signal.SIGKILL
    teacher_mtime = (cut / "teacher" / "summary.json").stat().st_mtime_ns
    assert kdlab("pipeline", recipe, "--out", cut, "--quiet").returncode == 0
    assert (cut / "teacher" / "summary.json").stat().st_mtime_ns == teacher_mtime
    for name in ("teacher", "student"):
        assert_same_result(cut / name, whole / name)
