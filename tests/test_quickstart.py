"""``kdlab quickstart``: the README's main job, on the embedded default data, within its time budget."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_quickstart_prints_the_table_keeps_runs_and_fits_in_a_minute(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "KDLAB_CACHE_DIR": str(tmp_path / "cache")}
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "kdlab", "quickstart", "--out", str(tmp_path / "qs")],
                            capture_output=True, text=True, env=env, timeout=300)
    seconds = time.perf_counter() - start
    assert result.returncode == 0, result.stderr
    assert seconds < 60, f"quickstart took {seconds:.0f} s"
    table = [line for line in result.stdout.splitlines() if line.count("+-") == 3]
    assert [line.split()[0] for line in table] == ["ce", "ls,"]
    runs = sorted(p.name for p in (tmp_path / "qs").iterdir())
    assert runs == ["ce-s0", "ce-s1", "ce-s2", "ls-s0", "ls-s1", "ls-s2"]
    for run in runs:
        summary = json.loads((tmp_path / "qs" / run / "summary.json").read_text())
        assert summary["status"] == "completed" and summary["final"]["test_acc"] > 0.9
