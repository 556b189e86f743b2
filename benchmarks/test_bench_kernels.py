"""Kernel microbenchmarks (pytest-benchmark; off in the normal test run).

Groups ``mix-cpu-B64``/``mix-cpu-B256``: the fused CPU kernel (``mix_batch``: mix + normalise + cast + NCHW +
targets) against the two-pass way (normalise the batch with torch, then timm's ``Mixup`` on it, then cast) and
against DALI's own operators (permute_batch + arithmetic + crop_mirror_normalize), 224², uint8 -> float16. Group ``mix-gpu`` (needs CUDA): the CUDA kernel against timm's ``Mixup`` on CUDA tensors and against a
device-to-device copy moving the same bytes (the memory roofline).

    python -m pytest benchmarks --benchmark-enable --ratios-md benchmarks/results/kernels-cpu.md
"""

import numpy as np
import pytest
import torch
from timm.data.mixup import Mixup

import dali_mixup as dm

B, H, W, C = 64, 224, 224, 1000
CFG = dm.MixupConfig(C, mixup_alpha=1.0, mode="batch", pairing="flip")


def _inputs(device, n=B):
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, H, W, 3), dtype=torch.uint8, generator=g).to(device)
    labels = torch.randint(0, C, (n,), generator=g).to(device)
    params = dm.sample_params(CFG, n, H, W, seed=1)
    # a fixed mixup λ for both ways, so both do the same work
    params = dm.MixParams(params.partner, np.full(n, 0.3, np.float32), np.zeros(n, bool), np.zeros((n, 4)))
    return images, labels, params


def _two_pass(device, images, labels):
    mean = torch.tensor(dm.IMAGENET_MEAN, device=device).view(1, 3, 1, 1) * 255
    std = torch.tensor(dm.IMAGENET_STD, device=device).view(1, 3, 1, 1) * 255
    mixer = Mixup(mixup_alpha=1.0, cutmix_alpha=0.0, label_smoothing=0.0, num_classes=C)
    mixer._params_per_batch = lambda: (0.3, False)

    def run():
        x = images.permute(0, 3, 1, 2).float().sub_(mean).div_(std)
        x, t = mixer(x, labels)
        return x.half(), t

    return run


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _fused(device, images, labels, params):
    def run():
        out = dm.mix_batch(images, labels, CFG, params, out_dtype=torch.float16, check_labels=False)
        _sync(device)
        return out

    return run


CPU_BATCHES = [64, 256]


@pytest.mark.parametrize("n", CPU_BATCHES)
def test_fused_cpu(benchmark, n):
    benchmark.group = f"mix-cpu-B{n}"
    images, labels, params = _inputs("cpu", n)
    benchmark.pedantic(_fused(torch.device("cpu"), images, labels, params), rounds=15, warmup_rounds=2)


@pytest.mark.parametrize("n", CPU_BATCHES)
def test_baseline_two_pass_timm_cpu(benchmark, n):
    benchmark.group = f"mix-cpu-B{n}"
    images, labels, _ = _inputs("cpu", n)
    benchmark.pedantic(_two_pass(torch.device("cpu"), images, labels), rounds=15, warmup_rounds=2)


@pytest.mark.parametrize("n", CPU_BATCHES)
def test_normalise_only_torch_cpu(benchmark, n):
    benchmark.group = f"mix-cpu-B{n}"
    images, _, _ = _inputs("cpu", n)
    mean = torch.tensor(dm.IMAGENET_MEAN).view(1, 3, 1, 1) * 255
    std = torch.tensor(dm.IMAGENET_STD).view(1, 3, 1, 1) * 255
    benchmark.pedantic(lambda: images.permute(0, 3, 1, 2).float().sub_(mean).div_(std).half(), rounds=15,
                       warmup_rounds=2)


def _need_gpu():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    return torch.device("cuda")


@pytest.mark.benchmark(group="mix-gpu")
def test_fused_gpu(benchmark):
    device = _need_gpu()
    images, labels, params = _inputs(device, n=256)
    benchmark.pedantic(_fused(device, images, labels, params), rounds=200, warmup_rounds=10)


@pytest.mark.benchmark(group="mix-gpu")
def test_two_pass_timm_gpu(benchmark):
    device = _need_gpu()
    images, labels, _ = _inputs(device, n=256)
    run = _two_pass(device, images, labels)
    benchmark.pedantic(lambda: (run(), _sync(device)), rounds=200, warmup_rounds=10)


@pytest.mark.benchmark(group="mix-gpu")
def test_baseline_device_copy_same_bytes_gpu(benchmark):
    """A copy of the fp16 output: reads 2 bytes and writes 2 bytes per element, as the mixup kernel does
    (two uint8 sources read, one fp16 written)."""
    device = _need_gpu()
    src = torch.empty((256, 3, H, W), dtype=torch.float16, device=device)
    dst = torch.empty_like(src)
    benchmark.pedantic(lambda: (dst.copy_(src), _sync(device)), rounds=200, warmup_rounds=10)


@pytest.mark.parametrize("n", CPU_BATCHES)
def test_dali_permute_batch_arithmetic_cpu(benchmark, n):
    """DALI's own way, inside a CPU-only pipeline: permute_batch + arithmetic Mixup, then
    crop_mirror_normalize to float16 NCHW (the batch comes in through external_source, which the measured
    pipeline run includes)."""
    from nvidia.dali import fn, pipeline_def, types

    benchmark.group = f"mix-cpu-B{n}"
    images, _, params = _inputs("cpu", n)
    batch = [x.numpy() for x in images]
    partner = [np.array(p, np.int32) for p in params.partner]
    lam = [np.array(v, np.float32) for v in params.lam]

    @pipeline_def(batch_size=n, num_threads=2, device_id=None, prefetch_queue_depth=1)
    def mix():
        x = fn.external_source(source=lambda: batch, batch=True, layout="HWC")
        p = fn.external_source(source=lambda: partner, batch=True)
        w = fn.external_source(source=lambda: lam, batch=True)
        mixed = x * w + fn.permute_batch(x, indices=p) * (1.0 - w)
        return fn.crop_mirror_normalize(mixed, dtype=types.FLOAT16, output_layout="CHW",
                                        mean=[m * 255 for m in dm.IMAGENET_MEAN],
                                        std=[s * 255 for s in dm.IMAGENET_STD])

    pipe = mix()
    pipe.build()
    benchmark.pedantic(pipe.run, rounds=15, warmup_rounds=2)
