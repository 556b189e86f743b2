"""Kernels of dali-mixup: the fused image kernel and the soft-label kernel.

- ``pixel_math``: the per-element math, one source for every target;
- ``cuda``: the numba.cuda kernels (GPU, and numba's CUDA simulator on CPU CI);
- ``cpu``: their CPU twin (numba.njit, parallel);
- ``print_guard``: ``genuine_print``, the interpreter's print while numba imports (training scripts replace it).

Importing this package imports neither numba nor compiles anything; ``load("cpu")`` / ``load("cuda")`` import
a kernel module on first use (``dali_mixup.mixing`` does), and are the only way the package imports them.
"""

import importlib
import os
import threading

from .print_guard import genuine_print

_lock = threading.Lock()  # load()


def _fresh_lock_in_child():
    """A child forked while another thread was in ``load`` would find its lock held forever."""
    global _lock
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_fresh_lock_in_child)


_NUMBA = {"cpu": ("numba",), "cuda": ("numba", "numba.cuda")}  # what registers print on import


def load(name: str):
    """Import kernel module ``name`` ("cpu" or "cuda") once, whatever ``builtins.print`` is (see ``genuine_print``).

    Numba (and numba.cuda) are imported with the interpreter's print in place; the kernel module, and the
    compile of the CPU twin that its first import runs (or numba's cache it loads), with the caller's.
    """
    if name not in _NUMBA:
        raise ValueError(f"kernel module must be 'cpu' or 'cuda', got {name!r}")
    with _lock:
        with genuine_print():
            for module in _NUMBA[name]:
                importlib.import_module(module)
        return importlib.import_module(f"{__name__}.{name}")
