"""The ``kdlab`` command: a thin shell over the library.

User errors (``KdlabError``) print one line on stderr and exit with status 2, without a traceback; a diverged run
exits with status 1; a run stopped by SIGTERM or SIGINT checkpoints and exits with 128 + the signal's number (143,
130; :mod:`kdlab.train.interrupt`); anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from kdlab import __version__
from kdlab.commands import MODULES
from kdlab.errors import KdlabError


class _Parser(argparse.ArgumentParser):
    """argparse with usage errors in kdlab's form: one line ``kdlab: error: ...`` (no usage block), status 2.
    Sub-command parsers are of this class too (``add_subparsers`` uses the parent's class)."""

    def error(self, message: str):
        self.exit(2, f"kdlab: error: {' '.join(message.split())} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="kdlab", description="Train classifiers with soft targets: label smoothing, "
                                     "teacher-free KD, KD and online distillation.")
    parser.add_argument("--version", action="version", version=f"kdlab {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    for name in MODULES:
        importlib.import_module(f"kdlab.commands.{name}").register(commands)
    return parser


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
    except Exception as error:  # noqa: BLE001 - a diverged or pre-empted run is reported, not dumped
        from kdlab.train.engine import RunInterrupted, TrainingDiverged

        if isinstance(error, TrainingDiverged):
            print(f"kdlab: error: {error}", file=sys.stderr)
            return 1
        if isinstance(error, RunInterrupted):
            print(f"kdlab: {error}", file=sys.stderr)
            return error.exit_status
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
