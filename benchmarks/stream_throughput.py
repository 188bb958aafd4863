"""Streaming throughput: kdlab's ``residency: stream`` loader against torchvision's ``ImageFolder`` + ``DataLoader``,
side by side in one process, on the CIFAR-10 JPEG training folder (50,000 files).

    PYTHONPATH=src python benchmarks/stream_throughput.py [--root ../shared/data/cifar10-jpeg] [--workers 2]
        [--batch 128] [--epochs 2] [--out benchmarks/results/stream_throughput.json]

Both read and decode every file with Pillow in ``--workers`` persistent worker processes, shuffle, random-crop
(padding 4) and flip, and hand over normalised float32 N x 3 x 32 x 32 batches; no model runs. torchvision applies
``RandomCrop`` / ``RandomHorizontalFlip`` / ``ToTensor`` / ``Normalize`` per image in the workers; kdlab decodes in
the workers and crops, flips and normalises whole batches in the training process (what it does on a GPU). The
first epoch (worker start-up, cold page cache for the first loader) is reported apart from the steady ones; the two
loaders alternate epochs so that both see the same page cache.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from kdlab.version import cpu_features, machine_description


def kdlab_loader(root: Path, workers: int, batch: int):
    from kdlab.data import load_dataset
    from kdlab.data.augment import CropFlip
    from kdlab.data.stream import StreamLoader

    dataset = load_dataset("folder", root, residency="stream")
    return StreamLoader(dataset.train, "cpu", batch, workers=workers, mean=[0.49, 0.48, 0.45],
                        std=[0.25, 0.24, 0.26], shuffle=True, augment=CropFlip(4, "zero", True), seed=0)


def torchvision_loader(root: Path, workers: int, batch: int):
    from torchvision import datasets, transforms

    transform = transforms.Compose([transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(),
                                    transforms.ToTensor(), transforms.Normalize([0.49, 0.48, 0.45],
                                                                                [0.25, 0.24, 0.26])])
    folder = datasets.ImageFolder(str(root / "train"), transform=transform)
    return torch.utils.data.DataLoader(folder, batch_size=batch, shuffle=True, num_workers=workers,
                                       persistent_workers=workers > 0)


def one_epoch(loader, epoch: int, kdlab: bool) -> tuple[float, int]:
    start, images = time.perf_counter(), 0
    batches = loader.batches(epoch) if kdlab else loader
    for inputs, _labels in batches:
        assert inputs.dtype == torch.float32 and inputs.shape[1:] == (3, 32, 32)
        images += inputs.shape[0]
    return time.perf_counter() - start, images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=Path("../shared/data/cifar10-jpeg"))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=2, help="steady epochs per loader, after a first one")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/stream_throughput.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)  # the training process's own work (kdlab's batch crop + normalise) on one core
    loaders = {"kdlab_stream": kdlab_loader(args.root, args.workers, args.batch),
               "torchvision_imagefolder": torchvision_loader(args.root, args.workers, args.batch)}
    times = {name: [] for name in loaders}
    for epoch in range(args.epochs + 1):
        for name, loader in loaders.items():
            seconds, images = one_epoch(loader, epoch, name.startswith("kdlab"))
            times[name].append(seconds)
            print(f"epoch {epoch} {name}: {images} images in {seconds:.1f} s ({images / seconds:.0f} img/s)", flush=True)
    result = {
        "command": "PYTHONPATH=src python benchmarks/stream_throughput.py " + " ".join(
            f"--{k} {v}" for k, v in vars(args).items() if k != "out"),
        "machine": {"cpu": machine_description(), "cpu_features": cpu_features(), "torch": torch.__version__,
                    "python": platform.python_version()},
        "images_per_epoch": images,
        "first_epoch_images_per_second": {name: round(images / t[0], 1) for name, t in times.items()},
        "steady_images_per_second": {name: round(images * len(t[1:]) / sum(t[1:]), 1) for name, t in times.items()},
    }
    steady = result["steady_images_per_second"]
    result["speedup_steady"] = round(steady["kdlab_stream"] / steady["torchvision_imagefolder"], 3)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
