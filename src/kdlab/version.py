"""Version and provenance of the running kdlab, and a description of the machine it runs on."""

from __future__ import annotations

import functools
import os
import platform
import subprocess
from pathlib import Path

__version__ = "0.1.0"


@functools.lru_cache(maxsize=1)
def git_sha() -> str | None:
    """The commit of the kdlab source tree when kdlab runs from a git checkout of itself, else None."""
    repo_root = Path(__file__).resolve().parents[2]  # <root>/src/kdlab/version.py
    try:
        out = subprocess.run(
            ["git", "-C", str(repo_root), "rev-parse", "--show-toplevel", "HEAD"],
            capture_output=True, text=True, timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    lines = out.stdout.split()
    if out.returncode != 0 or len(lines) != 2 or Path(lines[0]).resolve() != repo_root:
        return None
    return lines[1]


@functools.lru_cache(maxsize=4)
def machine_description(device="cpu") -> str:
    """E.g. 'AMD EPYC, 2 cores, x86_64' or 'NVIDIA H100 80GB HBM3' for a CUDA device (a torch.device or its name)."""
    import torch  # here, so that ``import kdlab`` does not load torch

    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores, {platform.machine()}"


def cpu_features() -> list[str]:
    """The CPU's matrix and vector features that decide CPU speed (AVX2, AVX-512, AVX512-BF16, AMX), from
    /proc/cpuinfo: recorded beside every speed ratio, which holds only for machines like it."""
    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "amx_int8")
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                return [f for f in wanted if f in flags]
    except OSError:
        pass
    return []
