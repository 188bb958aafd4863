"""FKD stored teacher views: the store's size per image, the time to fill it, and a student epoch from the store
against the same epoch with the teacher run live, side by side in one process.

    PYTHONPATH=src python benchmarks/fkd_store.py [--root ../shared/data/cifar10-jpeg] [--train-size 5000]
        [--teacher resnet56] [--student resnet8] [--views 4] [--epochs 2] [--out benchmarks/results/fkd_store.json]

A teacher run (``--teacher``, one epoch of plain cross-entropy with RandomResizedCrop; its accuracy does not
matter for timing) is trained first. Then three KD recipes that differ only in ``runtime.teacher_cache`` train the
student for ``--epochs`` epochs on ``--views`` stored RandomResizedCrop views (size 32, scale [0.35, 1]) of each
image: ``off`` (the teacher runs on every batch), ``stored`` after ``kdlab cache-teacher`` filled the store with
every view (all K logits: exact), and ``stored`` with ``teacher_top_k: 3``, each ``--rounds`` times in
alternation (the medians are compared; ``train_images_per_second`` is the summary's training-phase rate). All use ``runtime.teacher_batch: 64``,
so the stored run equals the live one bit for bit (checked here too). bf16 autocast, channels_last, 2 threads.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from kdlab.config import load_recipe
from kdlab.train.engine import train
from kdlab.train.precompute_teacher import precompute
from kdlab.version import cpu_features, machine_description


def recipe(args, cache: Path, model: str, method: dict, runtime: dict, epochs: int):
    return load_recipe(raw={
        "data": {"source": "folder", "path": str(args.root), "train_size": args.train_size, "val_size": 0,
                 "flip": True, "cache_dir": str(cache),
                 "random_resized_crop": {"size": 32, "scale": [0.35, 1.0], "stored_views": args.views}},
        "model": {"name": model}, "method": method, "train": {"epochs": epochs, "batch_size": 128},
        "runtime": {"precision": "bf16", "channels_last": True, "threads": 2, "progress": False, **runtime}})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/cifar10-jpeg")
    parser.add_argument("--train-size", type=int, default=5000)
    parser.add_argument("--teacher", default="resnet56")
    parser.add_argument("--student", default="resnet8")
    parser.add_argument("--views", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/fkd_store.json"))
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="kdlab-fkd-"))
    cache = work / "cache"
    teacher_run = work / "teacher"
    train(recipe(args, cache, args.teacher, {"name": "ce"}, {}, 1), teacher_run, quiet=True)
    kd = {"name": "kd", "teacher": str(teacher_run)}
    fixed = {"teacher_batch": 64}
    runs, timings = {}, {}
    start = time.perf_counter()
    filled = precompute(recipe(args, cache, args.student, kd, {"teacher_cache": "stored", **fixed}, args.epochs),
                        quiet=True)
    timings["fill_store_seconds"] = round(time.perf_counter() - start, 2)
    configurations = (("live", {"teacher_cache": "off", **fixed}),
                      ("stored", {"teacher_cache": "stored", **fixed}),
                      ("stored_top3", {"teacher_cache": "stored", "teacher_top_k": 3, **fixed}))
    start = time.perf_counter()
    precompute(recipe(args, cache, args.student, kd, configurations[2][1], args.epochs), quiet=True)
    timings["fill_store_top3_seconds"] = round(time.perf_counter() - start, 2)
    speeds: dict[str, list[float]] = {name: [] for name, _ in configurations}
    for round_ in range(args.rounds):  # alternating, so a slow spell of the machine hits every configuration
        for name, runtime in configurations:
            runs[name] = train(recipe(args, cache, args.student, kd, runtime, args.epochs),
                               work / f"{name}-{round_}", quiet=True)
            speeds[name].append(runs[name]["train_images_per_second"])
    result = {
        "command": "PYTHONPATH=src python benchmarks/fkd_store.py " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k not in ("out", "root")),
        "machine": machine_description(), "cpu_features": cpu_features(),
        "teacher": args.teacher, "student": args.student, "train_images": runs["live"]["data"]["train"],
        "views_per_image": args.views, "epochs": args.epochs, **timings,
        "train_images_per_second_each_round": {name: [round(v, 1) for v in values] for name, values in speeds.items()},
        "train_images_per_second_median": {name: round(statistics.median(v), 1) for name, v in speeds.items()},
        "speed_up_stored_vs_live": round(statistics.median(speeds["stored"]) / statistics.median(speeds["live"]), 2),
        "speed_up_stored_top3_vs_live": round(statistics.median(speeds["stored_top3"])
                                              / statistics.median(speeds["live"]), 2),
        "store": {name: {k: runs[name]["teacher_cache"][k] for k in ("top_k", "exact", "bytes_per_image", "misses",
                                                                     "coverage")}
                  for name in ("stored", "stored_top3")},
        "dense_table_bytes_per_image": args.views * len(runs["live"]["data"]["class_names"]) * 2,
        "stored_equals_live": runs["stored"]["final"] == runs["live"]["final"],
        "final": {name: run["final"] for name, run in runs.items()},
        "store_filled": filled.coverage,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
