"""Bad input through the real command: one line on stderr, exit status 2, no traceback, nothing written."""

import gzip
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
DIGITS = {
    "data": {"source": "digits"},
    "model": {"name": "cnn_small8"},
    "train": {"epochs": 1},
    "runtime": {"progress": False},
}


def kdlab(tmp_path, *args):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "KDLAB_CACHE_DIR": str(tmp_path / "cache")}
    return subprocess.run([sys.executable, "-m", "kdlab", *map(str, args)], capture_output=True, text=True, env=env,
                          timeout=300, cwd=tmp_path)


def assert_user_error(result, *fragments):
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("kdlab: error: ") and "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def write_recipe(tmp_path, raw):
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def image_folder(root: Path, corrupt: str | None = None, size: int = 8):
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for cls in ("cat", "dog"):
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i in range(4):
                Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    if corrupt:
        (root / corrupt).write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")


def idx_files(root: Path, labels: list[int]):
    root.mkdir(parents=True)
    n = len(labels)
    images = np.zeros((n, 28, 28), dtype=np.uint8)
    for prefix in ("train", "t10k"):
        with gzip.open(root / f"{prefix}-images-idx3-ubyte.gz", "wb") as f:
            f.write(struct.pack(">IIII", 0x803, n, 28, 28) + images.tobytes())
        with gzip.open(root / f"{prefix}-labels-idx1-ubyte.gz", "wb") as f:
            f.write(struct.pack(">II", 0x801, n) + bytes(labels))


def test_unknown_recipe_key(tmp_path):
    recipe = write_recipe(tmp_path, {**DIGITS, "optim": {"learning_rate": 0.1}})
    assert_user_error(kdlab(tmp_path, "train", recipe, "--out", tmp_path / "run"), "unknown key 'optim.learning_rate'")
    assert not (tmp_path / "run").exists()


def test_out_of_range_value_from_an_override(tmp_path):
    recipe = write_recipe(tmp_path, DIGITS)
    result = kdlab(tmp_path, "train", recipe, "method.name=ls", "method.eps=1.5", "--out", tmp_path / "run")
    assert_user_error(result, "method.eps")
    assert not (tmp_path / "run").exists()


def test_missing_data_folder(tmp_path):
    missing = tmp_path / "nowhere"
    recipe = write_recipe(tmp_path, {**DIGITS, "data": {"source": "folder", "path": str(missing)}})
    assert_user_error(kdlab(tmp_path, "train", recipe, "--out", tmp_path / "run"), str(missing))
    assert not (tmp_path / "run").exists()


def test_corrupt_image(tmp_path):
    image_folder(tmp_path / "imgs", corrupt="train/dog/bad.png")
    recipe = write_recipe(tmp_path, {**DIGITS, "data": {"source": "folder", "path": str(tmp_path / "imgs")},
                                     "model": {"name": "resnet8"}})
    assert_user_error(kdlab(tmp_path, "train", recipe, "--out", tmp_path / "run"), "bad.png")
    assert not (tmp_path / "run").exists()


def test_label_out_of_range(tmp_path):
    idx_files(tmp_path / "mnist", [0, 1, 2, 12])
    recipe = write_recipe(tmp_path, {**DIGITS, "data": {"source": "idx", "path": str(tmp_path / "mnist")},
                                     "model": {"name": "cnn_small28"}})
    assert_user_error(kdlab(tmp_path, "train", recipe, "--out", tmp_path / "run"), "12")
    assert not (tmp_path / "run").exists()


def test_unknown_model_and_missing_recipe(tmp_path):
    recipe = write_recipe(tmp_path, {**DIGITS, "model": {"name": "resnet21"}})
    assert_user_error(kdlab(tmp_path, "train", recipe, "--out", tmp_path / "run"), "resnet21")
    assert_user_error(kdlab(tmp_path, "train", tmp_path / "nope.yaml"), "nope.yaml")
    assert not (tmp_path / "run").exists()


def test_model_that_cannot_take_the_images(tmp_path):
    image_folder(tmp_path / "tiny", size=4)  # vgg8's max-poolings cannot shrink 4x4 images that far
    recipe = write_recipe(tmp_path, {**DIGITS, "data": {"source": "folder", "path": str(tmp_path / "tiny")},
                                     "model": {"name": "vgg8"}})
    assert_user_error(kdlab(tmp_path, "train", recipe, "--out", tmp_path / "run"), "vgg8", "4x4x3")
    assert not (tmp_path / "run").exists()


def test_resume_of_something_that_is_not_a_run(tmp_path):
    (tmp_path / "empty").mkdir()
    assert_user_error(kdlab(tmp_path, "train", "--resume", tmp_path / "empty"), "not a kdlab run directory")
