"""The data and speed commands: ``data prepare`` and ``bench``."""

from __future__ import annotations

import argparse
import time

from kdlab.errors import KdlabError


def _data_prepare(args: argparse.Namespace) -> int:
    from kdlab.config import load_recipe, parse_override
    from kdlab.data import load_dataset

    if args.recipe is not None:
        if args.source is not None:
            raise KdlabError("give either a recipe or --source/--path, not both")
        data = load_recipe(args.recipe).data
        source, path, options, cache_dir = data.source, data.path, data.options, data.cache_dir
    elif args.source is not None:
        source, path, cache_dir = args.source, args.path, args.cache_dir
        options = {}
        for text in args.option:
            keys, value = parse_override(text)
            options[".".join(keys)] = value
    else:
        raise KdlabError("kdlab data prepare needs a recipe or --source (and --path)")
    start = time.perf_counter()
    dataset = load_dataset(source, path, cache_dir=cache_dir, **options)
    shape = "x".join(str(s) for s in dataset.train.images.shape[1:])
    val = f", val {len(dataset.val.labels)}" if dataset.val is not None else ""
    print(f"{dataset.name}: {len(dataset.classes)} classes, {shape} images, train {len(dataset.train.labels)}{val}, "
          f"test {len(dataset.test.labels)}; cache key {dataset.fingerprint[:16]} ({time.perf_counter() - start:.1f} s)")
    return 0



def _bench(args: argparse.Namespace) -> int:
    from kdlab.bench.command import bench_from_options, format_table

    record, out = bench_from_options(quick=args.quick, steps=args.steps, rounds=args.rounds, warmup=args.warmup,
                                     workers=args.workers, threads=args.threads, pairs=args.pairs, data=args.data,
                                     out=args.out, epoch_rounds=args.epoch_rounds)
    print(format_table(record))
    print(f"({record['teacher_weights']}; median over {record['settings']['rounds']} rounds of "
          f"{record['settings']['steps']} steps; written to {out})")
    return 0



def register(commands) -> None:
    """Add this module's sub-commands to ``commands`` (the parser's sub-parsers)."""
    from kdlab.data.sources import SOURCES

    data = commands.add_parser("data", help="data utilities")
    data_commands = data.add_subparsers(dest="data_command", required=True, metavar="DATA_COMMAND")
    prepare = data_commands.add_parser("prepare", help="decode a data source once into the cache",
                                       description="Decode a source into kdlab's cache (uint8 images or int16 "
                                       "waveforms + metadata) so later runs load it in about a second.")
    prepare.add_argument("recipe", nargs="?", help="a recipe whose data section to prepare")
    prepare.add_argument("--source", help=f"one of {', '.join(SOURCES)}")
    prepare.add_argument("--path", help="the data folder")
    prepare.add_argument("--cache-dir", help="cache root (default $KDLAB_CACHE_DIR or ~/.cache/kdlab)")
    prepare.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="a source option")
    prepare.set_defaults(handler=_data_prepare)

    bench = commands.add_parser("bench", help="time kdlab's engine against the standard CIFAR KD training loop",
                                description="Train the same models on CIFAR-10 (JPEG) with kdlab's engine and with "
                                "the standard loop (kdlab/bench/reference_loop.py: DataLoader over PIL images, fp32), "
                                "alternating timed blocks in one process, and report images/s of each and their "
                                "ratio for: student only (resnet20), KD resnet56 -> resnet20, KD resnet32x4 -> "
                                "resnet8x4 (teachers have random weights). Needs the kdlab source checkout.")
    bench.add_argument("--quick", action="store_true", help="student and resnet56-resnet20 only, 2 rounds x 5 steps "
                       "(under 2 minutes on 2 idle cores); default: all three, 3 rounds x 30 steps")
    bench.add_argument("--steps", type=int, help="steps per timed block")
    bench.add_argument("--rounds", type=int, help="timed blocks per contender (the median is reported)")
    bench.add_argument("--warmup", type=int, help="steps of the untimed warm-up block (default 2 quick, 5 full)")
    bench.add_argument("--workers", type=int, help="the reference's DataLoader workers (default: the core count)")
    bench.add_argument("--threads", type=int, help="torch threads (default: the core count)")
    bench.add_argument("--pairs", help="comma list among student, resnet56-resnet20, resnet32x4-resnet8x4")
    bench.add_argument("--data", help="the CIFAR-10 JPEG image folder (default ../shared/data/cifar10-jpeg)")
    bench.add_argument("--out", help="the JSON record (default benchmarks/results/bench_<quick|full>.json)")
    bench.add_argument("--epoch-rounds", type=int, help="whole epochs of student-only vs KD resnet56 -> resnet20 with "
                       "a warm teacher cache, alternating this many times (default 2 full, 0 quick)")
    bench.set_defaults(handler=_bench)
