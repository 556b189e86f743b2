"""The losses on mixed targets (``dali_mixup.losses``), differentially against timm's on the same targets."""

import numpy as np
import pytest
import torch
from timm.loss import BinaryCrossEntropy, SoftTargetCrossEntropy

import dali_mixup as dm
from dali_mixup.losses import (CompactTargets, MixupBinaryCrossEntropy, MixupCrossEntropy,
                               mixup_binary_cross_entropy, mixup_cross_entropy)

RTOL = 1e-5  # compact vs dense: the same sum in another order, float32


def _batch(n, c, smoothing, seed=0, mode="elem"):
    """Logits, the dense soft targets of the fused kernel and the compact ones of the same parameters. Labels
    repeat (same-class pairs occur), and some samples are their own partner's class."""
    cfg = dm.MixupConfig(c, mixup_alpha=0.8, cutmix_alpha=1.0, mode=mode, label_smoothing=smoothing)
    params = dm.sample_params(cfg, n, 32, 32, seed=seed)
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, min(c, max(2, n // 3)), (n,), generator=g)
    logits = torch.randn((n, c), generator=g) * 3
    dense = dm.mix_targets(labels, cfg, params)
    a, b, lam = dm.mix_targets(labels, cfg, params, dense=False)
    return logits, dense, CompactTargets(a, b, lam, c, smoothing)


@pytest.mark.parametrize("c", [10, 1000, 21841])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_cross_entropy_equals_timms_soft_target_cross_entropy(c, smoothing):
    logits, dense, compact = _batch(24, c, smoothing)
    want = SoftTargetCrossEntropy()(logits, dense)
    assert torch.equal(mixup_cross_entropy(logits, dense), want)  # dense: timm's operations exactly
    got = mixup_cross_entropy(logits, compact)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, want, rtol=RTOL, atol=0)
    torch.testing.assert_close(MixupCrossEntropy()(logits, compact), want, rtol=RTOL, atol=0)


def test_compact_targets_describe_the_dense_rows():
    _, dense, compact = _batch(32, 50, 0.1, mode="pair")
    assert (compact.a == compact.b).any() and (compact.a != compact.b).any()
    torch.testing.assert_close(compact.dense(), dense, rtol=0, atol=1e-6)
    a, b, lam = compact
    assert a is compact.a and b is compact.b and lam is compact.lam and compact.batch_size == 32


@pytest.mark.parametrize("threshold", [None, 0.2])
@pytest.mark.parametrize("sum_classes", [False, True])
@pytest.mark.parametrize("pos_weight", [None, 2.5])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_binary_cross_entropy_equals_timms(threshold, sum_classes, pos_weight, smoothing):
    logits, dense, compact = _batch(20, 300, smoothing, seed=3)
    timm_loss = BinaryCrossEntropy(target_threshold=threshold, sum_classes=sum_classes, pos_weight=pos_weight)
    want = timm_loss(logits, dense)
    kw = dict(target_threshold=threshold, sum_classes=sum_classes, pos_weight=pos_weight)
    torch.testing.assert_close(mixup_binary_cross_entropy(logits, dense, **kw), want, rtol=1e-7, atol=0)
    torch.testing.assert_close(mixup_binary_cross_entropy(logits, compact, **kw), want, rtol=RTOL, atol=0)
    module = MixupBinaryCrossEntropy(threshold, sum_classes, pos_weight)
    torch.testing.assert_close(module(logits, compact), want, rtol=RTOL, atol=0)


def test_threshold_sees_the_same_binarised_targets():
    """A threshold between the two mixed weights keeps one class of a pair and drops the other, as timm does."""
    logits, dense, compact = _batch(64, 40, 0.1, seed=5)
    for threshold in (0.05, 0.3, 0.5, 0.7, 0.95):
        want = BinaryCrossEntropy(target_threshold=threshold)(logits, dense)
        got = mixup_binary_cross_entropy(logits, compact, target_threshold=threshold)
        torch.testing.assert_close(got, want, rtol=RTOL, atol=0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_logits_under_autocast(dtype):
    """Under autocast (timm's AMP), log_softmax and BCE-with-logits run in float32 for timm; so do these."""
    logits, dense, compact = _batch(16, 1000, 0.1, seed=7)
    half = logits.to(dtype)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        want_ce = SoftTargetCrossEntropy()(half, dense)
        got_ce = mixup_cross_entropy(half, compact)
        want_bce = BinaryCrossEntropy()(half, dense)
        got_bce = mixup_binary_cross_entropy(half, compact)
    assert got_ce.dtype == got_bce.dtype == torch.float32
    torch.testing.assert_close(got_ce.float(), want_ce.float(), rtol=1e-3, atol=0)
    torch.testing.assert_close(got_bce.float(), want_bce.float(), rtol=1e-3, atol=0)


def test_gradients_agree():
    logits, dense, compact = _batch(12, 100, 0.1, seed=9)
    x1, x2 = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    SoftTargetCrossEntropy()(x1, dense).backward()
    mixup_cross_entropy(x2, compact).backward()
    torch.testing.assert_close(x2.grad, x1.grad, rtol=1e-4, atol=1e-7)


def test_bad_targets_are_named():
    logits, dense, compact = _batch(8, 10, 0.0)
    with pytest.raises(ValueError, match="do not match logits of shape"):
        mixup_cross_entropy(logits[:, :5], compact)
    with pytest.raises(ValueError, match="dense"):
        mixup_cross_entropy(logits, dense[:4])
    with pytest.raises(TypeError, match="int64"):
        CompactTargets(compact.a.int(), compact.b, compact.lam, 10)
    with pytest.raises(ValueError, match="one shape"):
        CompactTargets(compact.a, compact.b[:3], compact.lam, 10)
    with pytest.raises(ValueError, match="target_threshold"):
        mixup_binary_cross_entropy(logits, compact, target_threshold=2.0)


def test_compact_targets_never_build_the_dense_rows(monkeypatch):
    """No (B, C) target tensor: the only (B, C) tensors are the logits' own log-softmax/softplus."""
    logits, _, compact = _batch(8, 21841, 0.1)
    monkeypatch.setattr(CompactTargets, "dense", lambda self: pytest.fail("dense targets built"))
    made = []
    real_one_hot = torch.nn.functional.one_hot
    monkeypatch.setattr(torch.nn.functional, "one_hot", lambda *a, **k: made.append(1) or real_one_hot(*a, **k))
    mixup_cross_entropy(logits, compact)
    mixup_binary_cross_entropy(logits, compact, target_threshold=0.2)
    assert not made
    assert np.isfinite(float(mixup_cross_entropy(logits, compact)))
