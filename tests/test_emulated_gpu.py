"""Tier 0.5: the real loader and ``mix_batch`` on an emulated asynchronous GPU (see ``tests/emulated_gpu.py``).

Every scenario is compared, bit for bit, with the same loader run plainly on the CPU (synchronous, where no
lifetime bug can show). Each lifetime rule has a mutation check: the test puts the defect back and asserts that
the tier then sees wrong data.
"""

import contextlib
import gc
import weakref

import numpy as np
import pytest
import torch

import dali_mixup as dm
from dali_mixup import cuda_runtime, epilogue, lifecycle, mixing
from dali_mixup import loader as loader_mod
from dali_mixup.loader import create_dali_loader

import emulated_gpu as emu

CFG = dm.MixupConfig(3, mixup_alpha=0.8, cutmix_alpha=1.0, mode="elem", label_smoothing=0.1)
KW = dict(batch_size=4, num_classes=3, image_size=16, num_threads=1, device="cpu", seed=7)
CONFIGS = {
    "fused-epilogue": dict(mixup=CFG),
    "fused-graph": dict(mixup=CFG, placement="graph"),
    "dali": dict(mixup=CFG, backend="dali"),
    "none": dict(mixup=None),
    "index-targets": dict(mixup=None, targets="index", out_dtype=torch.float16),
    # batches of changing shapes: DALI's buffers, the owned copies and the host staging resized batch by batch
    "per-batch-sizes": dict(mixup=CFG, image_size=dm.PerBatchSizes((16, 20, 24)), layout="NHWC"),
}
EPOCHS = 2


def _plain(image_folder, config, epochs=EPOCHS):
    """The reference: the same loader on the CPU, nothing emulated, every batch cloned as it comes."""
    with create_dali_loader(image_folder, **{**KW, **CONFIGS[config]}) as loader:
        return [(i.clone(), t.clone()) for _ in range(epochs) for i, t in loader]


@pytest.fixture(scope="module")
def reference(image_folder):
    """reference(config) -> its batches. All made at setup, before any test installs the emulation."""
    made = {config: _plain(image_folder, config) for config in CONFIGS}
    return made.__getitem__


@pytest.fixture
def gpu(monkeypatch):
    return emu.install(monkeypatch)


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view(torch.uint8)


def _assert_same(seen, want):
    assert len(seen) == len(want), (len(seen), len(want))
    for n, ((si, st), (wi, wt)) in enumerate(zip(seen, want)):
        assert si.dtype == wi.dtype and si.shape == wi.shape and st.dtype == wt.dtype and st.shape == wt.shape, n
        assert torch.equal(_bits(si), _bits(wi)), f"batch {n}: images differ from the plain CPU run"
        assert torch.equal(_bits(st), _bits(wt)), f"batch {n}: targets differ from the plain CPU run"


def _differs(seen, want) -> bool:
    try:
        _assert_same(seen, want)
    except AssertionError:
        return True
    return False


# ---- the ways users hold batches --------------------------------------------------------------------------------

def _each(loader, gpu, epochs=EPOCHS):
    out = []
    for _ in range(epochs):
        for images, targets in loader:
            emu.step(gpu, images, targets, out)
    return out


def _one_ahead(loader, gpu, epochs=EPOCHS):
    """``nxt = next(it)`` before ``step(cur)``: a prefetching training loop."""
    out = []
    for _ in range(epochs):
        it = iter(loader)
        cur = next(it)
        for nxt in it:
            emu.step(gpu, *cur, out)
            cur = nxt
        emu.step(gpu, *cur, out)
    return out


def _other_stream(loader, gpu, epochs=EPOCHS):
    """The step on a side stream that waits for the loader's (torch's rule for a tensor made on another stream)."""
    side, out = torch.cuda.Stream(), []
    for _ in range(epochs):
        for images, targets in loader:
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                emu.step(gpu, images, targets, out)
    return out


