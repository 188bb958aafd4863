"""Recipes: YAML files validated into typed config objects.

A recipe names everything a run needs; unknown keys and out-of-range values are errors that name the key and the
file. ``resolve()`` fills every default, so the ``config.yaml`` a run writes is itself a complete recipe that
repeats the run. Relative data paths are resolved against the working directory and stored absolute.

Epochs are 0-based inside kdlab: a milestone ``m`` multiplies the learning rate by ``gamma`` from epoch ``m`` on,
i.e. after ``m`` completed epochs (RepDistiller's ``epoch > 150`` with 1-based epochs is milestone 150 here).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from kdlab.errors import KdlabError
from kdlab.fields import PositiveStd
from kdlab.tracking.settings import LoggingConfig
from kdlab.recipe_text import apply_overrides, check_plain, parse_override, raise_validation, read_yaml

__all__ = ["apply_overrides", "parse_override", "raise_validation", "read_yaml"]  # re-exported: callers import them from here


class Strict(BaseModel):
    """Base for every config section: unknown keys are errors, and so are infinite and NaN numbers."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class LabelNoiseConfig(Strict):
    kind: Literal["symmetric", "pair"] = Field(description="symmetric: a random other class; pair: (y + 1) mod K")
    rate: float = Field(ge=0, lt=1, description="fraction of training labels corrupted (exactly round(rate * N))")
    seed: int = Field(0, ge=0, description="noise seed, independent of the run seed: every run sees the same labels")
    clean_val: bool = Field(False, description="give the validation split carved from train its true labels back")


class LogMelConfig(Strict):
    """Log-mel spectrograms computed from the waveforms on the training device (:class:`kdlab.data.audio_features.LogMel`)."""

    n_fft: int = Field(512, ge=8, description="FFT size (samples); the window is a periodic Hann window of this length")
    hop_length: int | None = Field(None, ge=1, description="samples between frames; None: n_fft / 4")
    n_mels: int = Field(64, ge=1, description="mel bands")
    f_min: float = Field(0.0, ge=0, description="lowest band edge (Hz)")
    f_max: float | None = Field(None, gt=0, description="highest band edge (Hz); None: half the sample rate")
    mel_scale: Literal["slaney", "htk"] = "slaney"
    norm: Literal["slaney"] | None = Field("slaney", description="slaney: each filter has unit area (librosa's default)")
    log: Literal["log", "db"] = Field("log", description="log: ln(mel + 1e-6); db: 10 log10(max(mel, 1e-6))")


class AudioAugmentConfig(Strict):
    """On-device audio augmentation (:class:`kdlab.data.audio_augment.AudioAugment`), drawn per epoch from the seed."""

    time_shift: float = Field(0.0, ge=0, lt=1, description="largest shift, a fraction of the clip (zero-filled)")
    gain_db: float = Field(0.0, ge=0, description="gain uniform in [-gain_db, +gain_db] dB")
    freq_masks: int = Field(0, ge=0, description="SpecAugment frequency masks per sample")
    freq_mask_width: int = Field(0, ge=0, description="largest frequency-mask width (mel bands)")
    time_masks: int = Field(0, ge=0, description="SpecAugment time masks per sample")
    time_mask_width: int = Field(0, ge=0, description="largest time-mask width (frames)")


class RandomResizedCropConfig(Strict):
    """RandomResizedCrop on the device (:mod:`kdlab.data.resized_crop`); the flip is ``data.flip``."""

    size: int = Field(ge=1, description="output side in pixels (the model's input size)")
    scale: tuple[float, float] = Field((0.08, 1.0), description="range of the crop's share of the image area")
    ratio: tuple[float, float] = Field((3 / 4, 4 / 3), description="range of the crop's aspect ratio (w / h)")
    eval_crop: float | None = Field(None, gt=0, le=1, description="evaluation: the centre crop of this share of "
                                    "the shorter side, resized to size (None: size / stored side, at most 1: "
                                    "stored 256 gives ImageNet's centre 224)")
    stored_views: int | None = Field(None, ge=1, description="FKD: this many fixed boxes per image, one drawn per "
                                     "epoch, so teacher logits can be cached or stored per view (None: fresh "
                                     "boxes every epoch)")
    views_seed: int = Field(0, ge=0, description="seed of the stored boxes (independent of the run seed)")

    @model_validator(mode="after")
    def _ordered(self):
        for name in ("scale", "ratio"):
            low, high = getattr(self, name)
            if not 0 < low <= high:
                raise ValueError(f"{name} must be [low, high] with 0 < low <= high, got [{low}, {high}]")
        if self.scale[1] > 1:
            raise ValueError(f"scale must lie in (0, 1], got {list(self.scale)}")
        return self


