"""GPU tier of the loader: mixed (nvJPEG) decode, the fused kernel on DALI's CUDA outputs (skipped without CUDA)."""

import pytest
import torch

import dali_mixup as dm
from dali_mixup.loader import create_dali_loader

pytestmark = pytest.mark.gpu

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
    for (fi, ft), (di, dt) in zip(take(create_dali_loader(image_folder, backend="fused", **kw), 3),
                                  take(create_dali_loader(image_folder, backend="dali", **kw), 3)):
        torch.testing.assert_close(ft, dt, rtol=0, atol=1e-6)
        torch.testing.assert_close(fi, di, rtol=0, atol=2e-4)


def test_gpu_same_seed_and_resume(image_folder, take):
    kw = dict(mixup=CFG, seed=4, **GPU)
    a = take(create_dali_loader(image_folder, **kw), 2)
    b = take(create_dali_loader(image_folder, **kw), 2)
    for (ai, at), (bi, bt) in zip(a, b):
        assert torch.equal(ai, bi) and torch.equal(at, bt)
    loader = create_dali_loader(image_folder, **kw)
    it = iter(loader)
    next(it)
    state = loader.state_dict()
    rest = [(i.clone(), t.clone()) for i, t in it]
    resumed = create_dali_loader(image_folder, **kw)
    resumed.load_state_dict(state)
    again = [(i.clone(), t.clone()) for i, t in resumed]
    assert len(rest) == len(again)
    for (ri, rt), (gi, gt) in zip(rest, again):
        assert torch.equal(ri, gi) and torch.equal(rt, gt)


def test_gpu_eval_matches_cpu_eval(image_folder):
    kw = dict(batch_size=25, num_classes=3, image_size=32, num_threads=2, train=False, out_dtype=torch.float32)
    gpu_images, gpu_targets = next(iter(create_dali_loader(image_folder, device="gpu", **kw)))
    cpu_images, cpu_targets = next(iter(create_dali_loader(image_folder, device="cpu", **kw)))
    assert torch.equal(gpu_targets.cpu(), cpu_targets)
    # nvJPEG and libjpeg-turbo may differ by a few grey levels; resizing differs at most a little more
    assert (gpu_images.cpu() - cpu_images).abs().mean() < 0.05


def test_gpu_batches_survive_a_stream_running_far_behind(image_folder, monkeypatch):
    """DALI's zero-copy buffers stay referenced until the kernels that read them have completed: with torch's
    stream delayed before every kernel (the host runs ahead by more than DALI's prefetch depth), every batch of
    two epochs equals the same run with a synchronisation after each batch."""
    from dali_mixup import loader as loader_mod

    kw = dict(mixup=CFG, seed=5, out_dtype=torch.float32, **GPU)

    def two_epochs(sync):
        loader, out = create_dali_loader(image_folder, **kw), []
        for _ in range(2):
            for images, targets in loader:
                if sync:
                    torch.cuda.synchronize()
                out.append((images, targets))
        torch.cuda.synchronize()
        return out

    reference = two_epochs(sync=True)
    mix_batch = loader_mod.mix_batch

    def delayed(*args, **kwargs):
        torch.cuda._sleep(20_000_000)  # tens of ms of GPU time queued ahead of the kernels
        return mix_batch(*args, **kwargs)

    monkeypatch.setattr(loader_mod, "mix_batch", delayed)
    stressed = two_epochs(sync=False)
    assert len(stressed) == len(reference) == 2 * (25 // 4)
    for (ri, rt), (si, st) in zip(reference, stressed):
        assert torch.equal(ri, si) and torch.equal(rt, st)


def test_gpu_loader_uses_torchs_current_device(image_folder):
    loader = create_dali_loader(image_folder, mixup=CFG, **GPU)
    assert loader.device == torch.device("cuda", torch.cuda.current_device())
    images, targets = next(iter(loader))
    assert images.device == loader.device and targets.device == loader.device