def _kept(loader, gpu, epochs=EPOCHS):
    """Every batch kept past the next call (an EMA teacher, a logged sample) and read at the end."""
    kept = [batch for _ in range(epochs) for batch in loader]
    out = []
    for images, targets in kept:
        emu.step(gpu, images, targets, out)
    return out


PATTERNS = {"each": _each, "one-ahead": _one_ahead, "other-stream": _other_stream, "kept": _kept}


def _run(image_folder, gpu, config, pattern, **extra):
    loader = create_dali_loader(image_folder, **{**KW, **CONFIGS[config], **extra})
    assert loader._in_flight is not None  # the GPU path: a ring of in-flight batches, copies, queued kernels
    out = PATTERNS[pattern](loader, gpu)
    torch.cuda.synchronize()
    loader.close()
    return out


@pytest.mark.parametrize("pattern", list(PATTERNS))
@pytest.mark.parametrize("config", list(CONFIGS))
def test_every_batch_right_however_the_caller_holds_it(image_folder, gpu, reference, config, pattern):
    seen = _run(image_folder, gpu, config, pattern)
    _assert_same(seen, reference(config))
    assert gpu.pool.released > 0  # DALI did take buffers back (and poisoned them) during the run


@pytest.mark.parametrize("config", ["none", "fused-graph"])
def test_zero_copy_batches_right_under_their_rule(image_folder, gpu, reference, config):
    """zero_copy=True: DALI's own memory, read on the current stream before the next call: right."""
    _assert_same(_run(image_folder, gpu, config, "each", zero_copy=True), reference(config))


@pytest.mark.parametrize("pattern", ["one-ahead", "other-stream", "kept"])
def test_zero_copy_broken_rule_is_seen_by_the_tier(image_folder, gpu, reference, pattern):
    """What the default's copy protects from: the same loops over DALI's own memory read wrong pixels (this is
    also c6bd69d's handed-out behaviour, where zero-copy was the only mode)."""
    assert _differs(_run(image_folder, gpu, "none", pattern, zero_copy=True), reference("none"))


# ---- mutation checks: each fix put back is seen ----------------------------------------------------------------

def test_mutation_freed_before_the_wait_is_seen(image_folder, gpu, reference, monkeypatch):
    """Defect 1: the popped entry dropped (DALI's buffers released) before its event is waited for."""

    def old_let_go(ring):
        ring._held.popleft()[0].synchronize()

    monkeypatch.setattr(lifecycle.InFlight, "_let_go_oldest", old_let_go)
    assert _differs(_run(image_folder, gpu, "fused-epilogue", "each"), reference("fused-epilogue"))


@pytest.mark.parametrize("pattern", ["one-ahead", "other-stream", "kept"])
def test_mutation_handed_out_dali_memory_is_seen(image_folder, gpu, reference, monkeypatch, pattern):
    """Defect 2: DALI's memory handed out by default (covered only by the next call's event)."""

    def old_hand_out(loader, tensor, dtype, shared):
        shared.append(tensor)
        return tensor.to(dtype)

    monkeypatch.setattr(epilogue.HandOut, "_hand_out", old_hand_out)
    assert _differs(_run(image_folder, gpu, "none", pattern), reference("none"))


def _mix_with_dali_labels(gpu, image_folder):
    """A user's own loop: mix_batch on a device batch with labels in DALI's pinned memory, the labels then
    dropped (released to DALI) before the GPU gets to the work."""
    rng = np.random.default_rng(0)
    images = gpu.pool.adopt("images", torch.from_numpy(rng.integers(0, 256, (4, 8, 8, 3), dtype=np.uint8)))
    labels = gpu.pool.adopt("labels", torch.tensor([0, 1, 2, 1]))
    params = dm.sample_params(CFG, 4, 8, 8, seed=3)
    out_images, targets = dm.mix_batch(images, labels, CFG, params, check_labels=False)
    del labels  # DALI poisons and reuses it now
    later = gpu.pool.adopt("labels", torch.tensor([2, 2, 2, 2]))  # the next batch's labels in the same memory
    want = dm.mix_targets(torch.tensor([0, 1, 2, 1]), CFG, params)
    torch.cuda.synchronize()
    del later
    return targets, want