class DataConfig(Strict):
    source: str = Field(description="a name in kdlab.data.SOURCES (an unknown name is refused with the list)")
    path: str | None = Field(None, description="where the files are (not needed for digits)")
    options: dict[str, Any] = Field(default_factory=dict, description="source-specific options, e.g. classes")
    val_size: float = Field(0, ge=0, description="validation samples carved from train: a count, or a fraction < 1")
    train_size: float = Field(0, ge=0, description="keep only this many training samples (a count, or a fraction "
                              "< 1; 0: all): a stratified subset drawn with a fixed seed, the same in every run, "
                              "taken before the validation split")
    crop_padding: int = Field(0, ge=0, description="random crop of the original size after padding each side")
    padding_mode: Literal["zero", "reflect"] = "zero"
    flip: bool = Field(False, description="random horizontal flip")
    random_resized_crop: RandomResizedCropConfig | None = Field(None, description="images: RandomResizedCrop "
                                                                "instead of the padded crop (ImageNet-style)")
    mean: list[float] | None = Field(None, description="per-channel mean on [0, 1] (audio: of the log-mel values); "
                                     "None computes it from train")
    std: PositiveStd = Field(None, description="per-channel std on [0, 1] (audio: of the log-mel values); "
                                    "None computes it from train")
    features: LogMelConfig | None = Field(None, description="audio only: the log-mel features (None: the defaults)")
    audio_augment: AudioAugmentConfig | None = Field(None, description="audio only: time shift, gain, SpecAugment")
    cache_dir: str | None = Field(None, description="decoded-data cache; default $KDLAB_CACHE_DIR or ~/.cache/kdlab")
    label_noise: LabelNoiseConfig | None = Field(None, description="corrupt a seeded fraction of training labels")
    residency: Literal["auto", "device", "stream"] = Field(
        "device", description="device: the decoded splits live on the training device; stream: image files are read "
        "and decoded batch by batch by CPU workers (same views, same results); auto: stream when the decoded splits "
        "exceed memory_fraction of the device's free memory")
    memory_fraction: float = Field(0.5, gt=0, le=1, description="residency auto: the share of free memory the "
                                   "decoded splits may take")
    stream_workers: int | None = Field(None, ge=0, le=64, description="residency stream: decoding processes "
                                       "(0: in the training process; None: one per core, at most 8)")

    @field_validator("path", "cache_dir")
    @classmethod
    def _absolute(cls, value: str | None) -> str | None:
        return None if value is None else os.path.normpath(Path(os.path.expandvars(value)).expanduser().absolute())

    @model_validator(mode="after")
    def _one_crop(self):
        if self.random_resized_crop is not None and self.crop_padding:
            raise ValueError("crop_padding and random_resized_crop are two crops; choose one")
        return self

    @field_validator("val_size", "train_size")
    @classmethod
    def _val_size(cls, value: float) -> float:
        if value >= 1 and value != int(value):
            raise ValueError("must be a whole count or a fraction below 1")
        return int(value) if value >= 1 else value


class ModelConfig(Strict):
    name: str = Field(description="a name from kdlab.models.names(), wrn_D_K, or timm:<name>, torchvision:<name>, "
                      "hf:<folder> (optional extras: pip install 'kdlab[timm]' ...)")
    pretrained: str | None = Field(None, description="weights to start from: a local safetensors / PyTorch file "
                                   "(hf: the save_pretrained folder); a head of another class count is replaced")
    num_classes: int | None = Field(None, ge=1, description="the model's classes; None: the data's (it must match "
                                    "them: kept as a check)")
    options: dict[str, Any] = Field(default_factory=dict, description="keyword arguments of the builder "
                                    "(zoo: airnet's widths, tta...; timm.create_model, torchvision, transformers)")
    download: bool = Field(False, description="allow fetching the library's pretrained weights from its hub "
                           "(offline by default)")

    @field_validator("pretrained")
    @classmethod
    def _absolute(cls, value: str | None) -> str | None:
        return None if value is None else os.path.normpath(Path(os.path.expandvars(value)).expanduser().absolute())

    @field_validator("name")
    @classmethod
    def _hf_folder(cls, value: str) -> str:
        # hf:<folder> is stored absolute, like every data path, so the run's config.yaml works from anywhere.
        prefix, _, rest = value.partition(":")
        if prefix == "hf" and rest and Path(os.path.expanduser(rest)).exists():
            return "hf:" + os.path.normpath(Path(os.path.expanduser(rest)).absolute())
        return value

    def build_args(self) -> dict:
        """The keyword arguments of :func:`kdlab.models.create` beyond name and classes."""
        return {"pretrained": self.pretrained, "options": self.options, "download": self.download}


