"""``kdlab export RUN --format onnx|torchscript|safetensors``: the inference network of a completed run as one
deployable file, with a JSON record beside it, published only once it has passed the check.

Any completed run: plain, KD (the student), online distillation (the run's inference head, its
``checkpoint/model.safetensors``; ``kdlab export RUN --head peerN --out DIR`` first for another branch), with its
final weights or (``checkpoint="best"``) ``best.safetensors``. The steps, and why in this order:

1. everything that can be refused is refused first (format, options, the onnx package, the run, the output path),
   before anything is exported;
2. the network is rebuilt with :func:`kdlab.analysis.runs.load_run` on the CPU in fp32 eval mode, and its logits
   on the first test images (:mod:`kdlab.analysis.runs`'s evaluation loader) are the reference;
3. a copy of the network is serialised (:mod:`kdlab.export.formats`) to a temporary file beside the target, which
   is loaded back and run on the same images (:mod:`kdlab.export.check`);
4. only a file that passes is renamed onto the target, its record (``FILE.json``) with it. A failed check, a file
   that does not load, an interrupt: the temporaries are removed, the target is as it was before (an earlier
   export there stays untouched), nothing new is left behind.

Without onnxruntime an ONNX file cannot be run here: it is written unchecked and both the printed line and the
record say so (``check.skipped``), never silently.
"""

from __future__ import annotations

import copy
import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from kdlab.analysis.runs import LoadedRun, load_run, load_run_data
from kdlab.errors import KdlabError
from kdlab.export.check import CHECK_IMAGES, check_inputs, compare, failure_message, pytorch_logits
from kdlab.export.formats import DEFAULT_OPSET, FORMATS, ONNX_INSTALL, ExportOptions, check_opset, onnxruntime_version
from kdlab.io import TEMP_SUFFIX, atomic_write_bytes, atomic_write_json, fsync_dir
from kdlab.teacher.run import WEIGHTS
from kdlab.train.inputs import eval_view
from kdlab.version import __version__, git_sha

RECORD_SUFFIX = ".json"


def export_model(run_dir: str | Path, format: str, out: str | Path | None = None, *, checkpoint: str = "final",
                 opset: int | None = None, batch: str | int | None = None,
                 check_images: int = CHECK_IMAGES) -> ExportedFile:
    """Export the network of the completed run ``run_dir`` as ``format`` to ``out`` (a file; an existing folder
    gets ``model.<ext>`` inside; default ``RUN/export/model.<ext>``); return the published file and the record
    written beside it.

    ``opset`` (default 18) and ``batch`` ("dynamic", the default, or a fixed batch size) are ONNX's; the check runs
    on the first ``check_images`` test samples.
    """
    if format not in FORMATS:
        raise KdlabError(f"unknown export format {format!r}; known formats: {', '.join(FORMATS)}")
    spec = FORMATS[format]
    if format != "onnx" and (opset is not None or batch not in (None, "dynamic")):
        raise KdlabError(f"--opset and --batch are options of --format onnx, not of --format {format}")
    fixed_batch = parse_batch(batch)
    opset = DEFAULT_OPSET if opset is None else opset
    if format == "onnx":
        check_opset(opset)  # needs the onnx package: refused with the extra to install
    run = load_run(run_dir, checkpoint, device="cpu")  # refuses folders that are not completed runs
    target = target_path(out, run.path, spec.extension)
    folder_existed = target.parent.is_dir()
    record_path = target.with_name(target.name + RECORD_SUFFIX)
    staged = [_staging(target), _staging(record_path)]
    try:
        prepare_folder(target)
        inputs, labels, split = check_inputs(run, load_run_data(run), check_images)
        reference_network = fp32_copy(run.model)
        reference = pytorch_logits(reference_network, inputs)
        options = export_options(run, inputs, opset, fixed_batch)
        data, made = spec.serialise(exported_network(reference_network), example_batch(inputs, fixed_batch), options)
        atomic_write_bytes(staged[0], data)
        record = base_record(run, format, target, data, made, options, inputs)
        record["check"] = run_check(spec, staged[0], options, inputs, reference, labels, split)
        atomic_write_json(staged[1], record)
        publish(staged, [target, record_path])
    finally:
        _clean_up(staged, None if folder_existed else target.parent)
    return ExportedFile(target, record)


