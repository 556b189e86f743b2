"""The print guard: ``genuine_print``, the interpreter's own ``builtins.print`` in place while numba imports
the modules that register it (see ``genuine_print``), whatever a training script put there.
"""

import builtins
import contextlib
import os
import threading
import types

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
_swap = None  # (the print genuine_print put in place, the caller's) while it is in place


def _module_level_print(*args, **kwargs):  # stands in for print while numba registers it (see genuine_print)
    return _replaced_print(*args, **kwargs)


_module_level_print.__name__ = _module_level_print.__qualname__ = "print"
print = _module_level_print  # noqa: A001 - reachable as dali_mixup.kernels.print_guard.print, which numba checks


@contextlib.contextmanager
def genuine_print():
    """Run the block with the interpreter's own ``builtins.print`` in place, then restore the caller's.

    Numba registers ``builtins.print`` as a typing key when it imports its typing modules and requires the
    object to be reachable under its ``__module__`` and ``__name__``. Training scripts replace
    ``builtins.print`` with a nested function on non-master ranks (torchvision's
    ``references/classification/utils.py::setup_for_distributed``), which makes importing numba fail with
    ``module 'utils' has no attribute 'print'``. The genuine print is found at import of this package, or
    inside the replacement; failing both, a module-level stand-in that forwards to the caller's print is
    registered (numba's own ``print`` inside user kernels then types against the stand-in).

    The swap is seen by every thread, so keep the block to the imports that register print: ``load`` imports
    numba in it, ``cuda`` the CUDA target's registries (after which compiles import none), and no compile runs
    in it. One swap at a time; a block inside a block is no second swap. On leaving, the caller's print is put
    back only if ``builtins.print`` is still the one put there: a replacement made meanwhile (another thread)
    stays. A child forked meanwhile gets the caller's print back and fresh locks (``_after_fork_in_child``).
    """
    global _replaced_print, _swap
    with _print_lock:  # one swap at a time across threads
        current = builtins.print
        if _is_genuine_print(current) or (_swap is not None and current is _swap[0]):
            yield  # nothing to swap, or this thread's own swap already in place
            return
        ours = _GENUINE_PRINT or _find_genuine_print(current) or print
        _replaced_print = current
        _swap = (ours, current)  # before the swap: a fork from here on restores the caller's print
        builtins.print = ours
        try:
            yield
        finally:
            if builtins.print is ours:  # never undo someone else's replacement
                builtins.print = current
            _swap = None


def _after_fork_in_child():
    """In a child forked during a swap (any thread's): the caller's print back, and a lock no dead thread
    holds (the thread that swapped does not exist in the child, and would never restore or release)."""
    global _print_lock, _swap
    _print_lock = threading.RLock()
    swap, _swap = _swap, None
    if swap is not None and builtins.print is swap[0]:
        builtins.print = swap[1]


os.register_at_fork(after_in_child=_after_fork_in_child)
