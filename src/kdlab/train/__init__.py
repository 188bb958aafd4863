"""The training engine's package, and ``kdlab.train(...)``: calling this module trains a recipe.

``kdlab.train`` has to be both this package (``kdlab.train.engine``, ``kdlab.train.step``, ...) and the function of
the Python API, because Python binds a package's name to its sub-package as soon as that is imported. So the module
is callable: ``kdlab.train(recipe, out=...)`` is :func:`kdlab.api.train`.
"""

import sys
import types


class _CallableModule(types.ModuleType):
    def __call__(self, recipe, out=None, **options):
        from kdlab.api import train

        return train(recipe, out, **options)


sys.modules[__name__].__class__ = _CallableModule
