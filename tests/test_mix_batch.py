"""mix_batch / mix_targets: the public contract, bad input, and timm as a differential oracle."""

import numpy as np
import pytest
import torch
from timm.data import mixup as timm_mixup

import dali_mixup as dm
from dali_mixup import reference as ref


def _batch(n=6, h=12, w=10, classes=5, seed=0):
    rng = np.random.default_rng(seed)
    images = torch.from_numpy(rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8))
    labels = torch.from_numpy(rng.integers(0, classes, n))
    return images, labels


def test_params_none_draws_from_the_key():
    images, labels = _batch()
    cfg = dm.MixupConfig(5, mixup_alpha=1.0, cutmix_alpha=1.0, mode="elem")
    key = dict(seed=4, epoch=2, step=9, rank=1)
    a = dm.mix_batch(images, labels, cfg, **key)
    b = dm.mix_batch(images, labels, cfg, dm.sample_params(cfg, 6, 12, 10, **key))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    c = dm.mix_batch(images, labels, cfg, seed=4, epoch=2, step=10, rank=1)
    assert not torch.equal(a[0], c[0])


@pytest.mark.parametrize("cfg", [dm.MixupConfig(5, mixup_alpha=0.0), dm.MixupConfig(5, cutmix_alpha=1.0, prob=0.0)])
def test_disabled_mixing_is_normalisation_and_one_hot(cfg):
    images, labels = _batch()
    out, targets = dm.mix_batch(images, labels, cfg, layout="NHWC")
    expected = (images.float() / 255 - torch.tensor(dm.IMAGENET_MEAN)) / torch.tensor(dm.IMAGENET_STD)
    torch.testing.assert_close(out, expected, rtol=0, atol=2e-6)
    assert torch.equal(targets, torch.nn.functional.one_hot(labels, 5).float())


def test_output_shapes_dtypes_and_device():
    images, labels = _batch(n=3, h=7, w=5)
    cfg = dm.MixupConfig(5)
    for layout, shape in (("NCHW", (3, 3, 7, 5)), ("NHWC", (3, 7, 5, 3))):
        for dtype in (torch.float32, torch.float16, torch.bfloat16):
            out, targets = dm.mix_batch(images, labels, cfg, out_dtype=dtype, layout=layout)
            assert out.shape == shape and out.dtype == dtype and out.device == images.device
            assert targets.shape == (3, 5) and targets.dtype == torch.float32


def test_non_contiguous_input_and_int32_labels():
    images, labels = _batch(n=4)
    strided = images.permute(0, 2, 1, 3).contiguous().permute(0, 2, 1, 3)
    assert not strided.is_contiguous()
    cfg = dm.MixupConfig(5, mode="elem")
    a = dm.mix_batch(strided, labels.int(), cfg)
    b = dm.mix_batch(images, labels, cfg)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_mix_targets_dense_and_compact_use_the_same_lambda():
    images, labels = _batch()
    cfg = dm.MixupConfig(5, mixup_alpha=1.0, mode="elem", label_smoothing=0.1)
    params = dm.sample_params(cfg, 6, 12, 10, seed=1)
    _, targets = dm.mix_batch(images, labels, cfg, params)
    assert torch.equal(dm.mix_targets(labels, cfg, params), targets)
    ya, yb, lam = dm.mix_targets(labels, cfg, params, dense=False)
    want_a, want_b, want_lam = ref.compact_targets(labels.numpy(), params)
    assert np.array_equal(ya.numpy(), want_a) and np.array_equal(yb.numpy(), want_b)
    assert np.array_equal(lam.numpy(), want_lam)
    off, on = cfg.off_on
    rebuilt = lam[:, None] * (off + (on - off) * torch.nn.functional.one_hot(ya, 5)) + \
        (1 - lam[:, None]) * (off + (on - off) * torch.nn.functional.one_hot(yb, 5))
    torch.testing.assert_close(rebuilt.float(), targets, rtol=0, atol=1e-6)


@pytest.mark.parametrize("make,exc,match", [
    (lambda im, lb: (im.float(), lb), TypeError, "uint8"),
    (lambda im, lb: (im.numpy(), lb), TypeError, "torch.Tensor"),
    (lambda im, lb: (im[..., 0], lb), ValueError, r"\(B, H, W, 3\)"),
    (lambda im, lb: (torch.cat([im, im[..., :1]], -1), lb), ValueError, r"\(B, H, W, 3\)"),
    (lambda im, lb: (im.permute(0, 3, 1, 2), lb), ValueError, r"\(B, H, W, 3\)"),
    (lambda im, lb: (im[:0], lb[:0]), ValueError, "non-empty"),
    (lambda im, lb: (im[:, :0], lb), ValueError, "non-empty"),
    (lambda im, lb: (im, lb.float()), TypeError, "labels"),
    (lambda im, lb: (im, lb[:-1]), ValueError, "labels"),
    (lambda im, lb: (im, lb + 5), ValueError, "num_classes=5"),
    (lambda im, lb: (im, lb - 10), ValueError, "labels must lie"),
])
def test_bad_input_raises_clear_errors(make, exc, match):
    images, labels = _batch()
    images, labels = make(images, labels)
    with pytest.raises(exc, match=match):
        dm.mix_batch(images, labels, dm.MixupConfig(5))


