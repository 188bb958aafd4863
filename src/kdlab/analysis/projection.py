"""Penultimate-layer projections onto the plane of three class templates (Müller, Kornblith, Hinton 2019, Sec. 2).

The logits are z_k = x̃ · w̃_k with x̃ = [x, 1] the penultimate activation augmented by a constant 1 and
w̃_k = [W_k, b_k] the *template* of class k (the last-layer weight row with its bias folded in). The paper's
procedure (docs/methods/label_smoothing.md §3.2): "(1) Pick three classes, (2) Find an orthonormal basis of the plane
crossing the
templates of these three classes, (3) Project the penultimate layer activations of examples from these three
classes onto this plane." With label smoothing the projected clusters are tight and sit on a regular triangle.

Two variants:

* ``"A"`` (default, faithful to the paper text): the *affine* plane through the three templates w̃_a, w̃_b, w̃_c.
  d1 = w̃_b − w̃_a, d2 = w̃_c − w̃_a; (e1, e2) = Gram–Schmidt(d1, d2) = Q of QR([d1 d2]), signs fixed so diag(R) ≥ 0;
  coordinates ((x̃ − w̃_a)·e1, (x̃ − w̃_a)·e2). The templates land on (0, 0), (|d1|, 0) and a point with a positive
  second coordinate. Nothing is fitted to data, so the same plane serves every split.
* ``"B"`` (Chandrasegaran et al. 2022, LS-KD-compatibility ``src/visualization/alpha-LS-KD_imagenet_centroids.py``):
  basis = Q of QR(W3ᵀ), W3 the three templates (3, h+1), so proj3 = x̃ · basis is 3-D; a PCA fitted on the fitting
  set's proj3 plus three anchor points (by default the projected templates; ``pca_anchors="centroids"`` uses the
  projected class centroids, as the upstream script does) reduces it to 2-D, and that PCA is reused for other
  splits. Upstream takes the biases at positions [0, 1, 2] instead of the real class ids; here the real ids are used.

Typical use: fit a :class:`TemplatePlane` once (variant B: on training-set features of the three classes, e.g. picked
with :func:`select_per_class`) and ``transform`` both the training and the test features with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

VARIANTS = ("A", "B")
PCA_ANCHORS = ("templates", "centroids")


def _to_numpy(x, *, dtype=None) -> np.ndarray:
    """numpy view of an array-like; torch tensors are detached and moved to the CPU first (bf16 via float64)."""
    if hasattr(x, "detach"):
        x = x.detach().cpu()
        if x.is_floating_point():
            x = x.double()
    return np.asarray(x, dtype=dtype)


def templates(weight, bias=None) -> np.ndarray:
    """Class templates w̃_k = [W_k, b_k] as rows of a (K, h+1) float64 array; ``bias=None`` means zero biases.

    Müller et al. 2019 Sec. 1.1: logits are x̃ᵀ w̃_k with x̃ = [x, 1], i.e. the bias is folded into the template.
    """
    w = _to_numpy(weight, dtype=np.float64)
    if w.ndim != 2:
        raise ValueError(f"weight must be a 2-D (K, h) array, got shape {w.shape}")
    if bias is None:
        b = np.zeros(w.shape[0])
    else:
        b = _to_numpy(bias, dtype=np.float64)
        if b.shape != (w.shape[0],):
            raise ValueError(f"bias must have shape ({w.shape[0]},) to match weight {w.shape}, got {b.shape}")
    return np.concatenate([w, b[:, None]], axis=1)


def augment(features) -> np.ndarray:
    """x̃ = [x, 1]: the (N, h) penultimate activations with a constant-1 column appended, (N, h+1) float64."""
    x = _to_numpy(features, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"features must be a 2-D (N, h) array, got shape {x.shape}")
    return np.concatenate([x, np.ones((x.shape[0], 1))], axis=1)


def _check_classes(classes, num_classes: int | None) -> tuple[int, int, int]:
    """Three distinct integer class ids, each in 0..num_classes-1 (only >= 0 when num_classes is None)."""
    ids = _to_numpy(classes)
    if ids.ndim != 1 or ids.shape[0] != 3:
        raise ValueError(f"expected exactly 3 classes, got {ids.size}: {classes!r}")
    if ids.dtype.kind not in "iu":
        raise ValueError(f"class ids must be integers, got {classes!r}")
    a, b, c = (int(v) for v in ids)
    if len({a, b, c}) != 3:
        raise ValueError(f"the 3 classes must be distinct, got {[a, b, c]}")
    bad = [v for v in (a, b, c) if v < 0 or (num_classes is not None and v >= num_classes)]
    if bad:
        limit = "non-negative" if num_classes is None else f"in 0..{num_classes - 1} ({num_classes} classes)"
        raise ValueError(f"class ids {bad} out of range: they must be {limit}")
    return a, b, c


def _qr_positive(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reduced QR with the sign convention diag(R) ≥ 0, so the basis does not depend on the LAPACK build."""
    q, r = np.linalg.qr(a)
    signs = np.where(np.diag(r) < 0, -1.0, 1.0)
    return q * signs, r * signs[:, None]


