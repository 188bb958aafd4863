"""Helpers for tests of the command line: run ``kdlab`` (in a subprocess, or in-process through
``kdlab.cli.main``), check the user-error contract, and write tiny data sets in each source's layout.

The contract for every user error: exactly one line on stderr starting ``kdlab: error: `` that names what is
wrong, exit status 2, no traceback, nothing written.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import pickle
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
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def kdlab(tmp_path, *args, cache: Path | None = None) -> subprocess.CompletedProcess:
    """``python -m kdlab ARGS`` in ``tmp_path`` with a private data cache (``tmp_path/cache`` unless given)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "KDLAB_CACHE_DIR": str(cache or tmp_path / "cache")}
    return subprocess.run([sys.executable, "-m", "kdlab", *map(str, args)], capture_output=True, text=True, env=env,
                          timeout=300, cwd=tmp_path)


def kdlab_main(*args) -> subprocess.CompletedProcess:
    """``kdlab.cli.main(ARGS)`` in this process, as the command runs it: the exit status (its return value, or
    argparse's ``SystemExit``) and what it wrote to stdout and stderr."""
    from kdlab.cli import main

    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        try:
            code = main([str(a) for a in args])
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
    return subprocess.CompletedProcess(list(args), code, stdout.getvalue(), stderr.getvalue())


def assert_user_error(result, *fragments) -> str:
    """Exit status 2 and exactly one stderr line ``kdlab: error: ...`` holding every fragment; return the line."""
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("kdlab: error: ") and "Traceback" not in result.stderr, result.stderr
    for fragment in fragments:
        assert str(fragment) in lines[0], (fragment, lines[0])
    return lines[0]


def write_recipe(folder: Path, raw, name: str = "recipe.yaml") -> Path:
    path = Path(folder) / name
    path.write_text(raw if isinstance(raw, str) else yaml.safe_dump(raw))
    return path


def train_killed_and_resumed(tmp_path: Path, recipe: Path) -> tuple[dict, dict]:
    """The summaries of ``recipe`` trained in one go and trained, killed (SIGKILL while writing its second
    checkpoint) and resumed: callers assert they are equal."""
    import json

    assert kdlab_main("train", recipe, "--out", tmp_path / "whole").returncode == 0
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "KDLAB_CACHE_DIR": str(tmp_path / "kill-cache"),
           "KDLAB_FAULT": "kill@state.json#2"}
    killed = subprocess.run([sys.executable, "-m", "kdlab", "train", str(recipe), "--out", str(tmp_path / "killed")],
                            env=env, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr
    assert kdlab_main("train", "--resume", tmp_path / "killed").returncode == 0
    return tuple(json.loads((tmp_path / name / "summary.json").read_text()) for name in ("whole", "killed"))


def snapshot(folder: Path, any_content: tuple[str, ...] = ()) -> dict[str, bytes | None]:
    """Every file and folder under ``folder``: relative path -> bytes (None for a folder; just b"..." for files
    named in ``any_content``, e.g. a run's ``.lock``, which holds the pid of whoever last locked it)."""
    return {str(p.relative_to(folder)): None if p.is_dir() else b"..." if p.name in any_content else p.read_bytes()
            for p in sorted(Path(folder).rglob("*"))}


# ------------------------------------------------------------------------------------------------- tiny data sets


def image_folder(root: Path, corrupt: str | None = None, size: int = 8, suffix: str = ".png",
                 classes=("cat", "dog"), per_class: int = 4) -> Path:
    """``root/{train,test}/<class>/<i><suffix>``: random RGB images; ``corrupt`` names a file to fill with junk."""
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for cls in classes:
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i in range(per_class):
                Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"{i}{suffix}")
    if corrupt:
        (root / corrupt).write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
    return root


def encoded_image(fmt: str, size: int = 16, seed: int = 1) -> bytes:
    """A valid PNG or JPEG of random pixels."""
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buffer, fmt)
    return buffer.getvalue()


def idx_bytes(array: np.ndarray) -> bytes:
    """The IDX encoding (unsigned bytes) of ``array``."""
    return struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape) + \
        array.astype(np.uint8).tobytes()


def idx_files(root: Path, labels: list[int], side: int = 28) -> Path:
    """MNIST-layout gzipped IDX files with ``len(labels)`` black images in each of train and t10k."""
    root.mkdir(parents=True)
    images = np.zeros((len(labels), side, side), dtype=np.uint8)
    for prefix in ("train", "t10k"):
        with gzip.open(root / f"{prefix}-images-idx3-ubyte.gz", "wb") as f:
            f.write(idx_bytes(images))
        with gzip.open(root / f"{prefix}-labels-idx1-ubyte.gz", "wb") as f:
            f.write(idx_bytes(np.asarray(labels, dtype=np.uint8)))
    return root


def cifar_batch(n: int, seed: int, labels: list[int] | None = None) -> dict:
    rows = np.random.default_rng(seed).integers(0, 256, (n, 3072), dtype=np.uint8)
    return {b"batch_label": b"batch", b"labels": labels if labels is not None else [j % 10 for j in range(n)],
            b"data": rows, b"filenames": [f"{seed}_{j}.png".encode() for j in range(n)]}


def cifar10_folder(parent: Path, per_batch: int = 4) -> Path:
    """The official ``cifar-10-batches-py`` layout (pickle protocol 2, bytes keys) with ``per_batch`` images a file."""
    folder = parent / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for i in range(1, 6):
        (folder / f"data_batch_{i}").write_bytes(pickle.dumps(cifar_batch(per_batch, i), protocol=2))
    (folder / "test_batch").write_bytes(pickle.dumps(cifar_batch(per_batch, 99), protocol=2))
    meta = {b"label_names": [n.encode() for n in CIFAR10_CLASSES], b"num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return folder


def cifar100_folder(parent: Path, train_per_class: int = 3, test_per_class: int = 1) -> Path:
    """The official ``cifar-100-python`` layout (train, test, meta; fine and coarse labels) with random images."""
    folder = parent / "cifar-100-python"
    folder.mkdir(parents=True)
    for name, per_class, seed in (("train", train_per_class, 1), ("test", test_per_class, 2)):
        fine = [k for k in range(100) for _ in range(per_class)]
        rows = np.random.default_rng(seed).integers(0, 256, (len(fine), 3072), dtype=np.uint8)
        batch = {b"filenames": [b"f.png"] * len(fine), b"batch_label": name.encode(), b"fine_labels": fine,
                 b"coarse_labels": [f // 5 for f in fine], b"data": rows}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    meta = {b"fine_label_names": [f"fine{i:02d}".encode() for i in range(100)],
            b"coarse_label_names": [f"coarse{i:02d}".encode() for i in range(20)]}
    (folder / "meta").write_bytes(pickle.dumps(meta, protocol=2))
    return folder


def audio_folder(root: Path, sample_rate: int = 8000, seconds: float = 0.1, classes=("hi", "lo")) -> Path:
    """``root/{train,test}/<class>/<i>.wav``: 16-bit sine tones, two per class and split."""
    import soundfile

    t = np.arange(int(sample_rate * seconds)) / sample_rate
    for split in ("train", "test"):
        for k, cls in enumerate(classes):
            (root / split / cls).mkdir(parents=True)
            for i in range(2):
                tone = 0.5 * np.sin(2 * np.pi * (300 + 400 * k + 50 * i) * t)
                soundfile.write(root / split / cls / f"{i}.wav", tone, sample_rate, subtype="PCM_16")
    return root
