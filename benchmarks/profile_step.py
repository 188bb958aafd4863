"""Where the time of one KD training step goes, phase by phase, in kdlab's engine configuration.

    PYTHONPATH=src python benchmarks/profile_step.py --student resnet20 --teacher resnet56 --batch 64 --steps 30 \
        [--precision bf16|fp32] [--channels-last auto|true|false] [--compile auto|true|false]
        [--teacher-cache off|memory] [--ops 15]

Phases of a step, timed with perf_counter (CPU execution is synchronous, so the clock is exact): ``data`` (index
gather, crop + flip, normalise on the device), ``teacher`` (teacher forward under inference mode, or a cache
lookup), ``student`` (student forward + loss), ``backward`` and ``optimizer``. The teacher's weights are random
(speed does not depend on them). ``--ops N`` also prints the N most expensive operators from torch.profiler.
Data: CIFAR-10 JPEG from ../shared/data/cifar10-jpeg (run from the project root).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from kdlab import losses
from kdlab.bench.configurations import Settings, make_recipe, untrained_teacher_run
from kdlab.data import load_dataset
from kdlab.train.engine import make_optimizer, prepare


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--student", default="resnet20")
    parser.add_argument("--teacher", default="resnet56", help="'none' profiles student-only CE")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--precision", choices=["bf16", "fp32"], default="bf16")
    parser.add_argument("--channels-last", choices=["auto", "true", "false"], default="auto")
    parser.add_argument("--compile", choices=["auto", "true", "false"], default="auto",
                        help="runtime.compile (auto: teacher compiled for inference on CIFAR-sized data, student eager)")
    parser.add_argument("--teacher-cache", choices=["off", "memory"], default="off",
                        help="memory: the timed steps' views are cached first (a warm cache)")
    parser.add_argument("--data", default="../shared/data/cifar10-jpeg")
    parser.add_argument("--ops", type=int, default=0)
    args = parser.parse_args()

    settings = Settings(steps=args.steps, rounds=1, warmup=0, workers=0, threads=torch.get_num_threads(),
                        batch_size=args.batch)
    data = {"source": "folder", "path": str(Path(args.data).absolute()), "val_size": 5000}
    student_only = prepare(make_recipe(data, args.student, settings))
    data.update(mean=student_only.recipe.data.mean, std=student_only.recipe.data.std)
    with tempfile.TemporaryDirectory() as tmp:
        teacher_dir = None
        if args.teacher != "none":
            dataset = load_dataset("folder", data["path"], val_size=5000, seed=0)
            teacher_dir = untrained_teacher_run(args.teacher, dataset, Path(tmp) / "teacher", data["mean"], data["std"],
                                                data=data)
        recipe = make_recipe(data, args.student, settings, teacher_dir=teacher_dir, teacher_cache=args.teacher_cache)
        recipe.runtime.precision = args.precision
        recipe.runtime.channels_last = {"auto": "auto", "true": True, "false": False}[args.channels_last]
        recipe.runtime.compile = {"auto": "auto", "true": True, "false": False}[args.compile]
        prepared = prepare(recipe)
        phases = profile(prepared, args.steps, warm_cache=args.teacher_cache == "memory")
        if args.ops:
            print_operators(prepared, min(args.steps, 10), args.ops)
    total = sum(statistics.median(v) for v in phases.values())
    teacher_state = getattr(getattr(prepared.method, "teacher", None), "state", "eager")
    print(f"{args.student} <- {args.teacher}, batch {args.batch}, {prepared.runtime.describe()}, teacher "
          f"{teacher_state}, teacher cache {args.teacher_cache}; median over {args.steps} steps")
    for name, values in phases.items():
        median = statistics.median(values)
        print(f"  {name:<10} {1000 * median:8.2f} ms  {100 * median / total:5.1f}%")
    print(f"  {'total':<10} {1000 * total:8.2f} ms  -> {args.batch / total:.0f} images/s")
    return 0


def profile(prepared, steps: int, warm_cache: bool) -> dict[str, list[float]]:
    method, runtime, loader = prepared.method, prepared.runtime, prepared.train_loader
    optimizer = make_optimizer(method, prepared.recipe)
    teacher_module = prepared.teachers.primary
    has_teacher = teacher_module is not None
    with_keys = prepared.teachers.wants_keys
    if warm_cache and with_keys:
        with torch.inference_mode(), runtime.autocast():
            for b, (inputs, _, keys) in enumerate(loader.batches(0, with_keys=True)):
                if b >= steps + 2:
                    break
                teacher_module(inputs, keys)
    method.train()
    phases = {name: [] for name in ("data", "teacher", "student", "backward", "optimizer")}
    batches = loader.batches(0, with_keys=with_keys)
    for step in range(steps + 2):  # the first two steps warm oneDNN's kernel caches and are not counted
        t0 = time.perf_counter()
        batch = next(batches)
        inputs, labels = batch[0], batch[1]
        t1 = time.perf_counter()
        with runtime.autocast():
            teacher = teacher_module(inputs, batch[2] if with_keys else None) if has_teacher else None
            t2 = time.perf_counter()
            logits = method.model(inputs)
            if teacher is None:
                loss = losses.cross_entropy(logits, labels)
            else:
                loss = losses.kd_kl(logits, teacher, labels, alpha=0.9, tau=4.0)
        t3 = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        t4 = time.perf_counter()
        optimizer.step()
        t5 = time.perf_counter()
        if step >= 2:
            for name, seconds in zip(phases, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4)):
                phases[name].append(seconds)
    return phases


def print_operators(prepared, steps: int, rows: int) -> None:
    from torch.profiler import ProfilerActivity, profile as torch_profile

    from kdlab.train.engine import train_epoch

    optimizer = make_optimizer(prepared.method, prepared.recipe)
    train_epoch(prepared, optimizer, 1, max_steps=2)
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        train_epoch(prepared, optimizer, 1, max_steps=steps)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows), file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
