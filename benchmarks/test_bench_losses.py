"""Loss on mixed targets: compact vs dense vs timm, time and memory (pytest-benchmark; off in the normal test run).

Groups ``loss-{cpu,gpu}-C{1000,21841}-B256``: per configuration, the targets made from a batch's labels and
mixing parameters, then the loss forward and backward on float32 logits:
  timm (baseline)  timm's ``mixup_target`` (dense one-hot + smoothing + mix) + ``SoftTargetCrossEntropy``
  dense            the fused soft-label kernel (``mix_targets``) + ``mixup_cross_entropy`` on the (B, C) rows
  compact          ``CompactTargets`` (a, b, λ: 20 bytes a sample) + ``mixup_cross_entropy``
Memory: the bytes of the targets each hands to the loss (exact, from the tensors); on a GPU also the peak of
torch's allocator over one step (``torch.cuda.max_memory_allocated``), in ``extra_info``.

    python -m pytest benchmarks/test_bench_losses.py --benchmark-enable --ratios-md FILE
"""

import pytest
import torch
from timm.data.mixup import mixup_target
from timm.loss import SoftTargetCrossEntropy

import dali_mixup as dm
from dali_mixup.losses import CompactTargets, mixup_cross_entropy

B, SMOOTHING = 256, 0.1
ROUNDS, WARMUP = 15, 2


def _configs(device, c):
    cfg = dm.MixupConfig(c, mixup_alpha=0.8, mode="batch", pairing="flip", label_smoothing=SMOOTHING)
    params = dm.sample_params(cfg, B, 224, 224, seed=1)
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, c, (B,), generator=g).to(device)
    logits = torch.randn((B, c), generator=g).to(device).requires_grad_()
    lam = float(params.lam[0])  # batch mode, flip pairing: timm's mixup_target is the same target

    def timm():
        targets = mixup_target(labels, c, lam, SMOOTHING)
        SoftTargetCrossEntropy()(logits, targets).backward()
        return targets

    def dense():
        targets = dm.mix_targets(labels, cfg, params, check_labels=False)
        mixup_cross_entropy(logits, targets).backward()
        return targets

    def compact():
        a, b, lam_t = dm.mix_targets(labels, cfg, params, dense=False, check_labels=False)
        targets = CompactTargets(a, b, lam_t, c, SMOOTHING)
        mixup_cross_entropy(logits, targets).backward()
        return targets

    return {"timm": timm, "dense": dense, "compact": compact}


def _target_bytes(targets) -> int:
    tensors = list(targets) if isinstance(targets, CompactTargets) else [targets]
    return sum(t.numel() * t.element_size() for t in tensors)


@pytest.mark.parametrize("c", [1000, 21841])
@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_loss_compact_vs_dense_vs_timm(benchmark, alternating, gpu_available, device, c):
    if device == "cuda" and not gpu_available:
        pytest.skip("needs CUDA")
    configs = _configs(device, c)
    memory = {name: {"target_bytes": _target_bytes(run())} for name, run in configs.items()}
    if device == "cuda":
        for name, run in configs.items():
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            run()
            torch.cuda.synchronize()
            memory[name]["peak_bytes_over_step"] = torch.cuda.max_memory_allocated() - base
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    group = f"loss-{'gpu' if device == 'cuda' else 'cpu'}-C{c}-B{B}"
    alternating(group, configs, "timm", sync=sync).run(benchmark, ROUNDS, WARMUP)
    benchmark.extra_info["memory"] = memory
    print(group, memory)
