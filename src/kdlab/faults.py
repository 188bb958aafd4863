"""Fault injection for kdlab's own reliability tests: make a real process die, or a write fail, at a chosen point.

``KDLAB_FAULT`` holds comma-separated rules ``ACTION@FILE#N``: the N-th (1-based) atomic write of a file named FILE
(e.g. ``summary.json``, ``state.json``, ``model.safetensors``; ``*``: the N-th atomic write of any file) triggers ACTION after its bytes are
in the temporary file and before it is renamed into place (:func:`kdlab.io.atomic_write`). FILE is a shell pattern
(``logits-*.safetensors``: files whose names change with their content); with a ``/`` in it, it is matched against
the end of the file's path (``teacher-logits/*/meta.json``: the teacher cache's meta file, not the data cache's).

* ``kill``: SIGKILL this process (as a power cut or an OOM kill would, nothing runs after it);
* ``enospc``: the write fails with ``OSError(ENOSPC)``, as on a full disk;
* ``efbig``: the write fails with ``OSError(EFBIG)``, as past a file-size limit (``ulimit -f``, a quota).

Unset (always, outside tests) it costs one dictionary lookup per write. Only the tests set it, for a child process.

``KDLAB_WRITE_LOG=FOLDER`` appends the path of every atomic write to ``FOLDER/writes-rank<RANK>.txt`` (RANK from
torchrun, 0 otherwise): how the tests check that only rank 0 of a data-parallel run writes.
"""

from __future__ import annotations

import errno
import os
import signal
from collections import Counter
from fnmatch import fnmatchcase

ENV = "KDLAB_FAULT"
LOG_ENV = "KDLAB_WRITE_LOG"
ACTIONS = ("kill", "enospc", "efbig")
_writes: Counter = Counter()


def _rules() -> list[tuple[str, str, int]]:
    text = os.environ.get(ENV, "")
    rules = []
    for rule in filter(None, (part.strip() for part in text.split(","))):
        action, _, target = rule.partition("@")
        name, _, count = target.partition("#")
        if action not in ACTIONS or not name or not count.isdigit():
            raise ValueError(f"{ENV}: bad rule {rule!r} (expected ACTION@FILE#N, ACTION one of kill, enospc, efbig)")
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
    rules = [rule for rule in _rules() if _matches(rule[1], name, path)]
    for target in {target for _, target, _ in rules}:  # each pattern counts the writes it names, once each
        _writes[target] += 1
    for action, target, count in rules:
        if _writes[target] == count:
            if action == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            code = errno.EFBIG if action == "efbig" else errno.ENOSPC
            raise OSError(code, os.strerror(code), name)


def _matches(target: str, name: str, path: str) -> bool:
    """Whether the rule's FILE pattern ``target`` names this write (see the module docstring)."""
    if "/" in target:
        return fnmatchcase(path.replace(os.sep, "/"), f"*/{target}")
    return fnmatchcase(name, target)
