"""The deployable file formats of ``kdlab export --format``: how a network becomes bytes, and how those bytes load
back the way a user will load them.

Each :class:`ExportFormat` has a ``serialise`` (network in fp32 eval mode + an example batch of real inputs ->
the file's bytes and a record of how they were made) and a ``load`` (a file on disk -> a function from float32
inputs N x C x H x W to logits N x K, or None when the runtime that would run the file is not installed). The
check (:mod:`kdlab.export.check`) runs what ``load`` returns; nothing here decides whether a file is good.

* ``onnx``: ``torch.onnx.export``, input ``input`` (N x C x H x W float32), output ``logits``; a dynamic batch axis
  unless a fixed batch size is asked for. Loaded with onnxruntime.
* ``torchscript``: ``torch.jit.trace`` of the network; loaded with ``torch.jit.load``. A trace records the
  operations of one call, which for the zoo's networks (no data-dependent control flow) is the whole network at
  any batch size; the check runs it at a batch size other than the trace's.
* ``safetensors``: the plain state dict (``kdlab.models`` keys), loaded into a fresh ``kdlab.models.create`` of
  the model the JSON record names: the weights without kdlab's run directory.

Which ONNX exporter, and why: torch has two. The torch.export-based one (``dynamo=True``, needs onnxscript) is
torch's default since 2.9 and the one being maintained; the TorchScript-based one (``dynamo=False``) is the only
one torch 2.4 offers through ``torch.onnx.export`` and warns in 2.9+ that it will be removed. Both export every
zoo model (each family measured on torch 2.14: max |diff| against PyTorch below 2e-6 at normal logit scales, the
torch.export one 5-10x slower to export). So kdlab uses the torch.export exporter where it exists (torch >= 2.5
with onnxscript, opset >= 18, its native range) and falls back to the TorchScript one when it is missing, refuses
the model or the opset is older; the record names the exporter used and why any other was passed over. Robust
either way because the file is never trusted on the exporter's word: the check runs it on real test images.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import io
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from kdlab.errors import KdlabError

INPUT_NAME, OUTPUT_NAME = "input", "logits"
DEFAULT_OPSET = 18
DYNAMO_MIN_OPSET = 18  # the torch.export exporter's own opsets; older ones go through a version converter
ONNX_INSTALL = "pip install 'kdlab[onnx]'"

#: float32 inputs N x C x H x W -> logits N x K (both NumPy)
Runner = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class ExportOptions:
    """What a format may need beyond the network: the ONNX opset and batch size (None: a dynamic batch axis), and
    the model that ``safetensors`` rebuilds (name, classes, input channels, ``model.options``)."""

    opset: int = DEFAULT_OPSET
    batch: int | None = None
    model_name: str = ""
    num_classes: int = 0
    in_channels: int = 3
    model_options: dict | None = None


@dataclass(frozen=True)
class ExportFormat:
    name: str
    extension: str
    serialise: Callable[[torch.nn.Module, torch.Tensor, ExportOptions], tuple[bytes, dict]]
    load: Callable[[Path, ExportOptions], Runner | None]
    loader: str  # what loads it, for messages: "onnxruntime", "torch.jit.load", ...


@contextlib.contextmanager
def _quiet():
    """Exporters and tracers print progress, warn about tracing and log converter tracebacks; none of that is the
    user's business here (what failed is reported in one line, and the check says whether the file is right)."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        with contextlib.redirect_stderr(io.StringIO()):
            yield


# ------------------------------------------------------------------------------------------------------ ONNX


def require_onnx():
    """The ``onnx`` package, or a one-line error saying how to install the extra."""
    try:
        import onnx
    except ImportError:
        raise KdlabError(f"--format onnx needs the onnx package, which is not installed: {ONNX_INSTALL}") from None
    return onnx


def check_opset(opset: int) -> None:
    """A one-line error for an opset that no installed onnx knows (an older one is left to the exporters)."""
    onnx = require_onnx()
    newest = onnx.defs.onnx_opset_version()
    if not 7 <= opset <= newest:
        raise KdlabError(f"--opset {opset}: the installed onnx {onnx.__version__} knows opsets 7 to {newest} "
                         f"(default {DEFAULT_OPSET})")


def dynamo_exporter_available() -> bool:
    """Whether ``torch.onnx.export(dynamo=True)`` can run here: torch >= 2.5 (the keyword) and onnxscript."""
    if "dynamo" not in inspect.signature(torch.onnx.export).parameters:
        return False
    try:
        import onnxscript  # noqa: F401
    except ImportError:
        return False
    return True


def _export_dynamo(network: torch.nn.Module, example: torch.Tensor, options: ExportOptions) -> bytes:
    dynamic = None if options.batch is not None else ({0: torch.export.Dim("batch", min=1)},)
    program = torch.onnx.export(network, (example,), dynamo=True, opset_version=options.opset,
                                input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], dynamic_shapes=dynamic,
                                external_data=False, verbose=False)
    return program.model_proto.SerializeToString()


def _export_torchscript_onnx(network: torch.nn.Module, example: torch.Tensor, options: ExportOptions) -> bytes:
    buffer = io.BytesIO()
    legacy = {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}
    axes = None if options.batch is not None else {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}
    torch.onnx.export(network, (example,), buffer, opset_version=options.opset, input_names=[INPUT_NAME],
                      output_names=[OUTPUT_NAME], dynamic_axes=axes, do_constant_folding=True, **legacy)
    return buffer.getvalue()


def _short(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text[:240]}{'...' if len(text) > 240 else ''}"