def test_host_labels_staged_so_the_caller_may_drop_them(gpu, image_folder):
    targets, want = _mix_with_dali_labels(gpu, image_folder)
    assert torch.equal(_bits(targets), _bits(want))


def test_mutation_pinned_source_read_in_place_is_seen(gpu, image_folder, monkeypatch):
    """Defect 4: ``pin_memory()`` returns an already pinned (DALI) tensor itself: the H2D copy reads it late."""

    def old_to_device(rt, host, dtype=None):
        out = rt._empty(host.shape, dtype or host.dtype)
        rt._copy_async(out, host)  # host.pin_memory() is host: the copy reads DALI's buffer when the GPU gets there
        return out

    monkeypatch.setattr(cuda_runtime.CudaRuntime, "to_device", old_to_device)
    targets, want = _mix_with_dali_labels(gpu, image_folder)
    assert not torch.equal(_bits(targets), _bits(want))


# ---- epoch boundary, close, del, resume -------------------------------------------------------------------------

def _partial(image_folder, gpu, config, count, end):
    """``count`` batches queued (nothing synchronised), then ``end(loader)`` lets the loader go."""
    loader, out = create_dali_loader(image_folder, **{**KW, **CONFIGS[config]}), []
    it = iter(loader)
    for _ in range(count):
        emu.step(gpu, *next(it), out)
    del it
    end(loader)
    return out


def _close(loader):
    loader.close()


@pytest.mark.parametrize("config", ["fused-epilogue", "none"])
@pytest.mark.parametrize("how", ["close", "with", "del"])
def test_loader_let_go_mid_epoch_after_the_gpu_is_done(image_folder, gpu, reference, config, how):
    if how == "with":
        out = []
        with create_dali_loader(image_folder, **{**KW, **CONFIGS[config]}) as loader:
            it = iter(loader)
            for _ in range(3):
                emu.step(gpu, *next(it), out)
    else:
        out = _partial(image_folder, gpu, config, 3, _close if how == "close" else lambda loader: None)
    released = gpu.pool.released
    torch.cuda.synchronize()
    assert released > 0  # the loader's buffers went back to DALI before this synchronise ...
    _assert_same(out, reference(config)[:3])  # ... only after the work reading them had run


def test_mutation_let_go_without_waiting_is_seen(image_folder, gpu, reference, monkeypatch):
    """Defect 7's ordering: the loader's ring dropped without waiting for its events."""

    def old_release(owned):
        owned.ring._held.clear()
        owned.pipe = owned.iterator = owned.source = None

    monkeypatch.setattr(lifecycle.Owned, "release", old_release)
    out = _partial(image_folder, gpu, "fused-epilogue", 3, _close)
    torch.cuda.synchronize()
    assert _differs(out, reference("fused-epilogue")[:3])


def test_closed_loader_refuses_iteration(image_folder, gpu):
    loader = create_dali_loader(image_folder, **KW, mixup=CFG)
    loader.close()
    loader.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        iter(loader)


@pytest.mark.parametrize("config", ["fused-epilogue", "fused-graph", "dali"])
def test_dropped_loader_frees_its_pipelines_at_once(image_folder, config):
    """Defect 7: no reference cycle, so ``del`` frees the DALI pipelines without the garbage collector (also with
    the next epoch's pipeline being made in the background)."""
    gc.collect()
    gc.disable()
    try:
        loader = create_dali_loader(image_folder, **{**KW, **CONFIGS[config]})
        for _ in loader:  # the whole epoch: the next epoch's pipeline is pre-built during its last batches
            pass
        pipes = [weakref.ref(loader._pipe)]
        if loader._next is not None:
            loader._next[1].join()
            pipes += [weakref.ref(loader._next[2]["built"].pipe)]
        ref = weakref.ref(loader)
        del loader
        assert ref() is None and all(p() is None for p in pipes)
    finally:
        gc.enable()


