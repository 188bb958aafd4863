"""Training methods by name. Each method is a small file: its parameters, its soft target and its divergence.

To add a method: write ``kdlab/methods/<name>.py`` with a :class:`~kdlab.methods.base.Method` subclass decorated by
``@register("<name>")`` and import it in ``_load_methods`` below.
"""

from __future__ import annotations

from kdlab.errors import KdlabError
from kdlab.methods.base import Method, MethodContext

_REGISTRY: dict[str, type[Method]] = {}


def register(name: str):
    def add(cls: type[Method]) -> type[Method]:
        if name in _REGISTRY:
            raise ValueError(f"method {name!r} registered twice")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return add


def names(*, heads: bool | None = None, teacher: bool | None = None) -> list[str]:
    """The registered method names, sorted; ``heads=True`` only those that train several heads (online
    distillation), ``teacher=True`` only those that distil from a teacher run (False: the others)."""
    _load_methods()
    return sorted(name for name, cls in _REGISTRY.items()
                  if (heads is None or cls.has_heads == heads) and (teacher is None or cls.needs_teacher == teacher))


def get(name: str, where: str = "recipe") -> type[Method]:
    _load_methods()
    if name not in _REGISTRY:
        raise KdlabError(f"{where}: method.name: unknown method {name!r}; known methods: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def _load_methods() -> None:
    from kdlab.methods import (  # noqa: F401
        ard,
        attention,
        bdkd,
        cals,
        cl_ilr,
        crd,
        ctkd,
        cross_entropy,
        dkd,
        dml,
        fitnet,
        kd,
        kd_annealed,
        label_smoothing,
        margin,
        mean_teacher,
        mixup_kd,
        multi_teacher,
        okddip,
        one,
        output_smoothing,
        pkt,
        review_kd,
        rkd,
        similarity,
        teacher_free_kd,
        vid,
        zipf,
    )


__all__ = ["Method", "MethodContext", "get", "names", "register"]
