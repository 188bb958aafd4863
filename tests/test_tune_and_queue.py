"""kdlab tune (Optuna search with workers, pruning, exact budget, crash retry, transfer) and kdlab study --storage
(a queue of runs drained by several workers), against SQLite and a real PostgreSQL server started on loopback."""

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import _launch as launch
import pytest
import yaml

RECIPE = {
    "data": {"source": "digits", "val_size": 0.1},
    "model": {"name": "cnn_small8"},
    "method": {"name": "ls", "eps": 0.1},
    "train": {"epochs": 3, "batch_size": 32},
    "optim": {"lr": 0.05, "nesterov": True},
    "schedule": {"name": "cosine"},
    "runtime": {"progress": False, "threads": 1},
}
SPACE = {"method.eps": {"low": 0.01, "high": 0.4, "log": True}, "optim.lr": {"choices": [0.02, 0.05, 0.1]}}
STUDY = {
    "seeds": 2, "baseline": "ce",
    "base": {k: v for k, v in RECIPE.items() if k != "method"},
    "stages": {"teacher": {"method": {"name": "ce"}, "shared": True}, "ce": {"method": {"name": "ce"}},
               "kd": {"method": {"name": "kd", "teacher": "@teacher"}}},
}


def write(path: Path, raw: dict) -> Path:
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def kdlab(tmp_path, *args, **extra):
    """``kdlab ARGS`` as its own process (forked from a preloaded server, see tests/_launch.py)."""
    return launch.run(*args, env=launch.environment(KDLAB_CACHE_DIR=tmp_path / "cache", **extra), timeout=600)


def start(tmp_path, *args, **extra):
    return launch.start(*args, env=launch.environment(KDLAB_CACHE_DIR=tmp_path / "cache", **extra))


def trials_of(url: str, name: str):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    return optuna.load_study(study_name=name, storage=url).get_trials(deepcopy=False)


