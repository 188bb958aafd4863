"""kdlab bench: the reference loop's transforms and loss, the untrained teacher run, and the alternating harness
(on scikit-learn's digits with tiny models, one step per block: a check of the machinery, not of speed)."""

import json
import os

import numpy as np
import pytest
import torch

from kdlab import losses
from kdlab.bench import reference_loop as reference
from kdlab.bench.command import format_table
from kdlab.bench.configurations import Configuration, Settings, untrained_teacher_run
from kdlab.bench.harness import run_bench
from kdlab.cli import main
from kdlab.data import load_dataset
from kdlab.teacher.run import load_teacher

MEAN, STD = [0.5, 0.4, 0.3], [0.25, 0.2, 0.3]


def unnormalise(x: torch.Tensor) -> torch.Tensor:
    return x * torch.tensor(STD)[:, None, None] + torch.tensor(MEAN)[:, None, None]


def ramp_images(n=4, size=32):
    """Distinct non-zero pixels everywhere, so a window can be located and zeros can only come from padding."""
    base = np.arange(1, size * size * 3 + 1).reshape(size, size, 3) % 251 + 1
    return np.stack([(base + k) % 251 + 1 for k in range(n)]).astype(np.uint8), np.arange(n, dtype=np.int64)


def test_reference_transform_is_a_padded_crop_and_flip_normalised():
    images, labels = ramp_images()
    data = reference.PilCropFlipDataset(images, labels, MEAN, STD, padding=4, flip=True)
    torch.manual_seed(0)
    with_zeros, flips = 0, 0
    for i in range(64):
        x, y = data[i % 4]
        assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and y == i % 4
        raw = unnormalise(x) * 255  # normalised with MEAN, STD: undoing it gives back the 0..255 pixel values
        pixels = torch.round(raw).permute(1, 2, 0).numpy()
        assert torch.allclose(raw, torch.round(raw), atol=1e-3)
        padded = np.pad(images[i % 4].astype(np.float64), ((4, 4), (4, 4), (0, 0)))
        windows = [(dy, dx, f) for dy in range(9) for dx in range(9) for f in (0, 1)
                   if np.array_equal(pixels, (padded[dy:dy + 32, dx:dx + 32, :])[:, ::-1 if f else 1])]
        assert len(windows) == 1, "every output is exactly one crop (and maybe flip) of the zero-padded image"
        with_zeros += bool((pixels == 0).any())
        flips += windows[0][2]
    assert with_zeros > 32  # most offsets reach into the black border
    assert 16 <= flips <= 48


def test_reference_flip_is_about_half_and_grey_images_work():
    images = np.tile(np.arange(8, dtype=np.uint8)[None, None, :, None] * 30 + 10, (1, 8, 1, 1))
    data = reference.PilCropFlipDataset(images, np.zeros(1, np.int64), [0.0], [1.0], padding=0, flip=True)
    torch.manual_seed(1)
    outputs = [data[0][0] for _ in range(400)]
    assert outputs[0].shape == (1, 8, 8)
    flipped = sum(bool(x[0, 0, 0] > x[0, 0, -1]) for x in outputs)
    assert 160 <= flipped <= 240


def test_reference_kd_loss_equals_kdlab_kd_kl():
    torch.manual_seed(0)
    z, zt = torch.randn(32, 10, dtype=torch.float64) * 3, torch.randn(32, 10, dtype=torch.float64) * 3
    y = torch.randint(0, 10, (32,))
    ours = reference.kd_loss(z, zt, y, gamma=0.1, alpha=0.9, tau=4.0)
    assert torch.allclose(ours, losses.kd_kl(z, zt, y, alpha=0.9, tau=4), rtol=0, atol=1e-10)
    assert torch.allclose(reference.distill_kl(z, zt, 4.0), losses.kd_kl(z, zt, y, alpha=1.0, tau=4), rtol=0, atol=1e-10)


