"""Analysis of finished runs: penultimate-layer template-plane projections and report figures.

``kdlab.analysis.projection`` is pure numpy (Müller et al. 2019 Sec. 2, METHODS.md section 3.2);
``kdlab.analysis.plots`` draws PNGs with matplotlib's Agg canvas without touching ``pyplot``.
"""

from kdlab.analysis.plots import (
    build_projection_figure,
    build_reliability_figure,
    build_training_figure,
    projection_grid,
    reliability_bins,
    reliability_diagram,
    reliability_grid,
    training_curves,
)
from kdlab.analysis.projection import (
    Projection,
    TemplatePlane,
    project_templates_plane,
    select_per_class,
    spread_ratio,
    spread_ratio_centroids,
    templates,
)

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
