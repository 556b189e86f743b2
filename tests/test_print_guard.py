"""``kernels.genuine_print`` swaps ``builtins.print`` only for as long as numba needs it, never undoes someone
else's replacement, and leaves a forked child the caller's print and working locks (issue 21, item 6).

Training scripts replace ``builtins.print`` on non-master ranks (torchvision's ``setup_for_distributed``); numba
needs the interpreter's own print in place while it imports the modules that register it. Subprocess tests of
whole scripts are in ``test_gpu_rules.py::test_kernels_work_whatever_builtins_print_is``.
"""

import builtins
import json
import os
import select
import signal
import threading
import time
import types

import pytest

from dali_mixup import kernels
from dali_mixup.kernels import pixel_math as pm
from dali_mixup.kernels import print_guard

GENUINE = builtins.print
assert print_guard._is_genuine_print(GENUINE)
TIMEOUT = 30


def _script_print():
    """A replacement like torchvision's on a non-master rank: a nested function that prints nothing."""
    def print(*args, **kwargs):  # noqa: A001
        pass

    return print


def _seen_from_another_thread():
    seen = []
    thread = threading.Thread(target=lambda: seen.append(builtins.print))
    thread.start()
    thread.join()
    return seen[0]


class _Watcher:
    """Samples ``builtins.print`` from its own thread until stopped: every object it saw."""

    def __init__(self):
        self.seen, self._stop = set(), threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            self.seen.add(builtins.print)
            time.sleep(0.0005)

    def stop(self):
        self._stop.set()
        self._thread.join()
        return self.seen


@pytest.fixture
def kcuda():
    pytest.importorskip("numba.cuda")
    module = kernels.load("cuda")
    if module._SIMULATOR:
        pytest.skip("compiles: not under the CUDA simulator")
    return module


def test_print_stays_the_scripts_while_a_kernel_compiles_to_ptx(kcuda, monkeypatch):
    from numba.cuda import compiler

    inside = []
    real_compile = compiler.compile_cuda

    def compile_cuda(*args, **kwargs):  # numba-cuda's compile of the kernel, as compile_ptx runs it
        inside.append(_seen_from_another_thread())
        result = real_compile(*args, **kwargs)
        inside.append(_seen_from_another_thread())
        return result

    monkeypatch.setattr(compiler, "compile_cuda", compile_cuda)
    script_print = _script_print()
    monkeypatch.setattr(builtins, "print", script_print)
    watcher = _Watcher()
    errors = []
    background = threading.Thread(target=lambda: _keep_error(errors, kcuda.compile_ptx.__wrapped__,
                                                             kcuda.image_kernel_name(pm.OUT_BF16, True, False),
                                                             (8, 6), pm.KIND_MIXUP))
    background.start()  # a loader compiles in the background
    background.join(TIMEOUT * 5)
    seen = watcher.stop()
    assert not background.is_alive() and not errors, errors
    assert inside and all(p is script_print for p in inside), inside
    assert seen == {script_print}, seen


def _keep_error(errors, fn, *args):
    try:
        fn(*args)
    except BaseException as e:  # noqa: BLE001 - reported by the test
        errors.append(e)


def test_print_stays_the_scripts_while_kernel_compiles(kcuda, monkeypatch):
    """``kernel()``'s eager compile (a GPU's; ``cuda.jit`` recorded here) runs with the script's print."""
    inside = []

    def jit(sig, cache=False):
        def compile_now(fn):
            inside.append(_seen_from_another_thread())
            return "compiled"

        return compile_now

    monkeypatch.setattr(kcuda, "_compiled", {})
    monkeypatch.setattr(kcuda.cuda, "jit", jit)
    monkeypatch.setattr(kcuda.cuda, "get_current_device", lambda: types.SimpleNamespace(compute_capability=(9, 0)))
    script_print = _script_print()
    monkeypatch.setattr(builtins, "print", script_print)
    assert kcuda.kernel("soft_targets") == "compiled"
    assert inside == [script_print]


