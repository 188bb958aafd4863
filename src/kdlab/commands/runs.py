"""``kdlab runs``: list the run directories under some folders with their true state, and ``kdlab runs compare``
to put a few of them side by side (see docs/runs.md)."""

from __future__ import annotations

import argparse
import json

from kdlab.errors import KdlabError


def _runs(args: argparse.Namespace) -> int:
    if args.folders[:1] == ["compare"]:  # ``kdlab runs compare A B``: a folder named compare is ./compare
        return _compare(args, args.folders[1:])
    from kdlab.analysis.run_table import DEFAULT_FOLDER, format_table, list_runs

    if args.metric is not None or args.plot is not None:
        raise KdlabError("--metric and --plot are options of kdlab runs compare A B ...")
    folders = args.folders or [DEFAULT_FOLDER]
    rows = list_runs(folders, args.status)
    if args.json:
        print(_json(rows))
    elif rows:
        print(format_table(rows))
    else:
        print(f"no runs in state {', '.join(args.status)} under {', '.join(folders)}")
    return 0


def _compare(args: argparse.Namespace, paths: list[str]) -> int:
    from kdlab.analysis.run_compare import compare_runs, format_comparison, plot_curves

    if args.status:
        raise KdlabError("--status filters the listing (kdlab runs FOLDER --status S), not runs compare")
    if not paths:
        raise KdlabError("runs compare needs the runs to compare: kdlab runs compare RUN_A RUN_B ... (or a study folder)")
    comparison = compare_runs(paths, args.metric or "test_acc")
    written = plot_curves(comparison, args.plot) if args.plot else None
    if args.json:
        print(_json({**comparison.record, "plot": str(written) if written else None}))
    else:
        print(format_comparison(comparison.record))
        if written:
            print(f"curves written to {written}")
    return 0


def _json(record) -> str:
    """Strict JSON (None for NaN and infinities, which standard parsers and jq reject), for scripts."""
    from kdlab.analysis.run_table import plain

    return json.dumps(plain(record), indent=2, allow_nan=False)


def register(commands) -> None:
    """Add this module's sub-commands to ``commands`` (the parser's sub-parsers)."""
    runs = commands.add_parser(
        "runs", help="list run directories with their state; kdlab runs compare A B puts runs side by side",
        usage="kdlab runs [FOLDER ...] [--status S] [--json]\n       kdlab runs compare RUN ... [--metric M] "
              "[--plot FILE.png] [--json]",
        description="List every run directory under the folders (default runs/, searched recursively): state, "
                    "method, model, teacher, epochs, test_acc / test_ece / test_nll, wall time, start and finish. "
                    "The state is checked, not just read: running only while a live process holds the run's lock; "
                    "a summary saying running with no process behind it is died (resume it with kdlab train "
                    "--resume DIR). 'kdlab runs compare A B ...' shows runs (or every run of a study folder) side by "
                    "side: final and best-epoch metrics and the recipe keys whose values differ; --plot overlays "
                    "their curves.")
    runs.add_argument("folders", nargs="*", metavar="FOLDER", help="run directories, studies, pipelines or any "
                      "folders of them (default runs/); after 'compare': the runs to compare")
    runs.add_argument("--status", action="append", metavar="S", help="only runs in this state: running, died, "
                      "completed, failed, interrupted, pruned, not-started, unreadable (repeat or comma-separate)")
    runs.add_argument("--json", action="store_true", help="print a JSON list of the rows (every field) for scripts")
    runs.add_argument("--metric", help="compare: the metric of the final and best columns (default test_acc)")
    runs.add_argument("--plot", metavar="FILE.png", help="compare: also write the runs' curves (train_loss, val_acc, "
                      "test_acc per epoch) overlaid to FILE.png")
    runs.set_defaults(handler=_runs)
