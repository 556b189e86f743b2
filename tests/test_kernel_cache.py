"""numba-cuda's on-disk cache serves each kernel variant its own code (issue 21, item 5).

Numba-cuda names a function's cache files after its module, ``__qualname__`` and first line (one index
``.nbi``, data files ``.1.nbc``, ``.2.nbc``...); saving an entry reads the index, takes the first data-file
name it does not use, writes the index, then the data. The image-kernel variants are closures of one ``def``:
jitted as they are, they would share one index, and two processes compiling different variants at once could
both take ``.1.nbc``. Everything below goes through numba-cuda's own cache classes (``CUDACache``,
``IndexDataCacheFile``, ``_Kernel._rebuild``) on the functions ``kernel()`` jits (``kcuda.kernel_to_jit``);
only what needs a GPU is stood in for: the codegen's ``magic_tuple`` (CUDA runtime version and the device's
compute capability) and the target context handed to ``load_overload``. No GPU needed.
"""

import json
import os
import re
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest

pytest.importorskip("numba.cuda")
if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
    pytest.skip("numba-cuda's cache, not the CUDA simulator's", allow_module_level=True)

from numba.cuda.core import config as numba_cuda_config  # noqa: E402
from numba.cuda.dispatcher import CUDACache  # noqa: E402

from dali_mixup.kernels import cuda as kcuda  # noqa: E402
from dali_mixup.kernels import pixel_math as pm  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CCS = [(7, 5), (8, 0), (9, 0)]
F16 = kcuda.image_kernel_name(pm.OUT_F16, True, True)
BF16 = kcuda.image_kernel_name(pm.OUT_BF16, True, True)
# the cache identity every vec4 variant had before issue 21 (one closure, one qualname, one line)
SHARED_QUALNAME = "_make_vec4_kernel.<locals>.mix_images"


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(numba_cuda_config, "CACHE_DIR", str(tmp_path))  # numba-cuda's NUMBA_CACHE_DIR
    return tmp_path


def _index_path(fn):
    return CUDACache(fn)._cache_file._index_path


def test_every_variant_and_compute_capability_has_its_own_cache_index(cache_dir):
    paths = {(name, cc): _index_path(kcuda.kernel_to_jit(name, cc)[0]) for name in kcuda.KERNELS for cc in CCS}
    assert len(set(paths.values())) == len(paths)
    assert all(Path(p).parent.parent == cache_dir for p in paths.values())
    assert os.path.basename(paths[(F16, (9, 0))]).startswith(f"cuda.{F16}_sm90-")
    # as the kernels were before: the float16 and bfloat16 variants (and every compute capability) in one index
    assert _index_path(kcuda.python_kernel(F16, (9, 0))[0]) == _index_path(kcuda.python_kernel(BF16, (8, 0))[0])


def test_the_jitted_function_keeps_the_kernel_and_its_cache_key():
    for name in kcuda.KERNELS:
        fn, sig = kcuda.kernel_to_jit(name, (9, 0))
        original, original_sig = kcuda.python_kernel(name, (9, 0))
        assert sig == original_sig and fn.__code__ is original.__code__ and fn.__globals__ is original.__globals__
        cells = [c.cell_contents for c in fn.__closure__ or ()]
        assert cells == [c.cell_contents for c in original.__closure__ or ()]
        if name != "soft_targets":
            assert kcuda._DIGEST in cells  # the sources' digest stays part of numba's cache key
    assert kcuda.soft_targets.__qualname__ == "soft_targets"  # the module's function is copied, not renamed


def test_the_renamed_kernel_compiles_to_the_same_code():
    fn, sig = kcuda.kernel_to_jit(BF16, (9, 0))
    renamed, _ = kcuda.cuda.compile_ptx(fn, sig, cc=(9, 0))
    assert f"{BF16}_sm90" in renamed
    assert re.sub(r"_ZN\w+", "NAME", renamed) == re.sub(r"_ZN\w+", "NAME", kcuda.compile_ptx(BF16, (9, 0)))


def test_kernel_jits_the_function_of_kernel_to_jit(monkeypatch):
    jitted = []

    def jit(sig, cache=False):
        return lambda fn: jitted.append((fn, sig, cache)) or f"kernel {fn.__qualname__}"

    monkeypatch.setattr(kcuda, "_SIMULATOR", False)
    monkeypatch.setattr(kcuda, "_compiled", {})
    monkeypatch.setattr(kcuda.cuda, "jit", jit)
    monkeypatch.setattr(kcuda.cuda, "get_current_device", lambda: types.SimpleNamespace(compute_capability=(8, 6)))
    assert kcuda.kernel(BF16) == f"kernel {BF16}_sm86"
    (fn, sig, cache), = jitted
    want, want_sig = kcuda.kernel_to_jit(BF16, (8, 6))
    assert cache is True and sig == want_sig and fn.__qualname__ == want.__qualname__
    assert fn.__code__ is want.__code__ and [c.cell_contents for c in fn.__closure__] == [
        c.cell_contents for c in want.__closure__]


