"""RandomResizedCrop on the device (kdlab.data.resized_crop): torchvision's box distribution and sampling positions,
the centre crop of evaluation, stored views that are a pure function of (seed, slot, image), and the recipe surface."""

from __future__ import annotations

import pytest
import torch
from torchvision.transforms import RandomResizedCrop as TorchvisionRRC
from torchvision.transforms import functional as TF

from kdlab.config import load_recipe
from kdlab.data.loader import DeviceLoader
from kdlab.data.resized_crop import Boxes, CentreCrop, RandomResizedCrop
from kdlab.data.stored_views import StoredViews
from kdlab.errors import KdlabError
from tests._cli import assert_user_error, kdlab_main, write_recipe


@pytest.mark.parametrize("image_size", [(64, 48), (40, 120)])
def test_boxes_follow_torchvision_get_params(image_size):
    h, w = image_size
    crop = RandomResizedCrop(32, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), flip=True)
    ours = crop.sample(20000, torch.Generator().manual_seed(0), image_size=image_size)
    assert ((ours.top >= 0) & (ours.left >= 0) & (ours.top + ours.height <= h) & (ours.left + ours.width <= w)).all()
    torch.manual_seed(0)
    theirs = torch.tensor([TorchvisionRRC.get_params(torch.empty(3, h, w), [0.08, 1.0], [3 / 4, 4 / 3])
                           for _ in range(20000)], dtype=torch.float64)
    for column, ours_column in enumerate((ours.top, ours.left, ours.height, ours.width)):
        a, b = ours_column.double(), theirs[:, column]
        assert abs(a.mean() - b.mean()) < 0.03 * max(h, w), column  # same distribution (20000 draws each)
        assert abs(a.std() - b.std()) < 0.04 * max(h, w), column
    area = ours.height * ours.width / (h * w)
    assert float(area.min()) >= 0.07 and float(area.max()) <= 1.0
    assert 0.47 < float(ours.flip.double().mean()) < 0.53


def test_no_box_fits_falls_back_to_the_centre_crop_within_the_ratio():
    crop = RandomResizedCrop(8, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip=False)  # a square of the whole area
    boxes = crop.sample(5, torch.Generator().manual_seed(0), image_size=(20, 50))  # never fits a 20 x 50 image
    assert boxes.height.tolist() == [20] * 5 and boxes.width.tolist() == [20] * 5
    assert boxes.top.tolist() == [0] * 5 and boxes.left.tolist() == [15] * 5


def test_crops_are_sampled_where_torchvision_samples_them():
    images = torch.randint(0, 256, (4, 64, 48, 3), dtype=torch.uint8)
    boxes = Boxes(torch.tensor([0, 5, 10, 3]), torch.tensor([0, 2, 7, 1]), torch.tensor([64, 50, 40, 33]),
                  torch.tensor([48, 40, 33, 45]), torch.tensor([0, 1, 0, 1]))
    out = RandomResizedCrop(32).apply(images, boxes)
    assert out.shape == (4, 32, 32, 3) and out.dtype == torch.float32
    for i in range(4):
        expected = TF.resized_crop(images[i].permute(2, 0, 1).float(), *(int(t[i]) for t in boxes.tensors()[:4]),
                                   [32, 32], antialias=False)
        expected = expected.flip(-1) if boxes.flip[i] else expected
        torch.testing.assert_close(out[i].permute(2, 0, 1), expected, atol=2e-3, rtol=0)


def test_centre_crop_is_exact_pixels_when_no_resize_is_needed():
    images = torch.randint(0, 256, (2, 32, 32, 3), dtype=torch.uint8)
    assert torch.equal(CentreCrop(24, 0.75).apply(images), images[:, 4:28, 4:28])
    resized = CentreCrop(16, 0.75).apply(images)
    expected = TF.resize(images[:, 4:28, 4:28].permute(0, 3, 1, 2).float(), [16, 16], antialias=False)
    torch.testing.assert_close(resized.permute(0, 3, 1, 2), expected, atol=2e-3, rtol=0)


def test_stored_boxes_depend_only_on_seed_slot_and_image():
    views = StoredViews(RandomResizedCrop(24), count=4, seed=3)
    small, large = views.table(5000, (32, 32)), StoredViews(RandomResizedCrop(24), 4, 3).table(9000, (32, 32))
    assert small.shape == (5000, 4, 5) and torch.equal(small, large[:5000])
    assert not torch.equal(small, StoredViews(RandomResizedCrop(24), 4, 4).table(5000, (32, 32)))
    samples = torch.tensor([7, 4999, 7, 0])
    picked = views.sample(4, torch.Generator().manual_seed(1), image_size=(32, 32), samples=samples)
    assert torch.equal(picked.stacked().int(), small[samples, picked.slot])
    assert torch.equal(views.view_index(picked), picked.slot)
    again = views.views_of(picked.slot, samples)
    assert torch.equal(again.stacked(), picked.stacked())


def test_a_loader_draws_the_same_boxes_for_a_sample_in_every_split_order(cifar_subset, private_cache):
    from kdlab.data import load_dataset

    dataset = load_dataset("folder", cifar_subset)
    views = StoredViews(RandomResizedCrop(24), count=2, seed=0)
    stats = {"mean": [0.5] * 3, "std": [0.25] * 3}
    loader = DeviceLoader(dataset.train, "cpu", 50, shuffle=True, augment=views, seed=1, **stats)
    table = views.table(len(dataset.train), (32, 32))
    for epoch in (0, 1):
        order, boxes = loader.epoch_plan(epoch)
        assert torch.equal(boxes.stacked().int(), table[loader.source_index[order], boxes.slot])
    x, _ = next(iter(loader.batches(0)))
    assert x.shape == (50, 3, 24, 24)


@pytest.mark.parametrize("change, fragment", [
    ({"crop_padding": 4}, "crop_padding and random_resized_crop are two crops"),
    ({"random_resized_crop": {"size": 24, "scale": [0.9, 0.2]}}, "scale must be [low, high]"),
    ({"random_resized_crop": {"size": 24, "scale": [0.2, 1.5]}}, "scale must lie in (0, 1]"),
    ({"random_resized_crop": {"size": 0}}, "random_resized_crop.size"),
    ({"random_resized_crop": {"size": 24, "stored_views": 0}}, "stored_views"),
])
def test_bad_crop_settings_are_one_line_errors(tmp_path, change, fragment):
    data = {"source": "digits", "random_resized_crop": {"size": 24}, **change}
    recipe = write_recipe(tmp_path, {"data": data, "model": {"name": "cnn_small8"}, "train": {"epochs": 1}})
    assert_user_error(kdlab_main("train", recipe, "--out", tmp_path / "run"), fragment)
    assert not (tmp_path / "run").exists()


def test_stored_teacher_cache_needs_stored_views():
    with pytest.raises(KdlabError, match="teacher_cache: stored needs data.random_resized_crop.stored_views"):
        load_recipe(raw={"data": {"source": "digits", "random_resized_crop": {"size": 8}}, "model": {"name": "x"},
                         "train": {"epochs": 1}, "runtime": {"teacher_cache": "stored"}})
    with pytest.raises(KdlabError, match="teacher_top_k applies to runtime.teacher_cache: stored only"):
        load_recipe(raw={"data": {"source": "digits"}, "model": {"name": "x"}, "train": {"epochs": 1},
                         "runtime": {"teacher_top_k": 3}})

