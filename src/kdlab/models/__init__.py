"""The model zoo: a registry of classifiers by name.

Contract every registered model follows (the engine, the analysis code and later methods rely on it):

* ``create(name, num_classes, in_channels=3)`` returns an ``nn.Module`` whose ``forward(x)`` gives logits (N x K);
* ``forward(x, return_features=True)`` returns ``(logits, features)`` from the same pass, where ``features`` are the
  penultimate activations (N x D) that enter the final linear layer;
* ``model.classifier`` is that final ``nn.Linear`` (its rows are Mueller et al.'s class templates);
* ``model.feature_dim`` is D;
* optionally ``model.fit_to_data(inputs)``: a data-dependent init (airnet's whitening filters), which the engine
  calls once before training with the first 5,000 training inputs, normalised and not augmented.

A builder's keyword arguments beyond ``num_classes`` and ``in_channels`` are the recipe's ``model.options``.

Besides the zoo's names, ``timm:<name>``, ``torchvision:<name>`` and ``hf:<folder>`` build models of those libraries
under the same contract (:mod:`kdlab.models.libraries`; each an optional extra).
"""

from __future__ import annotations

import inspect
import re
from typing import Callable

import torch.nn as nn

from kdlab.errors import KdlabError

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}
WRN_NAME = re.compile(r"wrn_([0-9]{1,6})_([0-9]{1,6})")  # wrn_D_K, built on the fly


def register(name: str):
    """Decorator that adds a builder ``fn(num_classes, in_channels) -> nn.Module`` to the zoo under ``name``."""

    def add(builder):
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} registered twice")
        _REGISTRY[name] = builder
        return builder

    return add


def names() -> list[str]:
    """All registered model names, sorted."""
    _load_zoo()
    return sorted(_REGISTRY)


def _unknown(name: str) -> str:
    return f"unknown model {name!r}; known models: {', '.join(sorted(_REGISTRY))}, or any wrn_D_K with D = 6n+4"


def check_name(name: str, where: str = "recipe", download: bool = False) -> None:
    """A one-line KdlabError naming ``where`` and ``model.name`` unless ``name`` is a registered model, a
    ``wrn_D_K`` or a library model that its (installed) library knows: so a recipe with a mistyped model fails
    before its data are read."""
    from kdlab.models import libraries

    if libraries.is_library_name(name):
        libraries.check(name, where, download)
        return
    _load_zoo()
    if name in _REGISTRY:
        return
    wrn = WRN_NAME.fullmatch(name)
    if not wrn:
        raise KdlabError(f"{where}: model.name: {_unknown(name)}")
    from kdlab.models.wide_resnet import check_size

    try:
        check_size(int(wrn[1]), int(wrn[2]))
    except KdlabError as error:
        raise KdlabError(f"{where}: model.name: {error}") from None


def create(name: str, num_classes: int, in_channels: int = 3, *, pretrained: str | None = None,
           options: dict | None = None, download: bool = False) -> nn.Module:
    """Build the model ``name`` for ``num_classes`` classes and ``in_channels`` input channels.

    Besides the registered names, any ``wrn_D_K`` (a wide ResNet of depth D = 6n + 4 and widen factor K) is built on
    the fly, and ``timm:`` / ``torchvision:`` / ``hf:`` names by their library (:mod:`kdlab.models.libraries`), with
    ``options`` for its builder, weights from the local file ``pretrained`` (zoo models too: a ``model.safetensors``
    of a kdlab run), and the library's pretrained weights only with ``download``.
    """
    from kdlab.models import libraries

    if libraries.is_library_name(name):
        return libraries.create(name, num_classes, in_channels, pretrained=pretrained, options=options,
                                download=download)
    model = _create_zoo(name, num_classes, in_channels, options or {})
    if pretrained is not None:
        from kdlab.models.libraries import load_pretrained
        from kdlab.models.libraries.adapter import read_state_dict

        load_pretrained(model, read_state_dict(pretrained, f"model {name}"), f"model {name}", pretrained)
    return model


def _create_zoo(name: str, num_classes: int, in_channels: int, options: dict) -> nn.Module:
    """A zoo model; ``options`` are keyword arguments of its builder, for the families that take some (airnet's
    widths, ...); any other option is refused with the ones the builder knows."""
    _load_zoo()
    builder = _REGISTRY.get(name)
    if options:
        known = [p for p in inspect.signature(builder).parameters if p not in ("num_classes", "in_channels")] \
            if builder is not None else []
        unknown = sorted(set(options) - set(known))
        if unknown:
            takes = f"it takes {', '.join(known)}" if known else "it takes none"
            raise KdlabError(f"model {name}: unknown model.options {', '.join(unknown)} ({takes}; options of "
                             f"timm:, torchvision: and hf: models go to their library)")
    if builder is not None:
        try:
            return builder(num_classes=num_classes, in_channels=in_channels, **options)
        except (TypeError, ValueError) as error:
            if not options:
                raise
            raise KdlabError(f"model {name}: model.options: {error}") from None
    wrn = WRN_NAME.fullmatch(name)
    if wrn:
        from kdlab.models.wide_resnet import wide_resnet

        return wide_resnet(int(wrn[1]), int(wrn[2]), num_classes=num_classes, in_channels=in_channels)
    raise KdlabError(_unknown(name))


def _load_zoo() -> None:
    # Importing the family modules runs their @register decorators.
    from kdlab.models import zoo  # noqa: F401
