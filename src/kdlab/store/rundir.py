"""The run directory: the contract between a run and everything downstream (reports, studies, users' scripts).

``RUN_DIR/config.yaml``      the fully resolved recipe; ``kdlab train RUN_DIR/config.yaml --out OTHER`` repeats it
``RUN_DIR/metrics.jsonl``    one JSON object per completed epoch: every loss term, lr, val/test metrics, timing
``RUN_DIR/summary.json``     the run's record (see ``kdlab.train.engine``); ``status`` is running/completed/failed
``RUN_DIR/checkpoint/``      safetensors weights + JSON state (``kdlab.store.checkpoint``)
``RUN_DIR/predictions/``     ``test.npz`` and, with a val split, ``val.npz``: arrays ``logits`` and ``labels``
``RUN_DIR/.lock``            held (``flock``) by the process training the run, so a second one refuses to touch it

The lock is an advisory ``fcntl.flock`` on ``.lock``: the kernel releases it when its process ends, however it ends
(SIGKILL, OOM, power loss of a local disk), so a crashed run never leaves its directory stuck; the file itself stays
and holds the last owner's pid for the message. (On network file systems without flock support the lock is a
no-op.)
"""

from __future__ import annotations

import json
import os
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path

from kdlab.errors import KdlabError
from kdlab.io import TEMP_SUFFIX, atomic_write_json, atomic_write_text, remove_temporaries

LOCK_FILE = ".lock"


class RunLock:
    """An exclusive, non-blocking ``flock`` on ``folder/.lock``; a second holder gets a one-line KdlabError."""

    def __init__(self, folder: Path):
        self.folder = folder
        self._fd: int | None = None

    def acquire(self) -> "RunLock":
        try:
            import fcntl
        except ImportError:  # not a POSIX system: no lock
            return self
        path = self.folder / LOCK_FILE
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:  # a read-only or full file system, a folder without write permission
            raise KdlabError(f"cannot lock {self.folder}: {error.strerror or error} (kdlab writes its runs there)") \
                from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            owner = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise KdlabError(f"{self.folder} is in use by another kdlab process ({owner}); wait for it to finish or "
                             f"stop it (the lock goes away with its process)") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


@dataclass(frozen=True)
class RunDir:
    path: Path

    @property
    def config(self) -> Path:
        return self.path / "config.yaml"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def summary(self) -> Path:
        return self.path / "summary.json"

    @property
    def checkpoint(self) -> Path:
        return self.path / "checkpoint"

    @property
    def predictions(self) -> Path:
        return self.path / "predictions"

    def prepare_new(self, force: bool) -> RunLock:
        """Create the directory and lock it; an existing one is refused unless ``force`` (which deletes it first,
        unless another process holds it). Returns the held lock."""
        if self.path.is_dir() and self._only_a_started_run():
            # nothing of a run yet (a run killed before its config was written): not worth refusing over
            RunLock(self.path).acquire().release()
            shutil.rmtree(self.path)
        if self.path.exists():
            if not force:
                raise KdlabError(
                    f"output folder {self.path} already exists; use --resume to continue it or --force to replace it"
                )
            if not (self.path.is_dir() and (self.config.exists() or self._only_a_started_run())):
                raise KdlabError(f"--force refuses to delete {self.path}: it is not a kdlab run directory")
            RunLock(self.path).acquire().release()  # refuse to delete a run another process is training
            shutil.rmtree(self.path)
        try:
            self.path.mkdir(parents=True)
        except FileExistsError:  # another process created it between the check and here
            raise KdlabError(f"output folder {self.path} already exists (another kdlab process just created it)") \
                from None
        except OSError as error:
            raise KdlabError(f"cannot create the run directory {self.path}: {error.strerror or error}") from None
        lock = RunLock(self.path).acquire()
        self.checkpoint.mkdir()
        return lock

    def _started_but_empty(self) -> bool:
        """A run was started here (its lock file exists) and killed before it wrote its config."""
        return (self.path / LOCK_FILE).exists() and self._only_a_started_run()

    def _only_a_started_run(self) -> bool:
        """Empty, or what a run killed before it wrote its config leaves: the lock file, an empty checkpoint/ and
        temporary files of killed writes."""
        entries = {p.name: p for p in self.path.iterdir() if not (p.name.startswith(".") and p.name.endswith(TEMP_SUFFIX))}
        if LOCK_FILE not in entries and entries:
            return False
        entries.pop(LOCK_FILE, None)
        folder = entries.pop("checkpoint", None)
        return not entries and (folder is None or (folder.is_dir() and not any(folder.iterdir())))

    def lock_existing(self) -> RunLock:
        """Lock an existing run directory (to resume it) and clear what killed writes left behind."""
        lock = RunLock(self.path).acquire()
        for folder in (self.path, self.checkpoint, self.predictions):
            if folder.is_dir():
                remove_temporaries(folder)
        return lock

    def write_metrics(self, history: list[dict]) -> None:
        atomic_write_text(self.metrics, "".join(json.dumps(record) + "\n" for record in history))

    def write_summary(self, summary: dict) -> None:
        atomic_write_json(self.summary, summary)

    def completed_summary(self, role: str = "") -> dict:
        """The summary of this completed run; a one-line error naming ``role`` (e.g. "teacher ") otherwise."""
        if not self.config.is_file():
            raise KdlabError(f"{role}{self.path} is not a kdlab run directory (no config.yaml)")
        summary = self.read_summary()
        if summary is None:
            raise KdlabError(f"{role}{self.path} has no readable summary.json")
        if summary.get("status") != "completed":
            raise KdlabError(f"{role}{self.path} has not completed (status {summary.get('status')!r}); finish or resume it first")
        return summary

    def read_summary(self) -> dict | None:
        try:
            return json.loads(self.summary.read_text())
        except (OSError, ValueError):
            return None
