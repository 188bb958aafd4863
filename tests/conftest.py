"""Shared test helpers.

The real datasets live in ``../shared/data`` beside the checkout (override with ``KDLAB_SHARED_DATA``). Tests that
need one are skipped when it is absent on a developer's machine, but fail under CI (``CI`` set), where it must be.
"""

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
    import torch

    return torch.get_num_threads()


_INITIAL_THREADS = _initial_threads()
