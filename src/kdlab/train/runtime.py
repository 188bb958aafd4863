"""Where and how a run computes: device, autocast precision, memory format, threads.

``precision: auto`` picks bf16 autocast on CUDA GPUs that support it and on CPUs with native bf16 instructions
(AVX512-BF16 or AMX), else fp32; the summary records what ran. fp16 is not offered: it needs loss scaling, and every
GPU of the last generations has bf16.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from kdlab.config import RuntimeConfig
from kdlab.errors import KdlabError


def cpu_has_native_bf16() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    precision: str  # "bf16" or "fp32"
    channels_last: bool
    compile: bool  # the trained model
    compile_setting: str | bool = False  # runtime.compile as asked: teachers are decided with the data size

    def autocast(self):
        if self.precision == "bf16":
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def describe(self) -> dict:
        return {
            "device": str(self.device),
            "precision": self.precision,
            "channels_last": self.channels_last,
            "compile": self.compile,
            "threads": torch.get_num_threads(),
        }


def resolve_runtime(config: RuntimeConfig) -> Runtime:
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    name = config.device
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise KdlabError(f"runtime.device: unknown device {config.device!r} (use auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise KdlabError(f"runtime.device: {config.device!r} asked for, but this machine has no usable CUDA GPU")
    if device.type not in ("cpu", "cuda"):
        raise KdlabError(f"runtime.device: {config.device!r} is not supported (use cpu or cuda)")
    precision = config.precision
    if precision == "auto":
        native = torch.cuda.is_bf16_supported() if device.type == "cuda" else cpu_has_native_bf16()
        precision = "bf16" if native else "fp32"
    channels_last = config.channels_last
    if channels_last == "auto":
        channels_last = device.type == "cuda" or precision == "bf16"
    compile_model = device.type == "cuda" if config.compile == "auto" else bool(config.compile)
    return Runtime(device=device, precision=precision, channels_last=bool(channels_last), compile=compile_model,
                   compile_setting=config.compile)


CUDA_GRAPHS_MAX_BATCH = 256  # above this, kernels are long enough that launch overhead no longer matters


def compile_mode(runtime: Runtime, cuda_graphs, batch_size: int) -> str | None:
    """torch.compile's mode for the trained model: "reduce-overhead" (CUDA graphs) on CUDA for small batches under
    ``cuda_graphs: auto``, or always with ``true``; else the default mode (None)."""
    if cuda_graphs is True and runtime.device.type != "cuda":
        raise KdlabError(f"runtime.cuda_graphs: true needs a CUDA device, this run is on {runtime.device}")
    if not runtime.compile or runtime.device.type != "cuda" or cuda_graphs is False:
        return None
    if cuda_graphs == "auto" and batch_size > CUDA_GRAPHS_MAX_BATCH:
        return None
    return "reduce-overhead"

