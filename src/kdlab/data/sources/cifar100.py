"""CIFAR-100, python version (Krizhevsky 2009, https://www.cs.toronto.edu/~kriz/cifar.html): 60,000 32x32x3 images
in 100 fine classes (grouped in 20 coarse superclasses, which kdlab does not use).

Layout of the official ``cifar-100-python.tar.gz`` once unpacked: ``cifar-100-python/`` holding ``train`` (50,000
images), ``test`` (10,000) and ``meta``. Labels are the FINE labels (``fine_labels``), named by ``meta``'s
``fine_label_names``. ``path`` may be that folder or its parent. The official train/test split is kept; the file
format is described in :mod:`kdlab.data.sources.cifar_batches`.
"""

from __future__ import annotations

from pathlib import Path

from kdlab.data.dataset import Dataset
from kdlab.data.sources.cifar_batches import cifar_folder, read_batch, read_names

FOLDER_NAME = "cifar-100-python"
TRAIN_FILE, TEST_FILE, META_FILE = "train", "test", "meta"


def locate_cifar100(path: str) -> Path:
    """The folder holding the files: ``path`` itself or ``path/cifar-100-python``."""
    return cifar_folder(path, FOLDER_NAME, [TRAIN_FILE, TEST_FILE, META_FILE])


def decode_cifar100(path: str) -> Dataset:
    """The CIFAR-100 python files under ``path`` (the ``cifar-100-python`` folder or its parent), fine labels."""
    folder = locate_cifar100(path)
    classes = read_names(folder / META_FILE, "fine_label_names")
    return Dataset(
        name="cifar100",
        classes=classes,
        train=read_batch(folder / TRAIN_FILE, "fine_labels", len(classes)),
        test=read_batch(folder / TEST_FILE, "fine_labels", len(classes)),
        val=None,
        fingerprint="",
    )
