"""Rules of the GPU path that a CPU machine can check: the lifetime of DALI's buffers, the choice of the GPU under
torchrun, and importing/compiling the kernels whatever ``builtins.print`` is (torchvision replaces it)."""

import os
import subprocess
import sys
import textwrap
import types
import warnings
from pathlib import Path

import pytest
import torch

from dali_mixup import loader as loader_mod
from dali_mixup import spec as spec_mod
from dali_mixup.lifecycle import InFlight as _InFlight

ROOT = Path(__file__).resolve().parents[1]


class FakeEvent:
    """A CUDA event stand-in: ``done`` says whether the GPU has reached it."""

    log = []

    def __init__(self):
        self.done = False

    def query(self):
        return self.done

    def synchronize(self):
        FakeEvent.log.append(self)
        self.done = True


class FakeRuntime:
    """What the ring asks of ``CudaRuntime``: an event recorded on the current stream now."""

    def record_event(self):
        return FakeEvent()


def test_batch_read_by_queued_kernels_is_held_until_its_event_completes():
    ring = _InFlight(4, FakeRuntime())
    a, b = object(), object()
    ring.hold((a,), read_by_queued_work=True)
    ring.hold((b,), read_by_queued_work=True)
    assert len(ring) == 2  # the GPU has reached neither event: both batches stay referenced
    ring._held[0][0].done = True
    ring.hold((object(),), read_by_queued_work=True)
    assert len(ring) == 2 and ring._held[0][1] == (b,)  # a's kernels completed: a is let go, b is not


def test_batch_handed_to_the_caller_is_covered_by_the_next_calls_event():
    ring = _InFlight(4, FakeRuntime())
    ring.hold(("first",), read_by_queued_work=False)
    assert ring._held[0][0] is None  # the caller's step that reads it is not queued yet
    ring.hold(("second",), read_by_queued_work=False)
    first_event = ring._held[0][0]
    assert first_event is not None  # recorded at the next call, after the caller's step
    first_event.done = True
    ring.hold(("third",), read_by_queued_work=False)
    assert [t for _, (t,) in ring._held] == ["second", "third"]


def test_host_waits_for_the_oldest_batch_beyond_the_depth():
    FakeEvent.log.clear()
    ring = _InFlight(3, FakeRuntime())
    for i in range(5):
        ring.hold((i,), read_by_queued_work=True)
    assert len(ring) == 3 and [t for _, (t,) in ring._held] == [2, 3, 4]
    assert len(FakeEvent.log) == 2  # waited for batches 0 and 1, oldest first, and for nothing else
    ring.clear()
    assert len(ring) == 0 and len(FakeEvent.log) == 5


def test_a_held_batch_is_referenced_until_its_wait_has_returned():
    """Defect 1 at the unit level: when the event's wait runs, the ring still holds the batch."""
    ring, seen = _InFlight(1, FakeRuntime()), []

    class Watched(FakeEvent):
        def synchronize(self):
            seen.append(len(ring._held))  # the entry being waited for is still in the ring
            super().synchronize()

    ring._held.append([Watched(), ("batch",)])
    ring.clear()
    assert seen == [1] and len(ring) == 0


def _fake_cuda(monkeypatch, count, current):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: current)


def test_gpu_is_torchs_current_device_not_local_rank(monkeypatch):
    # a rank that sees one GPU through CUDA_VISIBLE_DEVICES: LOCAL_RANK=3 but the only device is cuda:0
    _fake_cuda(monkeypatch, count=1, current=0)
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert spec_mod.cuda_device_id(None) == 0
    # the script selected its GPU with torch.cuda.set_device(2)
    _fake_cuda(monkeypatch, count=4, current=2)
    monkeypatch.setenv("LOCAL_RANK", "2")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert spec_mod.cuda_device_id(None) == 2


def test_local_rank_disagreeing_with_the_current_device_warns(monkeypatch):
    _fake_cuda(monkeypatch, count=8, current=0)
    monkeypatch.setenv("LOCAL_RANK", "5")
    with pytest.warns(UserWarning, match=r"LOCAL_RANK=5.*cuda:0.*set_device"):
        assert spec_mod.cuda_device_id(None) == 0


@pytest.mark.parametrize("bad", [2, -1, "0", True])
def test_device_id_out_of_range_names_the_count(monkeypatch, bad):
    _fake_cuda(monkeypatch, count=2, current=0)
    with pytest.raises(ValueError, match=r"device_id.*device_count\(\)=2.*got"):
        spec_mod.cuda_device_id(bad)


