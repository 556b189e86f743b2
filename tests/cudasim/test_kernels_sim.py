"""The CUDA kernels under numba's CUDA simulator vs the NumPy oracle (small shapes).

Run in their own process with NUMBA_ENABLE_CUDASIM=1 by ``tests/test_cuda_simulator.py`` (the simulator must be
chosen before numba.cuda is first imported, and the PTX tests need the real compiler in the main process).
The simulator runs the kernels' Python with the plain ``pixel_math`` primitives (software rounding, Python
byte permutes); the GPU's hardware primitives are checked by the PTX tests and the GPU tier.
"""

import os
import threading

import numpy as np
import pytest

if os.environ.get("NUMBA_ENABLE_CUDASIM") != "1":  # pragma: no cover - guarded by conftest too
    pytest.skip("run with NUMBA_ENABLE_CUDASIM=1 (tests/test_cuda_simulator.py does)", allow_module_level=True)

from numba import cuda  # noqa: E402

import dali_mixup as dm  # noqa: E402
from dali_mixup import reference as ref  # noqa: E402
from dali_mixup.kernels import cuda as kcuda  # noqa: E402
from dali_mixup.kernels import pixel_math as pm  # noqa: E402

KINDS = {"float32": pm.OUT_F32, "float16": pm.OUT_F16, "bfloat16": pm.OUT_BF16}
NORM = dict(mean=dm.IMAGENET_MEAN, std=dm.IMAGENET_STD)


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


def _run_images(images, table, dtype, layout, threads, access="auto"):
    scale, bias = ref.normalization_constants(dm.IMAGENET_MEAN, dm.IMAGENET_STD)
    n, h, w, _ = images.shape
    shape = (n, 3, h, w) if layout == "NCHW" else (n, h, w, 3)
    out = cuda.to_device(np.zeros(shape, np.float32 if dtype == "float32" else np.int16))
    kcuda.launch_mix_images(cuda.to_device(images), cuda.to_device(table), scale, bias, out, layout == "NCHW",
                            KINDS[dtype], threads=threads, access=access)
    return _as_float(out.copy_to_host(), dtype)


@pytest.mark.parametrize("dtype", sorted(KINDS))
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("access,width", [("vec4", 8), ("generic", 7)])
@pytest.mark.parametrize("mode,pairing", [("batch", "flip"), ("elem", "permutation"), ("pair", "permutation")])
def test_image_kernel_matches_oracle(dtype, layout, access, width, mode, pairing):
    rng = np.random.default_rng(7)
    n, h = 5, 3  # odd B; 3 threads per block: the last block of each sample is partial
    images = rng.integers(0, 256, (n, h, width, 3), dtype=np.uint8)
    flip = rng.random(n) < 0.5
    cfg = dm.MixupConfig(4, mixup_alpha=1.0, cutmix_alpha=1.0, mode=mode, pairing=pairing, switch_prob=0.5)
    for step in range(2):
        params = dm.sample_params(cfg, n, h, width, seed=3, step=step)
        got = _run_images(images, params.pack(flip), dtype, layout, threads=3, access=access)
        want = ref.mix_images(images, params, flip=flip, out_dtype=dtype, layout=layout, **NORM)
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("access", ["vec4", "generic"])
def test_cutmix_box_edges_inside_a_group_and_mixup_in_one_batch(access):
    """Boxes whose edges fall inside a 4-pixel group (both sources in one group), a box covering whole groups,
    a mirrored sample and a mirrored partner, next to Mixup and copy samples."""
    rng = np.random.default_rng(1)
    n, h, w = 5, 5, 12
    images = rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8)
    params = dm.MixParams(partner=[1, 0, 3, 2, 4], lam=np.float32([0.25, 1.0, 1 - 9 / 60, 1 - 32 / 60, 1.0]),
                          use_cutmix=[False, False, True, True, False],
                          box=np.int32([[0, 0, 0, 0], [0, 0, 0, 0], [1, 4, 2, 5], [0, 4, 4, 12], [0, 0, 0, 0]]))
    flip = np.array([False, True, True, False, True])
    for layout in ("NHWC", "NCHW"):
        got = _run_images(images, params.pack(flip), "float32", layout, threads=4, access=access)
        want = ref.mix_images(images, params, flip=flip, layout=layout, **NORM)
        np.testing.assert_array_equal(got, want)
    # the box of sample 2 comes from sample 3, the rest of sample 2 is its own
    plain = ref.mix_images(images, dm.MixParams(np.arange(n), np.ones(n, np.float32), np.zeros(n, bool),
                                                 np.zeros((n, 4), np.int32)), flip=flip, layout="NHWC", **NORM)
    got = _run_images(images, params.pack(flip), "float32", "NHWC", threads=4, access=access)
    np.testing.assert_array_equal(got[2, 1:4, 2:5], plain[3, 1:4, 2:5])
    np.testing.assert_array_equal(got[2, 0], plain[2, 0])


