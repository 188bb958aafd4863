"""CIFAR-10, python version (Krizhevsky 2009, https://www.cs.toronto.edu/~kriz/cifar.html): 60,000 32x32x3 images
in 10 classes.

Layout of the official ``cifar-10-python.tar.gz`` once unpacked: ``cifar-10-batches-py/`` holding ``data_batch_1``
.. ``data_batch_5`` (10,000 training images each), ``test_batch`` (10,000) and ``batches.meta`` (``label_names``).
``path`` may be that folder or its parent. The official train/test split is kept; the file format is described in
:mod:`kdlab.data.sources.cifar_batches`.
"""

from __future__ import annotations

from pathlib import Path

from kdlab.data.dataset import Dataset
from kdlab.data.sources.cifar_batches import cifar_folder, concatenate, read_batch, read_names

FOLDER_NAME = "cifar-10-batches-py"
TRAIN_FILES = [f"data_batch_{i}" for i in range(1, 6)]
TEST_FILE = "test_batch"
META_FILE = "batches.meta"


def locate_cifar10(path: str) -> Path:
    """The folder holding the files: ``path`` itself or ``path/cifar-10-batches-py``."""
    return cifar_folder(path, FOLDER_NAME, [*TRAIN_FILES, TEST_FILE, META_FILE])


def decode_cifar10(path: str) -> Dataset:
    """The CIFAR-10 python batches under ``path`` (the batches folder or its parent)."""
    folder = locate_cifar10(path)
    classes = read_names(folder / META_FILE, "label_names")
    return Dataset(
        name="cifar10",
        classes=classes,
        train=concatenate([read_batch(folder / name, "labels", len(classes)) for name in TRAIN_FILES]),
        test=read_batch(folder / TEST_FILE, "labels", len(classes)),
        val=None,
        fingerprint="",
    )
