"""kdlab: train better classifiers with soft targets (label smoothing, teacher-free KD, KD, online distillation)."""

from kdlab.version import __version__

__all__ = ["__version__"]
