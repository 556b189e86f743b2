"""GPU tier of the loader: mixed (nvJPEG) decode, the fused kernel on DALI's CUDA outputs (skipped without CUDA)."""

import collections

import pytest
import torch

import dali_mixup as dm
from dali_mixup.loader import create_dali_loader

pytestmark = pytest.mark.gpu

def _bits(t: torch.Tensor) -> torch.Tensor:
    """Compared as bits: a NaN equals only the same NaN, -0.0 differs from 0.0."""
    t = t.detach().contiguous()
    return t.view({1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()])


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(_bits(a), _bits(b))


def _all_same(xs, ys) -> bool:
    return len(xs) == len(ys) and all(_same(xi, yi) and _same(xt, yt) for (xi, xt), (yi, yt) in zip(xs, ys))


CFG = dm.MixupConfig(3, mixup_alpha=0.8, cutmix_alpha=1.0, mode="elem", label_smoothing=0.1)
GPU = dict(batch_size=4, num_classes=3, image_size=32, num_threads=2, device="gpu")


@pytest.mark.parametrize("backend", ["fused", "dali", "none"])
def test_gpu_shapes_device_and_rows(image_folder, backend):
    loader = create_dali_loader(image_folder, mixup=CFG, backend=backend, out_dtype=torch.float16, **GPU)
    n = 0
    for images, targets in loader:
        assert images.is_cuda and targets.is_cuda
        assert images.shape == (4, 3, 32, 32) and images.dtype == torch.float16
        torch.testing.assert_close(targets.sum(1), torch.ones(4, device="cuda"), rtol=0, atol=1e-5)
        n += 1
    assert n == len(loader) == 25 // 4


def test_gpu_fused_and_dali_backends_agree(image_folder, take):
    kw = dict(mixup=CFG, out_dtype=torch.float32, seed=3, **GPU)
    fused = take(create_dali_loader(image_folder, backend="fused", **kw), 3)
    dali = take(create_dali_loader(image_folder, backend="dali", **kw), 3)
    assert len(fused) == len(dali) == 3
    for (fi, ft), (di, dt) in zip(fused, dali):
        torch.testing.assert_close(ft, dt, rtol=0, atol=1e-6)
        torch.testing.assert_close(fi, di, rtol=0, atol=2e-4)


@pytest.mark.parametrize("placement", ["epilogue", "graph"])
def test_gpu_same_seed_and_resume(image_folder, take, resume, placement):
    kw = dict(mixup=CFG, seed=4, placement=placement, **GPU)
    a = take(create_dali_loader(image_folder, **kw), 2)
    b = take(create_dali_loader(image_folder, **kw), 2)
    assert len(a) == 2 and _all_same(a, b)
    _, rest, _, again = resume(lambda: create_dali_loader(image_folder, **kw))
    assert _all_same(rest, again)


def test_gpu_eval_matches_cpu_eval(image_folder):
    kw = dict(batch_size=25, num_classes=3, image_size=32, num_threads=2, train=False, out_dtype=torch.float32)
    gpu_images, gpu_targets = next(iter(create_dali_loader(image_folder, device="gpu", **kw)))
    cpu_images, cpu_targets = next(iter(create_dali_loader(image_folder, device="cpu", **kw)))
    assert torch.equal(gpu_targets.cpu(), cpu_targets)
    # nvJPEG and libjpeg-turbo may differ by a few grey levels; resizing differs at most a little more
    assert (gpu_images.cpu() - cpu_images).abs().mean() < 0.05


class _PoisonOnRelease(collections.deque):
    """The loader's ring with DALI's reuse made certain: the moment an entry leaves it, its buffers are
    overwritten (on a stream of their own, finished before the entry is let go), as DALI may do with memory no
    reference is left to. A ring that lets go before the GPU work reading the buffers has completed then gives
    wrong batches every time, not only when DALI happens to reuse the block."""

    def popleft(self):
        entry = super().popleft()
        side = torch.cuda.Stream()
        with torch.cuda.stream(side):
            for tensor in entry[1]:
                if tensor.is_cuda:
                    tensor.view(torch.uint8).fill_(0xA5) if tensor.is_contiguous() else tensor.fill_(0)
        side.synchronize()
        return entry


