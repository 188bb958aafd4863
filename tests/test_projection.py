"""Template-plane projections (Müller et al. 2019 Sec. 2; Chandrasegaran et al. 2022): values by hand, invariants,
an independent PCA, and input errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kdlab.analysis.projection import (
    TemplatePlane,
    project_templates_plane,
    select_per_class,
    spread_ratio,
    spread_ratio_centroids,
    templates,
)


def random_classifier(k: int = 6, h: int = 8, seed: int = 0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(k, h)), rng.normal(size=k)


def clustered_features(weight, bias, classes, per_class, noise, seed=0):
    """Features near each class's weight row: x = W_c + noise."""
    rng = np.random.default_rng(seed)
    x = np.concatenate([weight[c] + noise * rng.normal(size=(per_class, weight.shape[1])) for c in classes])
    y = np.repeat(np.asarray(classes), per_class)
    return x, y


def test_templates_fold_the_bias_into_the_weight_rows():
    w = np.array([[1.0, 2.0], [3.0, 4.0]])
    np.testing.assert_array_equal(templates(w, np.array([5.0, 6.0])), [[1, 2, 5], [3, 4, 6]])
    np.testing.assert_array_equal(templates(w, None), [[1, 2, 0], [3, 4, 0]])
    # logits are x̃ · w̃_k
    x = np.array([[0.5, -1.0]])
    b = np.array([5.0, 6.0])
    np.testing.assert_allclose(np.concatenate([x, [[1.0]]], 1) @ templates(w, b).T, x @ w.T + b)


def test_variant_a_by_hand():
    # templates w̃_a = (1, 1, 0), w̃_b = (4, 1, 0), w̃_c = (1, 5, 0): d1 = (3, 0, 0), d2 = (0, 4, 0), so e1 = x, e2 = y
    weight = np.array([[9.0, 9.0], [1.0, 1.0], [4.0, 1.0], [1.0, 5.0]])
    bias = np.zeros(4)
    features = np.array([[1.0, 1.0], [2.0, 3.0], [0.0, -1.0]])
    proj = project_templates_plane(features, weight, bias, classes=(1, 2, 3))
    np.testing.assert_allclose(proj.template_points, [[0, 0], [3, 0], [0, 4]], atol=1e-12)
    np.testing.assert_allclose(proj.points, [[0, 0], [1, 2], [-1, -2]], atol=1e-12)
    assert proj.classes == (1, 2, 3) and proj.variant == "A"


def test_variant_a_template_coordinates():
    weight, bias = random_classifier()
    classes = (4, 1, 2)
    plane = TemplatePlane().fit(weight, bias, classes)
    t = plane.template_points
    rows = templates(weight, bias)[list(classes)]
    np.testing.assert_allclose(t[0], [0, 0], atol=1e-12)
    np.testing.assert_allclose(t[1], [np.linalg.norm(rows[1] - rows[0]), 0], atol=1e-12)
    assert t[2, 1] > 0
    # the projected triangle keeps the side lengths of the template triangle
    for i, j in [(0, 1), (0, 2), (1, 2)]:
        np.testing.assert_allclose(np.linalg.norm(t[i] - t[j]), np.linalg.norm(rows[i] - rows[j]))


def test_variant_a_in_plane_points_keep_their_distances():
    # biases all 1: every affine combination of weight rows x = sum_k a_k W_k (sum a_k = 1) has x̃ = sum_k a_k w̃_k,
    # a point of the template plane
    rng = np.random.default_rng(1)
    weight = rng.normal(size=(5, 7))
    bias = np.ones(5)
    classes = (0, 3, 4)
    coeffs = rng.normal(size=(20, 3))
    coeffs[:, 0] = 1 - coeffs[:, 1:].sum(axis=1)
    features = coeffs @ weight[list(classes)]
    proj = project_templates_plane(features, weight, bias, classes)
    full = np.concatenate([features, np.ones((20, 1))], 1)
    d_full = np.linalg.norm(full[:, None] - full[None], axis=2)
    d_plane = np.linalg.norm(proj.points[:, None] - proj.points[None], axis=2)
    np.testing.assert_allclose(d_plane, d_full, atol=1e-10)
    # and a template's own weight row lands on the template's point
    np.testing.assert_allclose(
        TemplatePlane().fit(weight, bias, classes).transform(weight[[3]]), proj.template_points[[1]], atol=1e-12
    )


