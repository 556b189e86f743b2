"""Kernel microbenchmarks (pytest-benchmark; off in the normal test run), timed in alternating rounds.

Groups ``mix-cpu-B{64,256}-{float32,float16}``, uint8 (B, 224, 224, 3) -> ``dtype`` NCHW, the same Mixup (λ = 0.3,
partner = flip) for every mixing configuration:
  fused              ``mix_batch``: the CPU twin (mix + normalise + cast + NCHW) and the soft targets
  two-pass (base)    torch normalise the batch, then timm's ``Mixup`` on it, then cast
  torch-normalise    torch normalise + cast only (no mixing)
  dali-ops           DALI's own operators in a CPU pipeline: permute_batch + arithmetic + crop_mirror_normalize
  dali-normalise     DALI's crop_mirror_normalize only (no mixing; what plain DALI spends on this step)
Groups ``mix-gpu-B256-{float32,float16}`` (need CUDA): the CUDA kernel, timm's ``Mixup`` on CUDA tensors (base),
and a device-to-device copy moving the same bytes (the memory roofline).

    python -m pytest benchmarks --benchmark-enable --ratios-md benchmarks/results/kernels-cpu.md
"""

import numpy as np
import pytest
import torch
from timm.data.mixup import Mixup

import dali_mixup as dm

H, W, C = 224, 224, 1000
CFG = dm.MixupConfig(C, mixup_alpha=1.0, mode="batch", pairing="flip")
DTYPES = {"float32": torch.float32, "float16": torch.float16}
ROUNDS, WARMUP = 15, 2


def _inputs(device, n):
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, H, W, 3), dtype=torch.uint8, generator=g).to(device)
    labels = torch.randint(0, C, (n,), generator=g).to(device)
    params = dm.sample_params(CFG, n, H, W, seed=1)
    # a fixed mixup λ for every way, so all do the same work
    params = dm.MixParams(params.partner, np.full(n, 0.3, np.float32), np.zeros(n, bool), np.zeros((n, 4)))
    return images, labels, params


def _norm(device):
    mean = torch.tensor(dm.IMAGENET_MEAN, device=device).view(1, 3, 1, 1) * 255
    std = torch.tensor(dm.IMAGENET_STD, device=device).view(1, 3, 1, 1) * 255
    return mean, std


def _two_pass(images, labels, dtype):
    mean, std = _norm(images.device)
    mixer = Mixup(mixup_alpha=1.0, cutmix_alpha=0.0, label_smoothing=0.0, num_classes=C)
    mixer._params_per_batch = lambda: (0.3, False)

    def run():
        x = images.permute(0, 3, 1, 2).float().sub_(mean).div_(std)
        x, t = mixer(x, labels)
        return x.to(dtype), t

    return run


def _torch_normalise(images, dtype):
    mean, std = _norm(images.device)
    return lambda: images.permute(0, 3, 1, 2).float().sub_(mean).div_(std).to(dtype)


def _fused(images, labels, params, dtype):
    return lambda: dm.mix_batch(images, labels, CFG, params, out_dtype=dtype, check_labels=False)


def _dali(images, params, dtype, mix):
    """A CPU-only DALI pipeline fed the batch by external_source (included in the timed run): Mixup by
    permute_batch + arithmetic when ``mix``, then crop_mirror_normalize to ``dtype`` NCHW."""
    from nvidia.dali import fn, pipeline_def, types

    batch = [x.numpy() for x in images]
    partner = [np.array(p, np.int32) for p in params.partner]
    lam = [np.array(v, np.float32) for v in params.lam]

    @pipeline_def(batch_size=len(batch), num_threads=2, device_id=None, prefetch_queue_depth=1)
    def graph():
        x = fn.external_source(source=lambda: batch, batch=True, layout="HWC")
        if mix:
            p = fn.external_source(source=lambda: partner, batch=True)
            w = fn.external_source(source=lambda: lam, batch=True)
            x = x * w + fn.permute_batch(x, indices=p) * (1.0 - w)
        return fn.crop_mirror_normalize(x, dtype=types.FLOAT if dtype == torch.float32 else types.FLOAT16,
                                        output_layout="CHW", mean=[m * 255 for m in dm.IMAGENET_MEAN],
                                        std=[s * 255 for s in dm.IMAGENET_STD])

    pipe = graph()
    pipe.build()
    return pipe.run


@pytest.mark.parametrize("dtype", sorted(DTYPES))
@pytest.mark.parametrize("n", [64, 256])
def test_mix_cpu(benchmark, alternating, n, dtype):
    images, labels, params = _inputs("cpu", n)
    dt = DTYPES[dtype]
    configs = {"fused": _fused(images, labels, params, dt), "two-pass": _two_pass(images, labels, dt),
               "torch-normalise": _torch_normalise(images, dt), "dali-ops": _dali(images, params, dt, mix=True),
               "dali-normalise": _dali(images, params, dt, mix=False)}
    alternating(f"mix-cpu-B{n}-{dtype}", configs, "two-pass").run(benchmark, ROUNDS, WARMUP)


@pytest.mark.parametrize("dtype", sorted(DTYPES))
def test_mix_gpu(benchmark, alternating, dtype):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    device = torch.device("cuda")
    images, labels, params = _inputs(device, 256)
    dt = DTYPES[dtype]
    src = torch.empty((256, 3, H, W), dtype=dt, device=device)
    dst = torch.empty_like(src)
    # the copy reads and writes the output's bytes: about the traffic of the kernel (two uint8 reads, one write)
    configs = {"fused": _fused(images, labels, params, dt), "two-pass": _two_pass(images, labels, dt),
               "device-copy-same-bytes": lambda: dst.copy_(src)}
    alternating(f"mix-gpu-B256-{dtype}", configs, "two-pass", sync=torch.cuda.synchronize).run(
        benchmark, 200, 10)
