"""The ``kdlab`` command: a thin shell over the library.

User errors (``KdlabError``) print one line on stderr and exit with status 2, without a traceback; a diverged run
exits with status 1; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from kdlab import __version__
from kdlab.errors import KdlabError


def _train(args: argparse.Namespace) -> int:
    from kdlab.config import load_recipe
    from kdlab.train.engine import resume, train

    if args.resume is not None:
        if args.recipe is not None or args.overrides or args.out is not None:
            raise KdlabError("--resume RUN_DIR takes no recipe, overrides or --out: the run's config.yaml is used")
        summary = resume(args.resume, quiet=args.quiet)
        out = args.resume
    else:
        if args.recipe is None:
            raise KdlabError("kdlab train needs a recipe (kdlab train RECIPE.yaml) or --resume RUN_DIR")
        recipe = load_recipe(args.recipe, args.overrides)
        out = args.out or _default_out(args.recipe, recipe)
        summary = train(recipe, out, force=args.force, quiet=args.quiet)
    final = summary["final"]
    print(f"{out}: {summary['status']}, test_acc {final['test_acc']:.4f}, test_nll {final['test_nll']:.4f}, "
          f"test_ece {final['test_ece']:.4f}, {summary['wall_seconds']:.0f} s")
    teacher = summary.get("evaluation", {}).get("teacher_precision")
    if teacher:
        print(f"teacher as run ({teacher['precision']}, {teacher['state']}) vs fp32 eager on {teacher['split']}: "
              f"agreement {teacher['agreement']:.4f}, KL {teacher['fidelity_kl']:.2e}")
    return 0


def _default_out(recipe_path: str, recipe) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return str(Path("runs") / f"{Path(recipe_path).stem}-{recipe.method.name}-{recipe.model.name}-s{recipe.seed}-{stamp}")


def _pipeline(args: argparse.Namespace) -> int:
    from kdlab.experiments.pipeline import run_pipeline

    out = args.out or str(Path("runs") / Path(args.recipe).stem)
    record = run_pipeline(args.recipe, out, quiet=args.quiet)
    trained = sum(stage["status"] != "reused" for stage in record["stages"])
    print(f"{out}: {len(record['stages'])} stages, {trained} trained, {len(record['stages']) - trained} reused; "
          f"see {Path(out) / 'pipeline.json'}")
    return 0


def _study(args: argparse.Namespace) -> int:
    from kdlab.experiments.study import run_study

    out = args.out or str(Path("runs") / Path(args.recipe).stem)
    record = run_study(args.recipe, out, seeds=args.seeds, jobs=args.jobs, quiet=args.quiet, storage=args.storage,
                       heartbeat=args.heartbeat, grace=args.grace, profiles=args.profile, overrides=args.overrides,
                       reuse_from=args.reuse_from)
    trained = sum(run["status"] != "reused" for run in record["runs"])
    print(f"{out}: {len(record['runs'])} runs, {trained} trained or resumed, {len(record['runs']) - trained} reused; "
          f"summarise with: kdlab report {out}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from kdlab.export import export_head

    out = export_head(args.run, args.head, args.out)
    print(f"{args.head} of {args.run} written to {out} (evaluate it with: kdlab eval {out})")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from kdlab.analysis.reevaluate import evaluate_run

    splits = args.splits.split(",") if args.splits else None
    record = evaluate_run(args.run, args.overrides, checkpoint=args.checkpoint, splits=splits, out=args.out)
    for split in record["splits"]:
        m = record[split]
        print(f"{split}: acc {m['acc']:.4f}  nll {m['nll']:.4f}  ece {m['ece']:.4f}  brier {m['brier']:.4f}")
    if "calibration" in record:
        c = record["calibration"]
        print(f"temperature {c['temperature']:.3f} (fitted on val): test ece {c['before']['ece']:.4f} -> "
              f"{c['after']['ece']:.4f}, nll {c['before']['nll']:.4f} -> {c['after']['nll']:.4f}")
    for split, f in record.get("fidelity", {}).items():
        print(f"{split}: agreement with the teacher {f['agreement']:.4f}, KL(teacher || student) {f['fidelity_kl']:.4f}")
    out = args.out or str(Path(args.run) / f"eval-{args.checkpoint}")
    print(f"written to {out}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from kdlab.analysis.report import build_report

    if args.claims is not None:
        from kdlab.analysis.claims import build_claims_report

        if args.paths:
            raise KdlabError("report --claims FILE takes no run folders: the claims file names its studies")
        out = args.out or "reports"
        record = build_claims_report(args.claims, out)
        verdicts = ", ".join(f"{c['id']}: {c['verdict']}" for c in record["claims"])
        print(f"{Path(out) / 'claims.md'}: {len(record['claims'])} claims ({verdicts})")
        return 0
    if not args.paths:
        raise KdlabError("kdlab report needs study folders, pipeline folders or run directories (or --claims FILE)")
    out = args.out or str(Path(args.paths[0]) / "report")
    classes = [c.strip() for c in args.classes.split(",")] if args.classes else None
    record = build_report(args.paths, out, baseline=args.baseline, classes=classes, selection=args.selection,
                          variant=args.variant, per_class=args.per_class, plots=not args.no_plots)
    print(f"{Path(out) / 'report.md'}: {len(record['groups'])} groups, "
          f"{sum(len(g['seeds']) for g in record['groups'])} runs")
    return 0


def _archive(args: argparse.Namespace) -> int:
    from kdlab.analysis.archive import archive

    classes = [c.strip() for c in args.classes.split(",")] if args.classes else None
    runs = archive(args.paths, args.out, classes=classes, variant=args.variant, per_class=args.per_class)
    print(f"{args.out}: {len(runs)} runs archived (config, summary, metrics, analysis.npz); "
          f"report them with: kdlab report {args.out}")
    return 0


def _tune(args: argparse.Namespace) -> int:
    from kdlab.experiments.tune import run_tune

    models = [m.strip() for m in args.transfer_models.split(",") if m.strip()] if args.transfer_models else None
    record = run_tune(args.recipe, args.space, args.trials, out=args.out, storage=args.storage, workers=args.workers,
                      study_name=args.study_name, objective=args.objective, seed=args.seed, startup=args.startup,
                      transfer_models=models, tune_transfer=args.tune_transfer, quiet=args.quiet,
                      heartbeat=args.heartbeat, grace=args.grace)
    best = record["best"]
    print(f"best trial {best['number']}: val_acc {best['value']:.4f} {best['params']} (run {best['run']})")
    return 0


def _cache_teacher(args: argparse.Namespace) -> int:
    from kdlab.config import load_recipe
    from kdlab.train.precompute_teacher import precompute

    recipe = load_recipe(args.recipe, args.overrides)
    cache = precompute(recipe, quiet=args.quiet)
    print(f"teacher cache {cache.folder}: {cache.coverage:.1%} of {cache.table.shape[0]} images x "
          f"{cache.table.shape[1]} views filled ({cache.misses} computed now)")
    return 0


def _quickstart(args: argparse.Namespace) -> int:
    from kdlab.experiments.quickstart import AUDIO_RECIPE, run_audio_quickstart, run_quickstart

    if args.jobs is not None and args.jobs < 1:
        raise KdlabError(f"quickstart: --jobs must be >= 1, got {args.jobs}")
    if args.audio:
        run_audio_quickstart(out=args.out, data=args.data, seeds=args.seeds or 2,
                             epochs=args.epochs or AUDIO_RECIPE["train"]["epochs"], jobs=args.jobs)
    else:
        if args.data is not None:
            raise KdlabError("quickstart: --data is for --audio (the FSDD folder); the image quickstart needs no files")
        run_quickstart(out=args.out, seeds=args.seeds or 3, epochs=args.epochs or 8, jobs=args.jobs)
    return 0


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


class _Parser(argparse.ArgumentParser):
    """argparse with usage errors in kdlab's form: one line ``kdlab: error: ...`` (no usage block), status 2.
    Sub-command parsers are of this class too (``add_subparsers`` uses the parent's class)."""

    def error(self, message: str):
        self.exit(2, f"kdlab: error: {' '.join(message.split())} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from kdlab import methods
    from kdlab.data.sources import SOURCES

    parser = _Parser(prog="kdlab", description="Train classifiers with soft targets: label smoothing, "
                                     "teacher-free KD, KD and online distillation.")
    parser.add_argument("--version", action="version", version=f"kdlab {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser("train", help="train one run from a YAML recipe",
                                description="Train one run. Overrides are dotted keys: train.epochs=3 method.eps=0.2.")
    train.add_argument("recipe", nargs="?", help="recipe YAML (or a run's config.yaml)")
    train.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="recipe overrides")
    train.add_argument("--out", help="the run directory to create (default runs/<recipe>-<method>-<model>-s<seed>-<time>)")
    train.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its last checkpoint")
    train.add_argument("--force", action="store_true", help="replace an existing run directory at --out")
    train.add_argument("--quiet", action="store_true", help="no per-epoch lines")
    train.set_defaults(handler=_train)

    pipe = commands.add_parser("pipeline", help="train the stages of a pipeline recipe in order (teacher, students, ...)",
                               description="Train named stages in order; a stage may use an earlier stage's run as "
                               "its teacher (method.teacher: '@stage'). Finished stages with the same recipe and "
                               "teacher are reused, interrupted ones resumed.")
    pipe.add_argument("recipe", help="pipeline YAML (base + stages)")
    pipe.add_argument("--out", help="folder of the stages' run directories (default runs/<recipe name>)")
    pipe.add_argument("--quiet", action="store_true", help="no per-epoch lines")
    pipe.set_defaults(handler=_pipeline)

    evaluate = commands.add_parser("eval", help="re-evaluate a finished run (on its data or other data with the same classes)",
                                   description="Evaluate a run's checkpoint: every metric, temperature scaling fitted "
                                   "on val and applied to test, agreement with its teacher; writes metrics.json and "
                                   "predictions. Overrides change the data: data.path=/other/folder data.source=folder.")
    evaluate.add_argument("run", help="the run directory")
    evaluate.add_argument("overrides", nargs="*", metavar="data.KEY=VALUE", help="data overrides")
    evaluate.add_argument("--checkpoint", choices=["final", "best"], default="final", help="which weights (default final)")
    evaluate.add_argument("--splits", help="comma-separated splits among train,val,test (default val,test)")
    evaluate.add_argument("--out", help="where to write (default RUN_DIR/eval-<checkpoint>)")
    evaluate.set_defaults(handler=_eval)

    export = commands.add_parser("export", help="write one head of an online-distillation run as a run of its own",
                                 description=f"Write a branch (peerN or leader) of a {' / '.join(methods.names(heads=True))} run "
                                 "as a plain network in a new run directory that kdlab eval and teachers load. The "
                                 "run's own checkpoint/model.safetensors is already its inference head.")
    export.add_argument("run", help="the online run's directory")
    export.add_argument("--head", required=True, help="peer1, peer2, ... or leader")
    export.add_argument("--out", required=True, help="the new run directory")
    export.set_defaults(handler=_export)

    cache = commands.add_parser("cache-teacher", help="precompute a distillation recipe's teacher logits for every view",
                                description="Compute the teacher's logits for every (training image, crop x flip view) "
                                "of a distillation recipe and store them in the on-disk teacher cache, which every "
                                "run with the same teacher, data and augmentation then reads instead of running "
                                "the teacher.")
    cache.add_argument("recipe", help=f"a recipe whose method distils from a teacher ({', '.join(methods.names(teacher=True))})")
    cache.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="recipe overrides")
    cache.add_argument("--quiet", action="store_true", help="no progress bar")
    cache.set_defaults(handler=_cache_teacher)

    study = commands.add_parser("study", help="run a grid of methods and hyper-parameters over several seeds",
                                description="Run every stage of a study recipe (a pipeline recipe with seeds and a "
                                "baseline) once per seed. Finished runs are reused and interrupted ones resumed, so "
                                "running a study again continues it.")
    study.add_argument("recipe", help="study YAML (base, stages, seeds, baseline, models)")
    study.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="overrides of the study recipe, dotted from "
                       "its top (base.data.path=..., stages.kd.method.tau=2, seeds=5)")
    study.add_argument("--profile", action="append", default=[], metavar="FILE",
                       help="a partial study recipe merged over this one (e.g. studies/profiles/cifar100.yaml: "
                       "another data set, models and schedule); repeatable")
    study.add_argument("--out", help="the study folder (default runs/<recipe name>)")
    study.add_argument("--seeds", type=int, help="seeds 0..N-1 instead of the recipe's seeds")
    study.add_argument("--jobs", type=int, default=1, help="runs trained side by side (default 1)")
    study.add_argument("--quiet", action="store_true", help="no per-epoch lines")
    study.add_argument("--reuse-from", action="append", default=[], metavar="DIR",
                       help="another study folder: its completed runs with the same recipe, seed and data (the same "
                       "stage key, e.g. a CE baseline two studies share) are copied in and reused; repeatable")
    study.add_argument("--storage", help="an Optuna storage URL (sqlite:///... or postgresql://...): the runs become a "
                       "queue that every worker running this command with the same URL and --out drains together")
    study.add_argument("--heartbeat", type=int, help="with --storage: seconds between heartbeats (default 5)")
    study.add_argument("--grace", type=int, help="with --storage: seconds without a heartbeat before a worker's run "
                       "is given to another worker (default 30)")
    study.set_defaults(handler=_study)

    report = commands.add_parser("report", help="tables and plots over a study's (or any) runs",
                                 description="Summarise runs (a study folder, a pipeline folder or run directories): "
                                 "mean ± std and 95%% CI over seeds, paired differences against a baseline, "
                                 "calibration before and after temperature scaling, cost, reliability diagrams, "
                                 "penultimate-layer projections and training curves, in DIR/report.md.")
    report.add_argument("paths", nargs="*", help="study folders, pipeline folders or run directories")
    report.add_argument("--claims", metavar="FILE", help="a claims file (studies/claims.yaml): write OUT/claims.md, "
                        "one section per claim with its tables, plots and a verdict computed from the numbers")
    report.add_argument("--out", help="output folder (default <first path>/report)")
    report.add_argument("--baseline", help="the group to compare against (default: the study's baseline)")
    report.add_argument("--selection", choices=["final", "best"], default="final", help="final epoch (default) or best epoch")
    _projection_options(report)
    report.add_argument("--no-plots", action="store_true", help="tables only")
    report.set_defaults(handler=_report)

    keep = commands.add_parser("archive", help="the part of finished runs that reports need, small enough to commit",
                               description="Copy each completed run's config.yaml, summary.json and metrics.jsonl "
                               "and write analysis.npz (reliability-diagram bins before and after temperature "
                               "scaling, the penultimate-layer projection); no checkpoints, no predictions. kdlab "
                               "report reads the archive as it reads the runs.")
    keep.add_argument("paths", nargs="+", help="study folders, pipeline folders or run directories")
    keep.add_argument("--out", required=True, help="the archive folder")
    _projection_options(keep)
    keep.set_defaults(handler=_archive)

    tune = commands.add_parser("tune", help="hyper-parameter search with Optuna (workers, shared storage, transfer)",
                               description="Search a space of recipe keys with Optuna (TPE, median pruning on the "
                               "validation accuracy of every epoch). Each trial is a run directory under --out. With "
                               "--storage postgresql://... any number of machines join the same search by running "
                               "the same command.")
    tune.add_argument("recipe", help="recipe YAML (needs data.val_size: the objective is validation accuracy)")
    tune.add_argument("--space", required=True, help="search space YAML: {dotted.key: {low, high, log, step, int} | "
                      "{choices: [...]}}")
    tune.add_argument("--trials", type=int, required=True, help="trials over all workers together")
    tune.add_argument("--out", help="folder of the trials' runs and the report (default runs/tune-<recipe>)")
    tune.add_argument("--storage", help="Optuna storage URL (default sqlite:///OUT/optuna.db)")
    tune.add_argument("--workers", type=int, help="worker processes on this machine (default 1)")
    tune.add_argument("--study-name", help="Optuna study name (default kdlab-tune-<recipe>)")
    tune.add_argument("--objective", default="final", help="final (default) or best: the epoch whose val_acc counts")
    tune.add_argument("--seed", type=int, default=0, help="sampler seed (worker k uses seed + k)")
    tune.add_argument("--startup", type=int, default=5, help="complete trials before pruning starts (default 5)")
    tune.add_argument("--transfer-models", help="comma list: train the best setting on each of these models too")
    tune.add_argument("--tune-transfer", action="store_true", help="also tune each transfer model with the budget")
    tune.add_argument("--heartbeat", type=int, default=5, help="seconds between a trial's heartbeats (default 5)")
    tune.add_argument("--grace", type=int, default=30, help="seconds without a heartbeat before a trial is taken "
                      "as crashed and re-run (default 30)")
    tune.add_argument("--quiet", action="store_true", help="no progress lines")
    tune.set_defaults(handler=_tune)

    quick = commands.add_parser("quickstart", help="a small comparison of the methods on scikit-learn's digits "
                                "(--audio: on spoken digits)",
                                description="Train every method on scikit-learn's digits over a few seeds and print "
                                "a table of test accuracy, NLL and ECE (under 90 s on 2 CPU cores). With --audio: CE, "
                                "LS and LSR-OS-TC on the Free Spoken Digit Dataset (under 5 minutes).")
    quick.add_argument("--out", help="keep the runs as run directories under this folder")
    quick.add_argument("--audio", action="store_true", help="spoken digits (FSDD) instead of scikit-learn's digits")
    quick.add_argument("--data", help="with --audio: the FSDD folder (default $KDLAB_FSDD or ../shared/data/fsdd)")
    quick.add_argument("--seeds", type=int, help="seeds per method (default 3; 2 with --audio)")
    quick.add_argument("--epochs", type=int, help="epochs per run (default 8; 6 with --audio)")
    quick.add_argument("--jobs", type=int, help="runs trained side by side, each with cores/jobs threads (default: "
                       "one per core, at most 2)")
    quick.set_defaults(handler=_quickstart)

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
    return parser


