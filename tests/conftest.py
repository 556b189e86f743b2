import os

import numpy as np
import pytest

# The simulator suite runs in its own process (tests/test_cuda_simulator.py); never collect it here.
if os.environ.get("NUMBA_ENABLE_CUDASIM") != "1":
    collect_ignore = ["cudasim"]


def _cuda_available() -> bool:
    # Ask torch, not numba: the simulator makes numba report a GPU.
    try:
        import torch
        return torch.cuda.is_available()
    except Exception:  # pragma: no cover
        return False


def pytest_collection_modifyitems(config, items):
    if _cuda_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (torch.cuda.is_available() is False)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def make_batch():
    """make_batch(n, h, w, seed) -> random uint8 (n, h, w, 3) NHWC NumPy batch."""

    def make(n, h, w, seed=0):
        return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)

    return make
