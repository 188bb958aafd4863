"""``kdlab quickstart``: the README's main job, on the embedded default data, within its time budget.

The budget tests are marked ``timing``: the suite runs them alone, after its parallel part, so that what they
measure is the quickstart and not the tests running beside it."""

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_dirs(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir())


@pytest.mark.timing
def test_quickstart_prints_the_table_keeps_runs_and_fits_in_90_seconds(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "KDLAB_CACHE_DIR": str(tmp_path / "cache")}
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "kdlab", "quickstart", "--out", str(tmp_path / "qs")],
                            capture_output=True, text=True, env=env, timeout=300)
    seconds = time.perf_counter() - start
    assert result.returncode == 0, result.stderr
    assert seconds < 90, f"quickstart took {seconds:.0f} s"
    table = [line for line in result.stdout.splitlines() if line.count("+-") == 3]
    assert len(table) == 8
    assert [re.split(r"\s{2,}", line)[0] for line in table[:6]] == [
        "ce", "ls, eps=0.1", "lsr_os_tc, eps=0.1, tau=4.0, beta=0.2", "tfkd_reg, alpha=0.1, tau=20.0, a=0.99",
        "kd, divergence=kl, alpha=0.9, tau=4.0", "kd, divergence=mse, alpha=1.0"]
    assert table[6].startswith(("dml, branches=2 (resnet8, peer", "dml, branches=2 (resnet8, best peer"))
    assert table[7].startswith("okddip, branches=4 (resnet8, leader, 4 ep)")
    runs = run_dirs(tmp_path / "qs")
    expected = ["teacher"] + [f"{m}-s{s}" for m in ("ce", "kd-kl", "kd-mse", "ls", "lsr_os_tc", "tfkd_reg", "dml",
                                                     "okddip") for s in range(3)]
    assert runs == sorted(expected)
    study = json.loads((tmp_path / "qs" / "study.json").read_text())  # the quickstart is a study: kdlab report reads it
    assert sorted(r["run"] for r in study["runs"]) == runs and {r["status"] for r in study["runs"]} == {"trained"}
    for run in runs:
        summary = json.loads((tmp_path / "qs" / run / "summary.json").read_text())
        assert summary["status"] == "completed" and summary["final"]["test_acc"] > 0.9
        if run.startswith("okddip"):
            assert set(summary["heads"]) == {"peer1", "peer2", "peer3", "leader", "ensemble"}
            assert summary["inference_head"] == "leader"
        if run.startswith("dml"):
            assert set(summary["heads"]) == {"peer1", "peer2", "ensemble"}


@pytest.mark.timing
def test_audio_quickstart_on_fsdd_keeps_runs_reaches_095_and_fits_in_5_minutes(tmp_path, shared_data):
    """One seed per method here (the default is two), so the suite pays half: it must take under half the 5 minutes
    the full quickstart --audio is allowed (the full one measured in benchmarks/README.md)."""
    fsdd = shared_data("fsdd")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "KDLAB_CACHE_DIR": str(tmp_path / "cache")}
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "kdlab", "quickstart", "--audio", "--data", str(fsdd), "--seeds",
                             "1", "--out", str(tmp_path / "qs")], capture_output=True, text=True, env=env, timeout=600)
    seconds = time.perf_counter() - start
    assert result.returncode == 0, result.stderr
    assert seconds < 150, f"quickstart --audio --seeds 1 took {seconds:.0f} s"
    table = [line for line in result.stdout.splitlines() if line.count("+-") == 3]
    assert [re.split(r"\s{2,}", line)[0] for line in table] == ["ce", "ls, eps=0.1",
                                                                "lsr_os_tc, eps=0.1, tau=4.0, beta=0.2"]
    runs = run_dirs(tmp_path / "qs")
    assert runs == sorted(f"{m}-s0" for m in ("ce", "ls", "lsr_os_tc"))
    for run in runs:
        summary = json.loads((tmp_path / "qs" / run / "summary.json").read_text())
        assert summary["status"] == "completed" and summary["dataset"] == "fsdd"
        assert summary["data"]["features"]["n_mels"] == 32 and summary["data"]["test"] == 300
        if run.startswith("ce"):
            assert summary["final"]["test_acc"] >= 0.95


def test_audio_quickstart_without_fsdd_is_one_line(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "KDLAB_CACHE_DIR": str(tmp_path / "cache")}
    result = subprocess.run([sys.executable, "-m", "kdlab", "quickstart", "--audio", "--data", str(tmp_path / "none")],
                            capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "no FSDD at" in result.stderr and not (tmp_path / "none").exists()