def _projection_options(parser: argparse.ArgumentParser) -> None:
    """The penultimate-layer projection's options, shared by report and archive."""
    parser.add_argument("--classes", help="three classes for the projection, by name or index (default the first three)")
    parser.add_argument("--variant", choices=["A", "B"], default="A", help="projection: A plane through the templates "
                        "(Mueller et al.), B QR + PCA (Chandrasegaran et al.)")
    parser.add_argument("--per-class", type=int, default=100, help="samples per class in the projection (default 100)")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # Overrides may follow options (kdlab train R.yaml --out D a=1); argparse leaves those over. A word there
    # without '=' is taken as an override too, so it gets the override's error message.
    stray = [a for a in extra if a.startswith("-") or args.command not in ("train", "eval", "cache-teacher", "study")]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    if extra:
        args.overrides = list(args.overrides) + extra
    try:
        return args.handler(args)
    except KdlabError as error:
        print(f"kdlab: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("kdlab: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # noqa: BLE001 - a diverged run is reported, not dumped
        from kdlab.train.engine import TrainingDiverged

        if isinstance(error, TrainingDiverged):
            print(f"kdlab: error: {error}", file=sys.stderr)
            return 1
        raise
    finally:
        _leave_process_group()


def _leave_process_group() -> None:
    """A data-parallel run (torchrun) leaves its process group cleanly, however it ended."""
    if "torch.distributed" in sys.modules:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
