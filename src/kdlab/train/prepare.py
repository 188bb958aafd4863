"""Everything a run needs, built and checked before anything is written.

:func:`prepare` does all that can fail on the user's input (device, data, model, method, teachers) and writes
nothing but the data cache; :mod:`kdlab.train.engine` then runs the loop on what it returns.
"""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass

import torch

from kdlab import methods, models
from kdlab.config import Recipe, method_params
from kdlab.data import Dataset
from kdlab.train.inputs import (features_record, fill_statistics, log_mel, make_loader, model_input_shape, probe_inputs,
                               recipe_dataset)
from kdlab.data.loader import DeviceLoader
from kdlab.errors import KdlabError
from kdlab.train.teachers import TeacherFactory
from kdlab.train.distributed import Distributed, from_environment, synchronise_batchnorm
from kdlab.train.runtime import Runtime, compile_mode, resolve_runtime


@dataclass
class Prepared:
    recipe: Recipe
    runtime: Runtime
    dataset: Dataset
    method: methods.Method
    train_loader: DeviceLoader
    eval_loaders: dict[str, DeviceLoader]
    distributed: Distributed | None = None  # data-parallel under torchrun
    trainer: torch.nn.Module | None = None  # what a training step calls: the method, or DDP(method)
    teachers: TeacherFactory | None = None  # the teachers the method asked for, with their caches

    @property
    def model(self) -> torch.nn.Module:
        return self.method.model

    @property
    def is_main(self) -> bool:
        """Whether this process writes the run directory (always, but for ranks > 0 of a data-parallel run)."""
        return self.distributed is None or self.distributed.is_main


def prepare(recipe: Recipe) -> Prepared:
    """Validate and build everything a run needs; writes nothing but the data cache. Fills data.mean/std (and, for
    audio, data.features)."""
    runtime = resolve_runtime(recipe.runtime)
    distributed = from_environment(runtime.device.type)
    if distributed is not None and runtime.device.type == "cuda":
        runtime = dataclasses.replace(runtime, device=torch.device("cuda", distributed.local_rank))
    if distributed is not None and recipe.train.batch_size < distributed.world:
        raise KdlabError(f"train.batch_size {recipe.train.batch_size} is smaller than the {distributed.world} "
                         f"processes: the global batch is split across them")
    data = recipe.data
    dataset = recipe_dataset(data, recipe.seed, runtime.device)
    fill_statistics(data, dataset, runtime.device, distributed)
    features = log_mel(data, dataset, runtime.device)

    def loader(split, train: bool) -> DeviceLoader:
        return make_loader(split, data, dataset, runtime.device,
                           recipe.train.batch_size if train else recipe.train.eval_batch_size, train=train,
                           seed=recipe.seed, drop_last=recipe.train.drop_last, channels_last=runtime.channels_last,
                           features=features, distributed=distributed)

    eval_loaders = {"test": loader(dataset.test, False)}
    if dataset.val is not None:
        eval_loaders = {"val": loader(dataset.val, False), **eval_loaders}
    train_loader = loader(dataset.train, True)
    input_shape = model_input_shape(data, dataset)

    torch.manual_seed(recipe.seed)
    if recipe.model.num_classes not in (None, len(dataset.classes)):
        raise KdlabError(f"model.num_classes is {recipe.model.num_classes}, but {dataset.name} has "
                         f"{len(dataset.classes)} classes (leave it out to take the data's)")
    model = models.create(recipe.model.name, num_classes=len(dataset.classes), in_channels=input_shape[0],
                          **recipe.model.build_args())
    _check_model_fits(model, recipe.model.name, dataset, probe_inputs(eval_loaders["test"]))
    if callable(getattr(model, "fit_to_data", None)):  # a data-dependent init (airnet's whitening filters)
        model.fit_to_data(_first_inputs(loader(dataset.train, False), FIT_SAMPLES))
    teachers = TeacherFactory(recipe, runtime, dataset, train_loader, distributed)
    context = methods.MethodContext(dataset, data.mean, data.std, recipe.model.name, input_shape=input_shape,
                                    features=features_record(data, dataset), load_teacher=teachers,
                                    epochs=recipe.train.epochs, has_validation="val" in eval_loaders)
    method = methods.get(recipe.method.name)(model, method_params(recipe), context)
    method.to(runtime.device)
    if runtime.channels_last:
        method.to(memory_format=torch.channels_last)
    mode = compile_mode(runtime, recipe.runtime.cuda_graphs, recipe.train.batch_size)
    if runtime.compile:
        method.model.compile(mode=mode)
    trainer = method
    if distributed is not None:
        if recipe.train.sync_bn:
            synchronise_batchnorm(method, runtime.device.type)
        from torch.nn.parallel import DistributedDataParallel

        # Synchronised BatchNorm keeps every rank's running statistics equal; otherwise rank 0's are broadcast.
        sync_buffers = not recipe.train.sync_bn
        newer = "forward_sync_buffers" in inspect.signature(DistributedDataParallel.__init__).parameters
        trainer = DistributedDataParallel(
            method, device_ids=[distributed.local_rank] if runtime.device.type == "cuda" else None,
            **({"forward_sync_buffers": sync_buffers} if newer else {"broadcast_buffers": sync_buffers}))
    return Prepared(recipe, runtime, dataset, method, train_loader, eval_loaders, distributed, trainer, teachers)


