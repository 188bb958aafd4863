"""``kdlab export RUN --format onnx|torchscript|safetensors``: every format of a plain, a KD and an online run,
checked here again by an independent computation (the exported file run by its own runtime on test images
normalised by hand from the JSON record, against the run's weights loaded straight from safetensors); CIFAR-shaped,
28x28 single-channel and audio runs; one network of each zoo family; a tampered or broken export fails the check
and leaves nothing behind; bad input is one line."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from _cli import assert_user_error, audio_folder, cifar10_folder, idx_bytes, kdlab_main, snapshot
from kdlab import models
from kdlab.config import load_recipe
from kdlab.export import FORMATS, export_head, export_model  # noqa: F401 - both entry points stay importable
from kdlab.export import deployable
from kdlab.export.check import ATOL, RTOL, compare
from kdlab.export.formats import ExportOptions
from kdlab.io import TEMP_SUFFIX
from kdlab.train.engine import train

LINE = re.compile(r"^(?P<run>\S+) -> (?P<file>\S+) \((?P<what>[^)]*)\): max \|diff\| (?P<diff>\S+) over "
                  r"(?P<n>\d+) test images, top-1 agreement (?P<agreement>[0-9.]+)$")
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
EXTENSIONS = {"onnx": "onnx", "torchscript": "pt", "safetensors": "safetensors"}


# ------------------------------------------------------------------------------------------------------ runs


def _train(root: Path, name: str, data: dict, model: str, method: dict | None = None, epochs: int = 1) -> Path:
    raw = {"data": {"cache_dir": str(root / "cache"), **data}, "model": {"name": model},
           "method": method or {"name": "ce"}, "train": {"epochs": epochs, "batch_size": 32},
           "runtime": {"progress": False, "threads": 1}}
    out = root / name
    assert train(load_recipe(raw=raw), out, quiet=True)["status"] == "completed"
    return out


def _idx_folder(root: Path, side: int = 28) -> Path:
    """MNIST-layout gzipped IDX files of random 28x28 images (200 train, 60 test) with random labels."""
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 200), ("t10k", 60)):
        with gzip.open(root / f"{prefix}-images-idx3-ubyte.gz", "wb") as f:
            f.write(idx_bytes(rng.integers(0, 256, (n, side, side))))
        with gzip.open(root / f"{prefix}-labels-idx1-ubyte.gz", "wb") as f:
            f.write(idx_bytes(np.arange(n) % 10))
    return root


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """plain (digits, cnn_small8, 2 epochs, a val split so best.safetensors exists), kd (its student), online (dml
    of two resnet8), cifar (resnet20 on CIFAR-10-layout random images), mnist (cnn_small28 on 28x28 IDX images),
    audio (audio_cnn_tiny on sine tones)."""
    root = tmp_path_factory.mktemp("export-runs")
    digits = {"source": "digits", "val_size": 0.1}
    found = {"plain": _train(root, "plain", digits, "cnn_small8", epochs=2)}
    found["kd"] = _train(root, "kd", digits, "cnn_small8", {"name": "kd", "teacher": str(found["plain"])})
    found["online"] = _train(root, "online", digits, "resnet8", {"name": "dml", "branches": 2})
    cifar = cifar10_folder(root / "cifar-data", per_batch=40)
    found["cifar"] = _train(root, "cifar", {"source": "cifar10", "path": str(cifar), "val_size": 20}, "resnet20")
    mnist = _idx_folder(root / "mnist-data")
    found["mnist"] = _train(root, "mnist", {"source": "idx", "path": str(mnist), "val_size": 0}, "cnn_small28")
    tones = audio_folder(root / "tones", sample_rate=8000, seconds=0.25)
    found["audio"] = _train(root, "audio", {"source": "audio_folder", "path": str(tones), "val_size": 0,
                                            "options": {"sample_rate": 8000},
                                            "features": {"n_fft": 128, "hop_length": 32, "n_mels": 24}},
                            "audio_cnn_tiny")
    return found


# ------------------------------------------------------------------------------------------ the independent check


def hand_normalised_test_images(run: Path, record: dict, count: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``count`` test images of an image run, normalised from the record's mean/std with plain NumPy
    (not kdlab's loader), N x C x H x W float32, and their labels."""
    from kdlab.analysis.runs import load_run, load_run_data

    split = load_run_data(load_run(run)).test
    images = split.images[:count].astype(np.float64) / 255.0
    mean = np.asarray(record["normalisation"]["mean"])
    std = np.asarray(record["normalisation"]["std"])
    return ((images - mean) / std).transpose(0, 3, 1, 2).astype(np.float32), split.labels[:count]


