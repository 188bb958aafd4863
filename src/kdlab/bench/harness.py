"""``kdlab bench``: kdlab's training engine against the standard CIFAR KD loop, alternating, in one process.

For each configuration (student only; KD from a teacher) the same student (and teacher) architectures train on the
same data with the same recipe (batch 64, SGD lr 0.05 momentum 0.9 wd 5e-4, crop with padding 4 + flip, KD 0.1 CE +
0.9 tau^2 KL at tau 4) two ways:

* the reference, ``kdlab.bench.reference_loop``: a torch DataLoader over PIL images with per-sample transforms in
  worker processes, fp32 models (RepDistiller's loop);
* kdlab: the real engine (:func:`kdlab.train.engine.prepare` and :func:`kdlab.train.engine.train_epoch`), with
  whatever runtime it picks (bf16 autocast + channels_last on CPUs with native bf16). A KD configuration is timed
  with the teacher run on every batch (``runtime.teacher_cache: off``) and with a warm teacher-logit cache
  (``memory``, pre-filled by one untimed pass over exactly the timed steps' (image, view) entries, so every lookup
  hits).

Each contender first runs one untimed warm-up block; then, for ``rounds`` rounds, a timed block of ``steps`` steps of
the reference, then one of each kdlab mode. Reported: median images/s over rounds, each round's kdlab / reference
ratio with their median (the headline), range and spread, and the machine's kind and state
(:mod:`kdlab.bench.machine_state`: a busy machine flatters kdlab and is said so). Teachers
are completed kdlab run directories with random (untrained) weights in a temporary folder: speed does not depend
on the weights.
"""

from __future__ import annotations

import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

import kdlab
from kdlab import models
from kdlab.data import Dataset
from kdlab.io import atomic_write_json
from kdlab.store.checkpoint import load_tensors
from kdlab.version import cpu_features, git_sha, machine_description
from kdlab.bench import reference_loop
from kdlab.bench.machine_state import LoadProbe, assess, machine_kind, ratio_spread
from kdlab.bench.configurations import EPOCH_CHECK, TEACHER_NOTE, Configuration, Settings, make_recipe, untrained_teacher_run




# ------------------------------------------------------------------------------------------------- timing


@dataclass
class Contender:
    """One way of training, timed block by block."""

    key: str
    label: str
    run_block: Callable[[int], tuple[int, float, float | None]]  # steps -> (images, seconds, mean loss)
    blocks: list[dict] = field(default_factory=list)
    warmup: dict | None = None


def _kdlab_contender(key: str, label: str, prepared, fixed_epoch: bool) -> Contender:
    from kdlab.train.engine import make_optimizer, train_epoch

    optimizer = make_optimizer(prepared.method, prepared.recipe)
    state = {"epoch": 0}

    def run_block(steps: int):
        epoch = 0 if fixed_epoch else state["epoch"]
        state["epoch"] += 1
        start = time.perf_counter()
        terms, _, seen = train_epoch(prepared, optimizer, epoch, max_steps=steps)
        seconds = time.perf_counter() - start
        return seen, seconds, sum(terms.values())

    return Contender(key, label, run_block)


def _reference_contender(loop) -> Contender:
    def run_block(steps: int):
        seen, seconds = loop.run(steps)
        return seen, seconds, loop.last_loss

    return Contender("reference", "reference (DataLoader + PIL transforms, fp32)", run_block)


def _block_record(images: int, seconds: float, loss) -> dict:
    return {"images": images, "seconds": round(seconds, 6), "images_per_second": images / seconds,
            "loss": None if loss is None else float(loss)}


def time_alternating(contenders: list[Contender], settings: Settings, log: Callable[[str], None] = print) -> None:
    """One untimed warm-up block per contender, then ``rounds`` rounds of one timed block each, in order."""
    for contender in contenders:
        if contender.warmup is None and settings.warmup > 0:  # a contender may have been warmed up already
            contender.warmup = _block_record(*contender.run_block(settings.warmup))
    for r in range(settings.rounds):
        for contender in contenders:
            record = {"round": r + 1, **_block_record(*contender.run_block(settings.steps))}
            contender.blocks.append(record)
            log(f"  round {r + 1}/{settings.rounds}  {contender.label:<44} {record['images_per_second']:8.1f} img/s")


