"""Report figures: valid PNGs written atomically, shared projection scales, ECE in reliability titles, curves with
missing keys and several seeds."""

from __future__ import annotations

import os

import matplotlib.image
import numpy as np
import pytest
import torch

from kdlab.analysis.plots import (
    build_projection_figure,
    build_reliability_figure,
    build_training_figure,
    ece_of_bins,
    projection_grid,
    reliability_bins,
    reliability_diagram,
    reliability_grid,
    training_curves,
)
from kdlab.analysis.projection import project_templates_plane, spread_ratio
from kdlab.metrics import ece

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_valid_png(path):
    with open(path, "rb") as handle:
        assert handle.read(8) == PNG_SIGNATURE
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    assert image.std() > 0.01  # not a blank canvas
    leftovers = [name for name in os.listdir(os.path.dirname(path)) if name.endswith(".tmp")]
    assert leftovers == []


def overconfident_logits(n=600, k=10, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, size=n)
    logits = rng.normal(size=(n, k)) * 2
    hit = rng.random(n) < 0.6
    logits[np.arange(n), np.where(hit, labels, (labels + 1) % k)] += 6.0
    return logits.astype(np.float32), labels


def test_reliability_bins_reproduce_kdlab_ece():
    logits, labels = overconfident_logits()
    stats = reliability_bins(logits, labels, n_bins=15)
    full = stats["count"] > 0
    gap = np.abs(stats["accuracy"][full] - stats["confidence"][full])
    assert np.sum(stats["count"][full] / len(labels) * gap) == pytest.approx(ece(logits, labels, 15), abs=1e-6)
    assert stats["count"].sum() == len(labels)


def test_reliability_bins_are_right_closed():
    # two classes, confidences exactly 0.6 and 0.8 sit on edges of 5 bins: (0.4, 0.6] is bin 2, (0.6, 0.8] bin 3
    logits = np.log(np.array([[0.6, 0.4], [0.8, 0.2]]))
    stats = reliability_bins(logits, np.array([0, 1]), n_bins=5)
    np.testing.assert_array_equal(stats["count"], [0, 0, 1, 1, 0])


def test_reliability_diagram_writes_png_with_ece_in_title(tmp_path):
    logits, labels = overconfident_logits()
    value = ece(logits, labels, n_bins=15)
    fig = build_reliability_figure([("ResNet-8 CE", logits, labels)])
    titles = [ax.get_title() for ax in fig.axes]
    assert f"ResNet-8 CE  ECE {value:.3f}" in titles
    out = reliability_diagram(torch.tensor(logits), torch.tensor(labels), "ResNet-8 CE", tmp_path / "rel.png")
    assert out == tmp_path / "rel.png"
    assert_valid_png(out)


def test_reliability_grid_rows_of_at_most_four(tmp_path):
    entries = [(f"method {i}", *overconfident_logits(seed=i)) for i in range(5)]
    fig = build_reliability_figure(entries)
    main_axes = [ax for ax in fig.axes if "ECE" in ax.get_title()]
    assert len(main_axes) == 5
    columns = {round(ax.get_position().x0, 3) for ax in main_axes}
    assert len(columns) == 4
    for (title, logits, labels), ax in zip(entries, main_axes):
        assert ax.get_title() == f"{title}  ECE {ece(logits, labels):.3f}"
    assert_valid_png(reliability_grid(entries, tmp_path / "sub" / "grid.png"))


def projection_panels():
    rng = np.random.default_rng(0)
    weight, bias = rng.normal(size=(5, 8)), rng.normal(size=5)
    classes = (3, 0, 1)
    panels = []
    for title, noise in [("CE", 1.5), ("LS 0.1", 0.2)]:
        splits = {}
        for split, seed in [("train", 1), ("test", 2)]:
            r = np.random.default_rng(seed)
            x = np.concatenate([weight[c] + noise * r.normal(size=(30, 8)) for c in classes])
            y = np.repeat(classes, 30)
            proj = project_templates_plane(x, weight * (3 if title == "CE" else 1), bias, classes)
            splits[split] = (proj.points, y, proj.template_points)
        ratios = {s: spread_ratio(p, y, t, classes) for s, (p, y, t) in splits.items()}
        panels.append({"title": title, **splits, "spread_ratio": ratios})
    return panels, {3: "cat", 0: "airplane", 1: "automobile"}


