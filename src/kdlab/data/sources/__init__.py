"""The data sources: each decodes one on-disk layout into a :class:`kdlab.data.Dataset`.

``SOURCES`` maps a source name to its function; keyword-only parameters are the source's options. A function whose
first parameter is ``path`` reads the files in that folder. ``DATA_FOLDERS`` names, for the sources that accept a
parent folder too (CIFAR), the folder they really read, so the cache key covers only that one. A function with no
``path`` (digits) reads no files, and ``CONTENT_VERSIONS`` says what its data depend on instead, for the cache key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from kdlab.data.dataset import Dataset
from kdlab.data.sources.audio_folder import decode_audio_folder
from kdlab.data.sources.cifar10 import decode_cifar10, locate_cifar10
from kdlab.data.sources.cifar100 import decode_cifar100, locate_cifar100
from kdlab.data.sources.digits import decode_digits, digits_version
from kdlab.data.sources.folder import decode_folder, decode_image_folder, list_folder, list_image_folder
from kdlab.data.sources.fsdd import decode_fsdd
from kdlab.data.sources.hf_datasets import decode_hf, list_hf
from kdlab.data.sources.idx import decode_idx
from kdlab.data.sources.webdataset import decode_webdataset, list_webdataset

SOURCES: dict[str, Callable[..., Dataset]] = {
    "digits": decode_digits,
    "idx": decode_idx,
    "cifar10": decode_cifar10,
    "cifar100": decode_cifar100,
    "folder": decode_folder,
    "image_folder": decode_image_folder,
    "webdataset": decode_webdataset,
    "hf": decode_hf,
    "fsdd": decode_fsdd,
    "audio_folder": decode_audio_folder,
}

DATA_FOLDERS: dict[str, Callable[[str], Path]] = {"cifar10": locate_cifar10, "cifar100": locate_cifar100}

CONTENT_VERSIONS: dict[str, Callable[[], str]] = {"digits": digits_version}

# Sources whose samples are files that can be read one by one: the listing gives the same Dataset as the source,
# holding ImageFiles instead of decoded arrays (data.residency: stream).
LISTINGS: dict[str, Callable[..., Dataset]] = {"folder": list_folder, "image_folder": list_image_folder,
                                               "webdataset": list_webdataset, "hf": list_hf}

# Options added after caches were keyed: left out of the cache key while at their default None, so existing
# caches keep their keys.
LATER_OPTIONS: dict[str, tuple[str, ...]] = {"folder": ("size",)}

__all__ = ["SOURCES", "DATA_FOLDERS", "CONTENT_VERSIONS", "LISTINGS", "LATER_OPTIONS"]
