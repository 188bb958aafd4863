"""``method.teacher`` as a recipe gives it: a kdlab run directory, or a model of any library with its own weights.

    teacher: runs/resnet8                      # a completed kdlab run (its config.yaml and safetensors)
    teacher:                                   # no run directory: a timm / torchvision / transformers / zoo model
      model: timm:resnet50
      weights: teachers/resnet50.safetensors   # a local file (hf: the save_pretrained folder)
      classes: teachers/classes.txt            # one name per line, a JSON list, or the list itself

The teacher keeps its own preprocessing: the library's input size, interpolation, mean and std unless given here
(``input_size``, ``interpolation``, ``mean``, ``std``); it sees the student's crop resized to its input size and
normalised its own way. Its classes are matched to the student's by name (any order); classes the student does not
have are an error unless ``extra_classes: drop``, which keeps only the student's classes' logits.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from kdlab.fields import PositiveStd
from kdlab.errors import KdlabError


def _absolute(value: str) -> str:
    return os.path.normpath(os.path.abspath(os.path.expanduser(os.path.expandvars(value))))


class LibraryTeacherSpec(BaseModel):
    """A teacher without a run directory (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    model: str = Field(description="timm:<name>, torchvision:<name>, hf:<folder>, or a kdlab zoo name")
    weights: str | None = Field(None, description="the trained weights: safetensors or PyTorch file (hf: folder); "
                                "None only with download: true")
    classes: list[str] | str | None = Field(None, description="the teacher's class names in output order: a list, "
                                            "or a text file (one per line) / JSON list; hf: default id2label")
    options: dict[str, Any] = Field(default_factory=dict, description="keyword arguments of the library's builder")
    input_size: int | list[int] | None = Field(None, description="teacher input H (= W) or [H, W]; None: the "
                                               "library's (zoo: the student's size)")
    interpolation: Literal["nearest", "bilinear", "bicubic"] | None = Field(None, description="resize filter; None: "
                                                                             "the library's")
    mean: list[float] | None = Field(None, description="per-channel mean on [0, 1]; None: the library's")
    std: PositiveStd = Field(None, description="per-channel std on [0, 1]; None: the library's")
    extra_classes: Literal["error", "drop"] = Field("error", description="teacher classes the student lacks")
    download: bool = Field(False, description="allow fetching the library's pretrained weights (offline default)")

    @field_validator("weights")
    @classmethod
    def _weights_absolute(cls, value: str | None) -> str | None:
        return None if value is None else _absolute(value)

    @field_validator("model")
    @classmethod
    def _hf_folder(cls, value: str) -> str:
        prefix, _, rest = value.partition(":")
        return f"hf:{_absolute(rest)}" if prefix == "hf" and rest and Path(os.path.expanduser(rest)).exists() else value

    @field_validator("classes")
    @classmethod
    def _classes_file_absolute(cls, value):
        return _absolute(value) if isinstance(value, str) else value

    @field_validator("input_size")
    @classmethod
    def _size(cls, value):
        if value is None:
            return None
        size = [value, value] if isinstance(value, int) else list(value)
        if len(size) != 2 or any(s < 1 for s in size):
            raise ValueError("input_size is one positive size or [height, width]")
        return size

    def class_names(self, where: str = "method.teacher") -> list[str] | None:
        """The teacher's class names in output order (read from the file if ``classes`` names one), or None."""
        if not isinstance(self.classes, str):
            return self.classes
        path = Path(self.classes)
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as error:
            raise KdlabError(f"{where}.classes: cannot read {path} ({getattr(error, 'strerror', None) or error})") \
                from None
        if text.lstrip().startswith("["):
            try:
                names = json.loads(text)
            except ValueError as error:
                raise KdlabError(f"{where}.classes: {path} is not a JSON list ({error})") from None
        else:
            names = [line.strip() for line in text.splitlines() if line.strip()]
        if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
            raise KdlabError(f"{where}.classes: {path} holds no list of class names")
        return names


def parse_teacher(value: Any) -> str | LibraryTeacherSpec:
    """A run directory (absolute path) or a :class:`LibraryTeacherSpec`."""
    if isinstance(value, LibraryTeacherSpec):
        return value
    if isinstance(value, str):
        return _absolute(value)
    if isinstance(value, dict):
        return LibraryTeacherSpec.model_validate(value)
    raise ValueError("a teacher is a run directory or a mapping {model, weights, classes, ...}")


def class_index(teacher_classes: list[str], student_classes: list[str], extra: str, where: str) -> list[int] | None:
    """For each student class, the teacher output that gives it (None when the two lists are the same)."""
    if list(teacher_classes) == list(student_classes):
        return None
    repeated = sorted({c for c in teacher_classes if teacher_classes.count(c) > 1})
    if repeated:
        raise KdlabError(f"{where}: the teacher's class names repeat: {', '.join(repeated[:5])}")
    missing = [c for c in student_classes if c not in teacher_classes]
    if missing:
        raise KdlabError(f"{where}: the teacher has no class {', '.join(repr(c) for c in missing[:5])}"
                         + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
                         + f" of the student's {len(student_classes)} (its classes: "
                         f"{', '.join(teacher_classes[:5])}{', ...' if len(teacher_classes) > 5 else ''})")
    extra_names = [c for c in teacher_classes if c not in student_classes]
    if extra_names and extra != "drop":
        raise KdlabError(f"{where}: the teacher has {len(extra_names)} class(es) the student does not "
                         f"({', '.join(extra_names[:5])}{', ...' if len(extra_names) > 5 else ''}); set "
                         f"extra_classes: drop to distil from the student's classes' logits only")
    return [teacher_classes.index(c) for c in student_classes]
