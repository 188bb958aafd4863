"""Fault injection for kdlab's own reliability tests: make a real process die, or a write fail, at a chosen point.

``KDLAB_FAULT`` holds comma-separated rules ``ACTION@FILE#N``: the N-th (1-based) atomic write of a file named FILE
(e.g. ``summary.json``, ``state.json``, ``model.safetensors``; ``*``: the N-th atomic write of any file) triggers ACTION after its bytes are
in the temporary file and before it is renamed into place (:func:`kdlab.io.atomic_write`):

* ``kill``: SIGKILL this process (as a power cut or an OOM kill would, nothing runs after it);
* ``enospc``: the write fails with ``OSError(ENOSPC)``, as on a full disk.

Unset (always, outside tests) it costs one dictionary lookup per write. Only the tests set it, for a child process.

``KDLAB_WRITE_LOG=FOLDER`` appends the path of every atomic write to ``FOLDER/writes-rank<RANK>.txt`` (RANK from
torchrun, 0 otherwise): how the tests check that only rank 0 of a data-parallel run writes.
"""

from __future__ import annotations

import errno
import os
import signal
from collections import Counter

ENV = "KDLAB_FAULT"
LOG_ENV = "KDLAB_WRITE_LOG"
ACTIONS = ("kill", "enospc")
_writes: Counter = Counter()


def _rules() -> list[tuple[str, str, int]]:
    text = os.environ.get(ENV, "")
    rules = []
    for rule in filter(None, (part.strip() for part in text.split(","))):
        action, _, target = rule.partition("@")
        name, _, count = target.partition("#")
        if action not in ACTIONS or not name or not count.isdigit():
            raise ValueError(f"{ENV}: bad rule {rule!r} (expected kill@FILE#N or enospc@FILE#N)")
        rules.append((action, name, int(count)))
    return rules


def before_publish(name: str, path: str = "") -> None:
    """Called by every atomic write of a file named ``name`` just before its rename; fires matching rules."""
    if LOG_ENV in os.environ:
        log = os.path.join(os.environ[LOG_ENV], f"writes-rank{os.environ.get('RANK', '0')}.txt")
        with open(log, "a") as handle:
            handle.write(f"{path or name}\n")
    if ENV not in os.environ:
        return
    _writes[name] += 1
    _writes["*"] += 1
    for action, target, count in _rules():
        if target in (name, "*") and _writes[target] == count:
            if action == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), name)