@dataclass
class ExportedFile:
    """A published export: the file and the record written beside it (``FILE.json``)."""

    path: Path
    record: dict

    def line(self, run: str | Path | None = None) -> str:
        """``RUN -> FILE (onnx, opset 18): max |diff| 2.1e-06 over 256 test images, top-1 agreement 1.0000``."""
        record = self.record
        source = run if run is not None else record["source"]["run"]
        what = f"{record['format']}, opset {record['opset']}" if record["format"] == "onnx" else record["format"]
        check = record["check"]
        if "skipped" in check:
            return f"{source} -> {self.path} ({what}): NOT CHECKED: {check['skipped']}"
        return (f"{source} -> {self.path} ({what}): max |diff| {check['max_abs_diff']:.1e} over {check['images']} "
                f"{check['split']} images, top-1 agreement {check['top1_agreement']:.4f}")


def publish(staged: list[Path], targets: list[Path]) -> None:
    """Rename the checked file, then its record, onto their targets; if the record cannot follow, the file is
    taken back (a file without its record is not an export)."""
    try:
        for path in staged:
            path.chmod(0o666 & ~_umask())  # a file to deploy or share, not kdlab.io's private 0600
        os.replace(staged[0], targets[0])
        try:
            os.replace(staged[1], targets[1])
        except OSError:
            targets[0].unlink(missing_ok=True)
            raise
    except OSError as error:
        raise KdlabError(f"cannot write {targets[0]}: {error.strerror or error}") from None
    fsync_dir(targets[0].parent)


def parse_batch(batch: str | int | None) -> int | None:
    """None for a dynamic batch axis ("dynamic", the default), else the fixed batch size."""
    if batch is None or batch == "dynamic":
        return None
    try:
        size = int(batch)
    except (TypeError, ValueError):
        size = 0
    if size < 1 or isinstance(batch, bool):
        raise KdlabError(f"--batch must be 'dynamic' or a batch size of 1 or more, got {batch!r}")
    return size


def target_path(out: str | Path | None, run_path: Path, extension: str) -> Path:
    """Where the file goes: ``out``, ``out/model.<ext>`` if ``out`` is a folder (or ends with a slash), default
    ``RUN/export/model.<ext>``."""
    if out is None:
        return run_path / "export" / f"model.{extension}"
    text = str(out)
    path = Path(out)
    if path.is_dir() or text.endswith(("/", os.sep)):
        return path / f"model.{extension}"
    return path


def prepare_folder(target: Path) -> None:
    """Create the target's folder; an --out that cannot be written is refused before anything is exported."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise KdlabError(f"--out {target}: cannot create the folder {target.parent} "
                         f"({error.strerror or error})") from None
    if not os.access(target.parent, os.W_OK):
        raise KdlabError(f"--out {target}: the folder {target.parent} is not writable")


def _clean_up(staged: list[Path], created_folder: Path | None) -> None:
    """Remove what an export left that was not published: its temporaries, and the folder it created if empty."""
    for path in staged:
        try:
            path.unlink(missing_ok=True)
        except OSError:
            pass
    if created_folder is not None:
        try:
            created_folder.rmdir()  # only if empty
        except OSError:
            pass


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _staging(path: Path) -> Path:
    """A temporary name beside ``path`` that kdlab's clean-up of killed writes recognises."""
    return path.with_name(f".{path.name}.{os.getpid()}.unchecked{TEMP_SUFFIX}")


def fp32_copy(model: torch.nn.Module) -> torch.nn.Module:
    """The run's network as the reference: a CPU fp32 copy in eval mode and contiguous memory order."""
    network = copy.deepcopy(model).to("cpu").float()
    return network.to(memory_format=torch.contiguous_format).eval()


def exported_network(reference: torch.nn.Module) -> torch.nn.Module:
    """The network that is serialised: a copy of the reference, so nothing an exporter does to it can change the
    logits it is checked against."""
    return copy.deepcopy(reference).eval()


def example_batch(inputs, fixed_batch: int | None) -> torch.Tensor:
    """Real inputs to trace or export with: the fixed batch size, or two samples for a dynamic batch axis (a batch of
    one would let torch.export specialise the axis to 1)."""
    size = fixed_batch or 2
    rows = torch.from_numpy(inputs[:size])
    while rows.shape[0] < size:
        rows = torch.cat([rows, rows[: size - rows.shape[0]]])
    return rows.contiguous()


def export_options(run: LoadedRun, inputs, opset: int, fixed_batch: int | None) -> ExportOptions:
    return ExportOptions(opset=opset, batch=fixed_batch, model_name=run.recipe.model.name,
                         num_classes=int(run.summary["data"]["classes"]), in_channels=int(inputs.shape[1]),
                         model_options=dict(run.recipe.model.options or {}))