def _one_ahead(loader):
    it = iter(loader)
    cur = next(it)
    for nxt in it:
        yield cur
        cur = nxt
    yield cur


@pytest.mark.parametrize("backend, loop", [("fused", "each"), ("fused", "one_ahead"), ("none", "one_ahead"),
                                           ("dali", "kept")])
def test_gpu_batches_survive_a_stream_running_far_behind(image_folder, backend, loop):
    """The lifetime rules on a real GPU: torch's stream delayed before every batch's work (the host runs ahead by
    more than DALI's prefetch depth), DALI's buffers poisoned the moment the loader lets them go, and the step
    queued one batch late or every batch kept; two epochs must equal the same run synchronised after each batch."""
    kw = dict(mixup=CFG if backend != "none" else None, backend=backend, seed=5, out_dtype=torch.float32, **GPU)

    def two_epochs(stressed):
        loader, out = create_dali_loader(image_folder, **kw), []
        if stressed:
            loader._in_flight._held = _PoisonOnRelease()
        for _ in range(2):
            batches = loader if not stressed or loop == "each" else (
                _one_ahead(loader) if loop == "one_ahead" else list(loader))
            for images, targets in batches:
                if stressed:
                    torch.cuda._sleep(20_000_000)  # tens of ms of GPU time queued ahead of the step
                    out.append((images * 1, targets * 1))  # the step: reads the batch on torch's stream
                else:
                    torch.cuda.synchronize()
                    out.append((images.clone(), targets.clone()))
        torch.cuda.synchronize()
        return out

    reference = two_epochs(stressed=False)
    stressed = two_epochs(stressed=True)
    assert len(stressed) == len(reference) == 2 * (25 // 4) and _all_same(reference, stressed)


def test_gpu_kernels_launch_on_torchs_current_stream(image_folder, monkeypatch):
    """The epilogue's kernels go on the current stream of the loader's device (by handle), also a side one."""
    from numba import cuda
    handles, external = [], cuda.external_stream
    monkeypatch.setattr(cuda, "external_stream", lambda handle: handles.append(handle) or external(handle))
    loader = create_dali_loader(image_folder, mixup=CFG, **GPU)
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        next(iter(loader))
    assert handles == [side.cuda_stream, side.cuda_stream]
    loader.close()


def test_gpu_loader_uses_torchs_current_device(image_folder):
    loader = create_dali_loader(image_folder, mixup=CFG, **GPU)
    assert loader.device == torch.device("cuda", torch.cuda.current_device())
    images, targets = next(iter(loader))
    assert images.device == loader.device and targets.device == loader.device


@pytest.mark.parametrize("augment", [{}, dict(auto_augment="rand-m9-mstd0.5-inc1", re_prob=0.5)])
def test_gpu_a_size_per_batch(image_folder, resume, augment):
    """PerBatchSizes on the GPU graph (the size an argument input of the resize; with auto_augment and random
    erasing, conditionals split and merge nvJPEG's crops by size): each batch at its listed size; the graph
    placement gives the epilogue's bits; DALI's own operators the same images; resume as bits."""
    kw = dict(GPU, mixup=CFG, seed=5, image_size=dm.PerBatchSizes((24, 28, 32)), out_dtype=torch.float32,
              **augment)

    def two_epochs(**more):
        loader = create_dali_loader(image_folder, **{**kw, **more})
        out = [(i.clone(), t.clone()) for _ in range(2) for i, t in loader]
        assert [i.shape[-1] for i, _ in out] == loader.sizes_at(0) + loader.sizes_at(1)
        return out

    epilogue, graph, dali = two_epochs(), two_epochs(placement="graph"), two_epochs(backend="dali")
    assert len({i.shape[-1] for i, _ in epilogue}) > 1 and _all_same(epilogue, graph)
    for (ei, et), (di, dt) in zip(epilogue, dali):
        torch.testing.assert_close(di, ei, rtol=0, atol=2e-4)
        torch.testing.assert_close(dt, et, rtol=0, atol=1e-6)
    _, rest, _, again = resume(lambda: create_dali_loader(image_folder, **kw), skip=2)
    assert _all_same(rest, again)
