"""On-device crop/flip and the device loader: independent reference, determinism, coverage."""

import numpy as np
import pytest
import torch

from kdlab.data.augment import CropFlip, Views
from kdlab.data.dataset import Split
from kdlab.data.loader import DeviceLoader, channel_stats


def reference_view(image: np.ndarray, dy: int, dx: int, flip: int, pad: int, mode: str) -> np.ndarray:
    """numpy.pad, slice, flip: the torchvision RandomCrop(padding) + RandomHorizontalFlip semantics."""
    padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode="constant" if mode == "zero" else "reflect")
    crop = padded[dy : dy + image.shape[0], dx : dx + image.shape[1]]
    return crop[:, ::-1] if flip else crop


@pytest.mark.parametrize("mode", ["zero", "reflect"])
@pytest.mark.parametrize("pad", [1, 4])
def test_crop_flip_matches_numpy_reference(mode, pad):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(64, 9, 11, 3), dtype=np.uint8)
    aug = CropFlip(pad, mode, flip=True)
    views = aug.sample(64, torch.Generator().manual_seed(1))
    out = aug.apply(torch.from_numpy(images), views).numpy()
    for i in range(64):
        expected = reference_view(images[i], views.dy[i].item(), views.dx[i].item(), views.flip[i].item(), pad, mode)
        np.testing.assert_array_equal(out[i], expected)


def test_every_view_is_reachable_and_indexed_uniquely():
    aug = CropFlip(2, "zero", flip=True)
    views = aug.sample(20000, torch.Generator().manual_seed(0))
    index = aug.view_index(views)
    assert aug.num_views == 50
    assert set(index.tolist()) == set(range(50))
    grid = torch.cartesian_prod(torch.arange(5), torch.arange(5), torch.arange(2))
    all_views = Views(grid[:, 0], grid[:, 1], grid[:, 2])
    assert sorted(aug.view_index(all_views).tolist()) == list(range(50))


def test_identity_augmentation_returns_input():
    x = torch.randint(0, 255, (4, 8, 8, 1), dtype=torch.uint8)
    aug = CropFlip(0, "zero", False)
    assert aug.apply(x, aug.sample(4, torch.Generator())) is x


def make_split(n=103, h=6, w=6, c=3, k=4):
    rng = np.random.default_rng(0)
    return Split(rng.integers(0, 256, (n, h, w, c), dtype=np.uint8), rng.integers(0, k, n).astype(np.int64))


def test_loader_normalises_and_covers_each_sample_once_per_epoch():
    split = make_split()
    mean, std = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]
    loader = DeviceLoader(split, "cpu", 16, mean=mean, std=std, shuffle=True, seed=3)
    assert len(loader) == 7
    xs, ys = zip(*loader.batches(0))
    x, y = torch.cat(xs), torch.cat(ys)
    assert x.shape == (103, 3, 6, 6) and x.dtype == torch.float32
    # Recover which sample each row is from its pixels and check the normalisation exactly.
    order, _ = loader.epoch_plan(0)
    raw = torch.from_numpy(split.images)[order].permute(0, 3, 1, 2).float() / 255
    expected = (raw - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    assert torch.allclose(x, expected, atol=1e-5)
    assert sorted(order.tolist()) == list(range(103))
    assert torch.equal(y, torch.from_numpy(split.labels)[order])


def test_loader_is_deterministic_per_seed_and_epoch_and_differs_across_epochs():
    split = make_split()
    kwargs = dict(mean=[0.5] * 3, std=[0.5] * 3, shuffle=True, augment=CropFlip(2, "reflect", True), seed=7)
    a = torch.cat([x for x, _ in DeviceLoader(split, "cpu", 32, **kwargs).batches(5)])
    b = torch.cat([x for x, _ in DeviceLoader(split, "cpu", 32, **kwargs).batches(5)])
    c = torch.cat([x for x, _ in DeviceLoader(split, "cpu", 32, **kwargs).batches(6)])
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_drop_last_and_channels_last():
    loader = DeviceLoader(make_split(), "cpu", 16, mean=[0.5] * 3, std=[0.5] * 3, shuffle=True, drop_last=True,
                          channels_last=True)
    batches = list(loader.batches(0))
    assert len(batches) == len(loader) == 6
    assert all(x.shape[0] == 16 and x.is_contiguous(memory_format=torch.channels_last) for x, _ in batches)


def test_channel_stats_match_numpy():
    split = make_split()
    mean, std = channel_stats(split.images)
    pixels = split.images.reshape(-1, 3) / 255.0
    np.testing.assert_allclose(mean, pixels.mean(0), atol=1e-6)
    np.testing.assert_allclose(std, pixels.std(0), atol=1e-6)


def test_channel_stats_of_several_splits_equal_those_of_their_union():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (7, 4, 5, 3), dtype=np.uint8)
    b = rng.integers(0, 256, (3, 4, 5, 3), dtype=np.uint8)
    assert channel_stats(a, b) == channel_stats(np.concatenate([a, b]))
