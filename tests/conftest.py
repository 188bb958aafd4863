"""Shared test helpers.

The real datasets live in ``../shared/data`` beside the checkout (override with ``KDLAB_SHARED_DATA``). Tests that
need one are skipped when it is absent on a developer's machine, but fail under CI (``CI`` set), where it must be.
"""

import copy
import functools
import os
from pathlib import Path

import pytest

SHARED_DATA = Path(os.environ.get("KDLAB_SHARED_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))


@pytest.fixture
def shared_data():
    def get(name: str) -> Path:
        path = SHARED_DATA / name
        if not path.is_dir():
            message = f"needs the real dataset {path}"
            if os.environ.get("CI"):
                pytest.fail(message)
            pytest.skip(message)
        return path

    return get


#: The small digits recipe most end-to-end tests train (scikit-learn's digits ship with scikit-learn: no files).
DIGITS_RECIPE = {
    "data": {"source": "digits", "val_size": 0.1},
    "model": {"name": "cnn_small8"},
    "train": {"epochs": 2, "batch_size": 64},
    "optim": {"lr": 0.05, "nesterov": True},
    "schedule": {"name": "cosine"},
    "runtime": {"progress": False},
}


@pytest.fixture(scope="session")
def digits_recipe():
    """``digits_recipe(**sections)``: a fresh copy of :data:`DIGITS_RECIPE` with whole sections replaced."""
    def make(**sections) -> dict:
        return {**copy.deepcopy(DIGITS_RECIPE), **copy.deepcopy(sections)}

    return make


@pytest.fixture
def private_cache(tmp_path_factory, monkeypatch):
    """A data cache of this test session's own (``KDLAB_CACHE_DIR``), shared by the tests of one worker."""
    folder = tmp_path_factory.getbasetemp() / "cache"
    monkeypatch.setenv("KDLAB_CACHE_DIR", str(folder))
    return folder


@pytest.fixture
def count_decodes(monkeypatch):
    """``count_decodes(source)``: wrap ``SOURCES[source]`` for this test and return the list that grows by one each
    time the files are really decoded (not read from the cache)."""
    from kdlab.data import SOURCES

    def count(source: str) -> list[int]:
        calls: list[int] = []
        original = SOURCES[source]

        @functools.wraps(original)
        def counting(*args, **kwargs):
            calls.append(1)
            return original(*args, **kwargs)

        monkeypatch.setitem(SOURCES, source, counting)
        return calls

    return count


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    """Recipes with runtime.threads set torch's global thread count (also inside module-scoped fixtures); every
    test starts and ends with the count the session started with (numerics, e.g. of a resumed run against a
    subprocess run, depend on it)."""
    import torch

    torch.set_num_threads(_INITIAL_THREADS)
    yield
    torch.set_num_threads(_INITIAL_THREADS)


def _initial_threads() -> int:
    """The torch thread count every test runs with: the machine's default, or, when pytest-xdist runs tests side by
    side, the cores shared out between its workers (also for the subprocesses the tests start, through
    OMP_NUM_THREADS), so the workers never oversubscribe the cores (two 2-thread torch processes on 2 cores stall
    each other's OpenMP barriers)."""
    import torch

    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        threads = max(1, (os.cpu_count() or 1) // workers)
        os.environ["OMP_NUM_THREADS"] = str(threads)
        torch.set_num_threads(threads)
    return torch.get_num_threads()


_INITIAL_THREADS = _initial_threads()


def pytest_terminal_summary(terminalreporter):
    """The machine the suite ran on, at the end of the report (timings in a CI log mean little without it)."""
    import torch

    from kdlab.train.runtime import cpu_has_native_bf16
    from kdlab.version import machine_description

    terminalreporter.write_line(f"machine: {machine_description()}, torch {torch.__version__}, native bf16: "
                                f"{cpu_has_native_bf16()}")


CIFAR_SUBSET_PER_CLASS = {"train": 30, "test": 6}


@pytest.fixture(scope="module")
def cifar_subset(tmp_path_factory):
    """A real image folder: the first CIFAR-10 JPEGs of every class (30 train, 6 test), copied from
    ../shared/data."""
    import shutil

    source = SHARED_DATA / "cifar10-jpeg"
    if not source.is_dir():
        pytest.skip(f"{source} is not here")
    root = tmp_path_factory.mktemp("cifar-subset")
    for split, count in CIFAR_SUBSET_PER_CLASS.items():
        for name in sorted(p.name for p in (source / split).iterdir()):
            (root / split / name).mkdir(parents=True)
            for file in sorted((source / split / name).iterdir())[:count]:
                shutil.copy(file, root / split / name / file.name)
    return root