def logits_from_run_weights(run: Path, record: dict, inputs: np.ndarray, weights: str = "model.safetensors"):
    """The run's network, rebuilt from the record's model fields and the run's own weights file."""
    m = record["model"]
    network = models.create(m["name"], m["num_classes"], in_channels=m["in_channels"], options=m["options"]).eval()
    network.load_state_dict(load_file(run / "checkpoint" / weights))
    with torch.no_grad():
        return network(torch.from_numpy(inputs)).numpy()


def logits_of_file(path: Path, record: dict, inputs: np.ndarray) -> np.ndarray:
    """Run the exported file with its own runtime, as docs/export.md tells a user to."""
    if record["format"] == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return session.run(["logits"], {"input": inputs})[0]
    if record["format"] == "torchscript":
        with torch.no_grad():
            return torch.jit.load(str(path)).eval()(torch.from_numpy(inputs)).numpy()
    m = record["model"]
    network = models.create(m["name"], m["num_classes"], in_channels=m["in_channels"], options=m["options"]).eval()
    network.load_state_dict(load_file(path))
    with torch.no_grad():
        return network(torch.from_numpy(inputs)).numpy()


def exported(run: Path, *args) -> tuple[Path, dict, re.Match]:
    result = kdlab_main("export", run, *args)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1, result.stdout
    match = LINE.match(lines[0])
    assert match, lines[0]
    path = Path(match["file"])
    return path, json.loads(path.with_name(path.name + ".json").read_text()), match


# ------------------------------------------------------------------------------------------------- each format


