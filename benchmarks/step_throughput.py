"""Training-step throughput of one model under each precision / memory-format / compile setting.

    python benchmarks/step_throughput.py resnet20 --size 32 --channels 3 --batch 128 [--compile]

Builds the model, runs 3 warm-up steps (forward, cross-entropy, backward, SGD step on one fixed random batch) and
times the next ``--steps``; prints images/s for fp32 and bf16 autocast, each with and without channels_last, and,
with ``--compile``, bf16 + channels_last under torch.compile.
"""

from __future__ import annotations

import argparse
import contextlib
import time

import torch
import torch.nn.functional as F

from kdlab import models


def throughput(name, size, channels, batch, steps, bf16, channels_last, compiled) -> tuple[float, float]:
    torch.manual_seed(0)
    model = models.create(name, 10, in_channels=channels)
    x = torch.randn(batch, channels, size, size)
    y = torch.randint(0, 10, (batch,))
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    if compiled:
        model.compile()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()

    def step():
        with autocast:
            loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    start = time.perf_counter()
    for _ in range(3):
        step()
    warmup = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch / (time.perf_counter() - start), warmup


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--channels", type=int, default=3)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--compile", action="store_true")
    args = parser.parse_args()
    settings = [(bf16, cl, False) for bf16 in (False, True) for cl in (False, True)]
    if args.compile:
        settings.append((True, True, True))
    print(f"{args.model}, batch {args.batch}, {args.size}x{args.size}x{args.channels}, {torch.get_num_threads()} threads")
    for bf16, cl, compiled in settings:
        rate, warmup = throughput(args.model, args.size, args.channels, args.batch, args.steps, bf16, cl, compiled)
        label = f"{'bf16' if bf16 else 'fp32'}{' channels_last' if cl else ''}{' compiled' if compiled else ''}"
        print(f"  {label:<32} {rate:8.0f} images/s   (3 warm-up steps: {warmup:.1f} s)", flush=True)


if __name__ == "__main__":
    main()
