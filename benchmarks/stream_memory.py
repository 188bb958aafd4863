"""Peak memory of a ``residency: stream`` run on an image folder bigger than half the machine's memory.

    PYTHONPATH=src python benchmarks/stream_memory.py [--folder /tmp/kdlab-big-folder] [--gib 13] [--side 768]
        [--size 64] [--workers 2] [--out benchmarks/results/stream_memory.json]

The folder is made from ``../shared/data/cifar10-jpeg``: CIFAR-10 training images upscaled to ``--side`` pixels with
a little seeded noise (so PNG cannot compress them away), written as PNG (about 1.7 MB each at 768 px), and copied
under new names until the folder holds ``--gib`` GiB in ImageNet layout (train/<class>/, val/<class>/). A
``kdlab train`` run (cnn_small8, one epoch, folder option ``size`` resizing every photo to ``--size`` px at
decode, ``residency: stream``, source ``image_folder`` so val/ is the test split) then reads every file once.
Every 0.2 s a sampler adds up, over the run and its decoding workers, the resident memory (VmRSS: pages shared
between the processes, such as the torch libraries, counted once per process, so an upper bound) and the
proportional set size (Pss: each shared page split between its sharers, what the run really takes). The page
cache is not part of any process's memory and is not counted.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def make_folder(folder: Path, gib: float, side: int, shared: Path) -> dict:
    marker = folder / "made.json"
    if marker.is_file():
        return json.loads(marker.read_text())
    shutil.rmtree(folder, ignore_errors=True)
    rng = np.random.default_rng(0)
    classes = sorted(p.name for p in (shared / "train").iterdir())
    originals = {}
    for name in classes:
        for split in ("train", "val"):
            (folder / split / name).mkdir(parents=True)
        files = sorted((shared / "train" / name).iterdir())[:20]
        written = []
        for i, file in enumerate(files):
            with Image.open(file) as image:
                big = np.asarray(image.convert("RGB").resize((side, side), Image.Resampling.BICUBIC), dtype=np.int16)
            noisy = np.clip(big + rng.integers(-6, 7, big.shape), 0, 255).astype(np.uint8)
            path = folder / "train" / name / f"{i:06d}.png"
            Image.fromarray(noisy).save(path, compress_level=1)
            written.append(path)
        originals[name] = written
    total, copies = sum(p.stat().st_size for ps in originals.values() for p in ps), 0
    target = int(gib * (1 << 30))
    index = 20
    while total < target:
        for name, paths in originals.items():
            for i, path in enumerate(paths):
                split = "val" if index % 20 == 0 else "train"
                destination = folder / split / name / f"{index:06d}_{i:02d}.png"
                shutil.copyfile(path, destination)
                total += path.stat().st_size
                copies += 1
            if total >= target:
                break
        index += 1
    for name in classes:  # every class needs a validation image
        if not any((folder / "val" / name).iterdir()):
            shutil.copyfile(originals[name][0], folder / "val" / name / "000000.png")
    files = sum(1 for _ in folder.rglob("*.png"))
    made = {"bytes": total, "files": files, "side": side}
    marker.write_text(json.dumps(made))
    return made


def tree_memory(pid: int) -> tuple[int, int, int]:
    """(VmRSS summed, Pss summed, processes) over ``pid`` and all its descendants, in bytes (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    rss, pss, count, stack = 0, 0, 0, [pid]
    while stack:
        current = stack.pop()
        stack += children.get(current, [])
        try:
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    rss += int(line.split()[1]) * 1024
            for line in Path(f"/proc/{current}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    pss += int(line.split()[1]) * 1024
            count += 1
        except OSError:
            pass
    return rss, pss, count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--folder", type=Path, default=Path("/tmp/kdlab-big-folder"))
    parser.add_argument("--gib", type=float, default=13.0)
    parser.add_argument("--side", type=int, default=768)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/stream_memory.json"))
    args = parser.parse_args()
    made = make_folder(args.folder, args.gib, args.side, ROOT.parent / "shared" / "data" / "cifar10-jpeg")
    print(f"folder: {made['files']} files, {made['bytes'] / (1 << 30):.2f} GiB", flush=True)
    work = Path(args.folder.parent / "kdlab-big-run")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    recipe = {"seed": 0, "data": {"source": "image_folder", "path": str(args.folder), "residency": "stream",
                                  "stream_workers": args.workers, "options": {"size": args.size}, "flip": True,
                                  "mean": [0.49, 0.48, 0.45], "std": [0.25, 0.24, 0.26]},
              "model": {"name": "cnn_small8"}, "train": {"epochs": 1, "batch_size": 128, "eval_batch_size": 256},
              "runtime": {"progress": False}}
    (work / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "KDLAB_CACHE_DIR": str(work / "cache")}
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "kdlab", "train", str(work / "recipe.yaml"), "--out",
                                str(work / "run")], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak, peak_pss, most, samples = 0, 0, 0, 0

    def sample():
        nonlocal peak, peak_pss, most, samples
        while process.poll() is None:
            rss, pss, count = tree_memory(process.pid)
            peak, peak_pss, most = max(peak, rss), max(peak_pss, pss), max(most, count)
            samples += 1
            time.sleep(0.2)

    sampler = threading.Thread(target=sample)
    sampler.start()
    output = process.communicate()[0]
    sampler.join()
    wall = time.perf_counter() - start
    if process.returncode != 0:
        raise SystemExit(f"the run failed:\n{output}")
    summary = json.loads((work / "run" / "summary.json").read_text())
    mem_total = int(Path("/proc/meminfo").read_text().split("MemTotal:")[1].split()[0]) * 1024
    result = {
        "command": "PYTHONPATH=src python benchmarks/stream_memory.py " + " ".join(
            f"--{k} {v}" for k, v in vars(args).items() if k != "out"),
        "machine": {"cpu": summary["machine"], "memory_gib": round(mem_total / (1 << 30), 2),
                    "torch": summary["torch_version"]},
        "folder_gib": round(made["bytes"] / (1 << 30), 3), "files": made["files"], "file_side": made["side"],
        "folder_over_half_memory": made["bytes"] > mem_total / 2,
        "decoded_at_file_size_gib": round(made["files"] * made["side"] ** 2 * 3 / (1 << 30), 2),
        "residency": summary["data"]["residency"], "train_images": summary["data"]["train"],
        "peak_rss_gib": round(peak / (1 << 30), 3), "peak_pss_gib": round(peak_pss / (1 << 30), 3),
        "most_processes": most, "rss_samples": samples, "wall_seconds": round(wall, 1),
        "train_images_per_second": summary["train_images_per_second"],
        "under_2_gib": peak < 2 * (1 << 30),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