def test_variant_a_is_invariant_to_rotating_the_feature_space():
    weight, bias = random_classifier(k=5, h=6, seed=2)
    classes = (0, 2, 4)
    features, _ = clustered_features(weight, bias, classes, per_class=10, noise=0.5, seed=3)
    q, _ = np.linalg.qr(np.random.default_rng(4).normal(size=(6, 6)))
    before = project_templates_plane(features, weight, bias, classes)
    after = project_templates_plane(features @ q.T, weight @ q.T, bias, classes)
    # with the diag(R) >= 0 convention the coordinates agree exactly, not only up to sign
    np.testing.assert_allclose(after.points, before.points, atol=1e-10)
    np.testing.assert_allclose(after.template_points, before.template_points, atol=1e-10)


def test_variant_a_ignores_the_fitting_set_and_accepts_torch_tensors():
    weight, bias = random_classifier()
    features, _ = clustered_features(weight, bias, (0, 1, 2), per_class=5, noise=1.0)
    reference = project_templates_plane(features, weight, bias, (0, 1, 2))
    other = project_templates_plane(features, weight, bias, (0, 1, 2), fit_on=features[:3] * 10)
    np.testing.assert_array_equal(other.points, reference.points)
    tensors = project_templates_plane(
        torch.tensor(features, dtype=torch.float64), torch.tensor(weight), torch.tensor(bias), torch.tensor([0, 1, 2])
    )
    np.testing.assert_allclose(tensors.points, reference.points)


def independent_variant_b(weight, bias, classes, fit_features, anchors="templates", fit_labels=None):
    """Variant B written out step by step: returns a function mapping features to 2-D PCA coordinates."""
    w3 = np.concatenate([weight[list(classes)], bias[list(classes)][:, None]], axis=1)  # real class ids
    basis = np.linalg.qr(w3.T)[0]
    proj3 = np.concatenate([fit_features, np.ones((len(fit_features), 1))], 1) @ basis
    if anchors == "templates":
        extra = w3 @ basis
    else:
        extra = np.stack([proj3[fit_labels == c].mean(0) for c in classes])
    stacked = np.concatenate([proj3, extra])
    mean = stacked.mean(0)
    vt = np.linalg.svd(stacked - mean)[2][:2]
    transform = lambda x: (np.concatenate([x, np.ones((len(x), 1))], 1) @ basis - mean) @ vt.T
    return transform, (w3 @ basis - mean) @ vt.T


def assert_equal_up_to_column_sign(a, b):
    for j in range(a.shape[1]):
        sign = np.sign(a[:, j] @ b[:, j])
        np.testing.assert_allclose(a[:, j], sign * b[:, j], atol=1e-9)


def test_variant_b_matches_an_independent_pca_and_reuses_it_for_test():
    weight, bias = random_classifier(k=10, h=12, seed=5)
    classes = (7, 2, 9)
    train, _ = clustered_features(weight, bias, classes, per_class=30, noise=0.7, seed=6)
    test, _ = clustered_features(weight, bias, classes, per_class=20, noise=1.5, seed=7)
    plane = TemplatePlane().fit(weight, bias, classes, variant="B", features=train)
    reference, templates3 = independent_variant_b(weight, bias, classes, train)
    assert_equal_up_to_column_sign(plane.transform(train), reference(train))
    # the training-set PCA is reused for the test set, not refitted
    assert_equal_up_to_column_sign(plane.transform(test), reference(test))
    refitted, _ = independent_variant_b(weight, bias, classes, test)
    assert not np.allclose(np.abs(plane.transform(test)), np.abs(refitted(test)), atol=1e-3)
    # templates from the real class ids (the upstream code took biases at positions 0, 1, 2)
    points = plane.template_points
    assert_equal_up_to_column_sign(
        np.concatenate([plane.transform(train), points]), np.concatenate([reference(train), templates3])
    )
    # project_templates_plane with fit_on gives the same coordinates
    proj = project_templates_plane(test, weight, bias, classes, variant="B", fit_on=train)
    np.testing.assert_allclose(proj.points, plane.transform(test))
    np.testing.assert_allclose(proj.template_points, points)