# torchvision's references/classification/utils.py::setup_for_distributed, in spirit: a module named ``utils``
# whose nested function replaces builtins.print (numba then finds no ``utils.print``).
_SWAPPER = textwrap.dedent('''
    def setup_for_distributed(is_master, keep_reference=True):
        import builtins as __builtin__
        builtin_print = __builtin__.print
        if keep_reference:
            def print(*args, **kwargs):
                if is_master or kwargs.pop("force", False):
                    builtin_print(*args, **kwargs)
        else:
            def print(*args, **kwargs):  # keeps no reference to the interpreter's print
                pass
        __builtin__.print = print
''')

_CPU = textwrap.dedent('''
    import torch, dali_mixup as dm
    cfg = dm.MixupConfig(10, cutmix_alpha=1.0)
    images, targets = dm.mix_batch(torch.zeros((4, 8, 8, 3), dtype=torch.uint8), torch.arange(4), cfg)
    assert images.shape == (4, 3, 8, 8) and torch.allclose(targets.sum(1), torch.ones(4))
''')

_PTX = textwrap.dedent('''
    from dali_mixup import kernels
    cuda = kernels.load("cuda")
    from dali_mixup.kernels import pixel_math as pm
    for name in (cuda.image_kernel_name(pm.OUT_F16, True, True), "soft_targets"):
        assert ".entry" in cuda.compile_ptx(name, (9, 0))
''')

_SIM = textwrap.dedent('''
    import numpy as np, torch, dali_mixup as dm
    from dali_mixup import kernels, reference as ref
    from dali_mixup.kernels import pixel_math as pm
    cuda = kernels.load("cuda")
    from numba import cuda as nc
    images = np.random.default_rng(0).integers(0, 256, (2, 3, 5, 3), dtype=np.uint8)
    cfg = dm.MixupConfig(10)
    params = dm.sample_params(cfg, 2, 3, 5, seed=1)
    scale, bias = ref.normalization_constants(dm.IMAGENET_MEAN, dm.IMAGENET_STD)
    out = np.zeros((2, 3, 3, 5), np.float32)
    d_out = nc.to_device(out)
    cuda.launch_mix_images(nc.to_device(images), nc.to_device(params.pack()), scale, bias, d_out, True, pm.OUT_F32)
    want = ref.mix_images(images, params, mean=dm.IMAGENET_MEAN, std=dm.IMAGENET_STD, out_dtype="float32")
    assert np.array_equal(d_out.copy_to_host(), want)
''')


@pytest.mark.parametrize("when", ["before_import", "after_import", "no_reference"])
@pytest.mark.parametrize("job", ["cpu_twin", "cuda_ptx", "cuda_simulator"])
def test_kernels_work_whatever_builtins_print_is(tmp_path, when, job):
    (tmp_path / "utils.py").write_text(_SWAPPER)
    swap = f"import utils; utils.setup_for_distributed(False, keep_reference={when != 'no_reference'})\n"
    work = {"cpu_twin": _CPU, "cuda_ptx": _PTX, "cuda_simulator": _SIM}[job]
    code = (swap + "import dali_mixup\n" + work) if when != "after_import" else ("import dali_mixup\n" + swap + work)
    code += "print('ok', force=True)\n" if when != "no_reference" else "import sys; sys.stdout.write('ok')\n"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), str(ROOT), os.environ.get("PYTHONPATH", "")]))
    if job == "cuda_simulator":
        env["NUMBA_ENABLE_CUDASIM"] = "1"
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stdout + proc.stderr


# ---- kernels compiled while the loader is built ---------------------------------------------------------------

@pytest.mark.parametrize("device, backend, expected", [
    ("cuda:1", "fused", [(torch.float16, "NHWC", (176, 174), 1)]),
    ("cuda:0", "none", []),  # no kernel of ours runs
    ("cuda:0", "dali", []),
    ("cpu", "fused", []),  # the CPU twin: compiled (or cached) at import
])
def test_loader_precompiles_the_kernels_it_launches(monkeypatch, device, backend, expected):
    calls = []
    monkeypatch.setattr(loader_mod, "precompile_in_background", lambda *args: calls.append(args) or "thread")
    fake = types.SimpleNamespace(device=torch.device(device), epoch=0, spec=types.SimpleNamespace(
        backend=backend, out_dtype=torch.float16, layout="NHWC", sizes_at=lambda epoch: (176, 174)))
    assert loader_mod.DaliMixupLoader._precompile(fake) == ("thread" if expected else None)
    assert calls == expected
