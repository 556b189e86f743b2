"""Invariants of the NumPy oracle (what every kernel is compared against)."""

import numpy as np
import pytest

import dali_mixup as dm
from dali_mixup import reference as ref

NORM = dict(mean=dm.IMAGENET_MEAN, std=dm.IMAGENET_STD)


def _normalised(images):
    return ((images.astype(np.float32) / 255 - np.float32(dm.IMAGENET_MEAN)) / np.float32(dm.IMAGENET_STD))


def test_identity_params_give_plain_normalisation(make_batch):
    images = make_batch(3, 5, 6)
    p = dm.sample_params(dm.MixupConfig(10, prob=0.0), 3, 5, 6)
    out = ref.mix_images(images, p, layout="NHWC", **NORM)
    np.testing.assert_allclose(out, _normalised(images), rtol=0, atol=2e-6)


@pytest.mark.parametrize("cfg", [dm.MixupConfig(10, prob=0.0), dm.MixupConfig(10, mixup_alpha=0.0)])
def test_no_mixing_gives_one_hot(cfg):
    labels = np.array([3, 1, 4, 1, 5])
    p = dm.sample_params(cfg, 5, 4, 4)
    assert np.all(p.lam == 1)
    np.testing.assert_array_equal(ref.soft_targets(labels, p, cfg), np.eye(10, dtype=np.float32)[labels])


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.3])
@pytest.mark.parametrize("mode", ["batch", "pair", "elem"])
def test_target_rows_sum_to_one_same_class_pairs_included(smoothing, mode):
    cfg = dm.MixupConfig(7, mixup_alpha=1.0, cutmix_alpha=1.0, label_smoothing=smoothing, mode=mode)
    labels = np.array([2, 2, 2, 5, 0, 5, 2, 6])  # many same-class pairs
    for step in range(5):
        t = ref.soft_targets(labels, dm.sample_params(cfg, 8, 16, 16, step=step), cfg)
        np.testing.assert_allclose(t.sum(1), 1.0, rtol=0, atol=1e-6)
        assert t.min() >= 0


def test_same_class_pair_row_is_the_smoothed_one_hot():
    cfg = dm.MixupConfig(4, label_smoothing=0.2)
    p = dm.MixParams([1, 0], np.float32([0.3, 0.3]), [False, False], np.zeros((2, 4)))
    t = ref.soft_targets(np.array([2, 2]), p, cfg)
    np.testing.assert_allclose(t[0], [0.05, 0.05, 0.85, 0.05], atol=1e-7)


def test_mixup_image_is_the_convex_combination(make_batch):
    images = make_batch(2, 4, 4)
    p = dm.MixParams([1, 0], np.float32([0.25, 0.6]), [False, False], np.zeros((2, 4)))
    out = ref.mix_images(images, p, layout="NHWC", **NORM)
    n = _normalised(images)
    np.testing.assert_allclose(out[0], 0.25 * n[0] + 0.75 * n[1], atol=1e-5)
    np.testing.assert_allclose(out[1], 0.6 * n[1] + 0.4 * n[0], atol=1e-5)


def test_bfloat16_rounding_matches_torch():
    import torch
    bits = np.random.default_rng(0).integers(0, 2**32, 200000, dtype=np.uint64).astype(np.uint32)
    values = bits.view(np.float32)
    want = torch.from_numpy(values.copy()).to(torch.bfloat16).float().numpy()
    got = ref.round_float32(values, "bfloat16")
    nan = np.isnan(want)
    np.testing.assert_array_equal(np.isnan(got), nan)
    np.testing.assert_array_equal(got[~nan], want[~nan])