def test_variant_b_template_points_use_the_real_bias():
    weight, bias = random_classifier(k=10, h=12, seed=8)
    bias = np.arange(10.0) * 3  # biases at ids 7, 8, 9 differ from those at 0, 1, 2
    classes = (7, 8, 9)
    train, _ = clustered_features(weight, bias, classes, per_class=30, noise=0.7, seed=9)
    plane = TemplatePlane().fit(weight, bias, classes, variant="B", features=train)
    np.testing.assert_allclose(plane.template_rows[:, -1], [21.0, 24.0, 27.0])
    reference, templates3 = independent_variant_b(weight, bias, classes, train)
    assert_equal_up_to_column_sign(
        np.concatenate([plane.transform(train), plane.template_points]), np.concatenate([reference(train), templates3])
    )
    # with the biases of positions 0, 1, 2 (the upstream bug) the templates would land elsewhere
    buggy_bias = bias.copy()
    buggy_bias[list(classes)] = bias[[0, 1, 2]]
    _, buggy_templates = independent_variant_b(weight, buggy_bias, classes, train)
    assert not np.allclose(np.abs(plane.template_points), np.abs(buggy_templates), atol=1e-3)


def test_variant_b_matches_sklearn_pca():
    decomposition = pytest.importorskip("sklearn.decomposition")
    weight, bias = random_classifier(k=6, h=10, seed=10)
    classes = (0, 3, 5)
    train, _ = clustered_features(weight, bias, classes, per_class=40, noise=0.5, seed=11)
    plane = TemplatePlane().fit(weight, bias, classes, variant="B", features=train)
    w3 = templates(weight, bias)[list(classes)]
    proj3 = np.concatenate([train, np.ones((len(train), 1))], 1) @ plane.basis
    pca = decomposition.PCA(n_components=2).fit(np.concatenate([proj3, w3 @ plane.basis]))
    assert_equal_up_to_column_sign(plane.transform(train), pca.transform(proj3))


def test_variant_b_centroid_anchors_match_the_upstream_recipe():
    weight, bias = random_classifier(k=6, h=10, seed=12)
    classes = (5, 1, 3)
    train, labels = clustered_features(weight, bias, classes, per_class=25, noise=0.8, seed=13)
    plane = TemplatePlane().fit(weight, bias, classes, "B", features=train, labels=labels, pca_anchors="centroids")
    reference, _ = independent_variant_b(weight, bias, classes, train, anchors="centroids", fit_labels=labels)
    assert_equal_up_to_column_sign(plane.transform(train), reference(train))
    with pytest.raises(ValueError, match="labels"):
        TemplatePlane().fit(weight, bias, classes, "B", features=train, pca_anchors="centroids")


def test_variant_b_orthonormal_basis_has_a_deterministic_sign():
    weight, bias = random_classifier(seed=14)
    plane = TemplatePlane().fit(weight, bias, (0, 1, 2), "B")
    np.testing.assert_allclose(plane.basis.T @ plane.basis, np.eye(3), atol=1e-12)
    r = plane.basis.T @ plane.template_rows.T
    assert np.all(np.diag(r) >= 0)


def test_spread_ratio_by_hand():
    # class 0: points (±1, 0) around (0, 0) -> RMS 1; class 1: (10 ± 2, 0) -> 2; class 2: (5, 8 ± 3) -> 3
    points = np.array([[-1, 0], [1, 0], [8, 0], [12, 0], [5, 5], [5, 11]], dtype=float)
    labels = np.array([0, 0, 1, 1, 2, 2])
    tri = np.array([[0, 0], [10, 0], [5, 10 * np.sqrt(3) / 2]])  # equilateral, side 10
    assert spread_ratio(points, labels, tri, (0, 1, 2)) == pytest.approx(2 / 10)
    # centroids (0, 0), (10, 0), (5, 8): distances 10, sqrt(89), sqrt(89)
    assert spread_ratio_centroids(points, labels, (0, 1, 2)) == pytest.approx(2 / ((10 + 2 * np.sqrt(89)) / 3))
    # samples of other classes are ignored
    more = np.concatenate([points, [[100.0, 100.0]]])
    assert spread_ratio(more, np.append(labels, 7), tri, (0, 1, 2)) == pytest.approx(2 / 10)


def test_spread_ratio_is_lower_for_tight_clusters():
    weight, bias = random_classifier(k=5, h=16, seed=15)
    classes = (0, 1, 2)
    ratios = {}
    for name, noise in [("tight", 0.05), ("broad", 1.0)]:
        x, y = clustered_features(weight, bias, classes, per_class=50, noise=noise, seed=16)
        for variant in ("A", "B"):
            proj = project_templates_plane(x, weight, bias, classes, variant=variant)
            ratios[name, variant] = (
                spread_ratio(proj.points, y, proj.template_points, classes),
                spread_ratio_centroids(proj.points, y, classes),
            )
    for variant in ("A", "B"):
        for which in (0, 1):
            assert ratios["tight", variant][which] < 0.2 * ratios["broad", variant][which]


