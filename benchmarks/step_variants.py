"""Student-only training steps of kdlab's engine in several variants, built in one process and timed in interleaved
rounds, so that the process-to-process noise of a virtual machine (up to 10%) does not decide a comparison.

    PYTHONPATH=src python benchmarks/step_variants.py --variants eager,fused,compile --student resnet20 \
        --batch 64 --steps 20 --rounds 6

Variants: ``eager`` (the engine as it is), ``fused`` (the optimizer's fused step instead of torch's default
per-parameter loop on the CPU), ``compile`` (``runtime.compile: true``: torch.compile of the student's training graph). A name may
repeat with a suffix (``eager2``) to see the noise between identical contenders. Prints the median images/s and
every round's. Data: CIFAR-10 JPEG from ../shared/data/cifar10-jpeg (run from the project root).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

from kdlab.bench.configurations import Settings, make_recipe
from kdlab.train.engine import make_optimizer, prepare, train_epoch


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default="eager,fused,compile")
    parser.add_argument("--student", default="resnet20")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--data", default="../shared/data/cifar10-jpeg")
    args = parser.parse_args()

    settings = Settings(steps=args.steps, rounds=1, warmup=0, workers=0, threads=torch.get_num_threads(),
                        batch_size=args.batch)
    data = {"source": "folder", "path": str(Path(args.data).absolute()), "val_size": 5000}
    contenders = {}
    for name in args.variants.split(","):
        recipe = make_recipe(data, args.student, settings)
        recipe.runtime.compile = name.startswith("compile")
        prepared = prepare(recipe)
        optimizer = make_optimizer(prepared.method, prepared.recipe)
        if name.startswith("fused"):
            for group in optimizer.param_groups:
                group["fused"], group["foreach"] = True, False
        elif not name.startswith(("eager", "compile")):
            parser.error(f"unknown variant {name!r}: eager, fused or compile (with an optional suffix)")
        train_epoch(prepared, optimizer, 0, max_steps=5)  # warm-up (and compilation)
        contenders[name] = (prepared, optimizer)
    speeds: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(args.rounds):
        for name, (prepared, optimizer) in contenders.items():
            start = time.perf_counter()
            _, _, seen = train_epoch(prepared, optimizer, 0, max_steps=args.steps)
            speeds[name].append(seen / (time.perf_counter() - start))
    print(f"{args.student}, batch {args.batch}, {args.rounds} rounds x {args.steps} steps, "
          f"{torch.get_num_threads()} threads")
    for name, values in speeds.items():
        print(f"  {name:<12} median {statistics.median(values):7.0f} images/s   rounds {[round(v) for v in values]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
