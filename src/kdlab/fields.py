"""Pydantic field types shared by the recipe sections (:mod:`kdlab.config`) and the teacher specs
(:mod:`kdlab.teacher.spec`), so both check a value the same way without importing each other."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator


def _positive_std(value):
    if value is not None and any(s <= 0 for s in value):
        raise ValueError("every std must be > 0")
    return value


PositiveStd = Annotated[list[float] | None, AfterValidator(_positive_std)]  # input statistics: every std > 0
