"""A catalogue of bad inputs, each given to the real command (``kdlab train``, ``kdlab train --resume``, ``kdlab
eval``): exit status 2, one ``kdlab: error: `` line on stderr naming the key / file / value, no traceback, and
nothing written (no ``--out`` folder; the test's folder, including any existing run in it, byte-identical, but for
the content of a run's ``.lock``, where whoever locks the run writes its pid).

Most cases run ``kdlab.cli.main`` in this process (what ``python -m kdlab`` runs, without 2-3 s of start-up); the
cases in ``THROUGH_A_PROCESS`` also run as ``python -m kdlab`` and must print the very same line there.
"""

from __future__ import annotations

import builtins
import json
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

from _cli import (DIGITS, assert_user_error, audio_folder, cifar10_folder, cifar_batch, encoded_image, idx_bytes,
                  idx_files, image_folder, kdlab, kdlab_main, snapshot, write_recipe)

#: cases that also run through ``python -m kdlab`` (one or two of each kind: recipe, override, data, pickle, run)
THROUGH_A_PROCESS = {"unknown-nested-key", "override-not-key-value", "truncated-jpeg", "cifar-pickle-runs-os-system",
                     "resume-with-another-models-checkpoint", "eval-with-another-models-weights",
                     "teacher-with-other-input-shape"}


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(autouse=True)
def private_environment(tmp_path, cache, monkeypatch):
    monkeypatch.setenv("KDLAB_CACHE_DIR", str(cache))
    monkeypatch.setenv("KDLAB_NO_PROGRESS", "1")
    monkeypatch.chdir(tmp_path)


def recipe(**sections) -> dict:
    """DIGITS with ``sections`` merged in (a dict updates that section, anything else replaces it)."""
    raw = {key: dict(value) for key, value in DIGITS.items()}
    for key, value in sections.items():
        raw[key] = {**raw.get(key, {}), **value} if isinstance(value, dict) and isinstance(raw.get(key), dict) else value
    return raw


def refused(case: str, tmp_path: Path, args: list, *fragments, out: Path | None = None) -> str:
    """Run ``kdlab ARGS``; check the contract (nothing under ``tmp_path`` changes, ``out`` is not created)."""
    before = snapshot(tmp_path, any_content=(".lock",))
    line = assert_user_error(kdlab_main(*args), *fragments)
    if out is not None:
        assert not out.exists(), f"{out} was created"
    assert snapshot(tmp_path, any_content=(".lock",)) == before, "files under the test folder changed"
    if case in THROUGH_A_PROCESS:
        result = kdlab(tmp_path, *args, cache=Path(os.environ["KDLAB_CACHE_DIR"]))
        assert assert_user_error(result, *fragments) == line
        assert out is None or not out.exists()
        assert snapshot(tmp_path, any_content=(".lock",)) == before
    print(f"{case}\t{line}")  # the catalogue: pytest -s -q tests/test_bad_inputs.py
    return line


def train_refused(case: str, tmp_path: Path, raw, *fragments, overrides=()) -> str:
    path = write_recipe(tmp_path, raw)
    out = tmp_path / "run"
    return refused(case, tmp_path, ["train", path, *overrides, "--out", out], *fragments, out=out)


# ------------------------------------------------------------------------------------------------------- recipes

