"""Worker processes for runs side by side (``kdlab study --jobs``, ``kdlab tune --workers``, the quickstart).

A pool of spawned processes (never forked: the parent may hold torch's thread pools) that share the cores out,
``cores // workers`` torch threads each (two 2-thread torch processes on 2 cores stall each other's OpenMP
barriers), and die with the process that started them: on Linux the kernel sends them SIGKILL when it ends,
however it ends, so a killed study leaves no orphan training on in the background (a run killed that way resumes
from its last checkpoint when the study is started again).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from concurrent.futures import ProcessPoolExecutor

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def threads_per_worker(workers: int) -> int:
    return max(1, (os.cpu_count() or 1) // workers)


def worker_pool(workers: int) -> ProcessPoolExecutor:
    """``workers`` spawned processes with :func:`threads_per_worker` torch threads each, bound to this process."""
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_start_worker, initargs=(threads_per_worker(workers), os.getpid()))


def _start_worker(threads: int, parent: int) -> None:
    _die_with(parent)
    # Ctrl-C reaches the whole process group; the parent forwards a stop to its workers as SIGTERM
    # (:func:`stop_workers`), so a worker hears it once and checkpoints its run (kdlab.train.interrupt).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import torch

    torch.set_num_threads(threads)


def _die_with(parent: int) -> None:
    """Ask the kernel for SIGKILL when the parent ends (Linux; elsewhere nothing), and end now if it already has."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:
        os._exit(1)


def stop_workers(pool: ProcessPoolExecutor) -> None:
    """Send SIGTERM to every live worker of ``pool``: each finishes its step, checkpoints and ends its run as
    interrupted (the pool's processes are read from its ``_processes`` map, the one place concurrent.futures keeps
    them)."""
    for pid in list(getattr(pool, "_processes", None) or {}):
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
