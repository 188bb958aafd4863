"""What a run directory's files say, read for a listing: never raising, never writing, never disturbing the run.

``kdlab runs`` looks at every run under a folder, finished or not, including runs another process is training
right now and copies that lost a byte on the way. So each reader here returns what it could read together with a
short note of what it could not (``"unreadable summary.json"``, ``"unreadable metrics.jsonl line 7"``), and the
listing shows the note instead of stopping:

* :func:`read_summary`: ``summary.json`` through :meth:`RunDir.read_summary` (the one parser of it), told apart:
  absent, unreadable, or a record;
* :func:`read_history`: ``metrics.jsonl``, one record per epoch, a truncated or corrupt line left out and named;
* :func:`read_config`: ``config.yaml`` as the plain mapping :func:`kdlab.recipe_text.read_yaml` reads (not
  validated: an old run's recipe may predate today's schema);
* :func:`probe_lock`: whether a live process holds the run's ``.lock`` (see :class:`kdlab.store.rundir.RunLock`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from kdlab.errors import KdlabError
from kdlab.recipe_text import read_yaml
from kdlab.store.rundir import LOCK_FILE, RunDir

UNREADABLE_SUMMARY = "unreadable summary.json"


def read_summary(run: RunDir) -> tuple[dict | None, str | None]:
    """(the summary, None), (None, None) when the run has none yet, or (None, the problem) when the file is there
    but is not a JSON object with a ``status`` word (a corrupt or hand-edited file)."""
    if not run.summary.exists():
        return None, None
    summary = run.read_summary()
    if not isinstance(summary, dict) or not isinstance(summary.get("status"), str):
        return None, UNREADABLE_SUMMARY
    return summary, None


def read_history(run: RunDir) -> tuple[list[dict], str | None]:
    """The per-epoch records of ``metrics.jsonl`` in order, and a note naming the lines that are not JSON objects
    (left out: the records around them still count). No file: no records and no note."""
    try:
        text = run.metrics.read_text(errors="replace")
    except FileNotFoundError:
        return [], None
    except OSError as error:
        return [], f"unreadable metrics.jsonl ({error.strerror or error})"
    records, bad = [], []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if isinstance(record, dict):
            records.append(record)
        else:
            bad.append(number)
    if not bad:
        return records, None
    return records, f"unreadable metrics.jsonl line{'s' * (len(bad) > 1)} {', '.join(map(str, bad))}"


def read_config(run: RunDir) -> tuple[dict | None, str | None]:
    """``config.yaml`` as a plain mapping (None when absent) and a note when it cannot be read."""
    if not run.config.is_file():
        return None, None
    try:
        return read_yaml(run.config), None
    except KdlabError:
        return None, "unreadable config.yaml"


@dataclass(frozen=True)
class LockProbe:
    """``held``: True when a live process holds the lock, False when none does (or there is no lock file), None
    when this system cannot tell (no ``fcntl``, a file system without ``flock``, a lock file we may not open).
    ``owner``: what the lock file says of the process that took it last ("pid 4242 on host"), if anything."""

    held: bool | None
    owner: str | None = None


def probe_lock(folder: os.PathLike | str) -> LockProbe:
    """Ask the kernel whether someone holds ``folder/.lock``, without creating, truncating or rewriting the file.

    :class:`~kdlab.store.rundir.RunLock` is the owner's side: an exclusive ``flock`` taken non-blocking on
    ``.lock``, which the kernel drops when the owner's process ends however it ends. Its ``acquire`` is not a
    probe (it creates the file and writes its own pid over the last owner's), so this asks the same question the
    read-only way: a *shared* non-blocking ``flock`` on the file opened for reading fails exactly while an owner
    holds its exclusive lock, and is dropped at once otherwise. Shared, so two listings at the same moment never
    see each other as owners; a training process that starts within that instant is refused as it would be
    against any holder (and can simply be started again)."""
    try:
        import fcntl
    except ImportError:  # not a POSIX system: kdlab takes no lock there either
        return LockProbe(None)
    try:
        fd = os.open(os.path.join(folder, LOCK_FILE), os.O_RDONLY)
    except FileNotFoundError:
        return LockProbe(False)
    except OSError:
        return LockProbe(None)
    try:
        owner = os.pread(fd, 200, 0).decode(errors="replace").strip() or None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return LockProbe(True, owner)
        except OSError:  # e.g. ENOLCK: no flock on this file system, so no run holds one either
            return LockProbe(None, owner)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return LockProbe(False, owner)
    finally:
        os.close(fd)  # closing drops the shared lock if the unlock above was not reached
