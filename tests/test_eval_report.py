"""``kdlab eval`` and ``kdlab report`` end to end on small digits runs, checked against plain-NumPy references.

Every run is built once per module (module-scoped fixtures): a few single runs (with and without a val split, a KD
student, a run on a tiny Fashion-MNIST-named IDX folder) and two small studies (one with label noise). The metric
references below are written from the definitions in float64 NumPy with loops; they deliberately do not call
``kdlab.metrics``.
"""

from __future__ import annotations

import json
import math
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy.optimize import minimize_scalar

from kdlab.analysis.archive import archive
from kdlab.cli import main
from kdlab.config import load_recipe
from kdlab.data import load_dataset
from kdlab.errors import KdlabError
from kdlab.analysis.report import build_report
from kdlab.experiments.study import run_study
from kdlab.train.engine import train

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
N_BINS = 15
RUNTIME = {"progress": False, "threads": 1}


# ---------------------------------------------------------------------------------------------------- references


def softmax(z: np.ndarray) -> np.ndarray:
    z = np.asarray(z, dtype=np.float64)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def log_softmax(z: np.ndarray) -> np.ndarray:
    z = np.asarray(z, dtype=np.float64)
    shifted = z - z.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def ref_accuracy(z, y) -> float:
    z = np.asarray(z, dtype=np.float64)
    return float(np.mean([int(np.argmax(row) == label) for row, label in zip(z, y)]))


def ref_nll(z, y) -> float:
    logp = log_softmax(z)
    return float(np.mean([-logp[i, y[i]] for i in range(len(y))]))


def ref_brier(z, y) -> float:
    p = softmax(z)
    total = 0.0
    for i in range(len(y)):
        onehot = np.zeros(p.shape[1])
        onehot[y[i]] = 1.0
        total += float(np.sum((p[i] - onehot) ** 2))
    return total / len(y)


def _binned_error(conf: np.ndarray, correct: np.ndarray, edges: np.ndarray, n: int, first_closed: bool = False) -> float:
    """sum over right-closed bins (lo, hi] of |B|/n * |mean correct - mean conf|, empty bins skipped."""
    total = 0.0
    for j in range(len(edges) - 1):
        lo, hi = edges[j], edges[j + 1]
        inside = (conf > lo) & (conf <= hi)
        if first_closed and j == 0:
            inside |= conf == lo
        if inside.sum() == 0:
            continue
        total += inside.sum() / n * abs(correct[inside].mean() - conf[inside].mean())
    return float(total)


def _top1(z, y) -> tuple[np.ndarray, np.ndarray]:
    p = softmax(z)
    conf = p.max(axis=1)
    correct = (p.argmax(axis=1) == np.asarray(y)).astype(np.float64)
    return conf, correct


def ref_ece(z, y, n_bins: int = N_BINS) -> float:
    conf, correct = _top1(z, y)
    return _binned_error(conf, correct, np.linspace(0.0, 1.0, n_bins + 1), len(conf))


def ref_adaptive_ece(z, y, n_bins: int = N_BINS) -> float:
    """Equal-mass bins as by-liu/MbLS AdaptiveECELoss: interpolated order statistics, (lo, hi] bins."""
    conf, correct = _top1(z, y)
    n = len(conf)
    edges = np.interp(np.linspace(0, n, n_bins + 1), np.arange(n), np.sort(conf))
    return _binned_error(conf, correct, edges, n)


def ref_classwise_ece(z, y, n_bins: int = N_BINS) -> float:
    p = softmax(z)
    y = np.asarray(y)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    per_class = [_binned_error(p[:, k], (y == k).astype(np.float64), edges, len(y), first_closed=True)
                 for k in range(p.shape[1])]
    return float(np.mean(per_class))


def ref_metrics(z, y) -> dict[str, float]:
    return {"acc": ref_accuracy(z, y), "nll": ref_nll(z, y), "brier": ref_brier(z, y), "ece": ref_ece(z, y),
            "adaptive_ece": ref_adaptive_ece(z, y), "classwise_ece": ref_classwise_ece(z, y)}


def ref_fidelity(z, zt) -> dict[str, float]:
    z, zt = np.asarray(z, dtype=np.float64), np.asarray(zt, dtype=np.float64)
    agreement = np.mean([int(np.argmax(a) == np.argmax(b)) for a, b in zip(z, zt)])
    logp, logq = log_softmax(z), log_softmax(zt)
    kl = np.mean([max(0.0, float(np.sum(np.exp(lq) * (lq - lp)))) for lp, lq in zip(logp, logq)])
    return {"agreement": float(agreement), "fidelity_kl": float(kl)}