def test_untrained_teacher_run_is_accepted_by_load_teacher(tmp_path):
    dataset = load_dataset("digits", val_size=0.1, cache_dir=tmp_path / "cache")
    run = untrained_teacher_run("cnn_small8", dataset, tmp_path / "teacher", [0.3], [0.4],
                                data={"source": "digits", "val_size": 0.1})
    teacher = load_teacher(run, dataset, input_mean=[0.3], input_std=[0.4])
    assert isinstance(teacher, torch.nn.Module) and not teacher.training  # same statistics: no Renormalise wrapper
    assert teacher.graph is teacher.network
    best = load_teacher(run, dataset, "best")
    x = torch.randn(2, 1, 8, 8)
    assert torch.equal(teacher(x), best(x)) and teacher(x).shape == (2, 10)
    assert json.loads((run / "summary.json").read_text())["status"] == "completed"


def test_harness_alternates_and_records(tmp_path):
    lines = []
    settings = Settings(steps=1, rounds=2, warmup=1, workers=1, threads=1, crop_padding=2)
    out = tmp_path / "results" / "tiny.json"
    record = run_bench([Configuration("student", "cnn_small8"), Configuration("kd", "cnn_small8", "cnn_small8")],
                       settings, data={"source": "digits", "val_size": 0.1, "cache_dir": str(tmp_path / "cache")},
                       name="tiny", command=["kdlab", "bench", "--test"], out=out, log=lines.append)
    assert json.loads(out.read_text()) == json.loads(json.dumps(record))
    for key in ("name", "command", "machine", "torch_version", "git_sha", "kdlab_runtime", "settings", "teacher_weights"):
        assert key in record
    assert record["command"] == "kdlab bench --test" and record["settings"]["steps"] == 1
    student, kd = record["configurations"]
    assert set(student["runs"]) == {"reference", "kdlab"}
    assert set(kd["runs"]) == {"reference", "kdlab", "kdlab_cached"}
    for result in (student, kd):
        for key, run in result["runs"].items():
            assert [b["round"] for b in run["blocks"]] == [1, 2]
            assert all(b["images"] == 64 and b["images_per_second"] > 0 for b in run["blocks"])
            assert run["median_images_per_second"] == pytest.approx(np.median([b["images_per_second"] for b in run["blocks"]]))
            if key != "reference":
                theirs = result["runs"]["reference"]
                per_round = [b["images_per_second"] / r["images_per_second"] for b, r in zip(run["blocks"], theirs["blocks"])]
                assert run["round_ratios"] == pytest.approx(per_round, rel=1e-3)
                assert run["ratio_to_reference"] == pytest.approx(np.median(per_round))
                assert run["ratio_range"] == pytest.approx([min(per_round), max(per_round)], rel=1e-3)
                assert run["ratio_of_medians"] == pytest.approx(run["median_images_per_second"] /
                                                                theirs["median_images_per_second"])
    # The cache was filled by the untimed pass; the timed blocks repeat those steps and only hit.
    assert kd["teacher_cache"]["fill_pass"] == {"hits": 0, "misses": 64}
    assert kd["teacher_cache"]["timed_blocks"] == {"hits": 128, "misses": 0}
    # Alternation: within each round, the reference block comes first, then each kdlab mode in turn.
    def kind(line):
        return "reference" if "reference (" in line else "warm" if "warm teacher cache" in line else \
            "fly" if "on the fly" in line else "kdlab"

    order = [kind(line) for line in lines if line.strip().startswith("round")]
    assert order == ["reference", "kdlab"] * 2 + ["reference", "fly", "warm"] * 2
    table = format_table(record)
    assert "KD cnn_small8 -> cnn_small8, warm teacher cache" in table and "kdlab/reference" in table
    assert record["epoch_check"] is None
    # The machine is described and its state judged (whatever it is while the suite runs).
    assert record["machine_kind"].startswith(record["machine_kind"].split("-")[0])
    state = record["machine_state"]
    assert isinstance(state["busy"], bool) and state["busy"] == bool(state["reasons"])
    assert state["other_cpu_share"] is None or 0 <= state["other_cpu_share"] <= 1
    assert "machine: " in table


