"""Time to accuracy on CIFAR-10 (JPEG), on this machine, in one run: the speedrun recipe against kdlab's plain
resnet20 recipe and against the standard training loop (DataLoader + PIL transforms, fp32).

    python benchmarks/speedrun.py --out benchmarks/results/speedrun_cifar10_cpu.json
    python benchmarks/speedrun.py --contenders airnet          # the speedrun recipe alone

Every contender trains from scratch on the 50,000 training images and is scored on the 10,000 test images. Wall
time is the whole command as a user runs it: the first contender starts with an empty decoded-data cache (a fresh
KDLAB_CACHE_DIR), so JPEG decoding is inside its time; later kdlab contenders reuse that cache (recorded). The curve
is (wall seconds since start, test accuracy) at every evaluated epoch; kdlab's evaluation time is inside the wall
time. The reference loop's per-epoch test evaluation is timed apart and left out of its curve's times (so the
baselines are, if anything, flattered).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import torch  # noqa: E402

from kdlab.bench.machine_state import LoadProbe, assess, machine_kind  # noqa: E402
from kdlab.io import atomic_write_json  # noqa: E402
from kdlab.version import cpu_features, git_sha, machine_description  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "cifar10-jpeg"
SPEEDRUN = ROOT / "recipes" / "speedrun" / "cifar10_airnet.yaml"
RESNET20 = ROOT / "recipes" / "cifar10_jpeg_resnet20.yaml"


def kdlab_contender(name: str, recipe: Path, overrides: list[str], out: Path, env: dict) -> dict:
    command = [sys.executable, "-m", "kdlab", "train", str(recipe), *overrides, "--out", str(out)]
    start = time.perf_counter()
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{name}: kdlab train failed ({done.returncode}): {done.stderr.strip().splitlines()[-1:]}")
    summary = json.loads((out / "summary.json").read_text())
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    # curve times: the command's time outside the run's own clock (interpreter start-up, imports), then the
    # epochs' seconds as the run counted them
    elapsed, curve = 0.0, []
    setup = wall - summary["wall_seconds"]
    for row in rows:
        elapsed += row["epoch_seconds"]
        if "test_acc" in row:
            curve.append({"epoch": row["epoch"], "seconds": round(setup + elapsed, 1), "test_acc": row["test_acc"]})
    return {"name": name, "command": "kdlab train " + " ".join([str(recipe.relative_to(ROOT)), *overrides]),
            "wall_seconds": round(wall, 1), "process_start_seconds": round(setup, 1),
            "test_acc": summary["final"]["test_acc"], "test_nll": summary["final"]["test_nll"],
            "test_ece": summary["final"]["test_ece"], "epochs": summary["epochs"],
            "train_images_per_second": summary["train_images_per_second"], "runtime": {
                k: summary[k] for k in ("precision", "channels_last", "compile", "threads")}, "curve": curve}


def reference_contender(epochs: int, minutes: float, batch_size: int, workers: int, train_size: int = 0) -> dict:
    """resnet20 trained the standard way (bench's ReferenceLoop: DataLoader workers, PIL crop 4 + flip, fp32), SGD
    lr 0.1 nesterov-free momentum 0.9 wd 5e-4, cosine over ``epochs`` epochs, stopped after ``minutes``."""
    import numpy as np

    from kdlab import models
    from kdlab.bench.reference_loop import ReferenceLoop
    from kdlab.data import load_dataset

    start = time.perf_counter()
    dataset = load_dataset("folder", str(DATA), val_size=0)
    images, labels = dataset.train.images, dataset.train.labels
    if train_size:
        images, labels = images[:train_size], labels[:train_size]
    images = images.numpy() if hasattr(images, "numpy") else np.asarray(images)
    labels = labels.numpy() if hasattr(labels, "numpy") else np.asarray(labels)
    torch.manual_seed(0)
    student = models.create("resnet20", 10)
    loop = ReferenceLoop(images, labels, student, batch_size=batch_size, workers=workers, lr=0.1)
    # the test images normalised with the statistics the loop's transform uses (the training split's)
    mean, std = loop.dataset.mean.view(1, -1, 1, 1), loop.dataset.std.view(1, -1, 1, 1)
    test_x = (torch.as_tensor(np.asarray(dataset.test.images)).permute(0, 3, 1, 2).float() / 255 - mean) / std
    test_y = torch.as_tensor(np.asarray(dataset.test.labels))
    steps_per_epoch = math.ceil(len(labels) / batch_size)
    curve, eval_seconds = [], 0.0
    try:
        for epoch in range(epochs):
            for group in loop.optimizer.param_groups:
                group["lr"] = 0.1 * 0.5 * (1 + math.cos(math.pi * epoch / epochs))
            loop.run(steps_per_epoch)
            tick = time.perf_counter()
            student.eval()
            with torch.no_grad():
                predictions = torch.cat([student(x).argmax(1) for x in test_x.split(1000)])
            student.train()
            eval_seconds += time.perf_counter() - tick
            accuracy = (predictions == test_y).float().mean().item()
            curve.append({"epoch": epoch + 1, "seconds": round(time.perf_counter() - start - eval_seconds, 1),
                          "test_acc": accuracy})
            print(f"  reference epoch {epoch + 1}: test_acc {accuracy:.4f} at {curve[-1]['seconds']:.0f} s", flush=True)
            if time.perf_counter() - start - eval_seconds > minutes * 60:
                break
    finally:
        loop.close()
    return {"name": "reference", "command": "benchmarks/speedrun.py (kdlab.bench.reference_loop.ReferenceLoop)",
            "wall_seconds": round(time.perf_counter() - start, 1), "evaluation_seconds_left_out": round(eval_seconds, 1),
            "test_acc": curve[-1]["test_acc"], "epochs_planned": epochs, "epochs": len(curve),
            "batch_size": batch_size, "workers": workers, "train_images": len(labels), "curve": curve,
            "recipe": "resnet20, CE, SGD lr 0.1 momentum 0.9 wd 5e-4, cosine per epoch, crop 4 + flip, fp32"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contenders", default="airnet,resnet20,reference")
    parser.add_argument("--resnet20-epochs", type=int, default=20)
    parser.add_argument("--reference-epochs", type=int, default=20)
    parser.add_argument("--reference-minutes", type=float, default=20.0)
    parser.add_argument("--target", type=float, default=0.90)
    parser.add_argument("--limit-minutes", type=float, default=20.0)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "speedrun_cifar10_cpu.json"))
    parser.add_argument("--runs", default=str(ROOT / "runs" / "speedrun"))
    parser.add_argument("--reference-train-size", type=int, default=0,
                        help="train the reference on the first N images only (a smoke test of the script)")
    args = parser.parse_args()
    names = [n.strip() for n in args.contenders.split(",") if n.strip()]
    probe = LoadProbe().start()
    cache = tempfile.mkdtemp(prefix="kdlab-speedrun-cache-")
    env = {**os.environ, "KDLAB_CACHE_DIR": cache, "PYTHONPATH": str(ROOT / "src")}
    runs = Path(args.runs)
    results = []
    for name in names:
        print(f"{name} ...", flush=True)
        out = runs / name
        if out.exists():
            raise SystemExit(f"{out} exists: remove it or give --runs another folder")
        if name == "airnet":
            results.append(kdlab_contender(name, SPEEDRUN, [], out, env))
        elif name == "resnet20":
            results.append(kdlab_contender(name, RESNET20, [f"train.epochs={args.resnet20_epochs}",
                                                            "data.val_size=0"], out, env))
        elif name == "reference":
            results.append(reference_contender(args.reference_epochs, args.reference_minutes, 128, os.cpu_count() or 1,
                                               args.reference_train_size))
        else:
            raise SystemExit(f"unknown contender {name}: choose among airnet, resnet20, reference")
        print(f"  {name}: test_acc {results[-1]['test_acc']:.4f} in {results[-1]['wall_seconds']:.0f} s", flush=True)
    load = probe.stop()
    for result in results:
        reached = [p for p in result["curve"] if p["test_acc"] >= args.target]
        result["seconds_to_target"] = reached[0]["seconds"] if reached else None
    speedrun = next((r for r in results if r["name"] == "airnet"), None)
    record = {
        "name": "speedrun_cifar10_cpu", "command": "python benchmarks/speedrun.py " + " ".join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "git_sha": git_sha(), "machine": machine_description("cpu"),
        "machine_kind": machine_kind(), "cpu_features": cpu_features(), "torch_version": torch.__version__,
        "machine_state": {**assess(load, {}), **load},
        "data": "CIFAR-10 (JPEG) from ../shared/data/cifar10-jpeg: 50,000 train, 10,000 test",
        "target": args.target, "limit_minutes": args.limit_minutes,
        "meets_target": None if speedrun is None else
        bool(speedrun["test_acc"] >= args.target and speedrun["wall_seconds"] <= args.limit_minutes * 60),
        "first_decode_in": names[0], "contenders": results,
    }
    atomic_write_json(Path(args.out), record)
    print(json.dumps({r["name"]: [r["test_acc"], r["wall_seconds"]] for r in results}))


if __name__ == "__main__":
    main()
