"""Start ``kdlab`` commands as real, separate processes, without paying a fresh interpreter's start-up each time.

A new ``python -m kdlab`` spends about 4 s before its command does anything (torch, the torch._dynamo import that
the first optimizer triggers, scikit-learn), and the fault-injection tests start dozens of commands. So commands are
forked from a server process that imported all of that once (multiprocessing's forkserver, which runs no torch op
and starts no thread before it forks): each command is still a process of its own, with its own environment,
working folder, pid, stdout, stderr and exit status (negative for a signal), and dies of SIGKILL like any other.
It runs ``kdlab.cli.main`` exactly as ``python -m kdlab`` does (``src/kdlab/__main__.py``); the tests of the entry
point itself (tests/test_cli_errors.py, tests/test_quickstart.py, torchrun in tests/test_distributed.py) still
start fresh interpreters.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PRELOAD = ["_launch", "kdlab.cli", "kdlab.train.engine", "kdlab.experiments.study", "kdlab.experiments.pipeline", "kdlab.analysis.runs",
           "kdlab.analysis.report", "kdlab.experiments.tune", "kdlab.experiments.workqueue", "optuna", "torch._dynamo", "sklearn.model_selection",
           "sklearn.datasets"]

_context = multiprocessing.get_context("forkserver")
_context.set_forkserver_preload(PRELOAD)


def _command(args: list[str], env: dict, cwd: str, stdout: str, stderr: str) -> None:
    """The child: the environment, folder and output files of the command, then ``sys.exit(main(args))``."""
    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)
    for fd, path in ((1, stdout), (2, stderr)):
        handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(handle, fd)
        os.close(handle)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    from kdlab.cli import main

    sys.exit(main(args))


class Command:
    """A started command, shaped like :class:`subprocess.Popen`: ``pid``, ``poll``, ``wait``, ``send_signal``,
    ``returncode``; ``output()`` gives (stdout, stderr) so far."""

    def __init__(self, args, env: dict, cwd: Path):
        self.args = [str(a) for a in args]
        self._folder = tempfile.TemporaryDirectory(prefix="kdlab-command-")
        self._out, self._err = (os.path.join(self._folder.name, name) for name in ("stdout", "stderr"))
        self._process = _context.Process(target=_command, args=(self.args, env, str(cwd), self._out, self._err))
        self._process.start()
        self.pid = self._process.pid

    @property
    def returncode(self) -> int | None:
        return self._process.exitcode

    def poll(self) -> int | None:
        return self._process.exitcode

    def wait(self, timeout: float | None = None) -> int:
        self._process.join(timeout)
        if self._process.exitcode is None:
            raise subprocess.TimeoutExpired(self.args, timeout)
        return self._process.exitcode

    def send_signal(self, sig: int) -> None:
        if self._process.exitcode is None:
            os.kill(self.pid, sig)

    def output(self) -> tuple[str, str]:
        return tuple(Path(path).read_text() if os.path.exists(path) else "" for path in (self._out, self._err))

    def __del__(self):
        if getattr(self, "_process", None) is not None and self._process.exitcode is None:
            os.kill(self.pid, signal.SIGKILL)
            self._process.join()


def environment(**extra) -> dict:
    """The test's environment with kdlab's sources importable, plus ``extra``."""
    return {**os.environ, "PYTHONPATH": str(ROOT / "src"), **{k: str(v) for k, v in extra.items()}}


def start(*args, env: dict | None = None, cwd: Path = ROOT) -> Command:
    """``kdlab ARGS`` started as its own process."""
    return Command(args, env if env is not None else environment(), cwd)


def run(*args, env: dict | None = None, cwd: Path = ROOT, timeout: float = 300) -> subprocess.CompletedProcess:
    """``kdlab ARGS`` run to its end as its own process: exit status (negative: killed by that signal), stdout and
    stderr, like :func:`subprocess.run` with ``capture_output=True, text=True``."""
    command = start(*args, env=env, cwd=cwd)
    try:
        code = command.wait(timeout)
    except subprocess.TimeoutExpired:
        command.send_signal(signal.SIGKILL)
        command.wait()
        raise
    stdout, stderr = command.output()
    return subprocess.CompletedProcess(command.args, code, stdout, stderr)