RECIPES = {
    "unknown-top-level-key": (recipe(bogus=1), ["recipe.yaml", "unknown key 'bogus'"]),
    "unknown-nested-key": (recipe(optim={"lrr": 0.1}), ["recipe.yaml", "unknown key 'optim.lrr'"]),
    "epochs-not-a-number": (recipe(train={"epochs": "ten"}), ["recipe.yaml", "train.epochs", "'ten'"]),
    "data-not-a-section": (recipe(data=3), ["recipe.yaml", "data:", "(got 3)"]),
    "recipe-not-a-mapping": ("- data\n- model\n", ["recipe.yaml", "must be a mapping"]),
    "recipe-scalar": ("just text\n", ["recipe.yaml", "must be a mapping"]),
    "invalid-yaml": ("data: {source: digits\nmodel: [x\n", ["recipe.yaml", "not valid YAML at line"]),
    "missing-section": ({"data": {"source": "digits"}, "train": {"epochs": 1}}, ["missing key 'model'"]),
    "unknown-method": (recipe(method={"name": "nope"}), ["method.name", "'nope'", "known methods"]),
    "unknown-model": (recipe(model={"name": "resnet21"}), ["recipe.yaml", "model.name", "unknown model 'resnet21'"]),
    "unknown-method-parameter": (recipe(method={"name": "ls", "epsilon": 0.1}), ["unknown key 'method.epsilon'"]),
    "epochs-negative": (recipe(train={"epochs": -1}), ["train.epochs", "greater than or equal to 1", "(got -1)"]),
    "epochs-zero": (recipe(train={"epochs": 0}), ["train.epochs", "(got 0)"]),
    "batch-size-zero": (recipe(train={"batch_size": 0}), ["train.batch_size", "(got 0)"]),
    "lr-zero": (recipe(optim={"lr": 0}), ["optim.lr", "greater than 0", "(got 0)"]),
    "lr-infinite": (recipe(optim={"lr": float("inf")}), ["optim.lr", "finite", "(got inf)"]),
    "lr-nan": (recipe(optim={"lr": float("nan")}), ["optim.lr", "(got nan)"]),
    "seed-negative": (recipe(seed=-1), ["recipe.yaml", "seed: Input should be greater than or equal to 0 (got -1)"]),
    "seed-too-large": (recipe(seed=2**40), ["recipe.yaml", "seed: Input should be less than 4294967296"]),
    "threads-beyond-any-machine": (recipe(runtime={"threads": 10**24}), ["runtime.threads", "less than or equal to 1024"]),
    "wide-resnet-of-impossible-depth": (recipe(model={"name": "wrn_12_2"}), ["model.name", "6n+4", "wrn_12_2"]),
    "kd-tau-infinite": (recipe(method={"name": "kd", "teacher": "t", "tau": float("inf")}),
                        ["method.tau", "finite", "(got inf)"]),
    "recursive-yaml-alias": (("data: {source: digits, options: &a {x: *a}}\nmodel: {name: cnn_small8}\n"
                              "train: {epochs: 1}\n"), ["recipe.yaml", "data.options.x: a value contains itself"]),
    "number-of-5000-digits": ("seed: " + "9" * 5000 + "\n",
                              ["recipe.yaml", "cannot read recipe (ValueError", "4300 digits"]),
    "explicit-tag-that-does-not-fit": ("seed: !!int ~\n", ["recipe.yaml", "cannot read recipe (ValueError", "'~'"]),
    "nested-too-deeply": ("data: " + "[" * 3000 + "]" * 3000 + "\n", ["recipe.yaml", "nested too deeply"]),
    "milestones-decreasing": (recipe(schedule={"milestones": [5, 2]}), ["schedule.milestones", "increasing"]),
    "kd-without-teacher": (recipe(method={"name": "kd"}), ["missing key 'method.teacher'"]),
    "kd-tau-zero": (recipe(method={"name": "kd", "teacher": "t", "tau": 0}), ["method.tau", "greater than 0", "(got 0)"]),
    "kd-tau-negative": (recipe(method={"name": "kd", "teacher": "t", "tau": -1}), ["method.tau", "(got -1)"]),
    "lsr_os-tau-zero": (recipe(method={"name": "lsr_os", "tau": 0}), ["method.tau", "greater than 0", "(got 0)"]),
    "lsr_os_tc-beta-one": (recipe(method={"name": "lsr_os_tc", "beta": 1.0}), ["method.beta", "less than 1", "(got 1.0)"]),
    # below 1/K = 0.1 for the 10 digit classes: only the data knows K, so this is checked once the data is read
    "lsr_os_tc-beta-below-1/K": (recipe(method={"name": "lsr_os_tc", "beta": 0.05}), ["method.beta", "0.05", "1/K = 0.1"]),
}
for _method in ("ls", "lsr_os", "lsr_os_tc"):
    RECIPES[f"{_method}-eps-negative"] = (recipe(method={"name": _method, "eps": -0.1}),
                                          ["method.eps", "greater than or equal to 0", "(got -0.1)"])
    RECIPES[f"{_method}-eps-one"] = (recipe(method={"name": _method, "eps": 1.0}),
                                     ["method.eps", "less than 1", "(got 1.0)"])


@pytest.mark.parametrize("case", RECIPES)
def test_bad_recipe(tmp_path, case):
    raw, fragments = RECIPES[case]
    train_refused(case, tmp_path, raw, *fragments)


