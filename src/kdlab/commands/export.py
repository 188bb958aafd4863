"""``kdlab export``: write what a run trained in another form: one head of an online run as a run directory
(``--head``), or a run's inference network as a deployable, checked file (``--format``)."""

from __future__ import annotations

import argparse

from kdlab.errors import KdlabError


def _export(args: argparse.Namespace) -> int:
    if args.head is None and args.format is None:
        raise KdlabError("the following arguments are required: --head or --format (see kdlab export --help)")
    if args.head is not None:
        return _export_head(args)
    from kdlab.export import export_model

    exported = export_model(args.run, args.format, args.out, checkpoint=args.checkpoint or "final",
                            opset=args.opset, batch=args.batch)
    print(exported.line(args.run))
    return 0


def _export_head(args: argparse.Namespace) -> int:
    from kdlab.export import export_head

    given = [flag for flag, value in (("--checkpoint", args.checkpoint), ("--opset", args.opset),
                                      ("--batch", args.batch)) if value is not None]
    if given:
        raise KdlabError(f"{given[0]} goes with --format; --head writes the branch's final weights as a run "
                         f"directory (export that directory with --format for a deployable file)")
    if args.out is None:
        raise KdlabError("the following arguments are required with --head: --out, the new run directory "
                         "(see kdlab export --help)")
    out = export_head(args.run, args.head, args.out)
    print(f"{args.head} of {args.run} written to {out} (evaluate it with: kdlab eval {out})")
    return 0



def register(commands) -> None:
    """Add this module's sub-commands to ``commands`` (the parser's sub-parsers)."""
    from kdlab import methods
    from kdlab.export.formats import DEFAULT_OPSET, FORMATS

    export = commands.add_parser(
        "export", help="a run's network as a deployable file (ONNX, TorchScript, safetensors), or one head of an "
        "online-distillation run as a run of its own",
        description="With --format: write the inference network of any completed run (its checkpoint/"
        "model.safetensors, or best.safetensors) as an ONNX, TorchScript or plain safetensors file with a JSON "
        "record beside it (FILE.json: normalisation, input shape, class names, the check), after loading the file "
        "back and running it on the run's first 256 test images against the PyTorch model (exit 2, nothing "
        "written, if the logits differ beyond 1e-3 + 1e-4 x |logit|). With --head: write a branch (peerN or "
        f"leader) of a {' / '.join(methods.names(heads=True))} run as a plain network in a new run directory "
        "that kdlab eval and teachers load (the run's own checkpoint/model.safetensors is already its inference "
        "head); export that directory with --format for a deployable file of the branch. See docs/export.md.")
    export.add_argument("run", help="the completed run's directory")
    what = export.add_mutually_exclusive_group()
    what.add_argument("--format", choices=list(FORMATS), help="write a deployable file of this format")
    what.add_argument("--head", help="peer1, peer2, ... or leader: write that branch as a run directory")
    export.add_argument("--out", help="--format: the file, or a folder for model.<ext> (default "
                        "RUN/export/model.<ext>); --head: the new run directory (required)")
    export.add_argument("--checkpoint", choices=["final", "best"], help="--format: which weights (default final)")
    export.add_argument("--opset", type=int, help=f"--format onnx: the ONNX opset (default {DEFAULT_OPSET})")
    export.add_argument("--batch", help="--format onnx: 'dynamic' batch axis (default) or a fixed batch size N")
    export.set_defaults(handler=_export)