def test_mutation_a_cycle_is_seen(image_folder, monkeypatch):
    """The same check with c6bd69d's strong back-reference from the sampler put back."""
    original = loader_mod.EpochSampler.__init__

    def strong(sampler, loader):
        original(sampler, loader)
        sampler.strong = loader

    monkeypatch.setattr(loader_mod.EpochSampler, "__init__", strong)
    gc.collect()
    gc.disable()
    try:
        loader = create_dali_loader(image_folder, **KW, mixup=CFG)
        pipe = weakref.ref(loader._pipe)
        del loader
        assert pipe() is not None
    finally:
        gc.enable()
        gc.collect()


def test_resume_mid_epoch_on_the_emulated_gpu(image_folder, gpu, reference):
    config, out = "fused-epilogue", []
    loader = create_dali_loader(image_folder, **{**KW, **CONFIGS[config]})
    it = iter(loader)
    for _ in range(2):
        emu.step(gpu, *next(it), out)
    state = loader.state_dict()  # nothing synchronised: two batches still queued
    del it, loader
    resumed = create_dali_loader(image_folder, **{**KW, **CONFIGS[config]})
    resumed.load_state_dict(state)
    for _ in range(EPOCHS):
        for images, targets in resumed:
            emu.step(gpu, images, targets, out)
    torch.cuda.synchronize()
    _assert_same(out, reference(config))


# ---- events, streams, devices -----------------------------------------------------------------------------------

def test_events_block_instead_of_spinning(image_folder, gpu):
    """Defect 8: every event the GPU path waits on is ``blocking=True`` (a waiting host sleeps)."""
    _run(image_folder, gpu, "fused-epilogue", "each")
    assert gpu.events and all(event.blocking for event in gpu.events)


def test_mutation_spinning_events_are_seen(image_folder, gpu, monkeypatch):
    monkeypatch.setattr(cuda_runtime.CudaRuntime, "_event", lambda rt: torch.cuda.Event())
    _run(image_folder, gpu, "fused-epilogue", "each")
    assert not all(event.blocking for event in gpu.events)


def test_kernels_queued_on_torchs_current_stream(image_folder, gpu):
    side = torch.cuda.Stream()
    loader = create_dali_loader(image_folder, **KW, mixup=CFG)
    with torch.cuda.stream(side):
        next(iter(loader))
    loader.close()
    assert [name for name, _, _ in gpu.launches] == ["launch_mix_images", "launch_soft_targets"]
    assert all(queued == current == side.cuda_stream for _, queued, current in gpu.launches)


class _Recorded(Exception):
    pass


@pytest.fixture
def fake_numba(monkeypatch):
    """numba-cuda's launch path, recorded: the device context entered and the stream handle launched on."""
    seen = {}

    class Gpus:
        def __getitem__(self, index):
            seen["context"] = index
            return contextlib.nullcontext()

    class FakeCuda:
        gpus = Gpus()

        @staticmethod
        def external_stream(handle):
            seen["stream"] = handle
            return handle

        @staticmethod
        def as_cuda_array(tensor, sync=True):
            assert sync is False  # no synchronisation when passing torch's tensors
            return tensor

    class FakeKernels:
        def __getattr__(self, name):
            def launch(*args):
                seen["kernel"] = name
                raise _Recorded

            return launch

    monkeypatch.setattr(cuda_runtime, "_numba_cuda", lambda: (FakeKernels(), FakeCuda))
    return seen


class _FakeStream:
    cuda_stream = 0xBEEF