def test_recipe_file_missing(tmp_path):
    refused("recipe-file-missing", tmp_path, ["train", tmp_path / "nope.yaml", "--out", tmp_path / "run"],
            "recipe not found", "nope.yaml", out=tmp_path / "run")


def test_recipe_file_not_text(tmp_path):
    (tmp_path / "recipe.yaml").write_bytes(b"\xff\xfe\x00binary\x80")
    refused("recipe-not-text", tmp_path, ["train", tmp_path / "recipe.yaml", "--out", tmp_path / "run"],
            "recipe.yaml", out=tmp_path / "run")


OVERRIDES = {
    "override-epochs-not-a-number": (["train.epochs=abc"], ["train.epochs", "'abc'"]),
    "override-not-key-value": (["nokey"], ["'nokey'", "not of the form key=value"]),
    "override-empty-key": (["=3"], ["'=3'", "not of the form key=value"]),
    "override-into-a-value": (["train.epochs.x=3"], ["train.epochs.x=3", "'epochs' is not a section"]),
    "override-unknown-key": (["optim.lrr=0.1"], ["unknown key 'optim.lrr'"]),
    "override-eps-out-of-range": (["method.name=ls", "method.eps=1.5"], ["method.eps", "(got 1.5)"]),
    "override-recursive-alias": (["data=&a [*a]"], ["data.0: a value contains itself"]),
    "override-number-of-5000-digits": (["seed=" + "9" * 5000], ["override 'seed=...': cannot read the value",
                                                                "4300 digits"]),
}


@pytest.mark.parametrize("case", OVERRIDES)
def test_bad_override(tmp_path, case):
    overrides, fragments = OVERRIDES[case]
    train_refused(case, tmp_path, DIGITS, *fragments, overrides=overrides)


def test_override_after_the_options_that_is_not_key_value(tmp_path):
    # argparse leaves words after --out over: they are overrides, and this one is not key=value
    path = write_recipe(tmp_path, DIGITS)
    refused("word-after-the-options", tmp_path, ["train", path, "--out", tmp_path / "run", "nokey"],
            "override 'nokey' is not of the form key=value", out=tmp_path / "run")


USAGE = {
    "unknown-option": (["train", "{recipe}", "--out", "{out}", "--bogus"], ["unrecognized arguments: --bogus"]),
    "unknown-command": (["trian", "{recipe}"], ["invalid choice: 'trian'", "kdlab --help"]),
    "bad-choice": (["eval", "{out}", "--checkpoint", "last"], ["argument --checkpoint", "'last'", "kdlab eval --help"]),
    "missing-argument": (["export", "{out}"], ["required: --head", "kdlab export --help"]),
}


@pytest.mark.parametrize("case", USAGE)
def test_usage_error_is_one_line(tmp_path, case):
    words, fragments = USAGE[case]
    path, out = write_recipe(tmp_path, DIGITS), tmp_path / "run"
    refused(case, tmp_path, [w.format(recipe=path, out=out) for w in words], *fragments, out=out)


# ---------------------------------------------------------------------------------------------------------- data


def folder_recipe(path: Path, **data) -> dict:
    return recipe(data={"source": "folder", "path": str(path), **data})


def broken_image_folder(root: Path, name: str, content: bytes) -> Path:
    image_folder(root)
    (root / "train" / "dog" / name).write_bytes(content)
    return root / "train" / "dog" / name


def broken_idx(root: Path, name: str, content: bytes) -> Path:
    idx_files(root, [0, 1, 2, 3])
    (root / name).write_bytes(content)
    return root / name


def broken_cifar(root: Path, name: str, content: bytes) -> Path:
    folder = cifar10_folder(root)
    (folder / name).write_bytes(content)
    return folder / name


def noise(n: int, seed: int = 0, head: bytes = b"") -> bytes:
    return head + np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


