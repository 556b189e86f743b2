"""The CPU twin vs the NumPy oracle, bit for bit: modes x pairings x dtypes x layouts x odd shapes, flips."""

import numpy as np
import pytest
import torch

import dali_mixup as dm
from dali_mixup import reference as ref
from dali_mixup.kernels import cpu as kcpu

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
SHAPES = [(1, 1, 1), (2, 3, 5), (5, 7, 9), (8, 16, 13), (3, 33, 17), (3, 4, 53)]  # 53: 3 shuffled blocks + 5


@pytest.mark.parametrize("dtype", sorted(DTYPES))
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("mode", ["batch", "pair", "elem"])
@pytest.mark.parametrize("pairing", ["permutation", "flip"])
def test_cpu_kernel_matches_oracle(dtype, layout, mode, pairing, make_batch):
    cfg = dm.MixupConfig(6, mixup_alpha=1.0, cutmix_alpha=1.0, mode=mode, pairing=pairing, label_smoothing=0.1)
    for n, h, w in SHAPES:
        images = make_batch(n, h, w, seed=n * h)
        labels = np.random.default_rng(w).integers(0, 6, n)
        flip = np.random.default_rng(h).random(n) < 0.5
        for step in range(3):
            params = dm.sample_params(cfg, n, h, w, seed=9, step=step)
            out, targets = dm.mix_batch(torch.from_numpy(images), torch.from_numpy(labels), cfg, params,
                                        out_dtype=DTYPES[dtype], layout=layout, flip=flip)
            want = ref.mix_images(images, params, mean=dm.IMAGENET_MEAN, std=dm.IMAGENET_STD, flip=flip,
                                  out_dtype=dtype, layout=layout)
            assert out.dtype == DTYPES[dtype] and out.is_contiguous()
            np.testing.assert_array_equal(out.float().numpy(), want)
            np.testing.assert_array_equal(targets.numpy(), ref.soft_targets(labels, params, cfg))


def test_custom_mean_std(make_batch):
    images = make_batch(4, 6, 6)
    cfg = dm.MixupConfig(3, mixup_alpha=0.4, mode="elem")
    params = dm.sample_params(cfg, 4, 6, 6)
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.5, 1.0)
    out, _ = dm.mix_batch(torch.from_numpy(images), torch.zeros(4, dtype=torch.int64), cfg, params, mean=mean, std=std)
    np.testing.assert_array_equal(out.numpy(), ref.mix_images(images, params, mean=mean, std=std))


def _convert_all(fn, bits):
    out = np.empty(len(bits), np.int64)
    for i in range(len(bits)):
        out[i] = fn(np.int64(bits[i]))
    return out


def test_float16_rounding_bit_exact_over_the_whole_float32_range():
    rng = np.random.default_rng(0)
    bits = rng.integers(0, 2**32, 300000, dtype=np.uint64)
    # plus every boundary: zero, subnormals, the smallest normal, ties, the overflow threshold, inf, NaN
    special = np.float32([0.0, -0.0, 2**-25, 2**-24, 1.5 * 2**-24, 2**-14, 65504, 65519.99, 65520, np.inf, -np.inf,
                          np.nan, 1 + 2**-11, 1 + 3 * 2**-11, 2**-14 - 2**-25])
    bits = np.concatenate([bits, special.view(np.uint32).astype(np.uint64)])
    values = bits.astype(np.uint32).view(np.float32)
    with np.errstate(over="ignore"):
        want = values.astype(np.float16).view(np.uint16)
    got = _convert_all(kcpu._math.f32_bits_to_f16_bits, bits).astype(np.uint16)
    nan = np.isnan(values)
    np.testing.assert_array_equal(got[~nan], want[~nan])
    assert np.all(np.isnan(got[nan].view(np.float16)))


def test_bfloat16_rounding_bit_exact_against_torch():
    bits = np.random.default_rng(1).integers(0, 2**32, 300000, dtype=np.uint64)
    values = bits.astype(np.uint32).view(np.float32)
    want = torch.from_numpy(values.copy()).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    got = _convert_all(kcpu._math.f32_bits_to_bf16_bits, bits).astype(np.uint16)
    nan = np.isnan(values)
    np.testing.assert_array_equal(got[~nan], want[~nan])
    assert np.all(np.isnan((got[nan].astype(np.uint32) << 16).view(np.float32)))


def test_cpu_threads_change_nothing_but_the_threads(make_batch):
    import numba
    images = torch.from_numpy(make_batch(5, 9, 37))
    cfg = dm.MixupConfig(4, mixup_alpha=1.0, cutmix_alpha=1.0, mode="elem")
    labels = torch.arange(5) % 4
    want, _ = dm.mix_batch(images, labels, cfg)
    before = numba.get_num_threads()
    got, _ = dm.mix_batch(images, labels, cfg, cpu_threads=1)
    assert numba.get_num_threads() == before  # restored
    np.testing.assert_array_equal(got.numpy(), want.numpy())
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="cpu_threads"):
            dm.mix_batch(images, labels, cfg, cpu_threads=bad)
