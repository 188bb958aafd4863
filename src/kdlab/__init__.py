"""kdlab: train better classifiers with soft targets (label smoothing, teacher-free KD, KD, online distillation).

From Python (:mod:`kdlab.api`, documented in docs/python_api.md)::

    import kdlab
    summary = kdlab.train("recipes/fashion_mnist.yaml", out="runs/fm", overrides=["train.epochs=2"])
    run = kdlab.load_run("runs/fm")                 # run.model, run.recipe, run.summary
    kdlab.losses.lsr_os_tc(logits, labels, ...)     # the losses, in your own loop

Names are imported on first use, so ``import kdlab`` stays light.
"""

from kdlab.version import __version__

__all__ = ["__version__", "as_recipe", "batches", "evaluate", "load_recipe", "load_run", "losses", "train"]

_API = {"as_recipe", "batches", "evaluate", "load_run"}


def __getattr__(name: str):
    import importlib

    if name in _API:
        return getattr(importlib.import_module("kdlab.api"), name)
    if name == "load_recipe":
        return importlib.import_module("kdlab.config").load_recipe
    if name in ("losses", "train"):  # kdlab.train is the engine's package, and calling it trains (kdlab/train/__init__.py)
        return importlib.import_module(f"kdlab.{name}")
    raise AttributeError(f"module 'kdlab' has no attribute {name!r}")
