"""``torchvision:<name>``: any classifier of ``torchvision.models`` (``get_model``), built offline.

``model.options`` go to ``get_model`` (e.g. ``dropout``, ``image_size`` for a ViT). The preprocessing is that of the
architecture's default weights (``get_model_weights(name).DEFAULT.transforms()``: crop size, resize size,
interpolation, mean, std), which describes the inputs every published checkpoint of it was trained on; the weights
themselves are fetched only with ``download: true``. torchvision classifiers take 3-channel images.
"""

from __future__ import annotations

import torch.nn as nn

from kdlab.errors import KdlabError
from kdlab.models.libraries.adapter import IMAGENET_MEAN, IMAGENET_STD, Preprocessing

EXTRA = "torchvision"


def check(name: str, where: str) -> None:
    from torchvision.models import list_models

    if name not in list_models():
        close = [m for m in list_models() if m.startswith(name[:4])][:5]
        hint = f"; similar: {', '.join(close)}" if close else ""
        raise KdlabError(f"{where}: model.name: torchvision has no classification model {name!r}{hint}")


def build(name: str, num_classes: int, in_channels: int, options: dict, download: bool) -> nn.Module:
    from torchvision.models import get_model

    if in_channels != 3:
        raise KdlabError(f"model torchvision:{name} takes 3-channel (RGB) images, the data have {in_channels} "
                         f"channel(s); read them with data.options.mode: RGB")
    try:
        if download:
            network = get_model(name, weights="DEFAULT", **options)
            from kdlab.models.libraries.adapter import final_linear, replace_head

            if final_linear(network)[1].out_features != num_classes:
                replace_head(network, num_classes)
            return network
        return get_model(name, weights=None, num_classes=num_classes, **options)
    except (TypeError, ValueError) as error:
        raise KdlabError(f"model torchvision:{name}: bad model.options ({error})") from None


def preprocessing(network: nn.Module, name: str, options: dict) -> Preprocessing:
    from torchvision.models import get_model_weights

    try:
        transforms = get_model_weights(name).DEFAULT.transforms()
    except (ValueError, KeyError, AttributeError):
        return Preprocessing((224, 224), IMAGENET_MEAN, IMAGENET_STD)
    crop = list(transforms.crop_size)
    size = (crop[0], crop[-1])
    if "image_size" in options:
        size = (int(options["image_size"]),) * 2
    resize = list(transforms.resize_size)[0] if transforms.resize_size else crop[0]
    return Preprocessing(size, tuple(transforms.mean), tuple(transforms.std), transforms.interpolation.value,
                         round(crop[0] / resize, 4))