def run_check(spec, staged: Path, options: ExportOptions, inputs, reference, labels, split: str) -> dict:
    """Load the staged file as a user would and compare it with the reference; a file that does not load or run,
    or differs beyond the tolerance, is a one-line error (and the caller removes it)."""
    try:
        runner = spec.load(staged, options)
        if runner is None:
            return {"skipped": f"onnxruntime is not installed ({ONNX_INSTALL}): the file was written but not run"}
        exported = runner(inputs)
    except KdlabError as error:
        raise KdlabError(f"export check failed: the {spec.name} file does not load back with {spec.loader} "
                         f"({error}); nothing written") from None
    except Exception as error:  # noqa: BLE001 - whatever the runtime raises, the file is not deployable
        raise KdlabError(f"export check failed: the {spec.name} file does not load back with {spec.loader} "
                         f"({type(error).__name__}: {str(error)[:300]}); nothing written") from None
    check = compare(exported, reference, labels, split)
    check["runtime"] = spec.loader + (f" {onnxruntime_version()}" if spec.name == "onnx" else "")
    if not check["passed"]:
        raise KdlabError(f"export check failed: {failure_message(check)}; nothing written")
    return check


def base_record(run: LoadedRun, format: str, target: Path, data: bytes, made: dict, options: ExportOptions,
                inputs) -> dict:
    """Everything a user of the file needs without kdlab's run directory: what it is, where it came from, the
    inputs it expects (shape, normalisation, preprocessing) and the class names."""
    summary, data_record, recipe = run.summary, run.summary["data"], run.recipe
    audio = bool(data_record.get("features"))
    record = {
        "format": format,
        "file": target.name,
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        **({"opset": made.get("opset"), "batch": "dynamic" if options.batch is None else options.batch}
           if format == "onnx" else {}),
        "exporter": made.get("exporter"),
        **({"exporters_passed_over": made["passed_over"]} if made.get("passed_over") else {}),
        "source": {"run": str(run.path.resolve()), "checkpoint": run.checkpoint,
                   "weights": f"checkpoint/{WEIGHTS[run.checkpoint]}",
                   "method": summary.get("method"), "inference_head": summary.get("inference_head"),
                   "dataset": summary.get("dataset"), "epochs": summary.get("epochs_completed")},
        "model": {"name": options.model_name, "num_classes": options.num_classes, "in_channels": options.in_channels,
                  "options": options.model_options},
        "input": {"name": "input", "shape": ["batch", *map(int, inputs.shape[1:])], "dtype": "float32",
                  "layout": "NCHW", "channels": int(inputs.shape[1]), "kind": "log-mel" if audio else "image"},
        "normalisation": normalisation(recipe, audio),
        "preprocessing": preprocessing(recipe, data_record, audio),
        "output": {"name": "logits", "shape": ["batch", options.num_classes]},
        "class_names": list(data_record.get("class_names") or []),
        "versions": versions(format, made),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    return record


def normalisation(recipe, audio: bool) -> dict:
    mean, std = [float(v) for v in recipe.data.mean], [float(v) for v in recipe.data.std]
    if audio:
        rule = "(log-mel value - mean) / std, one value for every band and frame"
    else:
        rule = "(pixel / 255 - mean[c]) / std[c] for each channel c, pixels read as 0..255"
    return {"mean": mean, "std": std, "rule": rule}


def preprocessing(recipe, data_record: dict, audio: bool) -> dict:
    """What comes before the normalisation: the stored image size and the evaluation crop, or the waveform length
    and the log-mel features."""
    if audio:
        return {"waveform_samples": data_record["input_shape"][0], "pcm": "int16 / 32768",
                "features": data_record["features"]}
    view = eval_view(recipe.data, tuple(data_record["input_shape"]))
    return {"stored_image_shape_hwc": data_record["input_shape"], "eval_view": view.record() if view else None}


def versions(format: str, made: dict) -> dict:
    found = {"kdlab": __version__, "kdlab_commit": git_sha(), "torch": torch.__version__}
    if format == "onnx":
        found["onnx"] = made.get("onnx_version")
        found["onnxruntime"] = onnxruntime_version()
        try:
            import onnxscript

            found["onnxscript"] = getattr(onnxscript, "__version__", None)
        except ImportError:
            found["onnxscript"] = None
    if format == "safetensors":
        import safetensors

        found["safetensors"] = getattr(safetensors, "__version__", None)
    return found
