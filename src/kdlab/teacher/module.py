"""The ``Teacher``: one frozen network that gives soft targets, and everything it does in a training step.

A teacher owns, in one place: its network (eval mode, no gradients, left out of the student's checkpoints), the
re-normalisation of the student's inputs to the statistics it was trained with (:class:`Renormalise`), its
compilation as a frozen inference graph (:class:`kdlab.teacher.compiled.CompiledInference`), and its logit cache per
(training image, augmentation view) (:class:`kdlab.teacher.cache.TeacherLogitCache`). A method calls it like a
function, ``teacher(inputs, keys)``, and gets z^t as a constant for the student's loss; whether the logits were
computed or looked up is the teacher's business.

Methods never build teachers: they call ``context.load_teacher(spec, checkpoint)`` (:class:`kdlab.methods.MethodContext`),
which the engine fills with :class:`kdlab.train.teachers.TeacherFactory`, and which a test or a user's own loop can
fill with any callable returning a ``Teacher`` around an in-memory network. (The same idea as timm's
``DistillationTeacher``, designed for kdlab's run directories, caches and compiled graphs.)

Feature taps (named intermediate activations, for feature-level distillation) will live here too; today a teacher
gives logits only.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class Renormalise(nn.Module):
    """Feeds a network inputs prepared the way it was trained: x_t = x_s * std_s / std_t + (mean_s - mean_t) / std_t,
    for inputs x_s normalised with the student's per-channel (mean_s, std_s).

    With ``size`` (H, W) the student's inputs are first resized to the teacher's input size with ``interpolation``
    (antialiased; resizing commutes with the per-channel affine map, so this is the teacher's own resize of the
    student's crop), and a one-channel input is repeated for a three-channel teacher."""

    def __init__(self, network: nn.Module, student_mean, student_std, teacher_mean, teacher_std, *,
                 size: tuple[int, int] | None = None, interpolation: str = "bilinear"):
        super().__init__()
        ms, ss, mt, st = (torch.tensor(v, dtype=torch.float32).view(1, -1, 1, 1)
                          for v in (student_mean, student_std, teacher_mean, teacher_std))
        self.network = network
        self.size = None if size is None else tuple(int(s) for s in size)
        self.interpolation = interpolation
        self.register_buffer("scale", ss / st)
        self.register_buffer("shift", (ms - mt) / st)

    def forward(self, x: torch.Tensor, **kwargs):
        if self.size is not None and tuple(x.shape[-2:]) != self.size:
            smooth = self.interpolation != "nearest"
            x = F.interpolate(x, size=self.size, mode=self.interpolation, antialias=smooth,
                              **({"align_corners": False} if smooth else {}))
        if x.shape[1] == 1 and self.scale.shape[1] > 1:
            x = x.expand(-1, self.scale.shape[1], -1, -1)
        return self.network(x * self.scale.to(x.dtype) + self.shift.to(x.dtype), **kwargs)


class SelectClasses(nn.Module):
    """The logits of ``network`` for the student's classes, in the student's order: z[:, index]."""

    def __init__(self, network: nn.Module, index: list[int]):
        super().__init__()
        self.network = network
        self.register_buffer("index", torch.tensor(index, dtype=torch.long), persistent=False)

    def forward(self, x: torch.Tensor):
        return self.network(x).index_select(1, self.index)


class FixedBatch(nn.Module):
    """``network`` run on chunks of exactly ``size`` inputs (the last one zero-padded), so the logits of an input do
    not depend on how many others share its batch: backends pick kernels by batch size (oneDNN on this CPU gives a
    batch of 64 other low bits than a batch of 5), and with one fixed shape a teacher-logit cache or store filled in
    one batching equals the teacher run live in another, bit for bit (``runtime.teacher_batch``; tested on CPU).
    Eval-mode networks only: padding rows never mix with real ones."""

    def __init__(self, network: nn.Module, size: int):
        super().__init__()
        self.network, self.size = network, int(size)

    @property
    def state(self) -> str:
        return getattr(self.network, "state", "eager")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = []
        for start in range(0, x.shape[0], self.size):
            part = x[start : start + self.size]
            short = self.size - part.shape[0]
            if short:
                part = torch.cat([part, part.new_zeros(short, *part.shape[1:])])
            outputs.append(self.network(part)[: self.size - short])
        return torch.cat(outputs) if len(outputs) != 1 else outputs[0]


def needs_renormalising(student_mean, student_std, teacher_mean, teacher_std) -> bool:
    """Whether the student's input statistics are given and differ from the teacher's."""
    if student_mean is None or student_std is None:
        return False
    return list(student_mean) != list(teacher_mean) or list(student_std) != list(teacher_std)


class Teacher(nn.Module):
    """A frozen ``network`` for distillation: ``teacher(inputs, keys=None)`` -> z^t (N x K), a constant tensor.

    * ``renormalise``: ``(student_mean, student_std, teacher_mean, teacher_std)``; inputs normalised with the
      student's statistics are mapped to the teacher's first (:class:`Renormalise`), when they differ.
    * ``resize``: the teacher's input size (H, W), when it differs from the student's (``interpolation``: its
      resize filter); the student's crop is resized to it before the re-normalisation.
    * ``class_index``: for each student class, the teacher output that gives it (:class:`SelectClasses`), for a
      teacher whose classes come in another order or include others.
    * ``compile``: run network (+ re-normalisation) as a frozen inference graph (BatchNorm folded), eager when
      compiling fails.
    * ``cache``: a :class:`~kdlab.teacher.cache.TeacherLogitCache`; with ``keys`` = (sample, view) of each input,
      cached logits are looked up and only the misses run the network. Without keys the network always runs.

    The logits are computed under inference mode and returned as an ordinary tensor (autograd may use it as a
    constant). ``name`` is how the run's summary names this teacher.
    """

    def __init__(self, network: nn.Module, *, renormalise: tuple | None = None, compile: bool = False,
                 cache=None, name: str = "teacher", resize: tuple[int, int] | None = None,
                 interpolation: str = "bilinear", class_index: list[int] | None = None, record: dict | None = None):
        super().__init__()
        graph = network if class_index is None else SelectClasses(network, class_index)
        if resize is not None:
            student_mean, student_std, teacher_mean, teacher_std = renormalise
            graph = Renormalise(graph, student_mean, student_std, teacher_mean, teacher_std, size=resize,
                                interpolation=interpolation)
        elif renormalise is not None and needs_renormalising(*renormalise):
            graph = Renormalise(graph, *renormalise)
        object.__setattr__(self, "_eager", graph)  # network + class selection + re-normalisation, never compiled
        if compile:
            from kdlab.teacher.compiled import CompiledInference

            graph = CompiledInference(graph)
        self.graph = graph
        object.__setattr__(self, "_network", network)  # the plain network, also reachable through ``graph``
        self.cache = cache
        self.name = name
        self.record = record or {}  # what the run's summary says of this teacher beyond its name (library, views)
        self.eval()
        self.requires_grad_(False)

    @property
    def network(self) -> nn.Module:
        """The teacher's own network (not re-normalised, not compiled): what its run trained."""
        return self._network

    @property
    def reference_graph(self) -> nn.Module:
        """The network with its class selection and re-normalisation, never compiled: what ``graph`` computes,
        for measuring how far the compiled (and lower-precision) teacher strays from it."""
        return self._eager

    @property
    def state(self) -> str:
        """How the network runs: "eager", "compiled", "not called yet" or "eager (compile failed: ...)"."""
        return getattr(self.graph, "state", "eager")

    def forward(self, inputs: torch.Tensor, keys: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        with torch.inference_mode():
            if self.cache is not None and keys is not None:
                logits = self.cache.logits(self.graph, inputs, keys)
            else:
                logits = self.graph(inputs)
        return logits.clone()  # an ordinary tensor again, so autograd may use it as a constant

    def tap(self, names):
        """:class:`~kdlab.models.taps.FeatureTaps` on the teacher's own network, for :meth:`features`."""
        from kdlab.models.taps import FeatureTaps

        return FeatureTaps(self.network, names)

    def features(self, inputs: torch.Tensor, taps) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(z^t, the features of ``taps``) of ``inputs`` from one eager pass of the network (features need its
        modules, so neither the compiled graph nor the logit cache serves them); constants for the student's loss."""
        with torch.inference_mode():
            logits = self._eager(inputs)
            features = taps.take()
        return logits.clone(), [f.clone() for f in features]

    def train(self, mode: bool = True):
        return super().train(False)  # frozen: always in eval mode

    def cache_record(self) -> dict | None:
        """The cache's mode, key, hits, misses and coverage for the run's summary, or None without a cache."""
        return None if self.cache is None else self.cache.record()