FIT_SAMPLES = 5000  # training inputs a model's data-dependent init sees


def _first_inputs(loader: DeviceLoader, count: int) -> torch.Tensor:
    """The first ``count`` inputs of ``loader`` (split order, no augmentation), as the model receives them."""
    chunks, seen = [], 0
    for inputs, _ in loader.batches(0):
        chunks.append(inputs)
        seen += len(inputs)
        if seen >= count:
            break
    return torch.cat(chunks)[:count]


def _check_model_fits(model: torch.nn.Module, name: str, dataset: Dataset, inputs: torch.Tensor) -> None:
    """One forward on two inputs, so a model that cannot take this data fails before any run starts."""
    model.eval()
    try:
        with torch.no_grad():
            logits = model(inputs[:2])
    except RuntimeError as error:
        if dataset.is_audio:
            what = f"{'x'.join(str(s) for s in inputs.shape[1:])} (CxFxT) log-mel inputs"
        else:
            what = f"{'x'.join(str(s) for s in dataset.train.images.shape[1:])} (HxWxC) images"
        reason = str(error).strip().splitlines()[0]
        raise KdlabError(f"model {name} cannot take the {what} of {dataset.name}: {reason}") from None
    finally:
        model.train()
    if tuple(logits.shape) != (2, len(dataset.classes)):
        raise KdlabError(f"model {name} gives outputs of shape {tuple(logits.shape)}, expected (2, {len(dataset.classes)})")


def make_optimizer(method: torch.nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    """SGD over the trainable parameters. With ``no_decay_bn_bias`` or a ``bias_lr_scale`` other than 1, the BN
    parameters and biases (ndim <= 1) form a group of their own: no weight decay, or lr x bias_lr_scale with the
    weight decay divided by it (the per-step decay lr x wd is unchanged; Keller Jordan's airbench scales BN biases'
    lr by 64 this way). A group's ``lr_scale`` multiplies the scheduled lr at every step (:mod:`kdlab.train.step`)."""
    config = recipe.optim
    trainable = [p for p in method.parameters() if p.requires_grad]
    scale = config.bias_lr_scale
    if config.no_decay_bn_bias or scale != 1:
        small_decay = 0.0 if config.no_decay_bn_bias else config.weight_decay / scale
        groups = [
            {"params": [p for p in trainable if p.ndim > 1], "weight_decay": config.weight_decay, "lr_scale": 1.0},
            {"params": [p for p in trainable if p.ndim <= 1], "weight_decay": small_decay, "lr_scale": scale},
        ]
    else:
        groups = [{"params": trainable, "weight_decay": config.weight_decay}]
    # torch's default step (per-parameter on the CPU). A fused step measured no faster here (benchmarks/PROFILE.md
    # section 4) and did not resume to bit-identical weights, so it is not used.
    return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov)
