"""``kdlab export``: write what a run trained in another form."""

from __future__ import annotations

import argparse


def _export(args: argparse.Namespace) -> int:
    from kdlab.export import export_head

    out = export_head(args.run, args.head, args.out)
    print(f"{args.head} of {args.run} written to {out} (evaluate it with: kdlab eval {out})")
    return 0



def register(commands) -> None:
    """Add this module's sub-commands to ``commands`` (the parser's sub-parsers)."""
    from kdlab import methods

    export = commands.add_parser("export", help="write one head of an online-distillation run as a run of its own",
                                 description=f"Write a branch (peerN or leader) of a {' / '.join(methods.names(heads=True))} run "
                                 "as a plain network in a new run directory that kdlab eval and teachers load. The "
                                 "run's own checkpoint/model.safetensors is already its inference head.")
    export.add_argument("run", help="the online run's directory")
    export.add_argument("--head", required=True, help="peer1, peer2, ... or leader")
    export.add_argument("--out", required=True, help="the new run directory")
    export.set_defaults(handler=_export)