def data_case(tmp_path: Path, case: str):
    """(recipe, fragments) of data case ``case``, its files written under ``tmp_path/data``."""
    data = tmp_path / "data"
    if case == "missing-data-folder":
        return folder_recipe(data), ["data folder not found", str(data)]
    if case == "data-path-is-a-file":
        data.write_text("not a folder")
        return folder_recipe(data), ["data path is not a folder", str(data)]
    if case == "corrupt-jpeg":
        bad = broken_image_folder(data, "bad.jpg", noise(300, head=b"\xff\xd8\xff\xe0"))
        return folder_recipe(data), [str(bad), "not a readable JPEG or PNG image"]
    if case == "truncated-jpeg":
        jpeg = encoded_image("JPEG", size=8)
        bad = broken_image_folder(data, "bad.jpg", jpeg[: len(jpeg) * 2 // 3])
        return folder_recipe(data), [str(bad), "not a readable JPEG or PNG image"]
    if case == "corrupt-png":
        bad = broken_image_folder(data, "bad.png", noise(300, head=b"\x89PNG\r\n\x1a\n"))
        return folder_recipe(data), [str(bad), "not a readable JPEG or PNG image (not recognised as JPEG or PNG"]
    if case == "truncated-png":
        png = encoded_image("PNG", size=8)
        bad = broken_image_folder(data, "bad.png", png[: len(png) * 2 // 3])
        return folder_recipe(data), [str(bad), "not a readable JPEG or PNG image"]
    if case == "image-of-another-size":
        bad = broken_image_folder(data, "big.png", encoded_image("PNG", size=16))
        return folder_recipe(data), [str(bad), "16x16", "8x8"]
    if case == "not-an-image-in-a-class-folder":
        bad = broken_image_folder(data, "notes.txt", b"hello")
        return folder_recipe(data), [str(bad), "not an image file"]
    if case == "empty-class-folder":
        image_folder(data)
        (data / "train" / "bird").mkdir()
        return folder_recipe(data), [str(data / "train" / "bird"), "empty class folder"]
    if case == "train-and-test-with-different-classes":
        image_folder(data)
        (data / "test" / "dog").rename(data / "test" / "cow")
        return folder_recipe(data), ["class folders differ", "only in train: ['dog']", "only in test: ['cow']"]
    if case == "no-test-folder":
        image_folder(data)
        shutil.rmtree(data / "test")
        return folder_recipe(data), [str(data), "missing test/ folder"]
    if case == "unknown-source-option":
        image_folder(data)
        return folder_recipe(data, options={"colour": "yes"}), ["data source folder has no option colour"]
    if case == "unknown-source":
        return recipe(data={"source": "imagenet"}), ["unknown data source 'imagenet'"]
    if case in ("corrupt-idx", "truncated-idx", "truncated-idx-gzip", "idx-label-out-of-range"):
        if case == "corrupt-idx":
            bad = broken_idx(data, "train-images-idx3-ubyte", noise(200, head=b"\x12\x34"))
            fragments = [str(bad), "not an IDX file"]
        elif case == "truncated-idx":
            bad = broken_idx(data, "train-images-idx3-ubyte", idx_bytes(np.zeros((4, 28, 28), np.uint8))[:-100])
            fragments = [str(bad), "truncated IDX file", "need 3136 data bytes, found 3036"]
        elif case == "truncated-idx-gzip":
            bad = idx_files(data, [0, 1, 2, 3]) / "t10k-labels-idx1-ubyte.gz"
            bad.write_bytes(bad.read_bytes()[:-12])  # cut into the deflate stream and its CRC trailer
            fragments = [str(bad), "corrupt or truncated gzip data"]
        else:
            shutil.rmtree(data, ignore_errors=True)
            idx_files(data, [0, 1, 2, 12])
            fragments = [str(data / "train-labels-idx1-ubyte.gz"), "label 12 (sample 3) is out of range for 10 classes"]
        return recipe(data={"source": "idx", "path": str(data)}, model={"name": "cnn_small28"}), fragments
    if case in ("corrupt-cifar-pickle", "truncated-cifar-pickle", "cifar-label-out-of-range", "cifar-not-a-dict"):
        if case == "corrupt-cifar-pickle":
            bad = broken_cifar(data, "data_batch_2", noise(500, seed=3))
            fragments = [str(bad), "not a readable pickle"]
        elif case == "truncated-cifar-pickle":
            whole = pickle.dumps(cifar_batch(4, 2), protocol=2)
            bad = broken_cifar(data, "data_batch_2", whole[: len(whole) // 2])
            fragments = [str(bad), "not a readable pickle"]
        elif case == "cifar-label-out-of-range":
            bad = broken_cifar(data, "data_batch_3", pickle.dumps(cifar_batch(4, 3, labels=[0, 1, 2, 12]), protocol=2))
            fragments = [str(bad), "label 12 (sample 3) is out of range for 10 classes"]
        else:
            bad = broken_cifar(data, "test_batch", pickle.dumps([1, 2, 3], protocol=2))
            fragments = [str(bad), "expected a pickled dict, found list"]
        return recipe(data={"source": "cifar10", "path": str(data)}), fragments
    if case in ("corrupt-wav", "empty-wav", "not-audio-in-a-class-folder"):
        import soundfile

        audio_folder(data)
        bad = data / "train" / "lo" / "bad.wav"
        if case == "corrupt-wav":
            bad.write_bytes(noise(400, head=b"RIFF\x10\x00\x00\x00WAVEfmt "))
            fragments = [str(bad), "not a readable audio file"]
        elif case == "empty-wav":
            soundfile.write(bad, np.zeros(0, dtype=np.float32), 8000, subtype="PCM_16")
            fragments = [str(bad), "empty audio file (0 samples)"]
        else:
            bad = bad.with_name("bad.mp3")
            bad.write_bytes(b"ID3")
            fragments = [str(bad), "not an audio file"]
        raw = recipe(data={"source": "audio_folder", "path": str(data),
                           "options": {"sample_rate": 8000, "clip_seconds": 0.1}}, model={"name": "audio_cnn_small"})
        return raw, fragments
    raise AssertionError(case)


DATA_CASES = ["missing-data-folder", "data-path-is-a-file", "corrupt-jpeg", "truncated-jpeg", "corrupt-png",
              "truncated-png", "image-of-another-size", "not-an-image-in-a-class-folder", "empty-class-folder",
              "train-and-test-with-different-classes", "no-test-folder", "unknown-source-option", "unknown-source",
              "corrupt-idx", "truncated-idx", "truncated-idx-gzip", "idx-label-out-of-range", "corrupt-cifar-pickle",
              "truncated-cifar-pickle", "cifar-label-out-of-range", "cifar-not-a-dict", "corrupt-wav", "empty-wav",
              "not-audio-in-a-class-folder"]


@pytest.mark.parametrize("case", DATA_CASES)
def test_bad_data(tmp_path, case):
    raw, fragments = data_case(tmp_path, case)
    train_refused(case, tmp_path, raw, *fragments)


class Payload:
    """A pickle that would run code: unpickling calls ``function(*args)``."""

    def __init__(self, function, *args):
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


@pytest.mark.parametrize("case", ["cifar-pickle-runs-os-system", "cifar-pickle-opens-a-file"])
def test_pickle_with_a_code_payload_is_refused_and_not_run(tmp_path, case):
    marker = tmp_path / "marker"
    payload = Payload(os.system, f"touch {marker}") if case.endswith("os-system") else Payload(builtins.open, str(marker), "w")
    forbidden = f"{os.system.__module__}.system" if case.endswith("os-system") else "io.open"
    blob = pickle.dumps({b"data": payload, b"labels": [0, 1, 2, 3]}, protocol=2)
    assert forbidden.replace(".", "\n").encode() in blob  # the pickle does name the forbidden global
    bad = broken_cifar(tmp_path / "data", "data_batch_1", blob)
    train_refused(case, tmp_path, recipe(data={"source": "cifar10", "path": str(tmp_path / "data")}),
                  str(bad), f"refusing to unpickle {forbidden}")
    assert not marker.exists()


# ------------------------------------------------------------------------------------------ runs, teachers, resume

SMALL = {"train_size": 200}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, cache) -> dict[str, Path]:
    """Two finished one-epoch runs on 200 digits: ``small8`` (cnn_small8) and ``small28`` (cnn_small28)."""
    folder = tmp_path_factory.mktemp("runs")
    made = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KDLAB_CACHE_DIR", str(cache))
        for model in ("cnn_small8", "cnn_small28"):
            path = write_recipe(folder, recipe(data=SMALL, model={"name": model}, runtime={"threads": 1}), f"{model}.yaml")
            result = kdlab_main("train", path, "--out", folder / model, "--quiet")
            assert result.returncode == 0, result.stderr
            made[model.removeprefix("cnn_")] = folder / model
    return made


def copy_run(run: Path, to: Path, status: str | None = None) -> Path:
    shutil.copytree(run, to)
    if status is not None:
        summary = json.loads((to / "summary.json").read_text())
        (to / "summary.json").write_text(json.dumps({**summary, "status": status}))
    return to


def kd_recipe(teacher: Path, **sections) -> dict:
    return recipe(method={"name": "kd", "teacher": str(teacher)}, runtime={"threads": 1}, **sections)


def test_teacher_with_other_class_count(tmp_path, runs):
    image_folder(tmp_path / "pets")  # 2 classes; the teacher knows the 10 digits
    raw = kd_recipe(runs["small8"], data={"source": "folder", "path": str(tmp_path / "pets")})
    train_refused("teacher-with-other-class-count", tmp_path, raw, f"teacher {runs['small8']} has 10 classes",
                  "the student's data pets has 2")


def test_teacher_with_other_input_shape(tmp_path, runs):
    idx_files(tmp_path / "mnist", [0, 1, 2, 3])  # 28x28 digits; the teacher saw 8x8 ones
    raw = kd_recipe(runs["small8"], data={"source": "idx", "path": str(tmp_path / "mnist")}, model={"name": "cnn_small28"})
    train_refused("teacher-with-other-input-shape", tmp_path, raw, f"teacher {runs['small8']} takes [8, 8, 1]",
                  "[28, 28, 1]")


def test_teacher_folder_that_is_not_a_run(tmp_path):
    (tmp_path / "teacher").mkdir()
    (tmp_path / "teacher" / "weights.pt").write_bytes(b"\0" * 16)
    train_refused("teacher-not-a-run", tmp_path, kd_recipe(tmp_path / "teacher"),
                  f"teacher {tmp_path / 'teacher'} is not a kdlab run directory")


def test_teacher_folder_missing(tmp_path):
    train_refused("teacher-missing", tmp_path, kd_recipe(tmp_path / "nowhere"),
                  f"teacher run directory not found: {tmp_path / 'nowhere'}")


@pytest.mark.parametrize("status", ["running", "failed"])
def test_unfinished_teacher(tmp_path, runs, status):
    teacher = copy_run(runs["small8"], tmp_path / "teacher", status)
    train_refused(f"teacher-{status}", tmp_path, kd_recipe(teacher), f"teacher {teacher} has not completed",
                  f"(status '{status}')")


def test_resume_with_another_models_checkpoint(tmp_path, runs):
    run = copy_run(runs["small8"], tmp_path / "run", "interrupted")
    shutil.rmtree(run / "checkpoint")
    shutil.copytree(runs["small28"] / "checkpoint", run / "checkpoint")
    refused("resume-with-another-models-checkpoint", tmp_path, ["train", "--resume", run],
            f"checkpoint {run / 'checkpoint'} does not fit this model")


def test_eval_with_another_models_weights(tmp_path, runs):
    run = copy_run(runs["small8"], tmp_path / "run")
    shutil.copyfile(runs["small28"] / "checkpoint" / "model.safetensors", run / "checkpoint" / "model.safetensors")
    refused("eval-with-another-models-weights", tmp_path, ["eval", run],
            f"checkpoint {run / 'checkpoint' / 'model.safetensors'} does not fit this model")


@pytest.mark.parametrize("case", ["eval-of-an-unfinished-run", "eval-with-a-garbled-summary",
                                  "eval-with-a-summary-without-data"])
def test_eval_of_a_run_with_a_bad_summary(tmp_path, runs, case):
    run = copy_run(runs["small8"], tmp_path / "run", "running" if case == "eval-of-an-unfinished-run" else None)
    if case == "eval-of-an-unfinished-run":
        fragments = ["has not completed (status 'running')"]
    elif case == "eval-with-a-garbled-summary":
        (run / "summary.json").write_bytes(noise(50))
        fragments = ["has no readable summary.json"]
    else:
        (run / "summary.json").write_text('{"status": "completed"}')
        fragments = [f"{run}: summary.json has no valid data record (classes, input_shape)"]
    refused(case, tmp_path, ["eval", run, "--out", tmp_path / "eval"], str(run), *fragments, out=tmp_path / "eval")


def test_eval_with_weights_that_are_not_safetensors(tmp_path, runs):
    run = copy_run(runs["small8"], tmp_path / "run")
    (run / "checkpoint" / "model.safetensors").write_bytes(noise(100))
    refused("eval-with-garbage-weights", tmp_path, ["eval", run],
            f"checkpoint file {run / 'checkpoint' / 'model.safetensors'} is not a valid safetensors file")


STATES = {
    "garbled-state-json": (noise(64, seed=5), ["state", "is unreadable"]),
    "state-json-not-an-object": (b"[1, 2]", ["state", "unknown format"]),
    "state-json-missing-fields": (b'{"format": 1}', ["is damaged: epoch must be a whole number >= 0, got None"]),
    "state-json-wrong-types": ((b'{"format": 1, "epoch": "one", "method_file": 3, "optimizer_file": null, '
                                b'"sha256": [], "optimizer": {}}'),
                               ["is damaged: epoch must be a whole number >= 0, got 'one'"]),
    "state-json-file-outside-the-checkpoint": (
        (b'{"format": 1, "epoch": 1, "method_file": "../../config.yaml", "optimizer_file": "o", "sha256": {}, '
         b'"optimizer": {}}'),
        ["method_file must be a file name in the checkpoint folder, got '../../config.yaml'"]),
}


@pytest.mark.parametrize("case", STATES)
def test_resume_with_a_damaged_state_json(tmp_path, runs, case):
    content, fragments = STATES[case]
    run = copy_run(runs["small8"], tmp_path / "run", "interrupted")
    (run / "checkpoint" / "state.json").write_bytes(content)
    refused(case, tmp_path, ["train", "--resume", run], str(run / "checkpoint" / "state.json"), *fragments)


def test_resume_with_a_missing_method_file(tmp_path, runs):
    run = copy_run(runs["small8"], tmp_path / "run", "interrupted")
    (run / "checkpoint" / "method-0001.safetensors").unlink()
    refused("resume-with-a-missing-checkpoint-file", tmp_path, ["train", "--resume", run],
            f"cannot read checkpoint file {run / 'checkpoint' / 'method-0001.safetensors'}")


def test_resume_with_a_damaged_config(tmp_path, runs):
    run = copy_run(runs["small8"], tmp_path / "run", "interrupted")
    (run / "config.yaml").write_text((run / "config.yaml").read_text().replace("epochs: 1", "epochs: zero"))
    refused("resume-with-a-damaged-config", tmp_path, ["train", "--resume", run], str(run / "config.yaml"),
            "train.epochs", "'zero'")


def test_output_folder_that_exists(tmp_path, runs):
    run = copy_run(runs["small8"], tmp_path / "run")
    path = write_recipe(tmp_path, DIGITS)
    refused("output-folder-exists", tmp_path, ["train", path, "--out", run],
            f"output folder {run} already exists; use --resume to continue it or --force to replace it")


def test_force_on_a_folder_that_is_not_a_run(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    path = write_recipe(tmp_path, DIGITS)
    refused("force-on-a-folder-that-is-not-a-run", tmp_path, ["train", path, "--out", tmp_path / "mine", "--force"],
            f"--force refuses to delete {tmp_path / 'mine'}: it is not a kdlab run directory")


def test_resume_with_a_recipe(tmp_path, runs):
    run = copy_run(runs["small8"], tmp_path / "run", "interrupted")
    path = write_recipe(tmp_path, DIGITS)
    refused("resume-with-a-recipe", tmp_path, ["train", path, "--resume", run], "--resume RUN_DIR takes no recipe")


EVALS = {
    "eval-override-outside-data": (["train.epochs=3"], ["eval overrides change the data only", "'train.epochs=3'"]),
    "eval-unknown-split": (["--splits", "test,holdout"], ["has no holdout split"]),
    "eval-data-with-other-classes": (None, ["has classes ['cat', 'dog']", "evaluation needs the same classes"]),
}


@pytest.mark.parametrize("case", EVALS)
def test_bad_eval(tmp_path, runs, case):
    args, fragments = EVALS[case]
    if args is None:
        image_folder(tmp_path / "data")
        args = ["data.source=folder", f"data.path={tmp_path / 'data'}", "data.train_size=0"]
    run = copy_run(runs["small8"], tmp_path / "run")
    refused(case, tmp_path, ["eval", run, *args, "--out", tmp_path / "eval"], *fragments, out=tmp_path / "eval")

