"""scikit-learn's bundled handwritten digits (``sklearn.datasets.load_digits``): 1,797 grey 8x8 images, 10 classes.

The source is the UCI "Optical Recognition of Handwritten Digits" test set as shipped inside scikit-learn, so it
needs no files and no download. Pixels are counts 0..16; they become uint8 0..255 by ``round(v * 255 / 16)``.

The dataset has no official train/test split. kdlab uses a fixed stratified 80/20 split with seed 0 (1,438 train,
359 test images), the same on every machine for a given scikit-learn version.
"""

from __future__ import annotations

from importlib.metadata import version

import numpy as np

from kdlab.data.dataset import Dataset
from kdlab.data.sources.common import make_split
from kdlab.data.split import stratified_split

TEST_FRACTION = 0.2
SPLIT_SEED = 0


def digits_version() -> str:
    """What the decoded digits depend on, in place of a file listing: the scikit-learn release bundling them."""
    return f"scikit-learn {version('scikit-learn')}"


def decode_digits() -> Dataset:
    """The digits as 8x8x1 uint8 images with the fixed seed-0 stratified 80/20 train/test split."""
    from sklearn.datasets import load_digits  # imported here: scikit-learn takes a second to import

    bunch = load_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    labels = bunch.target.astype(np.int64)
    test_count = int(round(TEST_FRACTION * len(labels)))
    train, test = stratified_split(labels, test_count, SPLIT_SEED, "digits")
    return Dataset(
        name="digits",
        classes=[str(d) for d in range(10)],
        train=make_split(images[train], labels[train]),
        test=make_split(images[test], labels[test]),
        val=None,
        fingerprint="",
    )