@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(out_dtype=torch.float64), ValueError, "out_dtype"),
    (dict(layout="CHW"), ValueError, "layout"),
    (dict(mean=(0.5, 0.5)), ValueError, "mean"),
    (dict(std=(0.2, 0.0, 0.2)), ValueError, "std"),
    (dict(flip=np.zeros(5, bool)), ValueError, "flip"),
    (dict(params="not params"), TypeError, "params"),
    (dict(seed=-1), ValueError, "seed"),
])
def test_bad_arguments_raise_clear_errors(kwargs, exc, match):
    images, labels = _batch()
    with pytest.raises(exc, match=match):
        dm.mix_batch(images, labels, dm.MixupConfig(5), **kwargs)


def test_params_for_another_batch_are_rejected():
    images, labels = _batch()
    cfg = dm.MixupConfig(5, cutmix_alpha=1.0)
    with pytest.raises(ValueError, match="batch size"):
        dm.mix_batch(images, labels, cfg, dm.sample_params(cfg, 8, 12, 10))
    with pytest.raises(TypeError, match="cfg"):
        dm.mix_batch(images, labels, {"num_classes": 5})


# ---- timm as the differential oracle ---------------------------------------------------------------------------

def _timm_apply(images, labels, cfg, params, monkeypatch):
    """Run timm's Mixup (pairing flip) on the normalised float batch, forced to our λ, choice and boxes."""
    n = len(labels)
    mixer = timm_mixup.Mixup(mixup_alpha=cfg.mixup_alpha, cutmix_alpha=cfg.cutmix_alpha,
                             cutmix_minmax=cfg.cutmix_minmax, prob=cfg.prob, switch_prob=cfg.switch_prob,
                             mode=cfg.mode, correct_lam=cfg.correct_lam, label_smoothing=cfg.label_smoothing,
                             num_classes=cfg.num_classes)
    sets = {"batch": [0], "pair": range(n // 2), "elem": range(n)}[cfg.mode]
    sets = list(sets)
    # timm draws λ before correcting it to the box; for CutMix hand it the λ that gives our box area back
    lam = params.lam[sets].copy()
    boxes = iter([tuple(int(v) for v in params.box[i]) for i in sets if params.use_cutmix[i]])
    monkeypatch.setattr(timm_mixup, "rand_bbox", lambda *a, **k: next(boxes))
    monkeypatch.setattr(timm_mixup, "rand_bbox_minmax", lambda *a, **k: next(boxes))
    if cfg.mode == "batch":
        monkeypatch.setattr(mixer, "_params_per_batch", lambda: (float(lam[0]), bool(params.use_cutmix[0])))
    else:
        monkeypatch.setattr(mixer, "_params_per_elem", lambda k: (lam, params.use_cutmix[sets].copy()))
    x = (images.permute(0, 3, 1, 2).float() / 255 - torch.tensor(dm.IMAGENET_MEAN)[:, None, None]) \
        / torch.tensor(dm.IMAGENET_STD)[:, None, None]
    return mixer(x, labels.clone())


@pytest.mark.parametrize("mode", ["batch", "pair", "elem"])
@pytest.mark.parametrize("alphas", [(1.0, 0.0), (0.0, 1.0), (0.8, 1.0)])
@pytest.mark.parametrize("correct_lam", [True, False])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_matches_timm_mixup(mode, alphas, correct_lam, smoothing, monkeypatch):
    n, h, w, classes = 6, 24, 20, 5
    cfg = dm.MixupConfig(classes, mixup_alpha=alphas[0], cutmix_alpha=alphas[1], mode=mode, pairing="flip",
                         correct_lam=correct_lam, label_smoothing=smoothing)
    for step in range(4):
        images, labels = _batch(n, h, w, classes, seed=step)
        params = dm.sample_params(cfg, n, h, w, seed=5, step=step)
        ours, targets = dm.mix_batch(images, labels, cfg, params)
        with monkeypatch.context() as mp:
            x, timm_targets = _timm_apply(images, labels, cfg, params, mp)
        torch.testing.assert_close(ours, x, rtol=0, atol=2e-5)
        torch.testing.assert_close(targets, timm_targets, rtol=0, atol=1e-6)


def test_matches_timm_mixup_target_directly():
    labels = torch.tensor([0, 3, 3, 1, 4, 2])
    cfg = dm.MixupConfig(5, label_smoothing=0.1, pairing="flip")
    params = dm.sample_params(cfg, 6, 8, 8, seed=2)
    want = timm_mixup.mixup_target(labels, 5, lam=float(params.lam[0]), smoothing=0.1)
    torch.testing.assert_close(dm.mix_targets(labels, cfg, params), want, rtol=0, atol=1e-6)


def test_matches_timm_with_cutmix_minmax(monkeypatch):
    n, h, w = 4, 32, 32
    cfg = dm.MixupConfig(5, mixup_alpha=0.0, cutmix_minmax=(0.3, 0.7), mode="elem", pairing="flip")
    images, labels = _batch(n, h, w, 5)
    params = dm.sample_params(cfg, n, h, w, seed=8)
    assert params.use_cutmix.all()
    ours, targets = dm.mix_batch(images, labels, cfg, params)
    x, timm_targets = _timm_apply(images, labels, cfg, params, monkeypatch)
    torch.testing.assert_close(ours, x, rtol=0, atol=2e-5)
    torch.testing.assert_close(targets, timm_targets, rtol=0, atol=1e-6)
