"""Analysis of finished runs: the run readers, reports, archives, the claims report, projections and plots.

* :mod:`kdlab.analysis.runs`: reading run directories (the one reader every other module uses);
  :mod:`kdlab.analysis.reevaluate`: ``kdlab eval``.
* :mod:`kdlab.analysis.report`: ``kdlab report``; :mod:`kdlab.analysis.archive`: ``kdlab archive``;
  :mod:`kdlab.analysis.claims` and :mod:`kdlab.analysis.verdicts`: the papers' claims and the verdict rule;
  :mod:`kdlab.analysis.stats`: intervals and paired tests over seeds.
* :mod:`kdlab.analysis.projection` is pure numpy (Mueller et al. 2019 Sec. 2, docs/methods/label_smoothing.md §3.2);
  :mod:`kdlab.analysis.plots` draws PNGs with matplotlib's Agg canvas without touching ``pyplot``.

The figure and projection helpers below are importable from here; matplotlib is imported only when one is used.
"""

_FROM = {name: "kdlab.analysis.plots" for name in (
    "build_projection_figure", "build_reliability_figure", "build_training_figure", "projection_grid",
    "reliability_bins", "reliability_diagram", "reliability_grid", "training_curves")}
_FROM.update({name: "kdlab.analysis.projection" for name in (
    "Projection", "TemplatePlane", "project_templates_plane", "select_per_class", "spread_ratio",
    "spread_ratio_centroids", "templates")})


def __getattr__(name: str):
    if name not in _FROM:
        raise AttributeError(f"module 'kdlab.analysis' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_FROM[name]), name)


__all__ = [
    "Projection",
    "TemplatePlane",
    "build_projection_figure",
    "build_reliability_figure",
    "build_training_figure",
    "project_templates_plane",
    "projection_grid",
    "reliability_bins",
    "reliability_diagram",
    "reliability_grid",
    "select_per_class",
    "spread_ratio",
    "spread_ratio_centroids",
    "templates",
    "training_curves",
]