def test_projection_figure_shares_limits_and_labels(tmp_path):
    panels, names = projection_panels()
    fig = build_projection_figure(panels, names, title="ResNet-8, CIFAR-10")
    axes = fig.axes
    assert len(axes) == 4
    xlims = {tuple(np.round(ax.get_xlim(), 9)) for ax in axes}
    ylims = {tuple(np.round(ax.get_ylim(), 9)) for ax in axes}
    assert len(xlims) == 1 and len(ylims) == 1
    (x0, x1), (y0, y1) = xlims.pop(), ylims.pop()
    for panel in panels:
        for split in ("train", "test"):
            points, _, template_points = panel[split]
            everything = np.concatenate([points, template_points])
            assert x0 <= everything[:, 0].min() and everything[:, 0].max() <= x1
            assert y0 <= everything[:, 1].min() and everything[:, 1].max() <= y1
    assert any(f"spread ratio {panels[1]['spread_ratio']['test']:.3f}" in ax.get_title() for ax in axes)
    legend_texts = [t.get_text() for legend in fig.legends for t in legend.get_texts()]
    assert {"cat", "airplane", "automobile"} <= set(legend_texts)
    out = projection_grid(panels, tmp_path / "proj.png", names, title="ResNet-8, CIFAR-10")
    assert_valid_png(out)


def test_projection_figure_without_test_row(tmp_path):
    panels, names = projection_panels()
    for panel in panels:
        del panel["test"]
        del panel["spread_ratio"]
    fig = build_projection_figure(panels, names)
    assert len(fig.axes) == 2
    with pytest.raises(ValueError, match="class_names"):
        build_projection_figure(panels, {0: "a"})


def history(n_epochs, offset=0.0, with_test=True):
    records = []
    for e in range(1, n_epochs + 1):
        record = {
            "epoch": e,
            "train_loss": 2.0 / e + offset,
            "train_ce": 1.5 / e + offset,
            "train_acc": 1 - 1 / (e + 1),
            "val_acc": 0.5 + 0.04 * e + offset,
            "lr": 0.1 * 0.2**e,  # spans > 20x: drawn on a log axis
        }
        if with_test and e % 2 == 0:
            record.update(test_acc=0.5 + 0.04 * e, test_nll=1.0 / e, test_ece=0.1 / e)
        records.append(record)
    return records


def test_training_curves_default_keys_and_missing_values(tmp_path):
    histories = {"CE": history(6), "LS": history(6, with_test=False)}
    histories["LS"][2].pop("val_acc")
    fig = build_training_figure(histories)
    titles = [ax.get_title() for ax in fig.axes if ax.get_visible()]
    assert titles == ["train_loss", "train_acc", "train_ce", "val_acc", "test_acc", "test_nll", "test_ece"]
    val_ax = fig.axes[titles.index("val_acc")]
    assert sorted(len(line.get_xdata()) for line in val_ax.get_lines()) == [5, 6]
    test_ax = fig.axes[titles.index("test_acc")]
    assert [list(line.get_xdata()) for line in test_ax.get_lines()] == [[2.0, 4.0, 6.0]]
    assert_valid_png(training_curves(histories, tmp_path / "curves.png"))


def test_training_curves_multi_seed_mean_and_band(tmp_path):
    seeds = [history(4, offset=o) for o in (0.0, 0.1, 0.2)]
    seeds[2] = seeds[2][:3]  # a shorter run: epoch 4 averages two seeds
    fig = build_training_figure({"KD": seeds, "CE": history(4)}, keys=["val_acc", "lr", "not_logged"])
    titles = [ax.get_title() for ax in fig.axes if ax.get_visible()]
    assert titles == ["val_acc", "lr"]
    ax = fig.axes[0]
    kd_line = ax.get_lines()[0]
    expected = [
        np.mean([0.54 + o for o in (0.0, 0.1, 0.2)]),
        np.mean([0.58 + o for o in (0.0, 0.1, 0.2)]),
        np.mean([0.62 + o for o in (0.0, 0.1, 0.2)]),
        np.mean([0.66, 0.76]),
    ]
    np.testing.assert_allclose(kd_line.get_ydata(), expected)
    assert len(ax.collections) == 1  # one min-max band, for the multi-seed label only
    band = ax.collections[0].get_paths()[0].vertices
    assert band[:, 1].max() == pytest.approx(0.62 + 0.2) and band[:, 1].min() == pytest.approx(0.54)
    assert fig.axes[1].get_yscale() == "log"
    assert any("3 runs" in t.get_text() for legend in fig.legends for t in legend.get_texts())
    assert_valid_png(training_curves({"KD": seeds}, tmp_path / "seeds.png"))
    with pytest.raises(ValueError, match="none of the keys"):
        build_training_figure({"KD": seeds}, keys=["missing"])


def test_a_diagram_drawn_from_stored_bins_has_the_ece_of_the_logits(tmp_path):
    generator = torch.Generator().manual_seed(3)
    logits, labels = 3 * torch.randn(500, 7, generator=generator), torch.randint(0, 7, (500,), generator=generator)
    bins = reliability_bins(logits, labels)
    assert ece_of_bins(bins) == pytest.approx(float(ece(logits, labels)), abs=1e-6)
    path = reliability_grid([("stored", bins), ("from logits", logits, labels)], tmp_path / "r.png")
    assert matplotlib.image.imread(path).shape[1] > 0