# Two processes (roles A and B) each save one variant's compiled kernel through numba-cuda's CUDACache into one
# cache folder, in a fixed interleaving of IndexDataCacheFile's steps enforced with turn files: both read the
# index before either writes it (each picks its data-file name), then A writes its index, B its index and its
# data, A its data. Then each loads its own variant and reports what came back.
_WORKER = textwrap.dedent('''
    import json, os, sys, time
    role, name, cc, turns, old_identity = sys.argv[1], sys.argv[2], tuple(json.loads(sys.argv[3])), sys.argv[4], \\
        sys.argv[5] == "1"
    from dali_mixup.kernels import cuda as kcuda
    from numba.cuda.core import caching
    from numba.cuda.dispatcher import CUDACache

    if old_identity:  # the helper as the kernels were before: the closure's own, shared qualname
        real = kcuda.kernel_to_jit

        def kernel_to_jit(name, cc):
            fn, sig = real(name, cc)
            fn.__qualname__ = %(shared)r
            return fn, sig

        kcuda.kernel_to_jit = kernel_to_jit

    SCHEDULE = [("A", "_load_index"), ("B", "_load_index"), ("A", "_save_index"), ("B", "_save_index"),
                ("B", "_save_data"), ("A", "_save_data")]
    mine = [i for i, step in enumerate(SCHEDULE) if step[0] == role]

    def wait_turn(i):
        deadline = time.monotonic() + 120
        while not os.path.exists(os.path.join(turns, str(i))):
            if time.monotonic() > deadline:
                sys.exit(f"{role}: no turn {i} in 120 s")
            time.sleep(0.01)

    def in_turn(op):
        real = getattr(caching.IndexDataCacheFile, op)

        def step(self, *args):
            i = mine.pop(0)
            assert SCHEDULE[i] == (role, op), (SCHEDULE[i], role, op)
            wait_turn(i)
            try:
                return real(self, *args)
            finally:
                open(os.path.join(turns, str(i + 1)), "w").close()

        return step

    class Codegen:  # magic_tuple() asks the device: (CUDA runtime version, compute capability)
        def magic_tuple(self):
            return ((12, 8), cc)

    class TargetContext:
        def refresh(self):
            pass

        def codegen(self):
            return Codegen()

    class Compiled:  # what CUDACacheImpl.reduce pickles of a compiled kernel (_Kernel._reduce_states)
        codegen = Codegen()

        def _reduce_states(self):
            return dict(cooperative=False, name=f"code of {name}", signature=None, codelibrary=f"code of {name}",
                        debug=False, lineinfo=False, call_helper=None, extensions=[])

    fn, sig = kcuda.kernel_to_jit(name, cc)
    cache = CUDACache(fn)
    assert cache.load_overload(sig, TargetContext()) is None  # a miss: compile, then save
    steps = ("_load_index", "_save_index", "_save_data")
    real_steps = {op: getattr(caching.IndexDataCacheFile, op) for op in steps}
    for op in steps:
        setattr(caching.IndexDataCacheFile, op, in_turn(op))
    cache.save_overload(sig, Compiled())
    assert not mine
    wait_turn(len(SCHEDULE))  # every write done
    for op in steps:
        setattr(caching.IndexDataCacheFile, op, real_steps[op])
    loaded = CUDACache(kcuda.kernel_to_jit(name, cc)[0]).load_overload(sig, TargetContext())
    print(json.dumps({"index": os.path.basename(cache._cache_file._index_path),
                      "loaded": None if loaded is None else loaded.entry_name}))
''') % {"shared": SHARED_QUALNAME}


def _race(tmp_path, old_identity):
    turns = tmp_path / "turns"
    turns.mkdir()
    (turns / "0").touch()
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"),
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    jobs = {role: subprocess.Popen([sys.executable, "-c", _WORKER, role, name, "[9, 0]", str(turns),
                                    "1" if old_identity else "0"], env=env, cwd=tmp_path,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for role, name in (("A", F16), ("B", BF16))}
    results = {}
    for role, job in jobs.items():
        out, err = job.communicate(timeout=300)
        assert job.returncode == 0, f"{role}: {out}\n{err}"
        results[role] = json.loads(out.strip().splitlines()[-1])
    return results


def test_processes_compiling_different_variants_at_once_each_load_their_own(tmp_path):
    results = _race(tmp_path, old_identity=False)
    assert results["A"]["index"] != results["B"]["index"]
    assert results["A"]["loaded"] == f"code of {F16}"
    assert results["B"]["loaded"] == f"code of {BF16}"


def test_the_race_test_sees_the_collision_of_the_old_shared_identity(tmp_path):
    """The same race with the variants' old, shared cache identity: one index, both entries on ``.1.nbc``; the
    bfloat16 kernel's entry then loads the float16 kernel's code (and the float16 entry is lost)."""
    results = _race(tmp_path, old_identity=True)
    assert results["A"]["index"] == results["B"]["index"]
    assert results["B"]["loaded"] == f"code of {F16}"
    assert results["A"]["loaded"] is None
