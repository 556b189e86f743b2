"""The CUDA kernels under numba's CUDA simulator vs the NumPy oracle (small shapes).

Run in their own process with NUMBA_ENABLE_CUDASIM=1 by ``tests/test_cuda_simulator.py`` (the simulator must be
chosen before numba.cuda is first imported, and the PTX tests need the real compiler in the main process).
"""

import os

import numpy as np
import pytest

if os.environ.get("NUMBA_ENABLE_CUDASIM") != "1":  # pragma: no cover - guarded by conftest too
    pytest.skip("run with NUMBA_ENABLE_CUDASIM=1 (tests/test_cuda_simulator.py does)", allow_module_level=True)

from numba import cuda  # noqa: E402

import dali_mixup as dm  # noqa: E402
from dali_mixup import reference as ref  # noqa: E402
from dali_mixup.kernels import cuda as kcuda  # noqa: E402
from dali_mixup.kernels import pixel_math as pm  # noqa: E402

KINDS = {"float32": (pm.OUT_F32, np.float32), "float16": (pm.OUT_F16, np.float16), "bfloat16": (pm.OUT_BF16, None)}


def test_simulator_is_active():
    assert cuda.simulator_init is not None
    from numba.cuda import config
    assert config.ENABLE_CUDASIM


def _as_float(out, dtype):
    if dtype == "float32":
        return out
    if dtype == "float16":
        return out.view(np.float16).astype(np.float32)
    return (out.view(np.uint16).astype(np.uint32) << 16).view(np.float32)


def _run_images(images, params, flip, dtype, layout, threads_x):
    scale, bias = ref.normalization_constants(dm.IMAGENET_MEAN, dm.IMAGENET_STD)
    n, h, w, _ = images.shape
    shape = (n, 3, h, w) if layout == "NCHW" else (n, h, w, 3)
    out_kind = KINDS[dtype][0]
    out = cuda.to_device(np.zeros(shape, np.float32 if dtype == "float32" else np.int16))
    kcuda.launch_mix_images(cuda.to_device(images), cuda.to_device(params.pack(flip)), scale, bias, out,
                            layout == "NCHW", out_kind, threads_x=threads_x)
    return _as_float(out.copy_to_host(), dtype)


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("mode,pairing", [("batch", "flip"), ("elem", "permutation"), ("pair", "permutation")])
def test_image_kernel_matches_oracle(dtype, layout, mode, pairing):
    rng = np.random.default_rng(7)
    n, h, w = 5, 6, 7  # odd B and W; block of 4 threads: W is not a multiple of the block
    images = rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8)
    flip = rng.random(n) < 0.5
    cfg = dm.MixupConfig(4, mixup_alpha=1.0, cutmix_alpha=1.0, mode=mode, pairing=pairing, switch_prob=0.5)
    for step in range(2):
        params = dm.sample_params(cfg, n, h, w, seed=3, step=step)
        got = _run_images(images, params, flip, dtype, layout, threads_x=4)
        want = ref.mix_images(images, params, mean=dm.IMAGENET_MEAN, std=dm.IMAGENET_STD, flip=flip,
                              out_dtype=dtype, layout=layout)
        np.testing.assert_array_equal(got, want)


def test_image_kernel_cutmix_box_and_mixup_in_one_batch():
    rng = np.random.default_rng(1)
    n, h, w = 4, 5, 6
    images = rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8)
    params = dm.MixParams(partner=[1, 0, 3, 2], lam=np.float32([0.25, 1.0, 1 - 6 / 30, 0.5]),
                          use_cutmix=[False, False, True, False],
                          box=np.int32([[0, 0, 0, 0], [0, 0, 0, 0], [1, 3, 2, 5], [0, 0, 0, 0]]))
    got = _run_images(images, params, None, "float32", "NHWC", threads_x=8)
    want = ref.mix_images(images, params, mean=dm.IMAGENET_MEAN, std=dm.IMAGENET_STD, layout="NHWC")
    np.testing.assert_array_equal(got, want)
    # the box of sample 2 comes from sample 3, the rest of sample 2 is its own
    plain = ref.mix_images(images, dm.MixParams([0, 1, 2, 3], np.ones(4, np.float32), np.zeros(4, bool),
                                                 np.zeros((4, 4), np.int32)),
                           mean=dm.IMAGENET_MEAN, std=dm.IMAGENET_STD, layout="NHWC")
    np.testing.assert_array_equal(got[2, 1:3, 2:5], plain[3, 1:3, 2:5])
    np.testing.assert_array_equal(got[2, 0], plain[2, 0])


def test_label_kernel_matches_oracle_and_flags_bad_labels():
    cfg = dm.MixupConfig(5, mixup_alpha=0.4, mode="elem", label_smoothing=0.1)
    params = dm.sample_params(cfg, 6, 8, 8, seed=2)
    labels = np.array([0, 4, 2, 2, 1, 3], np.int64)
    off, on = cfg.off_on
    out = cuda.to_device(np.zeros((6, 5), np.float32))
    kcuda.launch_soft_targets(cuda.to_device(labels), cuda.to_device(params.pack()), off, on, out, threads=16)
    np.testing.assert_array_equal(out.copy_to_host(), ref.soft_targets(labels, params, cfg))

    bad = labels.copy()
    bad[1] = 5
    kcuda.launch_soft_targets(cuda.to_device(bad), cuda.to_device(params.pack()), off, on, out, threads=16)
    got = out.copy_to_host()
    rows_using_1 = {1, int(np.flatnonzero(params.partner == 1)[0])}
    for b in range(6):
        assert np.isnan(got[b]).all() == (b in rows_using_1)


def test_image_kernel_bad_partner_writes_nan_not_out_of_bounds():
    images = np.zeros((2, 3, 3, 3), np.uint8)
    table = dm.MixParams([1, 0], np.float32([0.5, 0.5]), [False, False], np.zeros((2, 4), np.int32)).pack()
    table[0, pm.P_PARTNER] = 7
    out = cuda.to_device(np.zeros((2, 3, 3, 3), np.float32))
    kcuda.launch_mix_images(cuda.to_device(images), cuda.to_device(table), [1, 1, 1], [0, 0, 0], out, True,
                            pm.OUT_F32, threads_x=4)
    host = out.copy_to_host()
    assert np.isnan(host[0]).all() and not np.isnan(host[1]).any()