def test_spread_ratio_is_scale_and_rotation_invariant():
    rng = np.random.default_rng(17)
    points = rng.normal(size=(30, 2))
    labels = np.repeat([3, 4, 5], 10)
    tri = rng.normal(size=(3, 2))
    angle = 0.7
    rot = 3.0 * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    assert spread_ratio(points @ rot.T, labels, tri @ rot.T, (3, 4, 5)) == pytest.approx(
        spread_ratio(points, labels, tri, (3, 4, 5))
    )
    assert spread_ratio_centroids(points @ rot.T + 5, labels, (3, 4, 5)) == pytest.approx(
        spread_ratio_centroids(points, labels, (3, 4, 5))
    )


def test_select_per_class():
    labels = np.array([0] * 150 + [1] * 40 + [2] * 120 + [3] * 200)
    rng = np.random.default_rng(0)
    labels = labels[rng.permutation(len(labels))]
    idx = select_per_class(labels, (0, 1, 2), per_class=100, seed=0)
    assert np.all(np.diff(idx) > 0)
    counts = {c: int(np.sum(labels[idx] == c)) for c in (0, 1, 2, 3)}
    assert counts == {0: 100, 1: 40, 2: 100, 3: 0}
    np.testing.assert_array_equal(idx, select_per_class(labels, (0, 1, 2), per_class=100, seed=0))
    assert not np.array_equal(idx, select_per_class(labels, (0, 1, 2), per_class=100, seed=1))
    np.testing.assert_array_equal(idx, select_per_class(torch.tensor(labels), [0, 1, 2], per_class=100, seed=0))


@pytest.mark.parametrize(
    ("classes", "message"),
    [
        ((0, 1), "exactly 3 classes"),
        ((0, 1, 2, 3), "exactly 3 classes"),
        ((0, 1, 1), "distinct"),
        ((0, 1, 6), "out of range"),
        ((-1, 1, 2), "out of range"),
        ((0.5, 1, 2), "integers"),
    ],
)
def test_bad_classes_are_rejected(classes, message):
    weight, bias = random_classifier(k=6)
    features = np.zeros((4, weight.shape[1]))
    with pytest.raises(ValueError, match=message):
        project_templates_plane(features, weight, bias, classes)


def test_shape_mismatches_are_rejected():
    weight, bias = random_classifier(k=6, h=8)
    good = np.zeros((4, 8))
    with pytest.raises(ValueError, match="dimensions"):
        project_templates_plane(np.zeros((4, 7)), weight, bias, (0, 1, 2))
    with pytest.raises(ValueError, match="dimensions"):
        project_templates_plane(good, weight, bias, (0, 1, 2), variant="B", fit_on=np.zeros((4, 5)))
    with pytest.raises(ValueError, match="bias"):
        project_templates_plane(good, weight, bias[:5], (0, 1, 2))
    with pytest.raises(ValueError, match="weight"):
        project_templates_plane(good, weight[0], bias, (0, 1, 2))
    with pytest.raises(ValueError, match="features"):
        project_templates_plane(good[0], weight, bias, (0, 1, 2))
    with pytest.raises(ValueError, match="variant"):
        project_templates_plane(good, weight, bias, (0, 1, 2), variant="C")
    with pytest.raises(ValueError, match="points2d"):
        spread_ratio(np.zeros((4, 3)), np.zeros(4), np.zeros((3, 2)), (0, 1, 2))
    with pytest.raises(ValueError, match="labels"):
        spread_ratio(np.zeros((4, 2)), np.zeros(5), np.zeros((3, 2)), (0, 1, 2))
    with pytest.raises(ValueError, match="template_points"):
        spread_ratio(np.zeros((4, 2)), np.zeros(4), np.zeros((2, 2)), (0, 1, 2))
    with pytest.raises(ValueError, match="no samples of class 2"):
        spread_ratio(np.zeros((4, 2)), np.array([0, 0, 1, 1]), np.zeros((3, 2)), (0, 1, 2))


def test_collinear_templates_and_unfitted_plane_are_errors():
    weight = np.array([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]])
    with pytest.raises(ValueError, match="collinear"):
        TemplatePlane().fit(weight, None, (0, 1, 2))
    with pytest.raises(RuntimeError, match="not fitted"):
        TemplatePlane().transform(np.zeros((1, 2)))
