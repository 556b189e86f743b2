"""What "memory the caller owns" costs: the copy of a finished batch that the loader makes on the GPU for backends
"none"/"dali" and placement "graph" (unless ``zero_copy=True``), timed against the fused kernel's own time on the
same batch in alternating rounds (pytest-benchmark; off in the normal test run).

Groups ``owned-copy-{cpu,gpu}-B{64,256}-{float32,float16}``, a (B, 3, 224, 224) batch:
  owned-copy         ``CudaRuntime.owned_copy``'s work: a new tensor of the batch's shape, filled by one copy
  fused (baseline)   ``mix_batch`` on the uint8 (B, 224, 224, 3) batch: what the epilogue spends per batch
On the CPU the loader makes no such copy (nothing runs behind the host, and DALI reuses no buffer a reference is
left to): the CPU group only sizes the copy against the kernel on this machine. The GPU groups need CUDA.

    python -m pytest benchmarks/test_bench_owned_copy.py --benchmark-enable --ratios-md FILE
"""

import pytest
import torch

import dali_mixup as dm

H, W = 224, 224
CFG = dm.MixupConfig(1000, mixup_alpha=1.0)
DTYPES = {"float32": torch.float32, "float16": torch.float16}
ROUNDS, WARMUP = 15, 2


@pytest.mark.parametrize("n", [64, 256])
@pytest.mark.parametrize("dtype", sorted(DTYPES))
@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_owned_copy_vs_fused_kernel(benchmark, alternating, gpu_available, device, dtype, n):
    if device == "cuda" and not gpu_available:
        pytest.skip("needs CUDA")
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, H, W, 3), dtype=torch.uint8, generator=g).to(device)
    labels = torch.randint(0, 1000, (n,), generator=g).to(device)
    batch = torch.randn((n, 3, H, W), generator=g).to(device, DTYPES[dtype])
    params = dm.sample_params(CFG, n, H, W, seed=1)

    def owned_copy():
        torch.empty_like(batch).copy_(batch, non_blocking=True)

    def fused():
        dm.mix_batch(images, labels, CFG, params, out_dtype=DTYPES[dtype], check_labels=False)

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    group = f"owned-copy-{'gpu' if device == 'cuda' else 'cpu'}-B{n}-{dtype}"
    alternating(group, {"owned-copy": owned_copy, "fused": fused}, "fused", sync=sync).run(
        benchmark, ROUNDS, WARMUP)