class MethodConfig(BaseModel):
    """``name`` picks a registered method; the other keys are that method's parameters (checked by it)."""

    model_config = ConfigDict(extra="allow")
    name: str = "ce"


class TrainConfig(Strict):
    epochs: int = Field(ge=1)
    batch_size: int = Field(128, ge=1)
    eval_batch_size: int = Field(1000, ge=1)
    eval_every: int = Field(1, ge=1, description="evaluate val and test every this many epochs and after the last "
                            "(best-epoch selection sees the evaluated epochs only)")
    drop_last: bool = Field(False, description="drop the last incomplete training batch of each epoch")
    nonfinite: Literal["stop", "skip"] = Field("stop", description="a NaN or infinite loss term or gradient: stop "
                                               "the run (marked failed; the last good checkpoint is kept), or skip "
                                               "the step (no update) up to max_skipped_steps times")
    max_skipped_steps: int = Field(10, ge=0, description="with nonfinite: skip, the run stops at the next bad step")
    sync_bn: bool = Field(False, description="data-parallel runs (torchrun): BatchNorm statistics of the global batch "
                          "across all processes instead of each process's shard")


class OptimConfig(Strict):
    name: Literal["sgd"] = "sgd"
    lr: float = Field(0.1, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    nesterov: bool = False
    weight_decay: float = Field(5e-4, ge=0)
    no_decay_bn_bias: bool = Field(False, description="no weight decay on BN parameters and biases (ndim <= 1)")
    bias_lr_scale: float = Field(1.0, gt=0, description="lr multiplier for BN parameters and biases (ndim <= 1); their "
                                 "weight decay is divided by it, so the decay per step stays lr x weight_decay")

    @model_validator(mode="after")
    def _nesterov_needs_momentum(self):
        if self.nesterov and self.momentum == 0:
            raise ValueError("nesterov needs momentum > 0")
        return self


class ScheduleConfig(Strict):
    name: Literal["constant", "multistep", "cosine", "linear"] = "multistep"
    milestones: list[int] = Field(default_factory=list, description="0-based epochs where lr is multiplied by gamma")
    gamma: float = Field(0.1, gt=0)
    warmup_epochs: float = Field(0, ge=0, description="linear warm-up from lr/steps to lr over this many epochs")
    min_lr: float = Field(0, ge=0, description="cosine and linear: the lr at the end of the run")

    @field_validator("milestones")
    @classmethod
    def _increasing(cls, value: list[int]) -> list[int]:
        if any(m < 1 for m in value) or value != sorted(set(value)):
            raise ValueError("milestones must be positive and strictly increasing")
        return value


class RuntimeConfig(Strict):
    device: str = Field("auto", description="auto (cuda if available, else cpu), cpu, cuda, cuda:N")
    precision: Literal["auto", "bf16", "fp32"] = Field(
        "auto", description="auto: bf16 autocast on CUDA and on CPUs with native bf16, else fp32"
    )
    channels_last: Literal["auto", True, False] = "auto"
    compile: Literal["auto", True, False] = Field(
        "auto", description="torch.compile: true compiles the trained model and the teachers, false nothing; auto "
        "compiles the trained model on CUDA only (on CPU inductor's training graphs gained under 10% for a 45 s "
        "compile) and teachers (frozen inference graphs) for training splits of 20,000+ images")
    cuda_graphs: Literal["auto", True, False] = Field(
        "auto", description="replay the compiled trained model's steps as CUDA graphs (torch.compile mode "
        "reduce-overhead), cutting kernel-launch overhead; auto: on CUDA when the model is compiled and batches have "
        "256 or fewer images; true needs a CUDA device")
    threads: int | None = Field(None, ge=1, le=1024, description="CPU threads; None uses every core")
    progress: Literal["auto", True, False] = Field("auto", description="progress bar; auto: only on a terminal")
    teacher_cache: Literal["auto", "disk", "memory", "off", "stored"] = Field(
        "auto", description="teacher-logit cache per (image, view): disk (shared by runs), memory, off; auto: disk "
        "when the augmentation is discrete (crop x flip), else off; stored: top-k logits per stored view "
        "(data.random_resized_crop.stored_views, FKD), on disk")
    teacher_batch: int | None = Field(None, ge=1, description="run teachers on chunks of exactly this many inputs "
                                      "(zero-padded), so a view's logits do not depend on its batch: caches and "
                                      "stores then equal the live teacher bit for bit (None: as given)")
    teacher_top_k: int | None = Field(None, ge=1, description="teacher_cache stored: keep the k largest logits "
                                      "per view (None: all, exact)")

    @field_validator("teacher_cache", mode="before")
    @classmethod
    def _yaml_off(cls, value):
        # YAML 1.1 reads a bare `off` (in a recipe or as runtime.teacher_cache=off) as the boolean false.
        return "off" if value is False else value


class CheckpointConfig(Strict):
    every: int = Field(1, ge=1, description="write a resumable checkpoint every this many epochs (and at the end)")


class RobustnessConfig(Strict):
    """Robust accuracy of the final weights under a PGD attack (kdlab.adversarial), reported in the summary."""

    steps: int = Field(10, ge=1, description="PGD steps (PGD-10)")
    eps: float = Field(8 / 255, ge=0, description="L-infinity radius, in pixel units on [0, 1]")
    step_size: float = Field(2 / 255, gt=0, description="signed-gradient step, in pixel units")
    random_start: bool = Field(True, description="start from a uniform point of the eps-ball")
    clamp: bool = Field(True, description="keep pixels in [0, 1] (images; false for audio features)")
    split: Literal["test", "val"] = "test"
    max_samples: int | None = Field(None, ge=1, description="attack only the split's first this many samples")
    seed: int = Field(0, ge=0, description="seed of the random starts")


class Recipe(Strict):
    seed: int = Field(0, ge=0, lt=2**32, description="run seed: weights, batch order, augmentation, validation split")
    data: DataConfig
    model: ModelConfig
    method: MethodConfig = Field(default_factory=MethodConfig)
    train: TrainConfig
    optim: OptimConfig = Field(default_factory=OptimConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    robustness: RobustnessConfig | None = Field(None, description="PGD robust accuracy of the final model")
    logging: LoggingConfig = Field(default_factory=LoggingConfig, description="experiment trackers (TensorBoard, "
                                   "MLflow, W&B); never part of a run's identity")

    @model_validator(mode="after")
    def _stored_views(self):
        rrc = self.data.random_resized_crop
        if self.runtime.teacher_cache == "stored" and (rrc is None or rrc.stored_views is None):
            raise ValueError("runtime.teacher_cache: stored needs data.random_resized_crop.stored_views (a fixed "
                             "number of crop boxes per image)")
        if self.runtime.teacher_top_k is not None and self.runtime.teacher_cache != "stored":
            raise ValueError("runtime.teacher_top_k applies to runtime.teacher_cache: stored only")
        if self.robustness is not None and self.robustness.split == "val" and not self.data.val_size:
            raise ValueError("robustness.split is val, and data.val_size is 0 (the run has no validation split)")
        return self

    def to_dict(self) -> dict:
        """The recipe as plain data, without the :data:`LATER_FIELDS` that hold their neutral value: stage keys
        hash this dict, so runs recorded before a field existed keep their keys and studies keep reusing them."""
        record = self.model_dump(mode="json")
        for path, neutral in LATER_FIELDS.items():  # a top-level section, or (section, field)
            parent = record if len(path) == 1 else record[path[0]]
            if path[-1] in parent and parent[path[-1]] == neutral:
                del parent[path[-1]]
        return record


LATER_FIELDS = {("robustness",): None, ("optim", "bias_lr_scale"): 1.0,
                ("logging",): LoggingConfig().model_dump(mode="json")}


def load_recipe(path: str | Path | None = None, overrides: list[str] = (), raw: dict | None = None) -> Recipe:
    """Read, override and validate a recipe; method parameters are checked by the method itself.

    The returned recipe is fully resolved: every default filled in, including the method's parameters.
    """
    where = str(path) if path is not None else "recipe"
    raw = apply_overrides(dict(raw if raw is not None else read_yaml(path)), list(overrides))
    check_plain(where, raw)
    try:
        recipe = Recipe.model_validate(raw)
    except ValidationError as error:
        raise_validation(where, error)
    except RecursionError:
        raise KdlabError(f"{where}: the recipe is nested too deeply") from None
    from kdlab import methods, models

    models.check_name(recipe.model.name, where, recipe.model.download)
    method_cls = methods.get(recipe.method.name, where=where)
    try:
        params = method_cls.Params.model_validate(recipe.method.model_extra or {})
    except ValidationError as error:
        raise_validation(where, error, prefix=("method",))
    for key, value in params.model_dump().items():  # as Strict's allow_inf_nan=False does for the sections
        if isinstance(value, float) and not math.isfinite(value):
            raise KdlabError(f"{where}: method.{key}: Input should be a finite number (got {value!r})")
    recipe.method = MethodConfig(name=recipe.method.name, **params.model_dump(mode="json"))
    return recipe


def method_params(recipe: Recipe):
    """The validated parameter object of the recipe's method."""
    from kdlab import methods

    return methods.get(recipe.method.name).Params.model_validate(recipe.method.model_extra or {})


def dump_recipe(recipe: Recipe) -> str:
    return yaml.safe_dump(recipe.to_dict(), sort_keys=False)
