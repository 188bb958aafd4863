"""Resumable checkpoints: safetensors for tensors, JSON for everything else, never pickle.

Layout of ``RUN_DIR/checkpoint/``:

* ``state.json``: the pointer, written last and atomically. It names the epoch's tensor files and holds the
  non-tensor state (epoch, step, optimizer hyper-parameters, history of metrics, best record) and the sha256 of
  each tensor file.
* ``method-EEEE.safetensors``: the trainable state of the method (``method.state_dict()``); ``method-EEEE-SSSSSS``
  for a mid-epoch checkpoint (written on SIGTERM/SIGINT, :mod:`kdlab.train.interrupt`) after step S of epoch E+1,
  whose ``state.json`` also holds the epoch's progress (``partial``).
* ``optimizer-EEEE.safetensors``: the optimizer's tensors (momentum buffers) and the torch RNG state (CPU, and the
  current CUDA device's when CUDA is in use).
* ``model.safetensors`` / ``best.safetensors``: the evaluated model alone (plain ``kdlab.models`` keys) after the
  last and the best epoch, for ``kdlab eval`` and users' own code.

A killed writer leaves either the previous ``state.json`` (whose files are still there: old files are deleted only
after the new pointer is in place) or the new one; stray files of an unfinished save are ignored and cleaned up.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load, save

from kdlab.errors import KdlabError
from kdlab.io import atomic_write_bytes, atomic_write_json

STATE_FILE = "state.json"


def _tensor_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {key: value.detach().to("cpu").contiguous() for key, value in state.items()}


def save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> str:
    """Write tensors as safetensors atomically; return the sha256 of the file's bytes."""
    data = save(_tensor_dict(tensors))
    atomic_write_bytes(path, data)
    return hashlib.sha256(data).hexdigest()


def load_tensors(path: Path, sha256: str | None = None) -> dict[str, torch.Tensor]:
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise KdlabError(f"cannot read checkpoint file {path}: {error.strerror}") from None
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        raise KdlabError(f"checkpoint file {path} is corrupt (checksum mismatch)")
    try:
        return load(data)
    except (SafetensorError, ValueError, RuntimeError) as error:
        raise KdlabError(f"checkpoint file {path} is not a valid safetensors file ({error})") from None


def split_optimizer_state(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Optimizer state dict -> (tensors keyed ``state.<param>.<name>``, JSON-able rest)."""
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, entry in state["state"].items():
        for name, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{index}.{name}"] = value
            else:
                scalars[f"{index}.{name}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def join_optimizer_state(tensors: dict[str, torch.Tensor], rest: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("state."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    for key, value in rest["scalars"].items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    return {"state": state, "param_groups": rest["param_groups"]}


def save_checkpoint(directory: Path, epoch: int, method: torch.nn.Module, optimizer: torch.optim.Optimizer, extra: dict,
                    step: int | None = None) -> None:
    """Save everything needed to continue after ``epoch`` completed epochs (and ``step`` steps of the next one, for a
    mid-epoch checkpoint), then publish it via state.json."""
    directory.mkdir(parents=True, exist_ok=True)
    point = f"{epoch:04d}" if step is None else f"{epoch:04d}-{step:06d}"
    method_file, optim_file = f"method-{point}.safetensors", f"optimizer-{point}.safetensors"
    optim_tensors, optim_rest = split_optimizer_state(optimizer)
    optim_tensors["rng.torch_cpu"] = torch.get_rng_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():  # the current device's generator
        optim_tensors["rng.torch_cuda"] = torch.cuda.get_rng_state()
    pointer = {
        "format": 1,
        "epoch": epoch,
        "method_file": method_file,
        "optimizer_file": optim_file,
        "sha256": {
            method_file: save_tensors(directory / method_file, method.state_dict()),
            optim_file: save_tensors(directory / optim_file, optim_tensors),
        },
        "optimizer": optim_rest,
        **extra,
    }
    atomic_write_json(directory / STATE_FILE, pointer)
    for stale in [*directory.glob("method-[0-9]*.safetensors"), *directory.glob("optimizer-[0-9]*.safetensors")]:
        if stale.name not in (method_file, optim_file):
            stale.unlink(missing_ok=True)


def read_state(directory: Path) -> dict:
    path = directory / STATE_FILE
    if not path.is_file():
        raise KdlabError(f"no checkpoint to resume from: {path} is missing")
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise KdlabError(f"checkpoint state {path} is unreadable ({error})") from None
    if not isinstance(state, dict) or state.get("format") != 1:
        raise KdlabError(f"checkpoint state {path} has an unknown format")
    problem = _state_problem(state)
    if problem:
        raise KdlabError(f"checkpoint state {path} is damaged: {problem}")
    return state


def _state_problem(state: dict) -> str | None:
    """What is wrong with the fields of a format-1 ``state.json`` that this module reads, or None."""
    epoch = state.get("epoch")
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
        return f"epoch must be a whole number >= 0, got {epoch!r}"
    for key in ("method_file", "optimizer_file"):
        name = state.get(key)
        if not isinstance(name, str) or not name or Path(name).name != name:
            return f"{key} must be a file name in the checkpoint folder, got {name!r}"
    sums = state.get("sha256")
    if not isinstance(sums, dict) or not all(isinstance(sums.get(state[key]), str) for key in ("method_file", "optimizer_file")):
        return "sha256 must give the checksum of method_file and optimizer_file"
    optimizer = state.get("optimizer")
    if not (isinstance(optimizer, dict) and isinstance(optimizer.get("param_groups"), list)
            and isinstance(optimizer.get("scalars"), dict)):
        return "optimizer must hold param_groups (a list) and scalars (a mapping)"
    return None


def restore_checkpoint(directory: Path, method: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """Load the checkpoint named by state.json into ``method`` and ``optimizer``; return the state."""
    state = read_state(directory)
    sums = state["sha256"]
    load_state_into(method, load_tensors(directory / state["method_file"], sums[state["method_file"]]), directory)
    optim_path = directory / state["optimizer_file"]
    optim_tensors = load_tensors(optim_path, sums[state["optimizer_file"]])
    rng = optim_tensors.pop("rng.torch_cpu", None)
    cuda_rng = optim_tensors.pop("rng.torch_cuda", None)
    if rng is None or rng.dtype != torch.uint8:
        raise KdlabError(f"checkpoint file {optim_path} holds no torch RNG state (rng.torch_cpu)")
    try:
        optimizer.load_state_dict(join_optimizer_state(optim_tensors, state["optimizer"]))
    except (ValueError, KeyError, TypeError, IndexError) as error:
        raise KdlabError(f"optimizer state in {directory} does not fit this run ({error})") from None
    torch.set_rng_state(rng)
    if cuda_rng is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(cuda_rng)
    return state


def load_state_into(module: torch.nn.Module, tensors: dict[str, torch.Tensor], source: Path) -> None:
    """``module.load_state_dict(tensors)`` with a one-line error when the checkpoint is of another model."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = [k for k in expected if k in tensors and tuple(tensors[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or wrong:
        detail = (
            f"{len(missing)} missing keys (e.g. {missing[0]})" if missing
            else f"{len(unexpected)} unexpected keys (e.g. {unexpected[0]})" if unexpected
            else f"shape mismatch at {wrong[0]}: {tuple(tensors[wrong[0]].shape)} vs {tuple(expected[wrong[0]].shape)}"
        )
        raise KdlabError(f"checkpoint {source} does not fit this model: {detail}")
    module.load_state_dict(tensors)
