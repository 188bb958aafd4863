"""Loading pickled data files without letting them run code.

A pickle can name any importable callable and call it while loading (``os.system`` through ``__reduce__``). The
official CIFAR python files only hold dicts, lists, ints, byte strings and numpy arrays, so this unpickler allows
exactly the globals those need and refuses every other one before it is imported:

* ``numpy.core.multiarray._reconstruct`` (numpy 1 pickles) or ``numpy._core.multiarray._reconstruct`` (numpy 2),
  ``numpy.ndarray`` and ``numpy.dtype``: numpy's array reconstruction;
* ``_codecs.encode`` and ``builtins.bytes`` (``__builtin__.bytes``): how Python 3 writes byte strings with pickle
  protocol 2 (Python 2, which wrote the official files, needs neither).

Files are read with ``encoding="bytes"`` as the official Python 2 pickles need: their str keys and names come back
as ``bytes``.
"""

from __future__ import annotations

import codecs
import pickle
from pathlib import Path

import numpy as np

from kdlab.errors import KdlabError

# numpy's own _reconstruct, wherever this numpy version keeps it, so neither module name needs importing.
_RECONSTRUCT = np.ndarray((0,)).__reduce__()[0]

ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): codecs.encode,
    ("builtins", "bytes"): bytes,
    ("__builtin__", "bytes"): bytes,
}


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only :data:`ALLOWED_GLOBALS`; any other global is a KdlabError naming it."""

    def __init__(self, file, path: Path):
        super().__init__(file, encoding="bytes")
        self.path = path

    def find_class(self, module: str, name: str):
        allowed = ALLOWED_GLOBALS.get((module, name))
        if allowed is None:
            raise KdlabError(f"{self.path}: refusing to unpickle {module}.{name}; a data pickle may only hold "
                             f"numpy arrays, lists, dicts, numbers and byte strings")
        return allowed

    def persistent_load(self, pid):
        raise KdlabError(f"{self.path}: refusing to unpickle a persistent object reference")


def load_restricted_pickle(path: Path):
    """The object pickled in file ``path``, loaded with :class:`RestrictedUnpickler`."""
    try:
        with open(path, "rb") as handle:
            return RestrictedUnpickler(handle, path).load()
    except KdlabError:
        raise
    except FileNotFoundError:
        raise KdlabError(f"missing data file: {path}") from None
    except Exception as error:  # a damaged pickle can fail in many ways; each is this file's fault
        raise KdlabError(f"{path}: not a readable pickle ({type(error).__name__}: {error})") from None