def test_a_replacement_made_during_the_swap_survives_it(monkeypatch):
    script_print, later_print = _script_print(), _script_print()
    monkeypatch.setattr(builtins, "print", script_print)
    with kernels.genuine_print():
        assert builtins.print is GENUINE
    assert builtins.print is script_print  # the caller's print back
    with kernels.genuine_print():
        assert builtins.print is GENUINE
        thread = threading.Thread(target=setattr, args=(builtins, "print", later_print))
        thread.start()  # e.g. setup_for_distributed, run meanwhile
        thread.join()
    assert builtins.print is later_print


def _in_child(script_print):
    """In a forked child: the print it has, then whether it can swap again."""
    report = {"callers_print": builtins.print is script_print}
    with kernels.genuine_print():
        report["genuine_inside"] = builtins.print is GENUINE
    report["callers_print_after"] = builtins.print is script_print
    return report


def _fork(child, script_print):
    """Fork; the child runs ``child`` and reports through a pipe. A child that does not report within TIMEOUT
    (a lock held by a thread that does not exist in it) is killed and the test fails."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report, and never return into pytest
        code = 1
        try:
            os.close(read)
            os.write(write, json.dumps(child(script_print)).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    try:
        ready, _, _ = select.select([read], [], [], TIMEOUT)
        if not ready:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail(f"the forked child did not report in {TIMEOUT} s: deadlocked (on a lock held by a thread "
                        f"that does not exist in the child)")
        data = b""
        while chunk := os.read(read, 65536):
            data += chunk
    finally:
        os.close(read)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0 and data, "the forked child failed"
    return json.loads(data)


def test_a_child_forked_inside_the_swap_has_the_callers_print(monkeypatch):
    script_print = _script_print()
    monkeypatch.setattr(builtins, "print", script_print)
    with kernels.genuine_print():
        report = _fork(_in_child, script_print)
    assert report == {"callers_print": True, "genuine_inside": True, "callers_print_after": True}
    assert builtins.print is script_print


def test_a_child_forked_while_another_thread_swaps_can_swap_again(monkeypatch):
    script_print = _script_print()
    monkeypatch.setattr(builtins, "print", script_print)
    swapped, release = threading.Event(), threading.Event()

    def hold_the_swap():  # e.g. a loader's background thread loading the kernels
        with kernels.genuine_print():
            swapped.set()
            release.wait(TIMEOUT)

    holder = threading.Thread(target=hold_the_swap)
    holder.start()
    try:
        assert swapped.wait(TIMEOUT)
        report = _fork(_in_child, script_print)
    finally:
        release.set()
        holder.join()
    assert report == {"callers_print": True, "genuine_inside": True, "callers_print_after": True}
    assert builtins.print is script_print


def test_a_child_forked_while_other_threads_load_and_compile_can_do_both(kcuda, monkeypatch):
    """A thread inside ``load`` and one inside ``kernel()``'s compile hold their locks when another forks: the
    child (without those threads) loads and compiles all the same."""
    compiling, release = threading.Event(), threading.Event()

    def jit(sig, cache=False):
        def compile_now(fn):
            if fn.__qualname__.startswith("soft_targets"):  # the parent's background compile waits
                compiling.set()
                release.wait(TIMEOUT)
            return f"compiled {fn.__qualname__}"

        return compile_now

    monkeypatch.setattr(kcuda, "_compiled", {})
    monkeypatch.setattr(kcuda.cuda, "jit", jit)
    monkeypatch.setattr(kcuda.cuda, "get_current_device", lambda: types.SimpleNamespace(compute_capability=(9, 0)))
    loading = threading.Event()

    def in_load():  # as a thread importing the kernels holds load's lock
        with kernels._lock:
            loading.set()
            release.wait(TIMEOUT)

    def in_child(script_print):
        name = kcuda.image_kernel_name(pm.OUT_F16, True, True)
        return {"loaded": kernels.load("cuda") is kcuda, "compiled": kcuda.kernel(name) == f"compiled {name}_sm90"}

    threads = [threading.Thread(target=in_load), threading.Thread(target=kcuda.kernel, args=("soft_targets",))]
    for thread in threads:
        thread.start()
    try:
        assert loading.wait(TIMEOUT) and compiling.wait(TIMEOUT)
        report = _fork(in_child, None)
    finally:
        release.set()
        for thread in threads:
            thread.join()
    assert report == {"loaded": True, "compiled": True}