def ref_temperature(z, y) -> float:
    """argmin over T in [0.01, 100] of the NLL of z / T: scipy's bounded Brent on log T, checked against a grid."""
    def objective(log_t: float) -> float:
        return ref_nll(np.asarray(z, dtype=np.float64) / math.exp(log_t), y)

    lo, hi = math.log(1e-2), math.log(1e2)
    grid = np.linspace(lo, hi, 2001)
    values = [objective(s) for s in grid]
    best = int(np.argmin(values))
    step = grid[1] - grid[0]
    result = minimize_scalar(objective, bounds=(grid[max(best - 1, 0)], grid[min(best + 1, len(grid) - 1)]),
                             method="bounded", options={"xatol": 1e-10})
    assert abs(result.x - grid[best]) <= step + 1e-12
    return math.exp(result.x)


def load_npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with np.load(path) as arrays:
        return arrays["logits"], arrays["labels"]


def assert_metrics_close(record: dict, expected: dict, tol: float = 1e-6) -> None:
    for name, value in expected.items():
        assert record[name] == pytest.approx(value, abs=tol, rel=0), name


def summary_of(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())


# ---------------------------------------------------------------------------------------------------- fixtures


def write_idx(folder: Path, split: str, images: np.ndarray, labels: np.ndarray) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    n, h, w = images.shape
    (folder / f"{split}-images-idx3-ubyte").write_bytes(
        bytes([0, 0, 8, 3]) + struct.pack(">III", n, h, w) + images.astype(np.uint8).tobytes())
    (folder / f"{split}-labels-idx1-ubyte").write_bytes(
        bytes([0, 0, 8, 1]) + struct.pack(">I", n) + labels.astype(np.uint8).tobytes())


def base(cache: Path, **data) -> dict:
    return {"data": {"source": "digits", "val_size": 0.1, "cache_dir": str(cache), **data},
            "model": {"name": "cnn_small8"}, "train": {"epochs": 1}, "runtime": RUNTIME}


