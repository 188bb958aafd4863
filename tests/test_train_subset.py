"""data.train_size: a fixed stratified subset of the training split (low-data regimes), the same for every seed."""

import numpy as np
import pytest

from kdlab.config import load_recipe
from kdlab.data import load_dataset
from kdlab.errors import KdlabError


def test_subset_is_stratified_fixed_and_taken_before_validation(tmp_path):
    full = load_dataset("digits", cache_dir=tmp_path)
    small = load_dataset("digits", train_size=500, cache_dir=tmp_path)
    assert len(small.train) == 500 and len(small.test) == len(full.test)
    share = np.bincount(small.train.labels, minlength=10) / 500
    np.testing.assert_allclose(share, np.bincount(full.train.labels, minlength=10) / len(full.train), atol=0.01)
    # the subset does not depend on the run seed; the validation split is carved from it
    a = load_dataset("digits", train_size=500, val_size=100, seed=1, cache_dir=tmp_path)
    b = load_dataset("digits", train_size=500, val_size=100, seed=2, cache_dir=tmp_path)
    kept = set(small.train.source_index.tolist())
    for ds in (a, b):
        assert len(ds.train) == 400 and len(ds.val) == 100
        assert set(ds.train.source_index.tolist()) | set(ds.val.source_index.tolist()) == kept
    assert set(a.val.source_index.tolist()) != set(b.val.source_index.tolist())
    assert small.fingerprint != full.fingerprint
    fraction = load_dataset("digits", train_size=0.25, cache_dir=tmp_path)
    assert len(fraction.train) == round(0.25 * len(full.train))


def test_bad_subset_sizes_are_user_errors(tmp_path):
    with pytest.raises(KdlabError, match="train_size"):
        load_dataset("digits", train_size=10**6, cache_dir=tmp_path)
    with pytest.raises(KdlabError, match="train_size"):
        load_recipe(raw={"data": {"source": "digits", "train_size": 2.5}, "model": {"name": "cnn_small8"},
                         "train": {"epochs": 1}})
    with pytest.raises(KdlabError, match="train_size"):
        load_recipe(raw={"data": {"source": "digits", "train_size": -3}, "model": {"name": "cnn_small8"},
                         "train": {"epochs": 1}})
