"""A teacher without a run directory: a timm / torchvision / transformers (or zoo) network with its own weights,
classes and preprocessing (:class:`~kdlab.teacher.spec.LibraryTeacherSpec`), checked against the student's task."""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn as nn

from kdlab import models
from kdlab.data import Dataset
from kdlab.errors import KdlabError
from kdlab.models.libraries import class_names as library_class_names
from kdlab.models.libraries import is_library_name
from kdlab.models.libraries.adapter import head_classes, load_weights, read_state_dict
from kdlab.teacher.spec import LibraryTeacherSpec, class_index

WHERE = "method.teacher"


@dataclass(frozen=True)
class TeacherView:
    """How the teacher sees a student's input: resized to ``size`` (None: as it is) with ``interpolation``, then
    normalised with ``mean`` / ``std``; its logits taken at ``class_index`` (None: all, in order)."""

    size: tuple[int, int] | None
    interpolation: str
    mean: list[float]
    std: list[float]
    class_index: list[int] | None

    def record(self) -> dict:
        return {"input_size": list(self.size) if self.size else None, "interpolation": self.interpolation,
                "mean": self.mean, "std": self.std,
                "class_index": self.class_index}


def teacher_classes(spec: LibraryTeacherSpec) -> list[str]:
    names = spec.class_names(WHERE)
    if names is None and spec.model.startswith("hf:"):
        names = library_class_names(spec.model, spec.download)
    if names is None:
        raise KdlabError(f"{WHERE}.classes: give the teacher's class names in its output order (a list, or a file "
                         f"with one name per line): {spec.model} does not carry them")
    return names


def hf_teacher(spec: LibraryTeacherSpec, num_classes: int, in_channels: int) -> nn.Module:
    """A transformers teacher from its ``save_pretrained`` folder; its head must have ``num_classes`` outputs."""
    from kdlab.models.libraries import LibraryClassifier, library
    from kdlab.models.libraries.hf_models import call, from_pretrained, preprocessing

    _, inner = library(spec.model, WHERE)
    network, replaced = from_pretrained(inner, spec.weights, num_classes, in_channels, spec.options, new_head=False)
    if replaced:
        raise KdlabError(f"{WHERE}: weights in {spec.weights} have another class count than the {num_classes} "
                         f"class names of the teacher")
    return LibraryClassifier(network, num_classes, spec.model, preprocessing(network, inner), call=call)


def load_library_network(spec: LibraryTeacherSpec, dataset: Dataset) -> tuple[nn.Module, TeacherView, list[str]]:
    """The teacher network of ``spec`` with its weights (its head must have one output per class name), how it
    sees the student's inputs, and its class names."""
    if dataset.is_audio:
        raise KdlabError(f"{WHERE}: a teacher without a run directory is for images; {dataset.name} is audio")
    names = teacher_classes(spec)
    index = class_index(names, list(dataset.classes), spec.extra_classes, WHERE)
    models.check_name(spec.model, WHERE, spec.download)
    h, w, channels = dataset.image_shape
    library = is_library_name(spec.model)
    in_channels = 3 if library and channels == 1 else channels
    if spec.weights is None and not spec.download:
        raise KdlabError(f"{WHERE}.weights: a teacher needs its trained weights (a local file; or download: true)")
    if spec.model.startswith("hf:") and spec.weights is not None:
        network = hf_teacher(spec, len(names), in_channels)
    else:
        network = models.create(spec.model, num_classes=len(names), in_channels=in_channels, options=spec.options,
                                download=spec.download and spec.weights is None)
    if spec.weights is not None and not spec.model.startswith("hf:"):
        inner = network.network if library else network
        path = spec.weights
        state = read_state_dict(path, WHERE)
        stored = head_classes(state, inner)
        if stored is not None and stored != len(names):
            raise KdlabError(f"{WHERE}: weights {path} have a {stored}-class head, but the teacher's classes list "
                             f"{len(names)} names")
        load_weights(inner, state, WHERE, path)
    network.eval()
    network.requires_grad_(False)
    own = getattr(network, "preprocessing", None)
    mean = spec.mean or (list(own.mean) if own else None)
    std = spec.std or (list(own.std) if own else None)
    if mean is None or std is None:
        raise KdlabError(f"{WHERE}: give the mean and std the teacher {spec.model} was trained with")
    if len(mean) != in_channels or len(std) != in_channels:
        raise KdlabError(f"{WHERE}: mean and std need {in_channels} values for {spec.model}, got {len(mean)} and "
                         f"{len(std)}")
    size = tuple(spec.input_size) if spec.input_size else (own.input_size if own and own.input_size else None)
    interpolation = spec.interpolation or (own.interpolation if own else "bilinear")
    view = TeacherView(None if size is None or tuple(size) == (h, w) else tuple(size), interpolation, list(mean),
                       list(std), index)
    return network, view, names


def library_teacher(spec: LibraryTeacherSpec, dataset: Dataset, *, input_mean, input_std, compile: bool = False,
                    name: str = "teacher"):
    """The :class:`~kdlab.teacher.module.Teacher` of ``spec`` for a student whose inputs are normalised with
    (``input_mean``, ``input_std``): resized, re-normalised and class-mapped as :func:`load_library_network` says."""
    from kdlab.teacher.module import Teacher

    network, view, _ = load_library_network(spec, dataset)
    return Teacher(network, renormalise=(input_mean, input_std, view.mean, view.std), compile=compile, name=name,
                   resize=view.size, interpolation=view.interpolation, class_index=view.class_index,
                   record={"model": spec.model, **view.record()})
