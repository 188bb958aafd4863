"""The commands that read finished runs: ``eval``, ``report``, ``archive``."""

from __future__ import annotations

import argparse
from pathlib import Path

from kdlab.errors import KdlabError


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



def _projection_options(parser: argparse.ArgumentParser) -> None:
    """The penultimate-layer projection's options, shared by report and archive."""
    parser.add_argument("--classes", help="three classes for the projection, by name or index (default the first three)")
    parser.add_argument("--variant", choices=["A", "B"], default="A", help="projection: A plane through the templates "
                        "(Mueller et al.), B QR + PCA (Chandrasegaran et al.)")
    parser.add_argument("--per-class", type=int, default=100, help="samples per class in the projection (default 100)")



def register(commands) -> None:
    """Add this module's sub-commands to ``commands`` (the parser's sub-parsers)."""
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