@pytest.mark.parametrize("fmt", list(FORMATS))
@pytest.mark.parametrize("kind", ["plain", "kd", "online"])
def test_each_format_matches_the_run_by_an_independent_computation(runs, kind, fmt):
    run = runs[kind]
    path, record, line = exported(run, "--format", fmt)
    assert path == run / "export" / f"model.{EXTENSIONS[fmt]}" and path.is_file()
    check = record["check"]
    assert check["passed"] and check["split"] == "test" and check["images"] == int(line["n"]) == 256
    assert float(line["diff"]) == pytest.approx(check["max_abs_diff"], rel=0.06, abs=1e-12)  # printed at 2 digits
    assert float(line["agreement"]) == pytest.approx(check["top1_agreement"], abs=1e-4)
    assert record["format"] == fmt and record["source"]["checkpoint"] == "final"
    assert record["source"]["run"] == str(run.resolve()) and record["class_names"] == [str(d) for d in range(10)]
    assert record["input"]["shape"] == ["batch", 1, 8, 8] and record["input"]["layout"] == "NCHW"
    summary = json.loads((run / "summary.json").read_text())
    assert record["source"]["method"] == summary["method"]
    config = load_recipe(run / "config.yaml")
    assert record["normalisation"]["mean"] == config.data.mean and record["normalisation"]["std"] == config.data.std
    assert record["versions"]["torch"] == torch.__version__ and record["versions"]["kdlab"]
    if fmt == "onnx":
        assert record["opset"] == 18 and "(onnx, opset 18)" in line[0] and record["batch"] == "dynamic"

    # Independently: the file through its own runtime vs the run's weights, on images normalised by hand.
    inputs, labels = hand_normalised_test_images(run, record, 256)
    ours, reference = logits_of_file(path, record, inputs), logits_from_run_weights(run, record, inputs)
    diff = np.abs(ours.astype(np.float64) - reference).max()
    assert diff < ATOL
    assert abs(diff - check["max_abs_diff"]) < 1e-5  # kdlab's number is the real one (inputs differ by rounding)
    agreement = float(np.mean(ours.argmax(1) == reference.argmax(1)))
    assert agreement == pytest.approx(check["top1_agreement"], abs=2 / 256)
    assert float(np.mean(ours.argmax(1) == labels)) == pytest.approx(check["accuracy_exported"], abs=2 / 256)
    assert record["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert not list(path.parent.glob(f".*{TEMP_SUFFIX}"))


def test_an_online_run_exports_its_inference_head_and_another_branch_through_head(runs, tmp_path):
    run = runs["online"]
    summary = json.loads((run / "summary.json").read_text())
    _, record, _ = exported(run, "--format", "safetensors", "--out", tmp_path / "head.safetensors")
    assert record["source"]["inference_head"] == summary["inference_head"]
    torch.testing.assert_close(load_file(tmp_path / "head.safetensors"),
                               load_file(run / "checkpoint" / "model.safetensors"))
    other = next(h for h in ("peer1", "peer2") if h != summary["inference_head"])
    assert kdlab_main("export", run, "--head", other, "--out", tmp_path / other).returncode == 0
    path, record, _ = exported(tmp_path / other, "--format", "onnx")
    inputs, _ = hand_normalised_test_images(tmp_path / other, record, 64)
    branch = logits_from_run_weights(tmp_path / other, record, inputs)
    assert np.abs(logits_of_file(path, record, inputs) - branch).max() < ATOL
    assert np.abs(branch - logits_from_run_weights(run, record, inputs)).max() > 1e-3  # really another branch


def test_best_checkpoint_fixed_batch_and_an_older_opset(runs, tmp_path):
    run = runs["plain"]
    path, record, line = exported(run, "--format", "onnx", "--checkpoint", "best", "--batch", "7", "--opset", "17",
                                  "--out", tmp_path / "deploy" / "digits.onnx")
    assert path == tmp_path / "deploy" / "digits.onnx" and "(onnx, opset 17)" in line[0]
    assert record["source"]["checkpoint"] == "best" and record["source"]["weights"] == "checkpoint/best.safetensors"
    assert record["batch"] == 7 and record["opset"] == 17
    assert record["exporter"] == "torchscript" and "opset 17" in record["exporters_passed_over"][0]
    import onnx

    proto = onnx.load(str(path))
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 7
    assert {o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")} == {17}
    inputs, _ = hand_normalised_test_images(run, record, 7)
    best = logits_from_run_weights(run, record, inputs, "best.safetensors")
    assert np.abs(logits_of_file(path, record, inputs) - best).max() < ATOL
    # An existing folder as --out gets model.<ext> inside; dynamic batch by default.
    path, record, _ = exported(run, "--format", "onnx", "--out", tmp_path / "deploy")
    assert path == tmp_path / "deploy" / "model.onnx"
    assert onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim[0].dim_param


@pytest.mark.parametrize("kind, shape, model", [("cifar", [3, 32, 32], "resnet20"),
                                                ("mnist", [1, 28, 28], "cnn_small28")])
def test_cifar_and_28x28_runs_export_to_every_format(runs, kind, shape, model):
    run = runs[kind]
    for fmt in FORMATS:
        path, record, line = exported(run, "--format", fmt)
        assert record["model"]["name"] == model and record["input"]["shape"] == ["batch", *shape]
        assert record["check"]["images"] == int(line["n"]) == (40 if kind == "cifar" else 60)
        inputs, _ = hand_normalised_test_images(run, record, 64)
        assert np.abs(logits_of_file(path, record, inputs) - logits_from_run_weights(run, record, inputs)).max() < ATOL
    if kind == "cifar":
        assert record["class_names"][0] == "airplane" and len(record["normalisation"]["mean"]) == 3


def test_audio_run_exports_its_log_mel_network_with_the_features_it_needs(runs):
    run = runs["audio"]
    for fmt in FORMATS:
        path, record, _ = exported(run, "--format", fmt)
        assert record["input"]["kind"] == "log-mel" and record["input"]["shape"][:3] == ["batch", 1, 24]
        assert record["preprocessing"]["features"]["n_mels"] == 24
        assert record["preprocessing"]["features"]["sample_rate"] == 8000
        assert record["check"]["passed"] and record["check"]["images"] == 4
        assert len(record["normalisation"]["mean"]) == 1 and record["class_names"] == ["hi", "lo"]


# -------------------------------------------------------------------------------------------------- the zoo


FAMILIES = ["airnet", "audio_cnn_tiny", "cnn_small28", "cnn_small8", "mobilenetv2_half", "resnet8", "resnet20",
            "resnet8x4", "shufflenetv1", "shufflenetv2", "vgg8", "wrn_16_1"]


@pytest.mark.parametrize("name", FAMILIES)
def test_one_network_of_every_zoo_family_exports_and_runs_back(name, tmp_path):
    channels, side = (1, 8) if name == "cnn_small8" else (1, 28) if name == "cnn_small28" else \
        (1, 32) if name.startswith("audio") else (3, 32)
    torch.manual_seed(0)
    network = models.create(name, 10, in_channels=channels).eval()
    inputs = torch.randn(5, channels, side, side).numpy()
    with torch.no_grad():
        reference = network(torch.from_numpy(inputs)).numpy()
    options = ExportOptions(model_name=name, num_classes=10, in_channels=channels)
    for fmt, spec in FORMATS.items():
        data, _ = spec.serialise(network, torch.from_numpy(inputs[:2]), options)
        path = tmp_path / f"{name}.{spec.extension}"
        path.write_bytes(data)
        check = compare(spec.load(path, options)(inputs), reference, np.zeros(5, dtype=np.int64), "random")
        assert check["passed"], (fmt, check)


def test_the_tolerance_is_absolute_plus_relative():
    reference = np.array([[1.0, 1000.0]])
    assert compare(reference + [[ATOL * 0.9, 0.0]], reference, np.zeros(1), "t")["passed"]
    assert not compare(reference + [[ATOL * 1.1, 0.0]], reference, np.zeros(1), "t")["passed"]
    assert compare(reference + [[0.0, RTOL * 900]], reference, np.zeros(1), "t")["passed"]
    assert not compare(reference + [[np.nan, 0.0]], reference, np.zeros(1), "t")["passed"]
    assert not compare(reference[:, :1], reference, np.zeros(1), "t")["passed"]


# ------------------------------------------------------------------------------------- tampered and broken exports


def _nothing_left(folder: Path, before: dict | None = None) -> None:
    if before is None:
        assert not folder.exists(), sorted(folder.iterdir())
    else:
        assert snapshot(folder) == before


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_a_weight_changed_between_export_and_check_fails_and_leaves_nothing(runs, fmt, monkeypatch):
    """The serialiser gets a network whose classifier bias moved by 0.01: the file is self-consistent but is not
    the run's network, and the check (against the run's own network) must say so."""
    original = FORMATS[fmt].serialise

    def tampered(network, example, options):
        with torch.no_grad():
            network.classifier.bias.add_(0.01)
        return original(network, example, options)

    monkeypatch.setitem(FORMATS, fmt, dataclasses.replace(FORMATS[fmt], serialise=tampered))
    run = runs["kd"]
    shutil.rmtree(run / "export", ignore_errors=True)
    result = kdlab_main("export", run, "--format", fmt)
    assert_user_error(result, "export check failed", "max |diff| 1.0e-02", "256 test images", "nothing written")
    _nothing_left(run / "export")


@pytest.mark.parametrize("fmt", ["onnx", "safetensors", "torchscript"])
def test_a_file_damaged_on_disk_fails_to_load_back_and_an_earlier_export_stays(runs, fmt, monkeypatch):
    run = runs["plain"]
    first, _, _ = exported(run, "--format", fmt)
    before = snapshot(first.parent)
    write = deployable.atomic_write_bytes

    def truncated(path, data):
        return write(path, data[: len(data) // 2] if path.name.endswith(f".unchecked{TEMP_SUFFIX}") else data)

    monkeypatch.setattr(deployable, "atomic_write_bytes", truncated)
    assert_user_error(kdlab_main("export", run, "--format", fmt), "export check failed", "does not load back",
                      FORMATS[fmt].loader, "nothing written")
    _nothing_left(first.parent, before)


def test_without_onnxruntime_the_file_is_written_and_says_it_is_not_checked(runs, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime now raises ImportError
    result = kdlab_main("export", runs["plain"], "--format", "onnx", "--out", tmp_path / "m.onnx")
    assert result.returncode == 0, result.stderr
    assert "NOT CHECKED: onnxruntime is not installed (pip install 'kdlab[onnx]')" in result.stdout
    record = json.loads((tmp_path / "m.onnx.json").read_text())
    assert "onnxruntime is not installed" in record["check"]["skipped"] and record["versions"]["onnxruntime"] is None


def test_without_onnx_the_format_is_refused_with_the_extra_to_install(runs, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)
    before = snapshot(runs["plain"])
    assert_user_error(kdlab_main("export", runs["plain"], "--format", "onnx"), "pip install 'kdlab[onnx]'")
    assert snapshot(runs["plain"]) == before


# ----------------------------------------------------------------------------------------------------- bad input


def _unfinished(runs, tmp_path) -> Path:
    copy = tmp_path / "unfinished"
    shutil.copytree(runs["plain"], copy, ignore=shutil.ignore_patterns("export"))
    summary = json.loads((copy / "summary.json").read_text())
    (copy / "summary.json").write_text(json.dumps({**summary, "status": "running"}))
    return copy


BAD = {
    "not-a-run": (lambda runs, tmp: [tmp, "--format", "onnx"], ["is not a kdlab run directory"]),
    "missing-folder": (lambda runs, tmp: [tmp / "nowhere", "--format", "onnx"], ["is not a kdlab run directory"]),
    "not-completed": (lambda runs, tmp: [_unfinished(runs, tmp), "--format", "torchscript"], ["has not completed"]),
    "unknown-format": (lambda runs, tmp: [runs["plain"], "--format", "tflite"], ["argument --format", "'tflite'"]),
    "neither": (lambda runs, tmp: [runs["plain"]], ["required: --head or --format", "kdlab export --help"]),
    "head-and-format": (lambda runs, tmp: [runs["online"], "--head", "peer1", "--format", "onnx"],
                        ["--format: not allowed with argument --head"]),
    "head-with-checkpoint": (lambda runs, tmp: [runs["online"], "--head", "peer1", "--checkpoint", "best", "--out",
                                                tmp / "p"], ["--checkpoint goes with --format"]),
    "head-without-out": (lambda runs, tmp: [runs["online"], "--head", "peer1"], ["--head: --out"]),
    "opset-of-safetensors": (lambda runs, tmp: [runs["plain"], "--format", "safetensors", "--opset", "17"],
                             ["--opset and --batch are options of --format onnx"]),
    "bad-batch": (lambda runs, tmp: [runs["plain"], "--format", "onnx", "--batch", "many"],
                  ["--batch must be 'dynamic' or a batch size"]),
    "opset-too-new": (lambda runs, tmp: [runs["plain"], "--format", "onnx", "--opset", "99"],
                      ["--opset 99", "knows opsets 7 to"]),
    "unwritable-out": (lambda runs, tmp: [runs["plain"], "--format", "onnx", "--out", tmp / "a-file" / "m.onnx"],
                       ["--out", "cannot create the folder", "a-file"]),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_input_is_one_line_and_writes_nothing(runs, tmp_path, case):
    words, fragments = BAD[case]
    (tmp_path / "a-file").write_text("a file, not a folder")
    args = words(runs, tmp_path)
    before = {name: snapshot(runs[name]) for name in ("plain", "online")}
    outside = snapshot(tmp_path)
    assert_user_error(kdlab_main("export", *args), *fragments)
    assert {name: snapshot(runs[name]) for name in ("plain", "online")} == before
    assert snapshot(tmp_path) == outside
