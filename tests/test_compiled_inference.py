"""Frozen networks (teachers) compiled for inference: close to eager, eager when compiling fails, decided by
runtime.compile and the data size, recorded in the summary and in the teacher-cache key."""

import json
import warnings

import pytest
import torch

from kdlab import models
from kdlab.config import load_recipe
from kdlab.teacher.compiled import AUTO_MIN_TRAIN_IMAGES, CompiledInference, should_compile_frozen
from kdlab.train.engine import prepare, train
from kdlab.train.runtime import resolve_runtime


def test_the_compile_setting_decides_for_frozen_networks_and_the_model():
    assert should_compile_frozen(True, 10) and not should_compile_frozen(False, 10**6)
    assert should_compile_frozen("auto", AUTO_MIN_TRAIN_IMAGES)
    assert not should_compile_frozen("auto", AUTO_MIN_TRAIN_IMAGES - 1)
    recipe = lambda value: load_recipe(raw={"data": {"source": "digits"}, "model": {"name": "cnn_small8"},
                                            "train": {"epochs": 1}, "runtime": {"compile": value, "device": "cpu"}})
    assert resolve_runtime(recipe("auto").runtime).compile is False  # CPU: the trained model stays eager
    assert resolve_runtime(recipe(True).runtime).compile is True
    assert resolve_runtime(recipe(False).runtime).compile is False


def test_compiled_teacher_matches_eager_and_stays_frozen():
    torch.manual_seed(0)
    network = models.create("cnn_small8", 10, in_channels=1).eval().requires_grad_(False)
    # Non-trivial BatchNorm statistics, so folding them into the convolutions is actually exercised.
    for module in network.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    wrapped = CompiledInference(network)
    assert wrapped.state == "not called yet"
    x = torch.randn(32, 1, 8, 8)
    with torch.inference_mode():
        eager = network(x)
        compiled = wrapped(x)
        smaller = wrapped(x[:7])  # padded to the compiled batch size (a last batch, cache misses)
        larger = wrapped(torch.cat([x, x, x[:5]]))  # run in chunks of it
        keyword = wrapped(x, return_features=True)  # keyword calls run eagerly
    assert wrapped.state == "compiled" and wrapped.batch_size == 32
    torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(smaller, eager[:7], rtol=1e-4, atol=1e-4)
    assert larger.shape == (69, 10) and torch.equal(larger[:32], compiled) and torch.equal(larger[32:64], compiled)
    torch.testing.assert_close(larger[64:], eager[:5], rtol=1e-4, atol=1e-4)
    assert torch.equal(keyword[0], eager)
    wrapped.train()
    assert not wrapped.training and not network.training
    assert list(wrapped.state_dict()) == [f"network.{k}" for k in network.state_dict()]  # weights appear once


def test_failed_compile_falls_back_to_eager_once(monkeypatch):
    network = models.create("cnn_small8", 10, in_channels=1).eval()
    wrapped = CompiledInference(network)
    calls = []

    def broken(*args, **kwargs):
        calls.append(1)
        raise RuntimeError("no C++ compiler found\nmore detail")

    object.__setattr__(wrapped, "_compiled", broken)
    x = torch.randn(4, 1, 8, 8)
    with pytest.warns(UserWarning, match="no C\\+\\+ compiler found"), torch.inference_mode():
        first = wrapped(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with torch.inference_mode():
            second = wrapped(x)  # no second attempt, no second warning
    assert wrapped.state.startswith("eager (compile failed: RuntimeError")
    assert len(calls) == 1
    with torch.inference_mode():
        assert torch.equal(first, network(x)) and torch.equal(second, first)


def test_kd_run_with_a_compiled_teacher_records_it_and_keys_its_cache(tmp_path):
    teacher = tmp_path / "teacher"
    train(load_recipe(raw={"data": {"source": "digits", "val_size": 0.1}, "model": {"name": "cnn_small8"},
                           "train": {"epochs": 1}, "runtime": {"progress": False}}), teacher, quiet=True)

    def recipe(compile_setting):
        return load_recipe(raw={
            "data": {"source": "digits", "val_size": 0.1, "crop_padding": 1, "flip": True,
                     "cache_dir": str(tmp_path / "cache")},
            "model": {"name": "cnn_small8"}, "method": {"name": "kd", "teacher": str(teacher)},
            "train": {"epochs": 1, "batch_size": 64},
            "runtime": {"compile": compile_setting, "teacher_cache": "memory", "progress": False}})

    summary = train(recipe(True), tmp_path / "student", quiet=True)
    assert summary["frozen_networks"] == {"teacher": "compiled"}
    assert summary["status"] == "completed"
    on_disk = json.loads((tmp_path / "student" / "summary.json").read_text())
    assert on_disk["frozen_networks"] == {"teacher": "compiled"}
    eager_key = prepare(recipe(False)).method.teacher.cache.key
    auto_key = prepare(recipe("auto")).method.teacher.cache.key  # digits is far below the auto threshold: eager
    assert auto_key == eager_key != prepare(recipe(True)).method.teacher.cache.key


def test_cuda_graphs_only_for_compiled_models_on_cuda_with_small_batches():
    from dataclasses import replace

    from kdlab.errors import KdlabError
    from kdlab.train.runtime import CUDA_GRAPHS_MAX_BATCH, Runtime, compile_mode

    cuda = Runtime(device=torch.device("cuda"), precision="bf16", channels_last=True, compile=True)
    assert compile_mode(cuda, "auto", 64) == "reduce-overhead"
    assert compile_mode(cuda, "auto", CUDA_GRAPHS_MAX_BATCH + 1) is None
    assert compile_mode(cuda, True, 4096) == "reduce-overhead"
    assert compile_mode(cuda, False, 64) is None
    assert compile_mode(replace(cuda, compile=False), "auto", 64) is None  # graphs come with compiling
    cpu = replace(cuda, device=torch.device("cpu"))
    assert compile_mode(cpu, "auto", 64) is None
    with pytest.raises(KdlabError, match="cuda_graphs: true needs a CUDA device"):
        compile_mode(cpu, True, 64)