def test_launch_in_the_current_devices_context_on_its_current_stream(monkeypatch, fake_numba):
    """Defects 3 and 9: "cuda" is torch's current device (cuda:3 under torchrun's rank 3), and the kernels run in
    its context on torch's current stream (by handle)."""
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 3)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: _FakeStream)
    rt = cuda_runtime.runtime_for(mixing._target_device("cuda", None))
    assert rt.device == torch.device("cuda", 3)
    with pytest.raises(_Recorded):
        rt.launch_soft_targets(torch.zeros(2, dtype=torch.int64), torch.zeros((2, 9)), 0.0, 1.0, torch.zeros((2, 3)))
    assert fake_numba == {"context": 3, "stream": 0xBEEF, "kernel": "launch_soft_targets"}


def test_mutation_cuda_without_index_on_gpu_0_is_seen(monkeypatch, fake_numba):
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 3)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: _FakeStream)
    monkeypatch.setattr(mixing, "_target_device", lambda device, labels: torch.device(device))
    monkeypatch.setattr(cuda_runtime, "cuda_device", lambda device: torch.device("cuda", device.index or 0))
    rt = cuda_runtime.runtime_for(mixing._target_device("cuda", None))
    with pytest.raises(_Recorded):
        rt.launch_soft_targets(torch.zeros(2, dtype=torch.int64), torch.zeros((2, 9)), 0.0, 1.0, torch.zeros((2, 3)))
    assert fake_numba["context"] == 0  # c6bd69d's `device.index or 0`: GPU 0's context on rank 3


@pytest.mark.parametrize("given, index", [("cuda", 2), ("cuda:1", 1), (torch.device("cuda"), 2), (0, 0)])
def test_cuda_device_is_the_current_device(monkeypatch, given, index):
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 2)
    assert cuda_runtime.cuda_device(given) == torch.device("cuda", index)


def test_cuda_device_refuses_other_devices():
    with pytest.raises(ValueError, match="expected a CUDA device, got cpu"):
        cuda_runtime.cuda_device("cpu")


def test_the_emulation_defers_work_until_waited_for(image_folder, gpu, reference):
    """The tier's own premise: a batch's memory is unfilled until the GPU (a synchronise) gets to it."""
    loader = create_dali_loader(image_folder, **KW, mixup=CFG)
    images, targets = next(iter(loader))
    assert bool((_bits(images) == emu.UNFILLED).all()) and bool((_bits(targets) == emu.UNFILLED).all())
    assert not gpu.events[-1].query()
    torch.cuda.synchronize()
    _assert_same([(images, targets)], reference("fused-epilogue")[:1])
    loader.close()


def _step_all(gpu, tensors, out, stream=None):
    """A step that reads every tensor of a batch (images, compact targets' a, b, λ, the record's fields)."""
    stream = stream or gpu.current
    tensors = [gpu.read(t) for t in tensors]
    slot = len(out)
    out.append(None)

    def work():
        out[slot] = [t.clone() for t in tensors]

    stream.enqueue(work)


def test_compact_targets_and_the_record_right_on_the_emulated_gpu(image_folder, monkeypatch):
    """targets="compact" and record=True reach the device through torch-owned staging: a one-ahead loop over two
    epochs sees, bit for bit, what the plain CPU run gives."""
    kw = dict(KW, mixup=CFG, targets="compact", record=True)

    def flat(batch):
        images, targets, record = batch
        return [images, *targets, *record]

    with create_dali_loader(image_folder, **kw) as loader:
        want = [[t.clone() for t in flat(b)] for _ in range(EPOCHS) for b in loader]
    gpu = emu.install(monkeypatch)
    loader, seen = create_dali_loader(image_folder, **kw), []
    for _ in range(EPOCHS):
        it = iter(loader)
        cur = next(it)
        for nxt in it:
            _step_all(gpu, flat(cur), seen)
            cur = nxt
        _step_all(gpu, flat(cur), seen)
    torch.cuda.synchronize()
    loader.close()
    assert len(seen) == len(want) > 0 and gpu.pool.released > 0
    for s, w in zip(seen, want, strict=True):
        assert all(torch.equal(_bits(a), _bits(b)) for a, b in zip(s, w, strict=True))