def test_tall_and_single_pixel_shapes():
    """One pixel per sample, one column, a tall image: the multiply-shift divisions at divisor 1."""
    rng = np.random.default_rng(5)
    cfg = dm.MixupConfig(3, mixup_alpha=1.0, cutmix_alpha=1.0, mode="elem")
    for (n, h, w), access in [((3, 1, 1), "generic"), ((2, 9, 1), "generic"), ((2, 9, 4), "vec4")]:
        images = rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8)
        params = dm.sample_params(cfg, n, h, w, seed=4)
        got = _run_images(images, params.pack(), "float16", "NCHW", threads=2, access=access)
        np.testing.assert_array_equal(got, ref.mix_images(images, params, out_dtype="float16", **NORM))


def test_auto_access_picks_vec4_only_when_it_applies():
    assert kcuda.use_vec4(8, 0, 0) and kcuda.use_vec4(224, 256, 512)
    assert not kcuda.use_vec4(7, 0, 0)  # width
    assert not kcuda.use_vec4(8, 1, 0)  # input not 4-byte aligned
    assert not kcuda.use_vec4(8, 0, 4)  # output not 8-byte aligned
    images = np.random.default_rng(0).integers(0, 256, (2, 2, 6, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="multiple of 4"):
        _run_images(images, dm.MixParams([1, 0], np.float32([0.5, 0.5]), [False, False], np.zeros((2, 4))).pack(),
                    "float32", "NCHW", threads=4, access="vec4")


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


@pytest.mark.parametrize("access,width", [("vec4", 4), ("generic", 3)])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_image_kernel_bad_partner_writes_nan_not_out_of_bounds(access, width, dtype):
    images = np.zeros((2, 3, width, 3), np.uint8)
    table = dm.MixParams([1, 0], np.float32([0.5, 0.5]), [False, False], np.zeros((2, 4), np.int32)).pack()
    table[0, pm.P_PARTNER] = 7
    host = _run_images(images, table, dtype, "NCHW", threads=4, access=access)
    assert np.isnan(host[0]).all() and not np.isnan(host[1]).any()


def test_precompile_is_idempotent_and_thread_safe():
    names = kcuda.precompile(pm.OUT_F16, True, 224)
    assert names == ("mix_images_f16_nchw_vec4", "soft_targets")
    assert kcuda.precompile(pm.OUT_F16, True, 223)[0] == "mix_images_f16_nchw_generic"
    got = []
    threads = [threading.Thread(target=lambda: got.append(kcuda.kernel("mix_images_bf16_nhwc_vec4")))
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 4 and all(k is got[0] for k in got)
    assert len(kcuda.precompile()) == len(kcuda.KERNELS)
    assert kcuda.precompile(pm.OUT_BF16, False, 8, device=0) == ("mix_images_bf16_nhwc_vec4", "soft_targets")
    with pytest.raises(ValueError, match="out_kind"):
        kcuda.precompile(out_kind=7)


def test_precompile_in_background_readies_the_loader_kernels():
    import torch
    from dali_mixup import mixing

    thread = mixing.precompile_in_background(torch.bfloat16, "NHWC", (12, 13), 0)  # a size per batch: both widths
    thread.join(timeout=300)
    assert not thread.is_alive() and thread.error is None
    assert {("mix_images_bf16_nhwc_vec4", None), ("mix_images_bf16_nhwc_generic", None),
            ("soft_targets", None)} <= set(kcuda._compiled)
    bad = mixing.precompile_in_background(torch.float16, "NCHW", (12,), 99)  # no such device: kept, not raised
    bad.join(timeout=300)
    assert bad.error is not None
