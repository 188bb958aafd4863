"""Experiment tracking on real short runs (digits): what TensorBoard, MLflow and W&B hold, read back with each
tool's own reader and compared with the run's metrics.jsonl and summary.json.

The runs of the module are trained once each (module fixtures) and shared by the tests: a plain run (ls) with
every backend, a teacher and a KD student, an online run (dml, two resnet8 peers: cnn_small8 has no trunk to split),
and a run stopped after epoch 1 and resumed.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import yaml

from _cli import ROOT, assert_user_error, kdlab_main, write_recipe
from conftest import DIGITS_RECIPE
from kdlab.config import load_recipe
from kdlab.tracking import as_text, flatten
from kdlab.train.engine import RunStopped, resume, train

EVERY = 5  # per-step scalars every this many optimizer steps
STEP_TAGS = ("loss/total", "lr", "grad_norm", "images_per_second")
NOT_TERMS = ("train_loss", "train_acc", "train_images_per_second")


def recipe(method: dict, logging: dict, **sections) -> dict:
    raw = copy.deepcopy(DIGITS_RECIPE)
    raw.update({"method": method, "logging": {"every_steps": EVERY, **logging}}, **copy.deepcopy(sections))
    return raw


def train_quietly(raw: dict, out: Path, on_epoch=None) -> tuple[dict, str]:
    """Train in this process; the summary and what the run wrote to stderr."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        summary = train(load_recipe(raw=raw), out, quiet=True, on_epoch=on_epoch)
    return summary, err.getvalue()


def kdlab_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("kdlab:")]


def records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def loss_terms(run: Path) -> set[str]:
    """The loss terms a method logs: the train_<term> keys of metrics.jsonl."""
    return {key[len("train_"):] for key in records(run)[0] if key.startswith("train_") and key not in NOT_TERMS}


def numeric(record: dict) -> dict[str, float]:
    return {key: value for key, value in record.items()
            if isinstance(value, (int, float)) and not isinstance(value, bool)}


def _steps_from_events(run: Path) -> int:
    """Optimizer steps per epoch: the step epoch 1's record is logged at."""
    return scalars(events(run), "epoch/epoch")[0][0]


@pytest.fixture(scope="module")
def place(tmp_path_factory):
    """The module's folder, also the working directory (MLflow's default ./mlruns lands here), and a data cache."""
    root = tmp_path_factory.mktemp("tracking")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KDLAB_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))
        patch.chdir(root)
        yield root


# ------------------------------------------------------------------------------------------------ TensorBoard


def events(run: Path):
    """The run's TensorBoard directory as TensorBoard's own reader sees it (every event, nothing sampled away)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    accumulator.Reload()
    return accumulator


def scalars(accumulator, tag: str) -> list[tuple[int, float]]:
    return [(event.step, event.value) for event in accumulator.Scalars(tag)]


def check_tensorboard(run: Path) -> None:
    """Everything a completed run's event directory must hold, against metrics.jsonl, summary.json, config.yaml."""
    from tensorboard.plugins.hparams import plugin_data_pb2

    accumulator, history = events(run), records(run)
    summary = json.loads((run / "summary.json").read_text())
    tags = set(accumulator.Tags()["scalars"])
    terms = loss_terms(run)
    assert {tag for tag in tags if tag.startswith("loss/")} == {f"loss/{term}" for term in terms} | {"loss/total"}
    assert set(STEP_TAGS) <= tags
    per_epoch = _steps_from_events(run)
    total = per_epoch * len(history)
    for tag in [f"loss/{term}" for term in terms] + list(STEP_TAGS):
        assert [step for step, _ in scalars(accumulator, tag)] == list(range(EVERY, total + 1, EVERY)), tag
    for step, value in scalars(accumulator, "loss/total"):
        parts = sum(dict(scalars(accumulator, f"loss/{term}"))[step] for term in terms)
        assert value == pytest.approx(parts, rel=1e-5)
    # every numeric key of every epoch record, at the epoch's last step, as float32 holds it
    for key in set().union(*(numeric(record) for record in history)):
        expected = [((i + 1) * per_epoch, float(np.float32(record[key]))) for i, record in enumerate(history)
                    if key in numeric(record)]
        assert scalars(accumulator, f"epoch/{key}") == expected, key
    assert {tag for tag in tags if tag.startswith("epoch/")} == \
        {f"epoch/{key}" for key in set().union(*(numeric(record) for record in history))}
    # the end-of-run figures, the config, the hparams
    for tag in ("test/reliability_diagram", "test/confusion_matrix"):
        (image,) = accumulator.Images(tag)
        assert image.step == total and image.width > 200 and image.height > 200
        assert image.encoded_image_string.startswith(b"\x89PNG")
    (text,) = accumulator.Tensors("config/text_summary")
    config = yaml.safe_load(textwrap.dedent(text.tensor_proto.string_val[0].decode()))
    assert config == yaml.safe_load((run / "config.yaml").read_text())
    content = accumulator.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    assert start.hparams["method"].string_value == summary["method"]
    assert start.hparams["model"].string_value == summary["model"]
    assert start.hparams["seed"].number_value == summary["seed"]
    for key, value in summary["method_params"].items():
        held = start.hparams[f"method.{key}"]
        assert (held.string_value if isinstance(value, str) else held.bool_value if isinstance(value, bool)
                else held.number_value) == value, key
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    assert {info.name.tag for info in experiment.metric_infos} == {"hparam/test_acc", "hparam/test_nll",
                                                                    "hparam/test_ece"}
    for metric in ("test_acc", "test_nll", "test_ece"):
        assert scalars(accumulator, f"hparam/{metric}") == [(total, float(np.float32(summary["final"][metric])))]