def test_epoch_check_times_whole_epochs_with_a_cache_that_only_hits(tmp_path):
    lines = []
    settings = Settings(steps=1, rounds=1, warmup=1, workers=0, threads=1, crop_padding=2, epoch_rounds=2)
    record = run_bench([Configuration("student", "cnn_small8")], settings,
                       data={"source": "digits", "val_size": 0.1, "cache_dir": str(tmp_path / "cache")},
                       name="tiny", command="kdlab bench --test", log=lines.append,
                       epoch_configuration=Configuration("kd", "cnn_small8", "cnn_small8"))
    check = record["epoch_check"]
    train_images = record["data"]["train_images"]
    assert check["images_per_epoch"] == train_images
    assert check["cache_fill"] == {"hits": 0, "misses": train_images}  # exactly epoch 0's views, once each
    # Warm-up block (1 step of 64) then two whole epochs: every lookup hits, the teacher never runs.
    assert check["timed_cache"] == {"hits": 64 + 2 * train_images, "misses": 0}
    assert [len(v) for v in check["seconds"].values()] == [2, 2]
    assert check["kd_over_student"] == pytest.approx(check["median_seconds"]["kd_warm_cache"] /
                                                     check["median_seconds"]["student"])
    assert "one epoch, KD kd with a warm teacher cache vs student only" in format_table(record)


def test_cli_bench_errors(tmp_path, capsys):
    assert main(["bench", "--quick", "--pairs", "resnet18-resnet8"]) == 2
    assert "unknown configuration resnet18-resnet8" in capsys.readouterr().err
    assert main(["bench", "--quick", "--data", str(tmp_path / "missing")]) == 2
    assert "no CIFAR-10 JPEG image folder" in capsys.readouterr().err


def test_machine_kind_names_the_strongest_matrix_feature():
    from kdlab.bench.machine_state import machine_kind

    arch = __import__("platform").machine()
    assert machine_kind(["avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"]) == f"{arch}-amx"
    assert machine_kind(["avx2", "avx512f", "avx512_bf16"]) == f"{arch}-avx512bf16"
    assert machine_kind(["avx2", "avx512f"]) == f"{arch}-avx512"
    assert machine_kind(["avx2"]) == f"{arch}-avx2"
    assert machine_kind([]) == arch


def test_assess_flags_other_work_load_and_spread():
    from kdlab.bench.machine_state import assess, ratio_spread

    quiet = {"cores": 2, "load_average_before": [0.1, 0.2, 0.3], "other_cpu_share": 0.02}
    assert assess(quiet, {"student kdlab": 0.05}) == {"busy": False, "reasons": []}
    busy = assess({**quiet, "other_cpu_share": 0.4, "load_average_before": [2.0, 2.0, 2.0]}, {"kd kdlab": 0.6})
    assert busy["busy"] and len(busy["reasons"]) == 3
    assert "40%" in busy["reasons"][0] and "load average 2.00" in busy["reasons"][1] and "kd kdlab" in busy["reasons"][2]
    assert ratio_spread([2.0, 2.2, 1.8]) == pytest.approx(0.2)
    assert ratio_spread([3.0]) == 0


def test_load_probe_sees_another_process_burn_cpu():
    """A busy-looping child outside kdlab's own work is what the probe must count as other processes' time: run
    one as a separate process group member we do not wait on (not a descendant reaped into our times)."""
    import subprocess
    import sys
    import time

    from kdlab.bench.machine_state import LoadProbe

    probe = LoadProbe().start()
    idle = probe.stop()
    assert idle["other_cpu_share"] is None or idle["other_cpu_share"] >= 0
    # a grandchild detached through a short-lived child is not in our process tree
    burner = subprocess.Popen([sys.executable, "-c", "import os, subprocess, sys; "
                               "p = subprocess.Popen([sys.executable, '-c', 'import time\\nt=time.time()\\n"
                               "while time.time()-t<1.5: pass'], start_new_session=True); print(p.pid)"],
                              stdout=subprocess.PIPE, text=True)
    grandchild = int(burner.communicate()[0])
    probe = LoadProbe().start()
    time.sleep(1.0)
    busy = probe.stop()
    if busy["other_cpu_share"] is None:
        pytest.skip("no /proc on this system")
    assert busy["other_cpu_seconds"] >= 0.5, busy
    assert busy["other_cpu_share"] >= 0.5 / (1.0 * busy["cores"]) * 0.9
    try:
        os.kill(grandchild, 9)
    except ProcessLookupError:
        pass
