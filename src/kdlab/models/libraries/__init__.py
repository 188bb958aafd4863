"""Models from other libraries: ``timm:<name>``, ``torchvision:<name>`` and ``hf:<folder or hub id>``.

Each library is an optional extra (``pip install 'kdlab[timm]'``, ``kdlab[torchvision]``, ``kdlab[hf]``); a recipe that
names one that is not installed fails at once with the line to install it. Every model comes back as a
:class:`~kdlab.models.libraries.adapter.LibraryClassifier`: the zoo's contract, plus the network's own
``preprocessing``. Nothing is downloaded unless ``download`` is true (offline is the default); weights come from a
local file or folder (``pretrained``), and a head of another class count than the data's is replaced by a fresh one.
"""

from __future__ import annotations

import importlib
from types import ModuleType

import torch.nn as nn

from kdlab.errors import KdlabError
from kdlab.models.libraries.adapter import (LibraryClassifier, Preprocessing, final_linear, load_weights,
                                            read_state_dict)

LIBRARIES = {"timm": "timm_models", "torchvision": "torchvision_models", "hf": "hf_models"}
IMPORTS = {"timm": "timm", "torchvision": "torchvision", "hf": "transformers"}

__all__ = ["LIBRARIES", "LibraryClassifier", "Preprocessing", "check", "class_names", "create", "is_library_name",
           "split_name"]


def is_library_name(name: str) -> bool:
    return name.partition(":")[0] in LIBRARIES and ":" in name


def split_name(name: str) -> tuple[str, str]:
    library, _, inner = name.partition(":")
    if library not in LIBRARIES or not inner:
        raise KdlabError(f"model {name!r}: expected one of {', '.join(f'{k}:<name>' for k in LIBRARIES)}")
    return library, inner


def library(name: str, where: str = "recipe") -> tuple[ModuleType, str]:
    """The kdlab module of the library ``name`` belongs to, and the name inside that library; a library that is
    not installed is a one-line error saying which extra to install."""
    prefix, inner = split_name(name)
    try:
        importlib.import_module(IMPORTS[prefix])
    except ImportError as error:
        raise KdlabError(f"{where}: model.name {name} needs {IMPORTS[prefix]}, which is not installed "
                         f"({error.msg}): pip install 'kdlab[{prefix}]'") from None
    return importlib.import_module(f"kdlab.models.libraries.{LIBRARIES[prefix]}"), inner


def check(name: str, where: str = "recipe", download: bool = False) -> None:
    """A one-line error unless ``name`` is a model its library can build here."""
    module, inner = library(name, where)
    if module.EXTRA == "hf":
        module.check(inner, where, download)
    else:
        module.check(inner, where)


def create(name: str, num_classes: int, in_channels: int = 3, *, pretrained: str | None = None,
           options: dict | None = None, download: bool = False) -> LibraryClassifier:
    """The library model ``name`` for ``num_classes`` classes, with the weights of ``pretrained`` if given (a head
    of another class count is replaced by a fresh one; see :func:`load_pretrained`)."""
    module, inner = library(name, f"model {name}")
    options = dict(options or {})
    if module.EXTRA == "hf" and pretrained is not None:
        network, _ = module.from_pretrained(inner, pretrained, num_classes, in_channels, options, new_head=True)
    else:
        network = module.build(inner, num_classes, in_channels, options, download and pretrained is None)
    if module.EXTRA == "timm":
        prep = module.preprocessing(network, options)
    elif module.EXTRA == "torchvision":
        prep = module.preprocessing(network, inner, options)
    else:
        prep = module.preprocessing(network, inner)
    if pretrained is not None and module.EXTRA != "hf":
        load_pretrained(network, read_state_dict(pretrained, f"model {name}"), f"model {name}", pretrained)
    return LibraryClassifier(network, num_classes, name, prep, call=getattr(module, "call", None))


def load_pretrained(network: nn.Module, state: dict, label: str, path) -> bool:
    """Load ``state`` into ``network``; when only the classifier's class count differs, keep the network's fresh
    head (fine-tuning) and return True, else load everything strictly and return False."""
    head, linear = final_linear(network)
    stored = state.get(f"{head}.weight")
    if stored is not None and stored.ndim == 2 and stored.shape[0] != linear.out_features \
            and stored.shape[1] == linear.in_features:
        own = network.state_dict()
        state = {**state, f"{head}.weight": own[f"{head}.weight"]}
        if f"{head}.bias" in own:
            state[f"{head}.bias"] = own[f"{head}.bias"]
        load_weights(network, state, label, path)
        return True
    load_weights(network, state, label, path)
    return False


def class_names(name: str, download: bool = False) -> list[str] | None:
    """The class names a library model's own files carry (a transformers config's ``id2label``), or None."""
    module, inner = library(name, f"model {name}")
    return module.class_names(inner, download) if hasattr(module, "class_names") else None
