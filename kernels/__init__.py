"""Kernels of dali-mixup: the fused image kernel and the soft-label kernel.

- ``pixel_math``: the per-element math, one source for every target;
- ``cuda``: the numba.cuda kernels (GPU, and numba's CUDA simulator on CPU CI);
- ``cpu``: their CPU twin (numba.njit, parallel).

Importing this package imports neither numba nor compiles anything; ``load("cpu")`` / ``load("cuda")`` import
a kernel module on first use (``dali_mixup.mixing`` does), and are the only way the package imports them.
"""

import builtins
import contextlib
import importlib
import threading
import types

_lock = threading.Lock()
_print_lock = threading.RLock()  # held while builtins.print is swapped (genuine_print)


def _is_genuine_print(fn) -> bool:
    return isinstance(fn, types.BuiltinFunctionType) and fn.__name__ == "print" and fn.__module__ == "builtins"


def _find_genuine_print(fn):
    """The interpreter's own ``print`` behind a replacement ``fn`` (which usually keeps it in a closure cell or a
    global, as torchvision's ``setup_for_distributed`` does), or None."""
    seen = set()
    while fn is not None and id(fn) not in seen:
        seen.add(id(fn))
        if _is_genuine_print(fn):
            return fn
        inner = getattr(fn, "__wrapped__", None)
        refs = [c.cell_contents for c in (getattr(fn, "__closure__", None) or ()) if _cell_filled(c)]
        refs += list(getattr(fn, "__globals__", {}).values())
        genuine = next((r for r in refs if _is_genuine_print(r)), None)
        if genuine is not None:
            return genuine
        fn = inner
    return None


def _cell_filled(cell) -> bool:
    try:
        cell.cell_contents
    except ValueError:
        return False
    return True


# Captured when dali_mixup is imported: scripts usually replace ``print`` later (after their imports).
_GENUINE_PRINT = builtins.print if _is_genuine_print(builtins.print) else _find_genuine_print(builtins.print)


_replaced_print = None  # the caller's print while the stand-in is in place


def _module_level_print(*args, **kwargs):  # stands in for print while numba registers it (see genuine_print)
    return _replaced_print(*args, **kwargs)


_module_level_print.__name__ = _module_level_print.__qualname__ = "print"
print = _module_level_print  # noqa: A001 - reachable as dali_mixup.kernels.print, which numba checks


@contextlib.contextmanager
def genuine_print():
    """Run the block with the interpreter's own ``builtins.print`` in place, then restore the caller's.

    Numba registers ``builtins.print`` as a typing key when it is imported and requires the object to be reachable
    under its ``__module__`` and ``__name__``. Training scripts replace ``builtins.print`` with a nested function
    on non-master ranks (torchvision's ``references/classification/utils.py::setup_for_distributed``), which makes
    importing numba fail with ``module 'utils' has no attribute 'print'``. The genuine print is found at import of
    this package, or inside the replacement; failing both, a module-level stand-in that forwards to the caller's
    print is registered (numba's own ``print`` inside user kernels then types against the stand-in).
    """
    global _replaced_print
    with _print_lock:  # one swap at a time across threads (a loader compiles in the background)
        current = builtins.print
        if _is_genuine_print(current):
            yield
            return
        _replaced_print = current
        builtins.print = _GENUINE_PRINT or _find_genuine_print(current) or print
        try:
            yield
        finally:
            builtins.print = current


def load(name: str):
    """Import kernel module ``name`` ("cpu" or "cuda") once, whatever ``builtins.print`` is (see ``genuine_print``).

    The first import of ``cpu`` compiles or loads numba's cache; that of ``cuda`` imports numba.cuda.
    """
    if name not in ("cpu", "cuda"):
        raise ValueError(f"kernel module must be 'cpu' or 'cuda', got {name!r}")
    with _lock, genuine_print():
        return importlib.import_module(f"{__name__}.{name}")
