"""The commands that train: ``train``, ``pipeline``, ``study``, ``cache-teacher``, ``tune``, ``quickstart``."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

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



def _cache_teacher(args: argparse.Namespace) -> int:
    from kdlab.config import load_recipe
    from kdlab.train.precompute_teacher import precompute

    recipe = load_recipe(args.recipe, args.overrides)
    cache = precompute(recipe, quiet=args.quiet)
    print(f"teacher cache {cache.folder}: {cache.coverage:.1%} of {cache.table.shape[0]} images x "
          f"{cache.table.shape[1]} views filled ({cache.misses} computed now)")
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



def register(commands) -> None:
    """Add this module's sub-commands to ``commands`` (the parser's sub-parsers)."""
    from kdlab import methods

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