def wait_for(condition, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


# --------------------------------------------------------------------------------------------------- PostgreSQL


def _postgres_binaries() -> Path | None:
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (candidate / "initdb").is_file():
            return candidate
    found = shutil.which("initdb")
    return Path(found).parent if found else None


@pytest.fixture(scope="module")
def postgres():
    """A throw-away PostgreSQL server on 127.0.0.1 (trust auth), run as the postgres user when we are root."""
    bin_dir = _postgres_binaries()
    if bin_dir is None:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL is not installed (.ci/run installs Debian's postgresql package)")
        pytest.skip("needs PostgreSQL's initdb and pg_ctl")
    folder = Path(tempfile.mkdtemp(prefix="kdlab-pg-", dir="/tmp"))
    os.chmod(folder, 0o755)
    as_user = []
    if os.geteuid() == 0:
        import pwd

        user = pwd.getpwnam("postgres")
        os.chown(folder, user.pw_uid, user.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = folder / "data"
    subprocess.run(as_user + [str(bin_dir / "initdb"), "-D", str(data), "--auth=trust", "-U", "kdlab"], check=True,
                   capture_output=True)
    subprocess.run(as_user + [str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(folder / "log"), "-w", "-o",
                              f"-p {port} -k {folder} -c listen_addresses=127.0.0.1", "start"], check=True,
                   capture_output=True)
    try:
        subprocess.run(as_user + [str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "kdlab",
                                  "kdlab"], check=True, capture_output=True)
        yield f"postgresql://kdlab@127.0.0.1:{port}/kdlab"
    finally:
        subprocess.run(as_user + [str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


# ---------------------------------------------------------------------------------------------------------- tune


def test_tune_with_two_workers_runs_exactly_the_budget(tmp_path):
    recipe, space = write(tmp_path / "r.yaml", RECIPE), write(tmp_path / "s.yaml", SPACE)
    out = tmp_path / "tune"
    result = kdlab(tmp_path, "tune", recipe, "--space", space, "--trials", 5, "--workers", 2, "--out", out,
                   "--startup", 2, "--quiet")
    assert result.returncode == 0, result.stderr
    record = json.loads((out / "tune.json").read_text())
    finished = [r for r in record["trials_run"] if r["state"] in ("COMPLETE", "PRUNED")]
    assert len(finished) == 5
    runs = sorted(p.name for p in out.glob("trial-*"))
    assert len(runs) == 5 and runs == sorted(Path(r["run"]).name for r in finished)
    for row in finished:
        summary = json.loads((Path(row["run"]) / "summary.json").read_text())
        assert summary["status"] == ("completed" if row["state"] == "COMPLETE" else "pruned")
        config = yaml.safe_load((Path(row["run"]) / "config.yaml").read_text())
        assert config["method"]["eps"] == pytest.approx(row["params"]["method.eps"])
        assert config["optim"]["lr"] == row["params"]["optim.lr"]
        if row["state"] == "COMPLETE":
            assert row["value"] == summary["final"]["val_acc"]  # the objective is validation accuracy
    best = record["best"]
    assert best["value"] == max(r["value"] for r in finished if r["state"] == "COMPLETE")
    assert "| trial | state | val acc |" in (out / "tune.md").read_text()


def test_tune_transfers_the_best_setting_to_other_models(tmp_path):
    recipe = write(tmp_path / "r.yaml", {**RECIPE, "train": {**RECIPE["train"], "epochs": 2}})
    space = write(tmp_path / "s.yaml", {"method.eps": {"choices": [0.05, 0.2]}})
    out = tmp_path / "tune"
    result = kdlab(tmp_path, "tune", recipe, "--space", space, "--trials", 2, "--out", out, "--quiet",
                   "--transfer-models", "resnet8", "--tune-transfer")
    assert result.returncode == 0, result.stderr
    record = json.loads((out / "tune.json").read_text())
    entry = record["transfer"][0]
    assert entry["model"] == "resnet8" and set(entry) >= {"transferred", "untuned", "tuned"}
    assert entry["transferred"]["params"] == record["best"]["params"]
    assert yaml.safe_load((Path(entry["transferred"]["run"]) / "config.yaml").read_text())["model"]["name"] == "resnet8"
    assert "## Transfer of the best setting to other models" in (out / "tune.md").read_text()


def test_killed_tune_worker_trial_is_retried_once_and_the_budget_kept(tmp_path):
    recipe = write(tmp_path / "r.yaml", {**RECIPE, "train": {**RECIPE["train"], "epochs": 4, "batch_size": 16}})
    space = write(tmp_path / "s.yaml", SPACE)
    out = tmp_path / "tune"
    url = f"sqlite:///{out}/optuna.db"
    out.mkdir()
    common = ("tune", recipe, "--space", space, "--trials", 4, "--out", out, "--storage", url, "--quiet",
              "--startup", 10, "--heartbeat", 1, "--grace", 8)
    victim = start(tmp_path, *common)
    assert wait_for(lambda: any((p / "metrics.jsonl").exists() for p in out.glob("trial-*")))
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    survivor = kdlab(tmp_path, *common)
    assert survivor.returncode == 0, survivor.stderr
    trials = [t for t in trials_of(url, "kdlab-tune-r") if not t.user_attrs.get("surplus")]
    done = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(done) == 4
    failed = [t for t in trials if t.state.name == "FAIL"]
    assert len(failed) == 1  # the killed worker's trial, failed after its heartbeat stopped...
    retries = [t for t in done if t.user_attrs.get("retry_of") == failed[0].number]
    assert len(retries) == 1 and retries[0].params == failed[0].params  # ...and run again once, same parameters


def test_bad_search_spaces_are_one_line_errors(tmp_path):
    recipe = write(tmp_path / "r.yaml", RECIPE)
    for space, fragment in [({"method.eps": {"low": 0.5, "high": 0.1}}, "low (0.5) must be below high"),
                            ({"method.eps": {"low": 0.1, "high": 1.5}}, "method.eps = 1.5 does not give a valid"),
                            ({"optim.nope": {"choices": [1]}}, "unknown key 'optim.nope'"),
                            ({"method.eps": [0.1]}, "give a mapping"),
                            ({"method.eps": {"low": 0, "high": 1, "log": True}}, "log distribution needs low > 0")]:
        result = kdlab(tmp_path, "tune", recipe, "--space", write(tmp_path / "s.yaml", space), "--trials", 2,
                       "--out", tmp_path / "never")
        assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert fragment in result.stderr, result.stderr
    no_val = write(tmp_path / "nv.yaml", {**RECIPE, "data": {"source": "digits"}})
    result = kdlab(tmp_path, "tune", no_val, "--space", write(tmp_path / "s.yaml", SPACE), "--trials", 2)
    assert result.returncode == 2 and "needs a validation split" in result.stderr


# --------------------------------------------------------------------------------------------- study --storage


def _train_count(log: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for line in log.read_text().splitlines():
        if line.endswith("/config.yaml"):
            name = Path(line).parent.name
            counts[name] = counts.get(name, 0) + 1
    return counts


def drain_with_two_workers(tmp_path, url: str, kill_one: bool):
    recipe = write(tmp_path / "study.yaml", STUDY)
    out = tmp_path / "study"
    out.mkdir()
    (tmp_path / "log").mkdir()
    common = ("study", recipe, "--out", out, "--storage", url, "--quiet", "--heartbeat", 1, "--grace", 8)
    first = start(tmp_path, *common, KDLAB_WRITE_LOG=str(tmp_path / "log"))
    second = start(tmp_path, *common, KDLAB_WRITE_LOG=str(tmp_path / "log"))
    killed_run = None
    if kill_one:  # kill the first worker inside one of its runs
        started = wait_for(lambda: any((p / "metrics.jsonl").exists() and not (p / "predictions").exists()
                                       for p in out.iterdir() if p.is_dir()) or first.poll() is not None)
        assert started and first.poll() is None, (first.poll(), first.output()[1], second.poll())
        first.send_signal(signal.SIGKILL)
        first.wait()
        killed_run = [p.name for p in out.iterdir() if p.is_dir() and not (p / "predictions").exists()]
    for proc in ([second] if kill_one else [first, second]):
        assert proc.wait(timeout=600) == 0, proc.output()[1]
    if kill_one:  # the killed worker's run was given back and finished by the survivor
        restarted = kdlab(tmp_path, *common)  # a worker that joins late finds nothing left and says so
        assert restarted.returncode == 0, restarted.stderr
    names = ["teacher", "ce-s0", "kd-s0", "ce-s1", "kd-s1"]
    for name in names:
        assert json.loads((out / name / "summary.json").read_text())["status"] == "completed", name
    counts = _train_count(tmp_path / "log" / "writes-rank0.txt")
    # Every run is started once, except the killed one: it resumes from its checkpoint, or, when the kill came
    # between its first epoch's metrics line and its first checkpoint, starts over (a second config.yaml).
    assert set(counts) == set(names), counts
    extra = {name: n for name, n in counts.items() if n != 1}
    assert all(n == 2 and name in (killed_run or []) for name, n in extra.items()), (counts, killed_run)
    study = json.loads((out / "study.json").read_text())
    assert [r["status"] for r in study["runs"]] == ["completed"] * 5
    return killed_run


def test_study_queue_with_two_sqlite_workers_trains_every_run_once(tmp_path):
    drain_with_two_workers(tmp_path, f"sqlite:///{tmp_path}/queue.db", kill_one=False)


def test_study_queue_survives_a_killed_sqlite_worker(tmp_path):
    killed = drain_with_two_workers(tmp_path, f"sqlite:///{tmp_path}/queue.db", kill_one=True)
    assert killed


def test_study_queue_on_postgresql_survives_a_killed_worker(tmp_path, postgres):
    killed = drain_with_two_workers(tmp_path, postgres, kill_one=True)
    assert killed


def test_tune_on_postgresql_with_two_workers(tmp_path, postgres):
    recipe = write(tmp_path / "r.yaml", {**RECIPE, "train": {**RECIPE["train"], "epochs": 2}})
    space = write(tmp_path / "s.yaml", SPACE)
    out = tmp_path / "tune"
    result = kdlab(tmp_path, "tune", recipe, "--space", space, "--trials", 4, "--workers", 2, "--out", out,
                   "--storage", postgres, "--study-name", "pg-tune", "--quiet")
    assert result.returncode == 0, result.stderr
    trials = [t for t in trials_of(postgres, "pg-tune") if not t.user_attrs.get("surplus")]
    assert len([t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]) == 4
    assert json.loads((out / "tune.json").read_text())["storage"].startswith("postgresql://kdlab")


def test_unreachable_storage_is_one_line(tmp_path):
    recipe = write(tmp_path / "study.yaml", STUDY)
    result = kdlab(tmp_path, "study", recipe, "--out", tmp_path / "s", "--storage",
                   "postgresql://nobody:secret@127.0.0.1:9/none")
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "cannot open the storage" in result.stderr and "secret" not in result.stderr


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_checkpoints_the_running_trials_and_the_same_command_continues_them(tmp_path, workers):
    """SIGTERM to kdlab tune: the running trials' runs checkpoint and end interrupted (exit 143, no worker left);
    the same command again continues each interrupted run in its own folder, keeps the budget, and the continued
    run ends exactly as its recipe trained without interruption."""
    recipe = write(tmp_path / "r.yaml", {**RECIPE, "train": {**RECIPE["train"], "epochs": 4, "batch_size": 16}})
    space, out = write(tmp_path / "s.yaml", SPACE), tmp_path / "tune"
    common = ("tune", recipe, "--space", space, "--trials", 2, "--workers", workers, "--out", out, "--quiet",
              "--startup", 10)
    proc = start(tmp_path, *common)
    assert wait_for(lambda: any((p / "metrics.jsonl").exists() for p in out.glob("trial-*")) or proc.poll() is not None)
    time.sleep(0.5)
    assert proc.poll() is None, proc.output()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 128 + signal.SIGTERM, proc.output()
    assert "run the same command again to continue" in proc.output()[1]
    states = {p.parent.name: json.loads(p.read_text())["status"] for p in out.glob("trial-*/summary.json")}
    assert "interrupted" in states.values() and "completed" not in states.values(), states
    assert not list(out.glob("trial-*/checkpoint/*.tmp"))

    again = kdlab(tmp_path, *common)
    assert again.returncode == 0, again.stderr
    trials = [t for t in trials_of(f"sqlite:///{out}/optuna.db", "kdlab-tune-r") if not t.user_attrs.get("surplus")]
    done = [t for t in trials if t.state.name == "COMPLETE"]
    assert len(done) == 2 and sorted(p.name for p in out.glob("trial-*")) == sorted(
        Path(t.user_attrs["run"]).name for t in done), "no new folder for a continued trial"
    continued = [t for t in done if t.user_attrs.get("continues")]
    stopped = [t for t in trials if t.state.name == "FAIL"]
    assert continued and len(continued) == len(stopped) == sum(s == "interrupted" for s in states.values())
    for trial in continued:
        run = Path(trial.user_attrs["continues"])
        assert trial.params == next(t.params for t in stopped if t.user_attrs["interrupted"] == str(run))
        assert json.loads((run / "summary.json").read_text())["status"] == "completed"
        reference = kdlab(tmp_path, "train", run / "config.yaml", "--out", tmp_path / f"ref-{run.name}", "--quiet")
        assert reference.returncode == 0, reference.stderr
        a, b = (json.loads((r / "summary.json").read_text()) for r in (run, tmp_path / f"ref-{run.name}"))
        assert a["final"] == b["final"] and a["best"] == b["best"]
