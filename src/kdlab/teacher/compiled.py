"""torch.compile for frozen networks (teachers): inference graphs with the weights folded in as constants.

A teacher's weights never change during a run, so inductor may treat them as constants ("freezing"): it folds each
BatchNorm into the convolution before it, pre-packs the convolution weights for oneDNN and fuses the element-wise
tail (add, ReLU) into the kernels. On this project's CPU (2 Zen 4 cores, bf16 autocast, batch 64) that makes a
resnet56 forward about 1.7x faster than eager (52 ms vs 88 ms; `benchmarks/README.md`, "teacher forward"). It costs
a one-off compile (about 15 s for resnet56 here, seconds once inductor's on-disk cache holds it), so ``runtime.compile:
auto`` compiles teachers only when the run feeds them many images (see :func:`should_compile_frozen`).

The compiled graph's logits differ from eager ones by float rounding (BatchNorm folded into the weights), so a
teacher-logit cache records which of the two filled it (:func:`kdlab.teacher.cache.cache_key`). When compiling
fails (no C++ compiler, an unsupported platform), the wrapper says so once and runs the network eagerly.
"""

from __future__ import annotations

import warnings

import torch

# Training images from which ``compile: auto`` compiles teachers: one epoch of this many teacher forwards (about 20 s
# of eager resnet56 on 2 CPU cores) already outweighs the compile; smaller (test-sized) runs stay eager.
AUTO_MIN_TRAIN_IMAGES = 20_000


def should_compile_frozen(setting, train_images: int) -> bool:
    """``runtime.compile`` true or false decides; auto compiles frozen networks for training splits of at least
    :data:`AUTO_MIN_TRAIN_IMAGES` images (the same answer for every run on the same data, so runs and
    ``kdlab cache-teacher`` agree on the teacher-cache key)."""
    if setting == "auto":
        return train_images >= AUTO_MIN_TRAIN_IMAGES
    return bool(setting)


class CompiledInference(torch.nn.Module):
    """``network`` (frozen, eval mode) run through ``torch.compile`` with inductor's ``freezing``; eager when
    compiling fails. ``state`` is "compiled", "eager (compile failed: ...)" or "not called yet".

    One graph serves every call: it is compiled for the first call's batch size ``B`` and the channels_last layout;
    a larger input runs in chunks of ``B`` and a smaller one (a last batch, a teacher cache's misses) is zero-padded
    to ``B``. (Frozen graphs assert their input strides, and a dynamic-shape recompile of a frozen graph failed here
    on torch 2.13; in eval mode a sample's output does not depend on the rest of its batch.) Calls with keyword
    arguments (``return_features``) run eagerly.
    """

    def __init__(self, network: torch.nn.Module):
        super().__init__()
        self.network = network
        # Kept out of the module tree: it wraps ``network`` itself, whose weights must appear once.
        object.__setattr__(self, "_compiled", torch.compile(network, dynamic=False))
        self.state = "not called yet"
        self.batch_size: int | None = None

    def forward(self, inputs: torch.Tensor, **kwargs):
        if kwargs or self.state.startswith("eager") or inputs.dim() != 4:
            return self.network(inputs, **kwargs)
        try:
            return self._run_compiled(inputs)
        except Exception as error:  # noqa: BLE001 - compiler missing or unsupported: fall back (an input error repeats eagerly)
            self.state = f"eager (compile failed: {type(error).__name__})"
            warnings.warn(f"torch.compile of the teacher failed ({type(error).__name__}: "
                          f"{str(error).splitlines()[0] if str(error) else ''}); running it eagerly", stacklevel=2)
            return self.network(inputs)

    def _run_compiled(self, inputs: torch.Tensor) -> torch.Tensor:
        import torch._inductor.config as inductor_config

        size = self.batch_size = self.batch_size or len(inputs)
        outputs = []
        for start in range(0, len(inputs), size):
            chunk = inputs[start:start + size]
            n = len(chunk)
            if n < size:
                chunk = torch.cat([chunk, chunk.new_zeros((size - n, *chunk.shape[1:]))])
            chunk = chunk.contiguous(memory_format=torch.channels_last)
            # Freezing is read when the graph compiles, so it is set around the call: torch.compile(options=
            # {"freezing": True}) does not reach it (measured: no BatchNorm folding, 10% instead of 1.7x).
            with inductor_config.patch(freezing=True):
                out = self._compiled(chunk)
            self.state = "compiled"
            outputs.append(out[:n])
        return outputs[0] if len(outputs) == 1 else torch.cat(outputs)

    def train(self, mode: bool = True):
        return super().train(False)  # frozen: always in eval mode, like the network it wraps
