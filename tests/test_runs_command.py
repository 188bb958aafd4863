"""``kdlab runs`` and ``kdlab runs compare`` on real run directories: every state told right (running only while a
process really holds the lock, died when it was killed), unreadable files shown and not fatal, --json equal to
what the runs wrote, compare naming exactly the recipe keys that differ, and user errors in kdlab's one-line form."""

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from _cli import assert_user_error, kdlab_main, write_recipe
from conftest import DIGITS_RECIPE

from kdlab.store.rundir import RunLock

ROOT = Path(__file__).resolve().parents[1]
LS = {**DIGITS_RECIPE, "method": {"name": "ls", "eps": 0.1}}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Real runs: a study folder of two ls runs differing only in eps, a kd student of the first, a diverged run."""
    root = tmp_path_factory.mktemp("runs-command")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KDLAB_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))
        recipe = write_recipe(root, LS)
        study = root / "runs" / "study"
        assert kdlab_main("train", recipe, "--out", study / "ls-a", "--quiet").returncode == 0
        assert kdlab_main("train", recipe, "method.eps=0.2", "--out", study / "ls-b", "--quiet").returncode == 0
        kd = write_recipe(root, {**LS, "method": {"name": "kd", "teacher": str(study / "ls-a"), "tau": 4.0}}, "kd.yaml")
        assert kdlab_main("train", kd, "--out", root / "runs" / "students" / "kd", "--quiet").returncode == 0
        diverging = write_recipe(root, {**LS, "optim": {"lr": 1.0e12}, "train": {"epochs": 1, "batch_size": 64}},
                                 "diverge.yaml")
        assert kdlab_main("train", diverging, "--out", root / "runs" / "failed", "--quiet").returncode == 1
    return root


@pytest.fixture
def runs(trained, tmp_path, monkeypatch):
    """A fresh copy of the trained runs plus the states a listing meets in the wild (made from copies of ls-a),
    with the working directory at its top, so rows name runs/...."""
    root = tmp_path / "top"
    shutil.copytree(trained / "runs", root / "runs")
    monkeypatch.chdir(root)
    base = root / "runs" / "study" / "ls-a"
    for name, status in (("interrupted", "interrupted"), ("died", "running"), ("running", "running")):
        copy = root / "runs" / "other" / name
        shutil.copytree(base, copy)
        summary = json.loads((copy / "summary.json").read_text())
        (copy / "summary.json").write_text(json.dumps({**summary, "status": status}))
    running = root / "runs" / "other" / "running"  # metrics.jsonl one epoch ahead of the summary's final record
    lines = (running / "metrics.jsonl").read_text().splitlines()
    (running / "metrics.jsonl").write_text(lines[0] + "\n")
    corrupt = root / "runs" / "other" / "corrupt"
    shutil.copytree(base, corrupt)
    (corrupt / "summary.json").write_text('{"status": "compl')
    truncated = root / "runs" / "other" / "truncated"
    shutil.copytree(base, truncated)
    text = (truncated / "metrics.jsonl").read_text()
    (truncated / "metrics.jsonl").write_text(text[: len(text) - 40])
    (root / "runs" / "other" / "not-started" / "checkpoint").mkdir(parents=True)
    (root / "runs" / "other" / "not-started" / ".lock").write_text("pid 1 on elsewhere")
    return root / "runs"


def listing(*args) -> list[dict]:
    result = kdlab_main("runs", *args, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def by_path(rows) -> dict:
    return {row["path"]: row for row in rows}


def read_run(path: Path) -> tuple[dict, list[dict], dict]:
    summary = json.loads((path / "summary.json").read_text())
    lines = [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]
    return summary, lines, yaml.safe_load((path / "config.yaml").read_text())


def test_every_state_is_told_right_and_nothing_unreadable_stops_the_listing(runs):
    (runs / "other" / "died" / ".lock").unlink()  # a copy without its lock file is died all the same
    with RunLock(runs / "other" / "running"):  # a live holder: this process, through its own descriptor
        locks = {path: path.read_bytes() for path in runs.rglob(".lock")}
        rows = by_path(listing())  # default folder: runs/
        assert {path: path.read_bytes() for path in runs.rglob(".lock")} == locks  # no lock written, none created
    states = {path: row["state"] for path, row in rows.items()}
    assert states == {
        "runs/study/ls-a": "completed", "runs/study/ls-b": "completed", "runs/students/kd": "completed",
        "runs/failed": "failed", "runs/other/interrupted": "interrupted", "runs/other/died": "died",
        "runs/other/running": "running", "runs/other/corrupt": "unreadable summary.json",
        "runs/other/truncated": "completed", "runs/other/not-started": "not started",
    }
    assert list(rows) == sorted(rows)
    assert rows["runs/other/running"]["lock_owner"] == f"pid {os.getpid()} on {os.uname().nodename}"
    assert rows["runs/other/died"]["hint"] == "kdlab train --resume runs/other/died"
    assert rows["runs/other/truncated"]["problems"] == ["unreadable metrics.jsonl line 2"]
    corrupt = rows["runs/other/corrupt"]
    assert corrupt["problems"] == ["unreadable summary.json"] and (corrupt["method"], corrupt["model"]) == ("ls", "cnn_small8")
    assert "diverged" in rows["runs/failed"]["error"] and rows["runs/failed"]["epoch"] == 0
    # once the holder lets go, the same run is seen as what it is: a run whose process is gone
    assert by_path(listing())["runs/other/running"]["state"] == "died"


def test_a_killed_training_process_turns_running_into_died(runs):
    run = runs / "other" / "died"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; from kdlab.store.rundir import RunLock; "
         "RunLock(Path(sys.argv[1])).acquire(); print('locked', flush=True); time.sleep(120)", str(run)],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    try:
        assert holder.stdout.readline().strip() == "locked"
        row = by_path(listing("runs/other"))["runs/other/died"]
        assert row["state"] == "running" and row["lock_owner"].startswith(f"pid {holder.pid} ")
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    row = by_path(listing("runs/other"))["runs/other/died"]
    assert row["state"] == "died" and row["lock_owner"].startswith(f"pid {holder.pid} ")  # the last owner, for the record


def test_json_rows_are_what_the_runs_wrote(runs):
    rows = by_path(listing("runs/study", "runs/students", "runs/other/running"))
    for path in ("runs/study/ls-a", "runs/study/ls-b", "runs/students/kd"):
        summary, lines, config = read_run(Path(path))
        row = rows[path]
        assert (row["method"], row["model"], row["dataset"], row["seed"]) == \
               (summary["method"], summary["model"], summary["dataset"], summary["seed"])
        assert row["epoch"] == summary["epochs_completed"] == len(lines) and row["epochs"] == summary["epochs"] == 2
        for key in ("test_acc", "test_ece", "test_nll"):
            assert row[key] == summary["final"][key] == lines[-1][key]
        assert row["wall_seconds"] == summary["wall_seconds"] and row["finished"] and row["started"]
    assert rows["runs/study/ls-a"]["teacher"] is None
    kd_config = read_run(Path("runs/students/kd"))[2]
    assert rows["runs/students/kd"]["teacher"] == Path(kd_config["method"]["teacher"]).name == "ls-a"
    # no process holds this one's lock, but its metrics.jsonl is the source while it claims to run; here it is
    # died, so the summary's final record speaks: check the running case by holding the lock
    with RunLock(Path("runs/other/running")):
        running = by_path(listing("runs/other/running"))["runs/other/running"]
    first = read_run(Path("runs/other/running"))[1][0]
    assert running["state"] == "running" and running["epoch"] == 1 and running["metrics_epoch"] == 1
    assert running["test_acc"] == first["test_acc"] and running["finished"] is None


def test_the_table_and_the_status_filter(runs):
    result = kdlab_main("runs")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split()[:6] == ["path", "state", "method", "model", "teacher", "epoch"]
    body = [line for line in lines[1:] if line.startswith("runs/")]
    assert [line.split()[0] for line in body] == sorted(line.split()[0] for line in body) and len(body) == 10
    kd = next(line for line in body if line.startswith("runs/students/kd"))
    summary = read_run(Path("runs/students/kd"))[0]
    assert "completed" in kd and " ls-a " in kd and "2/2" in kd and f"{summary['final']['test_acc']:.4f}" in kd
    assert "completed; unreadable metrics.jsonl line 2" in next(line for line in body if "truncated" in line)
    assert "kdlab train --resume" in result.stdout and "10 runs:" in result.stdout
    assert [row["path"] for row in listing("--status", "died")] == ["runs/other/died", "runs/other/running"]
    assert {row["state"] for row in listing("--status", "failed,not-started", "--status", "unreadable")} == \
           {"failed", "not started", "unreadable summary.json"}
    assert listing("runs/study", "--status", "interrupted") == []


def test_compare_names_exactly_the_differing_recipe_keys_and_draws_the_curves(runs, tmp_path):
    plot = tmp_path / "curves.png"
    result = kdlab_main("runs", "compare", "runs/study/ls-a", "runs/study/ls-b", "--plot", plot, "--json")
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["config_differences"] == [{"key": "method.eps", "values": [0.1, 0.2], "absent": [False, False]}]
    for run in record["runs"]:
        summary, lines, _ = read_run(Path(run["path"]))
        assert run["final"]["test_acc"] == summary["final"]["test_acc"] == lines[-1]["test_acc"]
        assert run["best"]["epoch"] == summary["best"]["epoch"] and run["best"]["by"] == summary["best_by"]
        assert run["best"]["test_acc"] == summary["best"]["test_acc"]
    assert plot.is_file() and plot.stat().st_size > 1000 and plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert record["plot"] == str(plot)

    table = kdlab_main("runs", "compare", "runs/study")  # a study folder: every run in it
    assert table.returncode == 0, table.stderr
    assert "config differences (1 key; ls-a | ls-b):" in table.stdout and "  method.eps: 0.1 | 0.2" in table.stdout
    assert table.stdout.splitlines()[0].split() == ["ls-a", "ls-b"]

    three = json.loads(kdlab_main("runs", "compare", "runs/study", "runs/students/kd", "--json").stdout)
    flat = [_flat(read_run(Path(run["path"]))[2]) for run in three["runs"]]
    differing = {key for key in set().union(*flat) if len({json.dumps(f.get(key, "<absent>")) for f in flat}) > 1}
    assert {item["key"] for item in three["config_differences"]} == differing
    assert {"method.name", "method.eps", "method.teacher", "method.tau"} <= differing
    eps = next(item for item in three["config_differences"] if item["key"] == "method.eps")
    assert eps["absent"] == [False, False, True]


def _flat(node, prefix=""):
    out = {}
    for key, value in node.items():
        if isinstance(value, dict) and value:
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def test_compare_shows_unreadable_runs_instead_of_failing(runs):
    result = kdlab_main("runs", "compare", "runs/study/ls-a", "runs/other/corrupt", "runs/other/not-started")
    assert result.returncode == 0, result.stderr
    assert "unreadable summary.json" in result.stdout and "not started" in result.stdout


@pytest.mark.parametrize("args, fragment", [
    (["runs/nowhere"], "runs/nowhere does not exist"),
    (["empty"], "no kdlab run directories under empty"),
    (["runs", "--status", "finished"], "unknown state 'finished'"),
    (["runs", "--metric", "val_acc"], "options of kdlab runs compare"),
    (["compare", "runs/study/ls-a"], "needs at least two runs"),
    (["compare", "runs/study/ls-a", "runs/nowhere"], "runs/nowhere does not exist"),
    (["compare", "runs/study", "--metric", "test_f1"], "none of the runs recorded 'test_f1'"),
    (["compare", "runs/study", "--plot", "curves.pdf"], "must be a .png file"),
])
def test_user_errors_are_one_line_with_status_2(runs, args, fragment):
    Path("empty").mkdir()
    assert_user_error(kdlab_main("runs", *args), fragment)


def test_no_runs_folder_is_an_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert_user_error(kdlab_main("runs"), "runs does not exist")