# ------------------------------------------------------------------------------------------------ MLflow


def _mlflow_run(run: Path):
    """The client of the store a run logged to (from its tracking.json) and its MLflow run."""
    from mlflow.tracking import MlflowClient

    stored = json.loads((run / "tracking.json").read_text())["mlflow"]
    client = MlflowClient(tracking_uri=stored["tracking_uri"])
    return client, client.get_run(stored["run_id"])


def metric_history(client, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def check_mlflow(run: Path, uri: str) -> None:
    """The MLflow run of a completed kdlab run: params = the config, epoch metrics = metrics.jsonl (exactly), step
    metrics = TensorBoard's, status FINISHED, kdlab tags, summary.json and config.yaml as artifacts."""
    from mlflow.artifacts import download_artifacts

    from kdlab.tracking.mlflow import metric_name
    from kdlab.version import __version__

    client, got = _mlflow_run(run)
    assert json.loads((run / "tracking.json").read_text())["mlflow"]["tracking_uri"] == uri
    run_id, history = got.info.run_id, records(run)
    assert got.info.status == "FINISHED"
    assert got.data.tags["kdlab.status"] == "completed" and got.data.tags["kdlab.version"] == __version__
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert got.data.tags["kdlab.method"] == config["method"]["name"]
    assert got.data.params == {key: as_text(value) for key, value in flatten(config).items()}
    per_epoch = _steps_from_events(run)
    keys = set().union(*(numeric(record) for record in history))
    for key in keys:
        expected = [((i + 1) * per_epoch, float(record[key])) for i, record in enumerate(history) if key in record]
        assert metric_history(client, run_id, metric_name(f"epoch/{key}")) == expected, key
    accumulator = events(run)
    step_tags = [f"loss/{term}" for term in loss_terms(run)] + list(STEP_TAGS)
    for tag in step_tags:
        held = [(step, float(np.float32(value))) for step, value in metric_history(client, run_id, tag)]
        assert held == scalars(accumulator, tag), tag
    assert set(got.data.metrics) == {metric_name(f"epoch/{key}") for key in keys} | set(step_tags)
    assert {artifact.path for artifact in client.list_artifacts(run_id)} == {"summary.json", "config.yaml"}
    copy_of = Path(download_artifacts(run_id=run_id, artifact_path="summary.json", tracking_uri=uri,
                                      dst_path=str(run.parent / f"{run.name}-artifacts")))
    assert json.loads(copy_of.read_text()) == json.loads((run / "summary.json").read_text())


@pytest.fixture(scope="module")
def mlflow_server(place):
    """A real MLflow tracking server on a free local port (SQLite backend, artifacts served by it), stopped at the
    end of the module; skipped only when it cannot start here."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    folder = place / "mlflow-server"
    folder.mkdir()
    log = (folder / "server.log").open("wb")
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{folder / 'server.db'}",
               "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # no job-runner processes
    try:
        server = subprocess.Popen(command, cwd=folder, stdout=log, stderr=subprocess.STDOUT, env=env,
                                  start_new_session=True)
    except OSError as error:
        pytest.skip(f"the mlflow server cannot start on this machine: {error}")
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    try:
        while True:
            if server.poll() is not None:
                tail = (folder / "server.log").read_text(errors="replace")[-500:]
                pytest.skip(f"the mlflow server exited with {server.returncode} on start: {tail}")
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.skip("the mlflow server did not answer /health within 120 s on this machine")
            time.sleep(0.25)
        yield url
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()
        log.close()


# ------------------------------------------------------------------------------------------------ W&B


def wandb_records(offline_run: Path) -> list[dict]:
    """The records of an offline run's .wandb transaction log, through wandb's own reader (``wandb leet inspect
    --json``, the wandb-core tool that decodes the log)."""
    (log,) = offline_run.glob("run-*.wandb")
    result = subprocess.run([sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(log)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


def wandb_sessions(run: Path) -> list[list[dict]]:
    """The records of each offline session of the run (one folder per session, oldest first)."""
    run_id = json.loads((run / "tracking.json").read_text())["wandb"]["run_id"]
    # offline-run-<time>-<id>, with -1, -2... when a session of the same run starts within the same second
    named = [(re.fullmatch(rf"offline-run-(\d{{8}}_\d{{6}})-{run_id}(?:-(\d+))?", p.name), p)
             for p in (run / "wandb").glob("offline-run-*")]
    folders = [p for _, p in sorted(((m.group(1), int(m.group(2) or 0)), p) for m, p in named if m)]
    assert folders, f"no offline run of {run_id} under {run / 'wandb'}"
    return [wandb_records(folder) for folder in folders]


def wandb_history(sessions: list[list[dict]]) -> dict[int, dict]:
    """step -> the history row logged at it, over every session; a step logged twice fails."""
    rows: dict[int, dict] = {}
    for session in sessions:
        for record in session:
            if record["type"] == "history":
                item = record["history"]["item"]
                assert item["_step"] not in rows, f"step {item['_step']} logged twice"
                rows[item["_step"]] = item
    return rows


def check_wandb(run: Path, project: str = "kdlab", sessions: int = 1) -> None:
    """The offline W&B run: never online, config = config.yaml, history = metrics.jsonl (exactly) and the step
    scalars TensorBoard holds, summary with the status and final metrics, exit code 0."""
    found = wandb_sessions(run)
    assert len(found) == sessions
    history, summary = wandb_history(found), json.loads((run / "summary.json").read_text())
    for session in found:
        (start,) = [record["run"] for record in session if record["type"] == "run"]
        assert start["project"] == project and start["telemetry"]["feature"]["offline"] is True
        config = {key: value for key, value in start["config"]["update"].items() if key != "_wandb"}
        assert config == yaml.safe_load((run / "config.yaml").read_text())
    records_ = records(run)
    per_epoch = _steps_from_events(run)
    for key in set().union(*(numeric(record) for record in records_)):
        expected = [((i + 1) * per_epoch, float(record[key])) for i, record in enumerate(records_) if key in record]
        assert [(step, row[f"epoch/{key}"]) for step, row in sorted(history.items()) if f"epoch/{key}" in row] == \
            expected, key
    accumulator = events(run)
    for tag in [f"loss/{term}" for term in loss_terms(run)] + list(STEP_TAGS):
        held = [(step, float(np.float32(row[tag]))) for step, row in sorted(history.items()) if tag in row]
        assert held == scalars(accumulator, tag), tag
    final = {}
    for record in found[-1]:
        if record["type"] == "summary":
            final.update(record["summary"].get("update") or {})
    assert final["status"] == "completed" and final["final/test_acc"] == summary["final"]["test_acc"]
    exits = [record["exit"] for record in found[-1] if record["type"] == "exit"]
    assert exits and exits[-1].get("exit_code", 0) == 0


# ------------------------------------------------------------------------------------------------ the runs

#: every backend: MLflow at its default (the file store ./mlruns of the working directory), W&B offline
PLAIN_LOGGING = {"mlflow": True, "wandb": True}


@pytest.fixture(scope="module")
def plain(place):
    out = place / "study" / "plain"
    summary, stderr = train_quietly(recipe({"name": "ls", "eps": 0.1}, PLAIN_LOGGING), out)
    return out, summary, stderr


@pytest.fixture(scope="module")
def teacher(place):
    """A one-epoch ce teacher whose TensorBoard writer fails (a full disk) at its second step log."""
    from kdlab.tracking.tensorboard import TensorBoardTracker

    calls = []
    original = TensorBoardTracker.log_step

    def failing(self, step, values):
        calls.append(step)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        original(self, step, values)

    out = place / "teacher"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(TensorBoardTracker, "log_step", failing)
        summary, stderr = train_quietly(recipe({"name": "ce"}, {}, train={"epochs": 1, "batch_size": 64}), out)
    return out, summary, stderr, calls


@pytest.fixture(scope="module")
def kd(place, teacher):
    out = place / "study" / "kd"
    logging = {"mlflow": True, "mlflow_uri": f"sqlite:///{place / 'kd-mlflow.db'}"}
    summary, stderr = train_quietly(recipe({"name": "kd", "teacher": str(teacher[0])}, logging), out)
    return out, summary, stderr


@pytest.fixture(scope="module")
def online(place, mlflow_server):
    out = place / "study" / "dml"
    logging = {"mlflow": True, "mlflow_uri": mlflow_server, "wandb": True, "wandb_project": "online"}
    summary, stderr = train_quietly(recipe({"name": "dml"}, logging, model={"name": "resnet8"}), out)
    return out, summary, stderr


@pytest.fixture(scope="module")
def resumed(place, plain):
    """The plain run's recipe, stopped after epoch 1 (status interrupted), then resumed to the end."""
    out = place / "study" / "resumed"

    def stop_after_first(record):
        if record["epoch"] == 1:
            raise RunStopped("interrupted", "stopped by the test after epoch 1")

    with pytest.raises(RunStopped):
        train_quietly(recipe({"name": "ls", "eps": 0.1}, PLAIN_LOGGING), out, on_epoch=stop_after_first)
    first_session = {"tensorboard": {p.name for p in (out / "tensorboard").iterdir()},
                     "tracking": json.loads((out / "tracking.json").read_text())}
    first_session["mlflow_status"] = _mlflow_run(out)[1].info.status
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        summary = resume(out, quiet=True)
    return out, summary, err.getvalue(), first_session


# ------------------------------------------------------------------------------------------------ TensorBoard tests


def test_plain_run_tensorboard_holds_every_scalar_figure_config_and_hparams(plain):
    out, summary, stderr = plain
    assert summary["status"] == "completed" and kdlab_lines(stderr) == []
    assert loss_terms(out) == {"ce", "smoothing"}
    check_tensorboard(out)


def test_kd_run_tensorboard_logs_the_distillation_terms(kd):
    out, summary, stderr = kd
    assert summary["status"] == "completed" and kdlab_lines(stderr) == []
    assert {"kd"} <= loss_terms(out)
    check_tensorboard(out)


def test_online_run_tensorboard_logs_every_peer_metric(online):
    out, summary, stderr = online
    assert summary["status"] == "completed" and kdlab_lines(stderr) == []
    assert "test_acc@peer2" in records(out)[-1]
    check_tensorboard(out)


def test_a_tracker_that_fails_warns_once_and_the_run_finishes(teacher):
    out, summary, stderr, calls = teacher
    assert summary["status"] == "completed"
    (line,) = kdlab_lines(stderr)
    assert line.startswith("kdlab: warning: tensorboard tracking failed in log_step (OSError: [Errno 28] No space")
    assert len(calls) == 2  # switched off: asked no more
    accumulator = events(out)
    assert [step for step, _ in scalars(accumulator, "loss/ce")] == [EVERY]
    assert accumulator.Tags()["images"] == [] and "epoch/test_acc" not in accumulator.Tags()["scalars"]


def test_resumed_run_continues_the_same_tensorboard_dir_without_duplicates(plain, resumed):
    out, summary, stderr, first_session = resumed
    assert summary["status"] == "completed" and kdlab_lines(stderr) == []
    files = {p.name for p in (out / "tensorboard").iterdir()}
    assert first_session["tensorboard"] < files and len(files) == 2  # the same folder, one more event file
    check_tensorboard(out)
    # the steps are the uninterrupted run's, once each, with its values (kdlab resumes bit-identically)
    reference, continued = events(plain[0]), events(out)
    for tag in ("loss/ce", "loss/smoothing", "lr", "grad_norm", "epoch/train_loss", "epoch/test_acc"):
        assert scalars(continued, tag) == scalars(reference, tag), tag


def test_purge_hides_what_a_killed_session_logged_past_its_checkpoint(tmp_path):
    """A session killed after logging steps 1..8 with its checkpoint at step 5; the resumed session logs 6..10
    again: TensorBoard's reader shows each step once, 1..5 from the first session and 6..10 from the second."""
    from types import SimpleNamespace

    from kdlab.tracking import Trackers
    from kdlab.tracking.tensorboard import TensorBoardTracker

    settings = SimpleNamespace(every_steps=1)
    first = Trackers([TensorBoardTracker(settings, tmp_path)], 1)
    first.start(config={"seed": 0}, run_dir=tmp_path, resumed=False, step=0)
    for step in range(1, 9):
        first.log_step(step, {"loss/ce": 1.0})
    first.log_epoch(1, 5, {"epoch": 1})  # flushes: the events are on disk, as a killed run leaves them
    first.backends[0]._writer.flush()
    second = Trackers([TensorBoardTracker(settings, tmp_path)], 1)
    second.start(config={"seed": 0}, run_dir=tmp_path, resumed=True, step=5)
    for step in range(6, 11):
        second.log_step(step, {"loss/ce": 2.0})
    second.finish(status="interrupted", summary={}, run_dir=tmp_path)
    accumulator = events(tmp_path)
    assert scalars(accumulator, "loss/ce") == [(s, 1.0) for s in range(1, 6)] + [(s, 2.0) for s in range(6, 11)]
    assert scalars(accumulator, "epoch/epoch") == [(5, 1.0)]
    assert len(accumulator.Tensors("config/text_summary")) == 1
    first.backends[0].close()


def test_a_run_that_does_not_ask_imports_and_writes_no_tracker(tmp_path):
    """In a fresh interpreter: tensorboard: auto without the package (blocked) and tensorboard: false train
    without importing any tracker library and without a tensorboard folder."""
    script = textwrap.dedent(f"""
        import copy, json, sys
        sys.modules["tensorboard"] = None  # as if not installed
        from kdlab.config import load_recipe
        from kdlab.train.engine import train
        raw = {({**DIGITS_RECIPE, "train": {"epochs": 1, "batch_size": 64}})!r}
        raw["data"]["train_size"] = 200
        train(load_recipe(raw={{**raw, "logging": {{"tensorboard": "auto"}}}}), "auto", quiet=True)
        del sys.modules["tensorboard"]
        train(load_recipe(raw={{**raw, "logging": {{"tensorboard": False}}}}), "off", quiet=True)
        loaded = sorted(name for name in sys.modules if name.split(".")[0] in ("tensorboard", "mlflow", "wandb")
                        or name.startswith("torch.utils.tensorboard"))
        print(json.dumps(loaded))
    """)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "KDLAB_CACHE_DIR": str(tmp_path / "cache")}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1]) == []
    for run in ("auto", "off"):
        assert (tmp_path / run / "summary.json").is_file()
        assert not (tmp_path / run / "tensorboard").exists() and not (tmp_path / run / "tracking.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["auto", "cache", "off"]


def test_an_unknown_logging_key_is_a_one_line_error(tmp_path, place):
    path = write_recipe(tmp_path, recipe({"name": "ce"}, {"tensorbord": True}))
    assert_user_error(kdlab_main("train", path, "--out", tmp_path / "run"), "logging", "tensorbord")
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------------------------------------ MLflow tests


def test_plain_run_mlflow_file_store_in_the_working_directory(place, plain):
    out, summary, stderr = plain
    assert kdlab_lines(stderr) == []
    check_mlflow(out, (place / "mlruns").resolve().as_uri())


def test_kd_run_mlflow_sqlite_store(place, kd):
    check_mlflow(kd[0], f"sqlite:///{place / 'kd-mlflow.db'}")


def test_online_run_mlflow_tracking_server(online, mlflow_server):
    out, summary, stderr = online
    assert kdlab_lines(stderr) == [] and "View run" not in stderr
    check_mlflow(out, mlflow_server)


def test_resumed_run_continues_the_same_mlflow_run(place, plain, resumed):
    out, summary, stderr, first_session = resumed
    assert first_session["mlflow_status"] == "KILLED"  # interrupted after epoch 1
    assert json.loads((out / "tracking.json").read_text()) == first_session["tracking"]
    check_mlflow(out, (place / "mlruns").resolve().as_uri())
    client, got = _mlflow_run(out)
    reference_client, reference = _mlflow_run(plain[0])
    for key in ("loss/ce", "lr", "grad_norm", "epoch/train_loss", "epoch/test_acc"):
        assert metric_history(client, got.info.run_id, key) == \
            metric_history(reference_client, reference.info.run_id, key), key


def test_mlflow_resume_never_logs_a_step_twice(tmp_path):
    """A session killed after logging steps 1..8 (checkpoint at step 5) and resumed: MLflow cannot delete points,
    so the resumed session logs only past what the store holds; every step once, the same run, FINISHED."""
    from types import SimpleNamespace

    from kdlab.tracking import Trackers
    from kdlab.tracking.mlflow import MlflowTracker

    uri = (tmp_path / "store").as_uri()
    settings = SimpleNamespace(mlflow_uri=uri, mlflow_experiment="unit", every_steps=1)
    first = Trackers([MlflowTracker(settings, tmp_path)], 1)
    first.start(config={"seed": 0}, run_dir=tmp_path, resumed=False, step=0)
    first_id = json.loads((tmp_path / "tracking.json").read_text())["mlflow"]["run_id"]
    for step in range(1, 9):
        first.log_step(step, {"loss/ce": 1.0})
    second = Trackers([MlflowTracker(settings, tmp_path)], 1)
    second.start(config={"seed": 0}, run_dir=tmp_path, resumed=True, step=5)
    for step in range(6, 11):
        second.log_step(step, {"loss/ce": 2.0})
    second.finish(status="completed", summary={}, run_dir=tmp_path)
    client, got = _mlflow_run(tmp_path)
    assert got.info.run_id == first_id
    assert metric_history(client, got.info.run_id, "loss/ce") == [(s, 1.0) for s in range(1, 9)] + [(9, 2.0),
                                                                                                    (10, 2.0)]
    assert got.info.status == "FINISHED" and len(client.search_runs([got.info.experiment_id])) == 1


def test_mlflow_asked_without_the_package_is_one_line_error_before_training(tmp_path, place, monkeypatch):
    for name in [name for name in sys.modules if name == "mlflow" or name.startswith("mlflow.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if not installed
    path = write_recipe(tmp_path, recipe({"name": "ce"}, {"mlflow": True, "tensorboard": False}))
    result = kdlab_main("train", path, "--out", tmp_path / "run")
    line = assert_user_error(result, "logging.mlflow needs the mlflow package: pip install 'kdlab[mlflow]'")
    assert line == "kdlab: error: logging.mlflow needs the mlflow package: pip install 'kdlab[mlflow]'"
    assert not (tmp_path / "run" / "metrics.jsonl").exists()
    assert not (tmp_path / "run" / "checkpoint" / "state.json").exists()


# ------------------------------------------------------------------------------------------------ W&B tests


def test_plain_run_wandb_offline_run_holds_the_metrics(plain):
    check_wandb(plain[0])


def test_online_run_wandb_offline_run_holds_every_peer_metric(online):
    check_wandb(online[0], project="online")


def test_resumed_run_continues_the_same_wandb_run(plain, resumed):
    out, summary, stderr, first_session = resumed
    assert json.loads((out / "tracking.json").read_text())["wandb"] == first_session["tracking"]["wandb"]
    check_wandb(out, sessions=2)
    first, second = wandb_sessions(out)
    assert [r["exit"].get("exit_code", 0) for r in first if r["type"] == "exit"] == [1]  # the interrupted session
    reference, continued = wandb_history(wandb_sessions(plain[0])), wandb_history([first, second])
    assert sorted(continued) == sorted(reference)
    for step, row in reference.items():
        for tag in ("loss/ce", "lr", "grad_norm", "epoch/train_loss", "epoch/test_acc"):
            assert continued[step].get(tag) == row.get(tag), (step, tag)
