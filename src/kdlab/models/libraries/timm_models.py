"""``timm:<name>``: any classifier of PyTorch Image Models (``timm.create_model``), built offline.

``model.options`` go to ``timm.create_model`` (e.g. ``img_size: 32`` for a ViT on small images, ``drop_rate``). The
preprocessing is timm's own ``resolve_data_config`` of the built model (input size, interpolation, mean, std,
crop_pct), with the input size of ``options.img_size`` when it is given. ``download: true`` fetches timm's
pretrained weights from the hub (``pretrained=True``); otherwise the network starts from random weights or from
``model.pretrained``.
"""

from __future__ import annotations

import torch.nn as nn

from kdlab.errors import KdlabError
from kdlab.models.libraries.adapter import Preprocessing

EXTRA = "timm"


def check(name: str, where: str) -> None:
    import timm

    if not timm.is_model(name):
        close = timm.list_models(f"*{name[:4]}*")[:5] if len(name) >= 4 else []
        hint = f"; similar: {', '.join(close)}" if close else ""
        raise KdlabError(f"{where}: model.name: timm has no model {name!r}{hint}")


def build(name: str, num_classes: int, in_channels: int, options: dict, download: bool) -> nn.Module:
    import timm

    try:
        return timm.create_model(name, pretrained=download, num_classes=num_classes, in_chans=in_channels, **options)
    except TypeError as error:
        raise KdlabError(f"model timm:{name}: bad model.options ({error})") from None
    except RuntimeError as error:
        raise KdlabError(f"model timm:{name}: {str(error).splitlines()[0]}") from None


def preprocessing(network: nn.Module, options: dict) -> Preprocessing:
    from timm.data import resolve_data_config

    config = resolve_data_config({}, model=network)
    size = tuple(config["input_size"][1:])
    if "img_size" in options:
        given = options["img_size"]
        size = (given, given) if isinstance(given, int) else tuple(given)
    return Preprocessing(size, tuple(config["mean"]), tuple(config["std"]), config.get("interpolation", "bilinear"),
                         float(config.get("crop_pct", 1.0)))