def train_run(raw: dict, out: Path) -> Path:
    train(load_recipe(raw=raw), out, quiet=True)
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """ce (val split, 2 epochs), noval (no val split), kd (teacher ce, same seed and split), two IDX folders
    (digits_idx: the digits themselves as IDX files; fashion_tiny: 8x8 images under Fashion-MNIST's class names)
    and a run on fashion_tiny."""
    root = tmp_path_factory.mktemp("runs")
    cache = root / "cache"
    out = {"root": root, "cache": cache}
    out["ce"] = train_run({**base(cache), "train": {"epochs": 2}}, root / "ce")
    out["noval"] = train_run(base(cache, val_size=0), root / "noval")
    out["kd"] = train_run({**base(cache), "method": {"name": "kd", "teacher": str(out["ce"])}}, root / "kd")

    digits = load_dataset("digits", cache_dir=cache)
    out["digits_idx"] = root / "digits_idx"
    write_idx(out["digits_idx"], "train", digits.train.images[..., 0], digits.train.labels)
    write_idx(out["digits_idx"], "t10k", digits.test.images[..., 0], digits.test.labels)

    rng = np.random.default_rng(0)
    out["fashion"] = root / "fashion_tiny"
    for split, per_class in (("train", 12), ("t10k", 5)):
        labels = np.repeat(np.arange(10), per_class)
        images = rng.integers(0, 60, size=(len(labels), 8, 8))
        for i, label in enumerate(labels):  # a class-specific bright pixel block, so the classes are learnable
            images[i, label // 5 * 4: label // 5 * 4 + 4, label % 5: label % 5 + 3] += 190
        write_idx(out["fashion"], split, images, labels)
    out["fashion_run"] = train_run(base(cache, source="idx", path=str(out["fashion"]), val_size=0), root / "fashion_run")
    return out


def write_study(path: Path, spec: dict) -> Path:
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> dict:
    """ce, ls (eps 0.1 / 0.2), kd (shared teacher) over seeds 0 and 1, with its report (plots on)."""
    root = tmp_path_factory.mktemp("study")
    spec = {
        "seeds": 2,
        "baseline": "ce",
        "base": {**base(root / "cache"), "train": {"epochs": 2}},
        "stages": {
            "teacher": {"shared": True, "train": {"epochs": 3}},
            "ce": {"method": {"name": "ce"}},
            "ls": {"method": {"name": "ls"}, "sweep": {"method.eps": [0.1, 0.2]}},
            "kd": {"method": {"name": "kd", "teacher": "@teacher"}},
        },
    }
    out = root / "out"
    record = run_study(write_study(root / "study.yaml", spec), out, quiet=True)
    report = root / "report"
    assert main(["report", str(out), "--out", str(report)]) == 0
    return {"root": root, "out": out, "record": record, "report": report,
            "json": json.loads((report / "report.json").read_text()), "md": (report / "report.md").read_text(),
            "runs": {run["run"]: Path(run["dir"]) for run in record["runs"]}}


@pytest.fixture(scope="module")
def noise_study(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("noise")
    spec = {"seeds": 1, "baseline": "ce",
            "base": base(root / "cache", label_noise={"kind": "symmetric", "rate": 0.4}),
            "stages": {"ce": {"method": {"name": "ce"}}}}
    out = root / "out"
    record = run_study(write_study(root / "study.yaml", spec), out, quiet=True)
    report = root / "report"
    assert main(["report", str(out), "--out", str(report), "--no-plots"]) == 0
    return {"root": root, "out": out, "record": record, "md": (report / "report.md").read_text(),
            "json": json.loads((report / "report.json").read_text())}


def sections(md: str) -> dict[str, str]:
    """Markdown sections by their "## " heading line."""
    parts = md.split("\n## ")
    return {"## " + part.split("\n", 1)[0]: part.split("\n", 1)[1] if "\n" in part else "" for part in parts[1:]}


def rows_of(section: str, group: str, then: str = "") -> list[str]:
    return [line for line in section.splitlines() if line.startswith(f"| digits | cnn_small8 | {group} | {then}")]


def group_of(report: dict, name: str) -> dict:
    matches = [g for g in report["groups"] if g["group"] == name]
    assert len(matches) == 1, [g["group"] for g in report["groups"]]
    return matches[0]


# ---------------------------------------------------------------------------------------------------- 1. metrics


def test_reference_functions_on_a_hand_example():
    # A guard on the references themselves: two samples, conf 0.5 exactly on a bin edge 7.5/15, handled right-closed.
    z = np.log(np.array([[0.5, 0.25, 0.25], [0.1, 0.2, 0.7]]))
    y = np.array([1, 2])
    assert ref_accuracy(z, y) == 0.5
    assert ref_nll(z, y) == pytest.approx((-math.log(0.25) - math.log(0.7)) / 2)
    assert ref_brier(z, y) == pytest.approx(((0.5 ** 2 + 0.75 ** 2 + 0.25 ** 2) + (0.1 ** 2 + 0.2 ** 2 + 0.3 ** 2)) / 2)
    assert ref_ece(z, y) == pytest.approx((0.5 + 0.3) / 2)
    # adaptive: the minimum confidence sits on e_0 and falls in no bin (MbLS rule); only 0.7 (correct) counts.
    assert ref_adaptive_ece(z, y) == pytest.approx(0.3 / 2)


@pytest.mark.parametrize("name", ["ce", "kd"])
@pytest.mark.parametrize("split", ["val", "test"])
def test_saved_predictions_match_numpy_metrics(runs, name, split):
    run = runs[name]
    summary = summary_of(run)
    logits, labels = load_npz(run / "predictions" / f"{split}.npz")
    assert logits.shape == (summary["data"][split], 10) and logits.dtype == np.float32
    expected = ref_metrics(logits, labels)
    assert_metrics_close(summary["evaluation"][split], expected)
    if split == "test":
        assert_metrics_close(summary["evaluation"]["calibration"]["before"], expected)
        # the last epoch's logged test metrics are of the same predictions
        assert summary["final"]["test_acc"] == pytest.approx(expected["acc"], abs=1e-12)
        assert summary["final"]["test_ece"] == pytest.approx(expected["ece"], abs=1e-6)
    # labels are the dataset's own, in order
    dataset = load_dataset("digits", val_size=0.1, seed=0, cache_dir=runs["cache"])
    assert np.array_equal(labels, getattr(dataset, split).labels)


def test_temperature_minimises_val_nll_and_after_metrics(runs):
    run = runs["ce"]
    calibration = summary_of(run)["evaluation"]["calibration"]
    assert calibration["fitted_on"] == "val" and calibration["evaluated_on"] == "test"
    val_z, val_y = load_npz(run / "predictions" / "val.npz")
    test_z, test_y = load_npz(run / "predictions" / "test.npz")
    t = calibration["temperature"]
    assert t == pytest.approx(ref_temperature(val_z, val_y), rel=1e-3)
    # and it is a minimum: no nearby temperature does better
    for factor in (0.99, 1.01):
        assert ref_nll(val_z / t, val_y) <= ref_nll(val_z / (t * factor), val_y)
    scaled = np.asarray(test_z, dtype=np.float64) / t
    assert_metrics_close(calibration["after"], ref_metrics(scaled, test_y))
    assert calibration["after"]["acc"] == calibration["before"]["acc"]


# ---------------------------------------------------------------------------------------------------- 2. kdlab eval


def test_eval_default_reproduces_the_summary(runs, capsys):
    run = runs["ce"]
    summary = summary_of(run)
    assert main(["eval", str(run)]) == 0
    output = capsys.readouterr().out
    assert "val: acc" in output and "test: acc" in output and "temperature" in output
    assert f"written to {run / 'eval-final'}" in output
    record = json.loads((run / "eval-final" / "metrics.json").read_text())
    assert record["checkpoint"] == "final" and record["dataset"] == "digits"
    assert record["splits"] == {"val": summary["data"]["val"], "test": summary["data"]["test"]}
    assert record["data"]["fingerprint"] == summary["data"]["fingerprint"]
    for split in ("val", "test"):
        assert_metrics_close(record[split], summary["evaluation"][split])
        logits, labels = load_npz(run / "eval-final" / "predictions" / f"{split}.npz")
        saved_logits, saved_labels = load_npz(run / "predictions" / f"{split}.npz")
        assert np.array_equal(labels, saved_labels)
        np.testing.assert_allclose(logits, saved_logits, atol=1e-5, rtol=0)
        assert_metrics_close(record[split], ref_metrics(logits, labels))
    assert record["calibration"]["temperature"] == pytest.approx(summary["evaluation"]["calibration"]["temperature"],
                                                                 rel=1e-6)
    assert_metrics_close(record["calibration"]["after"], summary["evaluation"]["calibration"]["after"])
    assert "fidelity" not in record


def test_eval_best_checkpoint_train_split_out(runs, tmp_path, capsys):
    run = runs["ce"]
    summary = summary_of(run)
    out = tmp_path / "best"
    assert main(["eval", str(run), "--checkpoint", "best", "--splits", "train,test", "--out", str(out)]) == 0
    assert f"written to {out}" in capsys.readouterr().out
    record = json.loads((out / "metrics.json").read_text())
    assert record["checkpoint"] == "best"
    assert record["splits"] == {"train": summary["data"]["train"], "test": summary["data"]["test"]}
    assert "val" not in record and "calibration" not in record
    assert sorted(p.name for p in (out / "predictions").iterdir()) == ["test.npz", "train.npz"]
    assert not (run / "eval-best").exists()
    for split in ("train", "test"):
        logits, labels = load_npz(out / "predictions" / f"{split}.npz")
        assert len(labels) == summary["data"][split]
        assert_metrics_close(record[split], ref_metrics(logits, labels))
    # the best weights reproduce the selected epoch's logged test metrics
    best = summary["best"]
    assert record["test"]["acc"] == pytest.approx(best["test_acc"], abs=1e-9)
    assert record["test"]["nll"] == pytest.approx(best["test_nll"], abs=1e-5)
    assert record["test"]["ece"] == pytest.approx(best["test_ece"], abs=1e-5)


def test_eval_kd_fidelity_matches_numpy(runs, tmp_path, capsys):
    student, teacher = runs["kd"], runs["ce"]
    out = tmp_path / "kd"
    assert main(["eval", str(student), "--out", str(out)]) == 0
    assert "agreement with the teacher" in capsys.readouterr().out
    record = json.loads((out / "metrics.json").read_text())
    summary = summary_of(student)
    assert set(record["fidelity"]) == {"val", "test"}
    for split in ("val", "test"):
        fidelity = record["fidelity"][split]
        assert 0.0 <= fidelity["agreement"] <= 1.0 and fidelity["fidelity_kl"] >= 0.0
        z, y = load_npz(student / "predictions" / f"{split}.npz")
        zt, yt = load_npz(teacher / "predictions" / f"{split}.npz")
        assert np.array_equal(y, yt)
        expected = ref_fidelity(z, zt)
        assert_metrics_close(fidelity, expected)
        assert_metrics_close(summary["evaluation"]["fidelity"][split], expected)
    assert record["fidelity"]["test"]["fidelity_kl"] > 0 and record["fidelity"]["test"]["agreement"] < 1


def test_eval_on_other_data_with_the_same_classes(runs, tmp_path):
    """The digits written as IDX files: another dataset (name, fingerprint) with the same classes and images, so
    the predictions must be exactly the run's own (normalisation stays the run's)."""
    run, out = runs["ce"], tmp_path / "idx"
    overrides = ["data.source=idx", f"data.path={runs['digits_idx']}"]
    assert main(["eval", str(run), *overrides, "--out", str(out)]) == 0
    record = json.loads((out / "metrics.json").read_text())
    assert record["dataset"] == "digits_idx" and record["data"]["overrides"] == overrides
    assert record["data"]["fingerprint"] != summary_of(run)["data"]["fingerprint"]
    for split in ("val", "test"):
        logits, labels = load_npz(out / "predictions" / f"{split}.npz")
        saved_logits, saved_labels = load_npz(run / "predictions" / f"{split}.npz")
        assert np.array_equal(labels, saved_labels)
        np.testing.assert_allclose(logits, saved_logits, atol=1e-5, rtol=0)


# ---------------------------------------------------------------------------------------------------- 3. eval errors


def _not_completed(runs, tmp_path) -> Path:
    copy = tmp_path / "running"
    shutil.copytree(runs["ce"], copy, ignore=shutil.ignore_patterns("eval-*"))
    summary = summary_of(copy)
    summary["status"] = "running"
    (copy / "summary.json").write_text(json.dumps(summary))
    return copy


EVAL_ERRORS = {
    "not a run dir": (lambda runs, tmp: [str(tmp / "empty")], "not a kdlab run directory"),
    "not completed": (lambda runs, tmp: [str(_not_completed(runs, tmp))], "has not completed (status 'running')"),
    "non-data override": (lambda runs, tmp: [str(runs["ce"]), "model.name=x"], "'model.name=x'"),
    "other classes": (lambda runs, tmp: [str(runs["ce"]), "data.source=idx", f"data.path={runs['fashion']}"],
                      "same classes in the same order"),
    "other classes, reverse": (lambda runs, tmp: [str(runs["fashion_run"]), "data.source=digits", "data.path=null"],
                               "same classes in the same order"),
    "no val split": (lambda runs, tmp: [str(runs["noval"]), "--splits", "val"], "has no val split"),
    "unknown split": (lambda runs, tmp: [str(runs["ce"]), "--splits", "test,bogus"], "has no bogus split"),
}


@pytest.mark.parametrize("case", list(EVAL_ERRORS))
def test_eval_errors_are_one_line(runs, tmp_path, capsys, case):
    make_args, message = EVAL_ERRORS[case]
    (tmp_path / "empty").mkdir()
    args = make_args(runs, tmp_path)
    out = tmp_path / "out"
    before = {p for p in Path(args[0]).rglob("*")}
    assert main(["eval", *args, "--out", str(out)]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kdlab: error: "), captured.err
    assert "Traceback" not in captured.err and captured.out == ""
    if message is not None:
        assert message in lines[0]
    assert not out.exists()
    assert {p for p in Path(args[0]).rglob("*")} == before  # nothing written into the run either


# ---------------------------------------------------------------------------------------------------- 4. report


STUDY_GROUPS = {"teacher", "ce", "ls-eps0.1", "ls-eps0.2", "kd"}


def test_report_study_markdown(study):
    md, report = study["md"], study["json"]
    assert {g["group"] for g in report["groups"]} == STUDY_GROUPS
    tables = sections(md)
    assert "## Paired differences against `ce` (same seed)" in tables
    assert "## Penultimate-layer projection (Mueller et al. 2019), classes 0, 1, 2" in tables
    for group in STUDY_GROUPS:
        seeds, epochs = (1, 3) if group == "teacher" else (2, 2)
        assert len(rows_of(tables["## Accuracy and calibration"], group, f"{seeds} | {epochs} | ")) == 1, group
        assert len(rows_of(tables["## Penultimate-layer projection (Mueller et al. 2019), classes 0, 1, 2"], group)) == 1
    for group in ("ls-eps0.1", "ls-eps0.2", "kd"):
        assert len(rows_of(tables["## Paired differences against `ce` (same seed)"], group, "2 | ")) == 1, group
    assert rows_of(tables["## Paired differences against `ce` (same seed)"], "ce") == []
    assert "**Convention.** Metrics are of the final epoch's weights, test split." in md
    assert "agreement" in md and "KL(t‖s)" in md
    assert "Label noise" not in md
    for name in ("reliability.png", "reliability_ts.png", "projection.png", "curves.png"):
        assert f"]({name})" in md


def test_report_study_group_metrics(study):
    report = study["json"]
    assert report["baseline"] == "ce" and report["selection"] == "final" and report["classes"] == ["0", "1", "2"]
    for group in STUDY_GROUPS - {"teacher"}:
        g = group_of(report, group)
        assert g["seeds"] == [0, 1]
        summaries = [summary_of(Path(run)) for run in g["runs"]]
        assert [s["seed"] for s in summaries] == [0, 1]
        for name in ("acc", "nll", "brier", "ece", "adaptive_ece", "classwise_ece", "temperature", "ece_ts",
                     "spread_train", "spread_test"):
            assert g["metrics"][name]["n"] == 2, (group, name)
        for name in ("acc", "nll", "ece", "brier"):
            expected = np.mean([s["evaluation"]["test"][name] for s in summaries])
            assert g["metrics"][name]["mean"] == pytest.approx(expected, abs=1e-9), (group, name)
        acc = [s["evaluation"]["test"]["acc"] for s in summaries]
        assert g["metrics"]["acc"]["std"] == pytest.approx(np.std(acc, ddof=1), abs=1e-12)
        ece_ts = np.mean([s["evaluation"]["calibration"]["after"]["ece"] for s in summaries])
        assert g["metrics"]["ece_ts"]["mean"] == pytest.approx(ece_ts, abs=1e-9)
        assert g["metrics"]["spread_test"]["mean"] > 0
    kd = group_of(report, "kd")
    assert 0 <= kd["metrics"]["agreement"]["mean"] <= 1 and kd["metrics"]["fidelity_kl"]["mean"] > 0
    assert "agreement" not in group_of(report, "ce")["metrics"]
    assert group_of(report, "ls-eps0.2")["method_params"]["eps"] == 0.2


def test_report_paired_differences(study):
    report = study["json"]
    rows = {row["group"]: row for row in report["paired"]}
    assert {"ls-eps0.1", "ls-eps0.2", "kd"} <= set(rows) and "ce" not in rows
    base = {s["seed"]: s["evaluation"]["test"] for s in map(summary_of, map(Path, group_of(report, "ce")["runs"]))}
    for group in ("ls-eps0.1", "ls-eps0.2", "kd"):
        row = rows[group]
        assert row["baseline"] == "ce" and row["n"] == 2
        mine = {s["seed"]: s["evaluation"]["test"] for s in map(summary_of, map(Path, group_of(report, group)["runs"]))}
        for name in ("acc", "nll", "ece"):
            diffs = [mine[seed][name] - base[seed][name] for seed in (0, 1)]
            assert row[name]["mean"] == pytest.approx(np.mean(diffs), abs=1e-9), (group, name)
            assert row[name]["std"] == pytest.approx(np.std(diffs, ddof=1), abs=1e-9), (group, name)
        assert f"| digits | cnn_small8 | {group} | 2 | " in study["md"]


def test_report_pngs(study):
    for name in ("reliability.png", "projection.png", "curves.png"):
        data = (study["report"] / name).read_bytes()
        assert data[:8] == PNG_SIGNATURE and len(data) > 1000, name


def test_report_on_run_directories_groups_by_method(study, tmp_path, capsys):
    runs = study["runs"]
    names = ["ce-s0", "ce-s1", "ls-eps0.1-s0", "ls-eps0.1-s1", "kd-s0", "kd-s1"]
    out = tmp_path / "report"
    assert main(["report", *(str(runs[n]) for n in names), "--out", str(out)]) == 0
    assert "3 groups, 6 runs" in capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    groups = {g["group"]: g for g in report["groups"]}
    assert len(groups) == 3 and "ce" in groups
    ls = [name for name in groups if name.startswith("ls ")]
    kd = [name for name in groups if name.startswith("kd")]
    assert len(ls) == 1 and "eps=0.1" in ls[0] and len(kd) == 1 and "teacher" not in kd[0]
    for g in groups.values():
        assert g["seeds"] == [0, 1] and g["metrics"]["acc"]["n"] == 2
    # same runs, same numbers as the study's report
    assert groups["ce"]["metrics"]["acc"] == group_of(study["json"], "ce")["metrics"]["acc"]
    assert report["baseline"] is None and report["paired"] == []
    md = (out / "report.md").read_text()
    assert "Paired differences" not in md and f"| digits | cnn_small8 | {ls[0]} | 2 | " in md
    assert (out / "reliability.png").read_bytes()[:8] == PNG_SIGNATURE


def test_report_unknown_baseline(study, tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["report", str(study["out"]), "--out", str(out), "--baseline", "nope", "--no-plots"]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kdlab: error: report: baseline 'nope'"), captured.err
    assert "ce" in lines[0] and "Traceback" not in captured.err
    assert not (out / "report.md").exists() and not (out / "report.json").exists()


def test_report_explicit_baseline_overrides_the_study(study, tmp_path):
    out = tmp_path / "report"
    assert main(["report", str(study["out"]), "--out", str(out), "--baseline", "ls-eps0.1", "--no-plots"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["baseline"] == "ls-eps0.1"
    assert {row["baseline"] for row in report["paired"]} == {"ls-eps0.1"}
    assert "ce" in {row["group"] for row in report["paired"]}
    assert "## Paired differences against `ls-eps0.1`" in (out / "report.md").read_text()


def test_report_classes_by_name_and_index(runs, tmp_path, capsys):
    run = runs["fashion_run"]
    assert summary_of(run)["data"]["class_names"][:3] == ["T-shirt/top", "Trouser", "Pullover"]
    records = {}
    for how, classes in (("names", "Trouser, Bag ,Coat"), ("indices", "1,8,4")):
        out = tmp_path / how
        assert main(["report", str(run), "--out", str(out), "--classes", classes]) == 0
        records[how] = json.loads((out / "report.json").read_text())
        assert records[how]["classes"] == ["Trouser", "Bag", "Coat"]
        assert "classes Trouser, Bag, Coat" in (out / "report.md").read_text()
        assert (out / "projection.png").read_bytes()[:8] == PNG_SIGNATURE
    assert records["names"]["groups"][0]["metrics"]["spread_test"] == records["indices"]["groups"][0]["metrics"]["spread_test"]
    default = tmp_path / "default"
    assert main(["report", str(run), "--out", str(default), "--no-plots"]) == 0
    assert json.loads((default / "report.json").read_text())["classes"] == ["T-shirt/top", "Trouser", "Pullover"]
    capsys.readouterr()
    for bad, message in (("Trouser,Bag", "three different classes"), ("Trouser,Bag,Bag", "three different classes"),
                         ("Trouser,Bag,10", "'10' is neither a class name nor an index below 10"),
                         ("Trouser,Bag,Shoe", "'Shoe'")):
        assert main(["report", str(run), "--out", str(tmp_path / "bad"), "--classes", bad]) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], (bad, lines)


def test_report_selection_best(study, tmp_path):
    out = tmp_path / "best"
    assert main(["report", str(study["out"]), "--out", str(out), "--selection", "best"]) == 0
    md = (out / "report.md").read_text()
    report = json.loads((out / "report.json").read_text())
    assert report["selection"] == "best"
    assert "Penultimate-layer projection" not in md and not (out / "projection.png").exists()
    assert "best_by metric (val_acc)" in md and "final epoch" not in md
    for group in STUDY_GROUPS - {"teacher"}:
        g = group_of(report, group)
        summaries = [summary_of(Path(run)) for run in g["runs"]]
        for name in ("acc", "nll", "ece"):
            expected = np.mean([s["best"][f"test_{name}"] for s in summaries])
            assert g["metrics"][name]["mean"] == pytest.approx(expected, abs=1e-9)
        assert "spread_test" not in g["metrics"] and "temperature" not in g["metrics"]
    assert {row["group"] for row in report["paired"]} >= {"ls-eps0.1", "ls-eps0.2", "kd"}


# ---------------------------------------------------------------------------------------------------- 5. label noise


def test_report_label_noise(noise_study):
    md, report = noise_study["md"], noise_study["json"]
    assert "**Label noise.**" in md and '"kind": "symmetric"' in md and '"rate": 0.4' in md
    assert "The test split is clean, so test accuracy is clean-test accuracy." in md
    (group,) = report["groups"]
    assert group["label_noise"]["kind"] == "symmetric" and group["label_noise"]["rate"] == 0.4
    run = Path(group["runs"][0])
    summary = summary_of(run)
    assert summary["data"]["label_noise"]["train_corrupted"] > 0.3 * summary["data"]["train"]
    # the saved test labels are the clean digits test labels
    _, labels = load_npz(run / "predictions" / "test.npz")
    clean = load_dataset("digits", cache_dir=noise_study["root"] / "cache").test.labels
    assert np.array_equal(labels, clean)
    assert group["metrics"]["acc"]["mean"] == pytest.approx(summary["evaluation"]["test"]["acc"], abs=1e-12)


def test_report_without_noise_has_no_noise_paragraph(runs, tmp_path):
    out = tmp_path / "report"
    assert main(["report", str(runs["ce"]), "--out", str(out), "--no-plots"]) == 0
    md = (out / "report.md").read_text()
    assert "Label noise" not in md and "Paired differences" not in md and "Penultimate" not in md


# ---------------------------------------------------------------------------------------------------- regressions (bugs found and fixed)


def test_eval_fidelity_uses_the_teachers_checkpoint(runs, tmp_path):
    # A teacher whose best weights differ from its final ones: another run's weights as best.safetensors.
    teacher = tmp_path / "teacher"
    shutil.copytree(runs["ce"], teacher, ignore=shutil.ignore_patterns("eval-*"))
    shutil.copyfile(runs["noval"] / "checkpoint" / "model.safetensors", teacher / "checkpoint" / "best.safetensors")
    raw = {**base(runs["cache"]), "method": {"name": "kd", "teacher": str(teacher), "teacher_checkpoint": "best"}}
    student = train_run(raw, tmp_path / "student")
    assert main(["eval", str(student), "--out", str(tmp_path / "eval")]) == 0
    record = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert_metrics_close(record["fidelity"]["test"], summary_of(student)["evaluation"]["fidelity"]["test"])


def test_eval_kd_run_on_other_data_with_the_same_classes(runs, tmp_path):
    out = tmp_path / "idx"
    assert main(["eval", str(runs["kd"]), "data.source=idx", f"data.path={runs['digits_idx']}", "--out", str(out)]) == 0
    record = json.loads((out / "metrics.json").read_text())
    assert_metrics_close(record["fidelity"]["test"], summary_of(runs["kd"])["evaluation"]["fidelity"]["test"])


def test_report_fidelity_matches_the_runs_summaries(study):
    kd = group_of(study["json"], "kd")
    summaries = [summary_of(Path(run)) for run in kd["runs"]]
    expected = np.mean([s["evaluation"]["fidelity"]["test"]["fidelity_kl"] for s in summaries])
    assert kd["metrics"]["fidelity_kl"]["mean"] == pytest.approx(expected, abs=1e-9)


def test_report_does_not_pair_a_shared_stage(study):
    assert study["record"]["runs"][0]["run"] == "teacher" and study["record"]["runs"][0]["seed"] is None
    assert "teacher" not in {row["group"] for row in study["json"]["paired"]}


# ---------------------------------------------------------------------------------------------------- archive


def test_an_archived_study_reports_like_the_study_itself(study, tmp_path):
    archived = tmp_path / "archive"
    assert main(["archive", str(study["out"]), "--out", str(archived)]) == 0
    kept = {p.relative_to(archived).as_posix() for p in archived.rglob("*") if p.is_file()}
    assert "study.json" in kept and "study.yaml" in kept
    assert not any("checkpoint" in name or "predictions" in name for name in kept)
    for run in study["runs"]:
        assert {f"{run}/{name}" for name in ("config.yaml", "summary.json", "metrics.jsonl", "analysis.npz")} <= kept
    assert sum(p.stat().st_size for p in archived.rglob("*") if p.is_file()) < 60_000 * len(study["runs"])
    for run in study["runs"]:  # per-example test results: what a McNemar test or a bootstrap needs
        kept_arrays = np.load(archived / run / "analysis.npz")
        original = np.load(study["out"] / run / "predictions" / "test.npz")
        assert np.array_equal(kept_arrays["test_predicted"], original["logits"].argmax(1))
        assert np.array_equal(kept_arrays["test_labels"], original["labels"])
        shifted = original["logits"] - original["logits"].max(1, keepdims=True)
        confidence = 1 / np.exp(shifted).sum(1)
        np.testing.assert_allclose(kept_arrays["test_confidence"].astype(np.float64), confidence, rtol=2e-3)
    report = tmp_path / "report"
    assert main(["report", str(archived), "--out", str(report)]) == 0
    again = json.loads((report / "report.json").read_text())
    original = study["json"]
    assert [g["group"] for g in again["groups"]] == [g["group"] for g in original["groups"]]
    for mine, theirs in zip(again["groups"], original["groups"]):
        assert set(mine["metrics"]) == set(theirs["metrics"])
        for name, value in theirs["metrics"].items():
            assert mine["metrics"][name]["mean"] == pytest.approx(value["mean"], rel=1e-5, abs=1e-6), name
    assert [r["group"] for r in again["paired"]] == [r["group"] for r in original["paired"]]
    for name in ("reliability.png", "reliability_ts.png", "projection.png", "curves.png"):
        assert (report / name).read_bytes().startswith(PNG_SIGNATURE)


def test_an_archive_without_the_asked_projection_says_what_to_do(study, tmp_path):
    archived = tmp_path / "archive"
    assert main(["archive", str(study["out"]), "--out", str(archived)]) == 0
    with pytest.raises(KdlabError, match="no checkpoint and no projection of classes"):
        build_report([archived], tmp_path / "r", classes=["3", "4", "5"])
    with pytest.raises(KdlabError, match="cannot be archived again"):
        archive([archived], tmp_path / "twice")


@pytest.mark.parametrize("precision", ["bf16", "fp32"])
def test_teacher_precision_is_measured_against_its_fp32_self(runs, tmp_path, precision):
    """A KD run records how far its teacher, as training ran it (bf16 autocast here), is from the same network in
    fp32: agreement and KL(fp32 || as run) on the test split, recomputed here from the teacher's weights. In fp32
    eager there is nothing to compare and no record."""
    import torch

    from kdlab.analysis.runs import eval_loader, load_run, load_run_data

    teacher_dir = runs["ce"]
    raw = {**base(runs["cache"]), "method": {"name": "kd", "teacher": str(teacher_dir)},
           "runtime": {**RUNTIME, "precision": precision, "compile": False}}
    summary = summary_of(train_run(raw, tmp_path / "kd"))
    record = summary["evaluation"].get("teacher_precision")
    if precision == "fp32":
        assert record is None
        return
    teacher = load_run(teacher_dir)
    loader = eval_loader(teacher, load_run_data(teacher).test)
    outputs = {}
    for name, autocast in (("fp32", False), ("bf16", True)):
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            outputs[name] = torch.cat([teacher.model(x).float() for x, _ in loader.batches(0)]).numpy()
    assert record["split"] == "test" and record["precision"] == "bf16" and record["reference"] == "fp32 eager"
    assert_metrics_close({k: record[k] for k in ("agreement", "fidelity_kl")},
                         ref_fidelity(outputs["bf16"], outputs["fp32"]))
    assert record["fidelity_kl"] > 0  # bf16 rounding moves the logits a little