def serialise_onnx(network: torch.nn.Module, example: torch.Tensor, options: ExportOptions) -> tuple[bytes, dict]:
    """The ONNX bytes of ``network`` (see the module docstring for the exporter), with the opset the file really
    declares."""
    onnx = require_onnx()
    check_opset(options.opset)
    exporters = []
    passed_over = []
    if options.opset < DYNAMO_MIN_OPSET:
        passed_over.append(f"torch.export: opset {options.opset} is below its {DYNAMO_MIN_OPSET}")
    elif not dynamo_exporter_available():
        passed_over.append(f"torch.export: needs torch >= 2.5 and onnxscript (torch {torch.__version__})")
    else:
        exporters.append(("torch.export", _export_dynamo))
    exporters.append(("torchscript", _export_torchscript_onnx))
    for name, export in exporters:
        try:
            with _quiet():
                data = export(copy.deepcopy(network), example, options)
        except Exception as error:  # noqa: BLE001 - the next exporter may manage; every failure is reported
            passed_over.append(f"{name}: {_short(error)}")
            continue
        proto = onnx.load_from_string(data)
        opset = next((entry.version for entry in proto.opset_import if entry.domain in ("", "ai.onnx")), None)
        if opset != options.opset:  # a converter that gave up keeps its own opset
            passed_over.append(f"{name}: wrote opset {opset}, not {options.opset}")
            continue
        return data, {"exporter": name, "passed_over": passed_over, "opset": opset,
                      "onnx_version": getattr(onnx, "__version__", None)}
    raise KdlabError(f"cannot export {options.model_name or 'the model'} to ONNX (opset {options.opset}): "
                     f"{'; '.join(passed_over)}")


def load_onnx(path: Path, options: ExportOptions) -> Runner | None:
    """An onnxruntime session of ``path`` on the CPU (as many threads as torch uses), or None without
    onnxruntime. A fixed-batch file runs in chunks of its batch size, the last one padded and cut back."""
    try:
        import onnxruntime
    except ImportError:
        return None
    settings = onnxruntime.SessionOptions()
    settings.intra_op_num_threads = torch.get_num_threads()
    settings.log_severity_level = 3  # errors only: its warnings would break the command's one-line output
    session = onnxruntime.InferenceSession(str(path), settings, providers=["CPUExecutionProvider"])

    def run(inputs: np.ndarray) -> np.ndarray:
        if options.batch is None:
            return session.run([OUTPUT_NAME], {INPUT_NAME: inputs})[0]
        outputs = []
        for start in range(0, len(inputs), options.batch):
            chunk = inputs[start : start + options.batch]
            padded = np.concatenate([chunk, np.repeat(chunk[:1], options.batch - len(chunk), axis=0)])
            outputs.append(session.run([OUTPUT_NAME], {INPUT_NAME: padded})[0][: len(chunk)])
        return np.concatenate(outputs)

    return run


def onnxruntime_version() -> str | None:
    try:
        import onnxruntime
    except ImportError:
        return None
    return onnxruntime.__version__


# ------------------------------------------------------------------------------------------------ TorchScript


def serialise_torchscript(network: torch.nn.Module, example: torch.Tensor,
                          options: ExportOptions) -> tuple[bytes, dict]:
    """A ``torch.jit.trace`` of ``network`` on ``example`` (``check_trace`` off: kdlab's check, on real images at
    another batch size, is the stronger test), saved with ``torch.jit.save``."""
    buffer = io.BytesIO()
    with _quiet(), torch.no_grad():  # torch 2.14 warns that TorchScript is deprecated in favour of torch.export
        traced = torch.jit.trace(copy.deepcopy(network), example, check_trace=False)
        torch.jit.save(traced, buffer)
    return buffer.getvalue(), {"exporter": "torch.jit.trace"}


def load_torchscript(path: Path, options: ExportOptions) -> Runner:
    with _quiet():
        module = torch.jit.load(str(path), map_location="cpu").eval()

    def run(inputs: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(inputs)).float().numpy()

    return run


# ------------------------------------------------------------------------------------------------ safetensors


def serialise_safetensors(network: torch.nn.Module, example: torch.Tensor,
                          options: ExportOptions) -> tuple[bytes, dict]:
    """The state dict as safetensors, with the model's name and shape in the header's metadata too (so a file that
    lost its JSON record still says what it holds)."""
    from safetensors.torch import save

    tensors = {key: value.detach().to("cpu").contiguous() for key, value in network.state_dict().items()}
    metadata = {"format": "pt", "kdlab_model": options.model_name, "num_classes": str(options.num_classes),
                "in_channels": str(options.in_channels)}
    return save(tensors, metadata=metadata), {"exporter": "safetensors.torch.save", "tensors": len(tensors)}


def load_safetensors(path: Path, options: ExportOptions) -> Runner:
    """A fresh ``kdlab.models.create`` of the recorded model with the file's weights (read without pickle)."""
    from kdlab import models
    from kdlab.store.checkpoint import load_state_into, load_tensors

    model = models.create(options.model_name, options.num_classes, in_channels=options.in_channels,
                          options=options.model_options)
    load_state_into(model, load_tensors(path), path)
    model.eval()

    def run(inputs: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(inputs)).float().numpy()

    return run


FORMATS: dict[str, ExportFormat] = {
    "onnx": ExportFormat("onnx", "onnx", serialise_onnx, load_onnx, "onnxruntime"),
    "torchscript": ExportFormat("torchscript", "pt", serialise_torchscript, load_torchscript, "torch.jit.load"),
    "safetensors": ExportFormat("safetensors", "safetensors", serialise_safetensors, load_safetensors,
                                "kdlab.models.create + safetensors"),
}
