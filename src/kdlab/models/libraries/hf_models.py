"""``hf:<local dir or hub repo>``: a Hugging Face ``transformers`` image classifier
(``AutoModelForImageClassification``), built from its ``config.json``.

The name is a folder holding ``config.json`` (what ``save_pretrained`` writes) or, with ``download: true``, a hub
repository id. The network is built from the config with the run's class count (random weights); the weights come
from ``model.pretrained`` (that folder again, or a ``.safetensors`` / ``.bin`` file). ``model.options`` override
config fields (e.g. ``image_size``). The preprocessing is that of the folder's image processor
(``preprocessor_config.json``: size, resample, image_mean, image_std), else the config's ``image_size`` with the
ImageNet statistics. The class names, when the config has real ones (``id2label``), are the teacher's classes.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import torch.nn as nn

from kdlab.errors import KdlabError
from kdlab.models.libraries.adapter import IMAGENET_MEAN, IMAGENET_STD, Preprocessing, final_linear

EXTRA = "hf"
PIL_RESAMPLE = {0: "nearest", 2: "bilinear", 3: "bicubic"}
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def check(name: str, where: str, download: bool = False) -> None:
    if not Path(name).is_dir() and not download:
        raise KdlabError(f"{where}: model.name: hf:{name} is not a local folder with a config.json (a hub id needs "
                         f"model.download: true and a network)")
    if Path(name).is_dir() and not (Path(name) / "config.json").is_file():
        raise KdlabError(f"{where}: model.name: hf:{name} has no config.json")


@contextlib.contextmanager
def quiet():
    """transformers' load reports and progress bars off while kdlab loads a model (its own messages say enough)."""
    from transformers.utils import logging

    verbosity = logging.get_verbosity()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(verbosity)
        logging.enable_progress_bar()


def config(name: str, download: bool, options: dict | None = None):
    from transformers import AutoConfig

    try:
        loaded = AutoConfig.from_pretrained(name, local_files_only=not download)
    except (OSError, ValueError) as error:
        raise KdlabError(f"model hf:{name}: cannot read its config ({str(error).splitlines()[0][:200]})") from None
    for key, value in (options or {}).items():
        if not hasattr(loaded, key):
            raise KdlabError(f"model hf:{name}: bad model.options: its config has no field {key!r}")
        setattr(loaded, key, value)
    return loaded


def build(name: str, num_classes: int, in_channels: int, options: dict, download: bool) -> nn.Module:
    from transformers import AutoModelForImageClassification

    loaded = config(name, download, options)
    if getattr(loaded, "num_channels", in_channels) != in_channels:
        loaded.num_channels = in_channels
    loaded.num_labels = num_classes
    try:
        with quiet():
            return AutoModelForImageClassification.from_config(loaded)
    except ValueError as error:
        raise KdlabError(f"model hf:{name}: not an image classifier ({str(error).splitlines()[0][:200]})") from None


def from_pretrained(name: str, folder: str, num_classes: int, in_channels: int, options: dict,
                    new_head: bool) -> tuple[nn.Module, bool]:
    """The network of ``name`` with the weights of the ``save_pretrained`` folder ``folder`` (transformers maps
    older checkpoints' tensor names to its current ones). A head of another class count is replaced by a fresh one
    with ``new_head`` (returned True), else an error; any other missing, unexpected or misshapen tensor is an error."""
    from transformers import AutoModelForImageClassification

    if not Path(folder).is_dir():
        raise KdlabError(f"model hf:{name}: pretrained must be a save_pretrained folder, {folder} is not one")
    weights_file(folder)
    loaded = config(name, False, options)
    stored_classes = loaded.num_labels
    if getattr(loaded, "num_channels", in_channels) != in_channels:
        loaded.num_channels = in_channels
    loaded.num_labels = num_classes
    try:
        with quiet():
            network, info = AutoModelForImageClassification.from_pretrained(
                folder, config=loaded, local_files_only=True, ignore_mismatched_sizes=True, output_loading_info=True)
    except (OSError, ValueError, RuntimeError) as error:
        raise KdlabError(f"model hf:{name}: cannot load {folder} ({str(error).splitlines()[0][:200]})") from None
    head, _ = final_linear(network, num_classes)
    mismatched = [entry[0] if isinstance(entry, (tuple, list)) else str(entry) for entry in info.get("mismatched_keys", [])]
    head_only = all(key.startswith(head + ".") for key in mismatched)
    problems = [f"missing {k}" for k in info.get("missing_keys", [])] + \
               [f"unexpected {k}" for k in info.get("unexpected_keys", [])] + \
               [f"misshapen {k}" for k in mismatched if not (new_head and head_only)]
    if problems:
        raise KdlabError(f"model hf:{name}: weights in {folder} do not fit this architecture ({problems[0]}"
                         + (f" and {len(problems) - 1} more" if len(problems) > 1 else "") + ")")
    return network, bool(mismatched) or stored_classes != num_classes


def call(network: nn.Module, x):
    return network(pixel_values=x).logits


def weights_file(path: str) -> str:
    """The weights file of ``path``: itself, or the ``save_pretrained`` file inside a folder."""
    if os.path.isdir(path):
        for name in WEIGHT_FILES:
            if (Path(path) / name).is_file():
                return str(Path(path) / name)
        raise KdlabError(f"{path}: no {' or '.join(WEIGHT_FILES)} in this folder")
    return path


def class_names(name: str, download: bool = False) -> list[str] | None:
    """The config's ``id2label`` in index order, unless it is transformers' placeholder (``LABEL_0``, ...)."""
    labels = getattr(config(name, download), "id2label", None) or {}
    names = [labels[i] for i in sorted(labels)]
    return None if not names or all(n == f"LABEL_{i}" for i, n in enumerate(names)) else names


def preprocessing(network: nn.Module, name: str) -> Preprocessing:
    size = getattr(network.config, "image_size", None)
    size = (size, size) if isinstance(size, int) else (tuple(size) if size else None)
    processor = Path(name) / "preprocessor_config.json"
    if not processor.is_file():
        return Preprocessing(size, IMAGENET_MEAN, IMAGENET_STD)
    import json

    try:
        values = json.loads(processor.read_text())
    except (OSError, ValueError) as error:
        raise KdlabError(f"{processor}: not readable JSON ({error})") from None
    given = values.get("size") or {}
    if isinstance(given, int):
        size = (given, given)
    elif "height" in given:
        size = (given["height"], given["width"])
    elif "shortest_edge" in given:
        size = (given["shortest_edge"],) * 2
    return Preprocessing(size, tuple(values.get("image_mean", IMAGENET_MEAN)),
                         tuple(values.get("image_std", IMAGENET_STD)),
                         PIL_RESAMPLE.get(values.get("resample", 2), "bilinear"))