def _median(contender: Contender) -> float:
    return statistics.median(block["images_per_second"] for block in contender.blocks)


# ------------------------------------------------------------------------------------------------- the benchmark


def run_bench(configurations: list[Configuration], settings: Settings, *, data: dict, name: str,
              command: str | list[str], out: str | Path | None = None, log: Callable[[str], None] = print,
              epoch_configuration: Configuration = EPOCH_CHECK) -> dict:
    """Time every configuration, alternating the reference and kdlab; return (and with ``out``, write atomically)
    the record. ``data`` is a recipe data section without augmentation (e.g. source folder, path, val_size 5000)."""
    from kdlab.train.engine import prepare

    reference = reference_loop
    probe = LoadProbe().start()
    torch.set_num_threads(settings.threads)
    started = time.perf_counter()

    # Data statistics as the student recipe computes them; every recipe, teacher and the reference then use these.
    first = prepare(make_recipe(data, configurations[0].student, settings))
    data = {**data, "mean": first.recipe.data.mean, "std": first.recipe.data.std}
    dataset = first.dataset
    runtime = first.runtime.describe()
    del first
    channels = dataset.train.images.shape[-1]
    classes = len(dataset.classes)
    log(f"kdlab bench: {dataset.name}, {len(dataset.train.labels)} training images, batch {settings.batch_size}, "
        f"{settings.rounds} rounds x {settings.steps} steps (warm-up {settings.warmup}), {settings.workers} "
        f"DataLoader workers, {settings.threads} threads; kdlab runtime {runtime['precision']}"
        f"{' + channels_last' if runtime['channels_last'] else ''}; {TEACHER_NOTE}")
    transform_ms = _reference_transform_cost(reference, dataset, data, settings)

    results = []
    with tempfile.TemporaryDirectory(prefix="kdlab-bench-") as scratch:
        for configuration in configurations:
            log(f"{configuration.label}:")
            results.append(_run_configuration(configuration, settings, data, dataset, channels, classes, reference,
                                              Path(scratch), log))
        epoch_check = None
        if settings.epoch_rounds:
            log(f"whole epochs, {epoch_configuration.label}, warm teacher cache vs student only:")
            epoch_check = _epoch_check(epoch_configuration, settings, data, dataset, Path(scratch), log)

    load = probe.stop()
    spreads = {f"{result['name']} {key}": run["ratio_spread"] for result in results
               for key, run in result["runs"].items() if key != "reference"}
    state = {**assess(load, spreads), **load}
    log("machine: " + ("BUSY, the ratios are not comparable: " + "; ".join(state["reasons"]) if state["busy"]
                       else f"quiet (other processes {_percent(load.get('other_cpu_share'))} of the CPU time)"))
    record = {
        "name": name,
        "command": command if isinstance(command, str) else " ".join(command),
        "argv": list(sys.argv),
        "machine": machine_description(torch.device("cpu")),
        "machine_kind": machine_kind(),
        "cpu_features": cpu_features(),
        "torch_cpu_capability": _cpu_capability(),
        "machine_state": state,
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "kdlab_version": kdlab.__version__,
        "git_sha": git_sha(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "data": {"source": data["source"], "path": data.get("path"), "dataset": dataset.name,
                 "train_images": len(dataset.train.labels), "val_size": data.get("val_size"),
                 "mean": data["mean"], "std": data["std"]},
        "kdlab_runtime": runtime,
        "reference_runtime": {"precision": "fp32", "channels_last": False, "compile": False,
                              "loader": "torch DataLoader, per-sample PIL transforms, persistent workers",
                              "transform_ms_per_batch_one_process": transform_ms},
        "settings": asdict(settings),
        "teacher_weights": TEACHER_NOTE,
        "method": "images/s = images trained / wall seconds of a block of steps (data loading included). Reference "
                  "and kdlab blocks alternate in one process after one untimed warm-up block each; a round is one "
                  "block of each. ratio = median over rounds of (kdlab images/s / reference images/s of the same "
                  "round), with every round's ratio and their spread; ratio_of_medians is kdlab's median images/s "
                  "over the reference's.",
        "configurations": results,
        "epoch_check": epoch_check,
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    if out is not None:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out, record)
    return record


def _percent(share: float | None) -> str:
    return "unknown" if share is None else f"{share:.0%}"


def _cpu_capability() -> str | None:
    """torch's dispatch level for vectorised CPU kernels (e.g. AVX512), where this torch reports it."""
    try:
        return torch.backends.cpu.get_cpu_capability()
    except AttributeError:
        return None


def _reference_transform_cost(reference, dataset: Dataset, data: dict, settings: Settings) -> float:
    """Milliseconds of per-sample transform work for one batch in this process (what each worker does per batch)."""
    torch.manual_seed(settings.seed)
    samples = reference.PilCropFlipDataset(dataset.train.images, dataset.train.labels, data["mean"], data["std"],
                                           padding=settings.crop_padding, flip=settings.flip)
    n = min(4 * settings.batch_size, len(samples))
    start = time.perf_counter()
    for i in range(n):
        samples[i]
    return round((time.perf_counter() - start) / n * settings.batch_size * 1000, 3)


def _run_configuration(configuration: Configuration, settings: Settings, data: dict, dataset: Dataset, channels: int,
                       classes: int, reference, scratch: Path, log) -> dict:
    from kdlab.train.engine import prepare

    teacher_dir = None
    teacher_net = None
    if configuration.teacher is not None:
        teacher_dir = untrained_teacher_run(configuration.teacher, dataset, scratch / configuration.name, data["mean"],
                                            data["std"], data=data, seed=settings.seed)
        teacher_net = models.create(configuration.teacher, num_classes=classes, in_channels=channels)
        teacher_net.load_state_dict(load_tensors(teacher_dir / "checkpoint" / "model.safetensors"))

    torch.manual_seed(settings.seed)
    student_net = models.create(configuration.student, num_classes=classes, in_channels=channels)
    loop = reference.ReferenceLoop(
        dataset.train.images, dataset.train.labels, student_net, teacher_net, batch_size=settings.batch_size,
        workers=settings.workers, seed=settings.seed, mean=data["mean"], std=data["std"],
        padding=settings.crop_padding, flip=settings.flip, lr=settings.lr, momentum=settings.momentum,
        weight_decay=settings.weight_decay, gamma=1 - settings.alpha, alpha=settings.alpha, tau=settings.tau)
    contenders = [_reference_contender(loop)]
    cached = None
    try:
        if teacher_dir is None:
            prepared = prepare(make_recipe(data, configuration.student, settings))
            contenders.append(_kdlab_contender("kdlab", "kdlab", prepared, fixed_epoch=False))
        else:
            prepared = prepare(make_recipe(data, configuration.student, settings, teacher_dir=teacher_dir,
                                           teacher_cache="off"))
            contenders.append(_kdlab_contender("kdlab", "kdlab, teacher on the fly", prepared, fixed_epoch=False))
            cached = prepare(make_recipe(data, configuration.student, settings, teacher_dir=teacher_dir,
                                         teacher_cache="memory"))
            warm = _kdlab_contender("kdlab_cached", "kdlab, warm teacher cache", cached, fixed_epoch=True)
            # The warm-up of this contender fills the cache: epoch 0's first `steps` steps, exactly what each timed
            # block then trains again (every timed block runs epoch 0 from its start), so every lookup hits.
            warm.warmup = _block_record(*warm.run_block(settings.steps))
            fill = {"hits": cached.teachers.primary.cache.hits, "misses": cached.teachers.primary.cache.misses}
            contenders.append(warm)
        time_alternating(contenders, settings, log)
    finally:
        loop.close()

    runs = {c.key: {"label": c.label, "warmup": c.warmup, "blocks": c.blocks,
                    "median_images_per_second": _median(c)} for c in contenders}
    ref = runs["reference"]["median_images_per_second"]
    for key, run in runs.items():
        if key != "reference":
            ratios = [mine["images_per_second"] / theirs["images_per_second"]
                      for mine, theirs in zip(run["blocks"], runs["reference"]["blocks"])]
            run["round_ratios"] = [round(r, 4) for r in ratios]
            run["ratio_to_reference"] = statistics.median(ratios)
            run["ratio_range"] = [round(min(ratios), 4), round(max(ratios), 4)]
            run["ratio_spread"] = round(ratio_spread(ratios), 4)
            run["ratio_of_medians"] = run["median_images_per_second"] / ref
    result = {"name": configuration.name, "label": configuration.label, "student": configuration.student,
              "teacher": configuration.teacher, "runs": runs,
              "kdlab_teacher": prepared.teachers.primary.state if prepared.teachers.primary else None,
              "reference_epochs_started": loop.epochs_started}
    if cached is not None:
        cache = cached.teachers.primary.cache
        result["teacher_cache"] = {"fill_pass": fill,
                                   "timed_blocks": {"hits": cache.hits - fill["hits"],
                                                    "misses": cache.misses - fill["misses"]},
                                   "coverage": cache.coverage}
    for key, run in runs.items():
        if key != "reference":
            low, high = run["ratio_range"]
            log(f"  -> {run['label']}: {run['median_images_per_second']:.1f} img/s vs reference {ref:.1f} img/s: "
                f"{run['ratio_to_reference']:.2f}x (median of rounds; range {low:.2f}-{high:.2f}x)")
    return result


def _epoch_check(configuration: Configuration, settings: Settings, data: dict, dataset: Dataset, scratch: Path,
                 log) -> dict:
    """Whole training epochs (epoch 0's order and views) of the student alone and of KD with a warm teacher cache,
    alternating ``settings.epoch_rounds`` times after a warm-up block each; the cache is filled beforehand with
    exactly epoch 0's (image, view) entries, so the timed KD epochs never run the teacher."""
    from kdlab.train.engine import make_optimizer, prepare, train_epoch

    teacher_dir = untrained_teacher_run(configuration.teacher, dataset, scratch / f"epoch-{configuration.name}",
                                        data["mean"], data["std"], data=data, seed=settings.seed)
    student = prepare(make_recipe(data, configuration.student, settings))
    kd = prepare(make_recipe(data, configuration.student, settings, teacher_dir=teacher_dir, teacher_cache="memory"))
    teacher = kd.teachers.primary
    cache = teacher.cache
    start = time.perf_counter()
    with torch.inference_mode(), kd.runtime.autocast():
        for inputs, _, keys in kd.train_loader.batches(0, with_keys=True):
            teacher(inputs, keys)
    fill_seconds = time.perf_counter() - start
    filled = {"hits": cache.hits, "misses": cache.misses}
    contenders = {"student": (student, make_optimizer(student.method, student.recipe)),
                  "kd_warm_cache": (kd, make_optimizer(kd.method, kd.recipe))}
    for prepared, optimizer in contenders.values():
        if settings.warmup:
            train_epoch(prepared, optimizer, 0, max_steps=settings.warmup)
    seconds: dict[str, list[float]] = {name: [] for name in contenders}
    images = 0
    for r in range(settings.epoch_rounds):
        for name, (prepared, optimizer) in contenders.items():
            start = time.perf_counter()
            _, _, images = train_epoch(prepared, optimizer, 0)
            seconds[name].append(round(time.perf_counter() - start, 3))
            log(f"  epoch round {r + 1}/{settings.epoch_rounds}  {name:<14} {seconds[name][-1]:7.1f} s "
                f"({images / seconds[name][-1]:.1f} img/s)")
    median = {name: statistics.median(values) for name, values in seconds.items()}
    ratio = median["kd_warm_cache"] / median["student"]
    log(f"  -> KD {configuration.teacher} -> {configuration.student} epoch with a warm teacher cache: "
        f"{ratio:.3f}x a student-only epoch ({median['kd_warm_cache']:.1f} s vs {median['student']:.1f} s)")
    return {"configuration": configuration.name, "images_per_epoch": images, "seconds": seconds,
            "median_seconds": median, "kd_over_student": ratio, "cache_fill_seconds": round(fill_seconds, 3),
            "cache_fill": filled, "timed_cache": {"hits": cache.hits - filled["hits"],
                                                  "misses": cache.misses - filled["misses"]},
            "teacher": teacher.state}