def _pca_2d(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean, components (2, d)) of a PCA by SVD of the centred points; each component's largest-magnitude
    loading is made positive (a deterministic sign)."""
    mean = points.mean(axis=0)
    _, _, vt = np.linalg.svd(points - mean, full_matrices=False)
    components = vt[:2]
    pivot = np.argmax(np.abs(components), axis=1)
    signs = np.where(components[np.arange(len(components)), pivot] < 0, -1.0, 1.0)
    return mean, components * signs[:, None]


class TemplatePlane:
    """The 2-D projection defined by three class templates; fit once, then ``transform`` any split.

    >>> plane = TemplatePlane().fit(weight, bias, classes=(0, 1, 2), variant="B", features=train_x)
    >>> train_2d, test_2d = plane.transform(train_x), plane.transform(test_x)
    >>> plane.template_points  # (3, 2), rows in the order of ``classes``

    After ``fit``: ``classes`` (3 ids), ``variant``, ``origin`` (h+1,) and ``basis`` (h+1, 2) for variant A, or
    ``basis`` (h+1, 3), ``pca_mean`` (3,) and ``pca_components`` (2, 3) for variant B.
    """

    def __init__(self) -> None:
        self.variant: str | None = None
        self.classes: tuple[int, int, int] | None = None
        self.feature_dim: int | None = None
        self.template_rows: np.ndarray | None = None
        self.origin: np.ndarray | None = None
        self.basis: np.ndarray | None = None
        self.pca_mean: np.ndarray | None = None
        self.pca_components: np.ndarray | None = None
        self.pca_anchors: str | None = None

    def fit(
        self,
        weight,
        bias,
        classes: Sequence[int],
        variant: str = "A",
        features=None,
        *,
        labels=None,
        pca_anchors: str = "templates",
    ) -> TemplatePlane:
        """Build the plane from the last layer ``weight`` (K, h) and ``bias`` (K,) or None; returns ``self``.

        ``features`` (N, h) is the fitting set of variant B's PCA (ignored by variant A, which fits nothing); with
        ``features=None`` variant B's PCA sees the three anchors only. ``labels`` (N,) is needed only for
        ``pca_anchors="centroids"``, whose anchors are the fitting set's class means of the three classes.
        """
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
        if pca_anchors not in PCA_ANCHORS:
            raise ValueError(f"pca_anchors must be one of {PCA_ANCHORS}, got {pca_anchors!r}")
        rows = templates(weight, bias)
        self.classes = _check_classes(classes, rows.shape[0])
        self.feature_dim = rows.shape[1] - 1
        self.template_rows = rows[list(self.classes)]
        self.variant = variant
        if variant == "A":
            self._fit_affine_plane()
        else:
            self._fit_span_pca(features, labels, pca_anchors)
        return self

    def _fit_affine_plane(self) -> None:
        w_a, w_b, w_c = self.template_rows
        d = np.stack([w_b - w_a, w_c - w_a], axis=1)
        q, r = _qr_positive(d)
        scale = max(np.linalg.norm(d[:, 0]), np.linalg.norm(d[:, 1]), np.finfo(float).tiny)
        if r[0, 0] <= 1e-12 * scale or r[1, 1] <= 1e-10 * scale:
            raise ValueError(f"the templates of classes {self.classes} are collinear: they do not span a plane")
        self.origin, self.basis = w_a, q

    def _fit_span_pca(self, features, labels, pca_anchors: str) -> None:
        if self.feature_dim + 1 < 3:
            raise ValueError(f"variant B needs h + 1 >= 3 template coordinates, got h = {self.feature_dim}")
        self.basis, _ = _qr_positive(self.template_rows.T)
        self.pca_anchors = pca_anchors
        fit_points = np.empty((0, 3))
        if features is not None:
            fit_points = self._span_coordinates(features)
        if pca_anchors == "templates":
            anchors = self.template_rows @ self.basis
        else:
            if features is None or labels is None:
                raise ValueError('pca_anchors="centroids" needs the fitting features and their labels')
            y = _to_numpy(labels).reshape(-1)
            if y.shape[0] != fit_points.shape[0]:
                raise ValueError(f"labels has {y.shape[0]} entries but features has {fit_points.shape[0]} rows")
            missing = [c for c in self.classes if not np.any(y == c)]
            if missing:
                raise ValueError(f"no fitting samples of classes {missing}: cannot compute their centroids")
            anchors = np.stack([fit_points[y == c].mean(axis=0) for c in self.classes])
        self.pca_mean, self.pca_components = _pca_2d(np.concatenate([fit_points, anchors]))

    def _check_fitted(self) -> None:
        if self.variant is None:
            raise RuntimeError("TemplatePlane is not fitted: call fit(weight, bias, classes, ...) first")

    def _span_coordinates(self, features) -> np.ndarray:
        x = augment(features)
        if x.shape[1] != self.feature_dim + 1:
            raise ValueError(f"features have {x.shape[1] - 1} dimensions but the classifier has {self.feature_dim}")
        return x @ self.basis

    def _transform_augmented(self, x_aug: np.ndarray) -> np.ndarray:
        if self.variant == "A":
            return (x_aug - self.origin) @ self.basis
        return (x_aug @ self.basis - self.pca_mean) @ self.pca_components.T

    def transform(self, features) -> np.ndarray:
        """2-D coordinates (N, 2) of the penultimate activations ``features`` (N, h)."""
        self._check_fitted()
        x = augment(features)
        if x.shape[1] != self.feature_dim + 1:
            raise ValueError(f"features have {x.shape[1] - 1} dimensions but the classifier has {self.feature_dim}")
        return self._transform_augmented(x)

    @property
    def template_points(self) -> np.ndarray:
        """The three templates in the same 2-D coordinates, (3, 2), rows in the order of ``classes``."""
        self._check_fitted()
        return self._transform_augmented(self.template_rows)


@dataclass(frozen=True)
class Projection:
    """Result of :func:`project_templates_plane`: ``points`` (N, 2), ``template_points`` (3, 2) in the order of
    ``classes``, and the fitted ``plane`` to transform further splits with."""

    points: np.ndarray
    template_points: np.ndarray
    classes: tuple[int, int, int]
    variant: str
    plane: TemplatePlane


def project_templates_plane(
    features,
    weight,
    bias,
    classes: Sequence[int],
    variant: str = "A",
    fit_on=None,
    *,
    fit_labels=None,
    pca_anchors: str = "templates",
) -> Projection:
    """Project ``features`` (N, h, before the last linear layer) onto the plane of the templates of ``classes``.

    Variant A: coordinates ((x̃ − w̃_a)·e1, (x̃ − w̃_a)·e2) in the affine plane through the 3 templates (Müller et al.
    2019 Sec. 2). Variant B: PCA to 2-D of x̃ · Q(QR(W3ᵀ)) (Chandrasegaran et al. 2022), the PCA fitted on
    ``fit_on`` (e.g. the training features; default ``features`` itself) plus the anchors — see the module docstring.
    ``fit_labels`` are the labels of the fitting set, needed only with ``pca_anchors="centroids"``.
    """
    plane = TemplatePlane().fit(
        weight,
        bias,
        classes,
        variant,
        features=features if fit_on is None else fit_on,
        labels=fit_labels,
        pca_anchors=pca_anchors,
    )
    return Projection(plane.transform(features), plane.template_points, plane.classes, variant, plane)


def _within_class_rms(points: np.ndarray, labels: np.ndarray, classes) -> tuple[float, np.ndarray]:
    """(mean over classes of the RMS distance to the class centroid, centroids (3, 2))."""
    rms, centroids = [], []
    for c in classes:
        members = points[labels == c]
        if len(members) == 0:
            raise ValueError(f"no samples of class {c} among the projected points")
        centroid = members.mean(axis=0)
        rms.append(np.sqrt(np.mean(np.sum((members - centroid) ** 2, axis=1))))
        centroids.append(centroid)
    return float(np.mean(rms)), np.stack(centroids)


def _mean_pairwise_distance(points: np.ndarray) -> float:
    i, j = np.triu_indices(len(points), k=1)
    return float(np.mean(np.linalg.norm(points[i] - points[j], axis=1)))


def _check_points(points2d, labels, classes) -> tuple[np.ndarray, np.ndarray, tuple[int, int, int]]:
    p = _to_numpy(points2d, dtype=np.float64)
    y = _to_numpy(labels).reshape(-1)
    if p.ndim != 2 or p.shape[1] != 2:
        raise ValueError(f"points2d must have shape (N, 2), got {p.shape}")
    if y.shape[0] != p.shape[0]:
        raise ValueError(f"labels has {y.shape[0]} entries but points2d has {p.shape[0]} rows")
    return p, y, _check_classes(classes, None)


def spread_ratio(points2d, labels, template_points, classes: Sequence[int]) -> float:
    """Cluster tightness relative to template separation; lower = tighter (Müller et al. 2019, Fig. 1).

    ratio = mean_{c ∈ classes} sqrt(mean_{i: y_i = c} ||p_i − μ_c||²) / mean_{a<b} ||t_a − t_b||,
    with p_i the 2-D points, μ_c the 2-D centroid of class c and t the 3 projected templates (rows in the order of
    ``classes``). Invariant to rotations and uniform scalings of the plane. Samples of other classes are ignored.
    """
    p, y, ids = _check_points(points2d, labels, classes)
    t = _to_numpy(template_points, dtype=np.float64)
    if t.shape != (3, 2):
        raise ValueError(f"template_points must have shape (3, 2), got {t.shape}")
    spread, _ = _within_class_rms(p, y, ids)
    return spread / _mean_pairwise_distance(t)


def spread_ratio_centroids(points2d, labels, classes: Sequence[int]) -> float:
    """Like :func:`spread_ratio` but relative to the separation of the class centroids instead of the templates:

    ratio = mean_c sqrt(mean_{i: y_i = c} ||p_i − μ_c||²) / mean_{a<b} ||μ_a − μ_b||.

    This one does not depend on where the templates are, only on how the data cluster (a Fisher-like ratio).
    """
    p, y, ids = _check_points(points2d, labels, classes)
    spread, centroids = _within_class_rms(p, y, ids)
    return spread / _mean_pairwise_distance(centroids)


def select_per_class(labels, classes: Sequence[int], per_class: int = 100, seed: int = 0) -> np.ndarray:
    """Sorted indices of a seeded random sample of up to ``per_class`` examples of each of the 3 ``classes``.

    Müller et al. 2019 (appendix A.1/A.2) plot 100 examples per class, 300 in all. A class with fewer examples
    contributes all of them.
    """
    if per_class < 1:
        raise ValueError(f"per_class must be positive, got {per_class}")
    y = _to_numpy(labels).reshape(-1)
    ids = _check_classes(classes, None)
    rng = np.random.default_rng(seed)
    chosen = []
    for c in ids:
        members = np.flatnonzero(y == c)
        chosen.append(rng.choice(members, size=min(per_class, len(members)), replace=False))
    return np.sort(np.concatenate(chosen)).astype(np.int64)
