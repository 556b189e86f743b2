"""Every CUDA kernel compiles to PTX for sm_80 and sm_90 (numba.cuda.compile_ptx needs no GPU) and keeps the
GPU bit-identical to the oracle: no contraction into FMA, no float64, the hardware float16/bfloat16 conversion
from sm_80 on (the shared software rounding before). Also the launch geometry: no 65,535 limit, exact
multiply-shift divisions, and the 32-bit offset bound."""

import re

import numpy as np
import pytest

from dali_mixup.kernels import cuda as kcuda
from dali_mixup.kernels import pixel_math as pm


@pytest.mark.parametrize("cc", [(8, 0), (9, 0)])
@pytest.mark.parametrize("name", sorted(kcuda.KERNELS))
def test_kernel_compiles_to_ptx(name, cc):
    ptx = kcuda.compile_ptx(name, cc)
    assert f".target sm_{cc[0]}{cc[1]}" in ptx
    assert ".entry" in ptx
    # all arithmetic stays in float32: no double-precision instruction slipped in through a promotion
    assert ".f64" not in ptx
    # a*b + c contracted into one FMA rounds once where the oracle rounds twice: every multiply and add of the
    # math is explicitly rounded (mul.rn / add.rn / sub.rn), which neither NVVM nor ptxas fuses
    assert not re.search(r"\bfma\.rn\.f32\b", ptx), "contraction (fma.rn.f32) is back"
    assert not re.search(r"\b(mul|add|sub)\.f32\b", ptx), "an unrounded float op ptxas may fuse"
    if name.startswith("mix_images_f16") or name.startswith("mix_images_bf16"):
        kind = "bf16" if "_bf16_" in name else "f16"
        assert f"cvt.rn.{kind}x2.f32" in ptx  # the hardware conversion, not the software rounding


def test_before_sm80_the_shared_software_rounding_is_compiled():
    ptx = kcuda.compile_ptx("mix_images_bf16_nchw_vec4", (7, 5))
    assert "cvt.rn.bf16x2.f32" not in ptx and "cvt.rn.f16x2.f32" not in ptx
    assert ".f64" not in ptx and not re.search(r"\bfma\.rn\.f32\b", ptx)


def test_kernel_closures_key_numba_cache_to_the_sources():
    """numba's on-disk cache key holds the kernel's bytecode and closure values: each variant closes over its
    own constants and a digest of cuda.py + pixel_math.py, so a change to the shared math is a cache miss."""
    closures = {}
    for name in kcuda.KERNELS:
        if name == "soft_targets":
            continue
        fn, _ = kcuda.python_kernel(name, (9, 0))
        values = tuple(c.cell_contents for c in fn.__closure__)
        assert kcuda._DIGEST in values
        assert all(isinstance(v, (bool, int)) for v in values)  # picklable constants only
        closures[name] = (fn.__code__.co_code, values)
    assert len(set(closures.values())) == len(closures)  # every variant has its own cache entry


def _decode(geo, block, thread):
    """The (sample, first item) of a thread, as the kernel computes it (host mirror of _block_item)."""
    n, height, row, per_sample, bm, bs, _, _ = (int(a) for a in geo.args)
    b = (block * bm) >> bs
    return b, (block - b * per_sample) * geo.threads * geo.per_thread + thread


@pytest.mark.parametrize("n,h,w,vec", [(70000, 1, 4, True), (3, 70001, 1, False), (2, 70001, 8, True),
                                       (1 << 16, 1 << 6, 1 << 8, True), (5, 7, 9, False)])
def test_launch_geometry_has_no_65535_limit_and_covers_each_item_once(n, h, w, vec):
    geo = kcuda.launch_geometry(n, h, w, vec)
    row = w // 4 if vec else w
    assert geo.items == h * row
    assert geo.blocks <= 2**31 - 1 and geo.blocks == n * -(-geo.items // (geo.threads * geo.per_thread))
    # first, last and sample-boundary blocks map to the right (sample, item)
    per_sample = int(geo.args[3])
    for block in {0, 1, per_sample - 1, per_sample, geo.blocks // 2, geo.blocks - 2, geo.blocks - 1}:
        for thread in (0, geo.threads - 1):
            b, s = _decode(geo, block, thread)
            assert b == block // per_sample and s == (block % per_sample) * geo.threads * geo.per_thread + thread
    # the item -> (row, column) division too
    rm, rs = int(geo.args[6]), int(geo.args[7])
    for s in {0, row - 1, row, geo.items - 1, geo.items // 3}:
        assert (s * rm) >> rs == s // row


def test_magic_division_is_exact_for_31_bit_dividends():
    rng = np.random.default_rng(0)
    divisors = [1, 2, 3, 5, 7, 56, 98, 224, 12544, 65535, 65536, 2**24 - 1, 2**30 + 3, 2**31 - 1]
    divisors += [int(d) for d in rng.integers(1, 2**31, 50)]
    for d in divisors:
        magic, shift = kcuda._magic(d)
        assert magic < 2**32 and shift < 64
        ns = [0, 1, d - 1, d, d + 1, 2**31 - 1, 2**31 - 2] + [int(v) for v in rng.integers(0, 2**31, 200)]
        for v in ns:
            if 0 <= v < 2**31:
                assert (v * magic) >> shift == v // d, (v, d)


def test_launch_geometry_refuses_what_32_bit_offsets_cannot_address():
    with pytest.raises(ValueError, match="32-bit offsets"):
        kcuda.launch_geometry(2**12, 2**10, 2**9, True)  # 2**31 pixels, 3 * 2**31 elements
    with pytest.raises(ValueError, match="multiple of 4"):
        kcuda.launch_geometry(2, 8, 6, True)
    kcuda.launch_geometry(1, 2**14, 87380, True)  # just under the bound is fine


def test_pixel_math_primitives_model_the_hardware_exactly():
    """The plain primitives the simulator runs are the exact operations the GPU's replace."""
    for x, y, s, want in [(0x44332211, 0x88776655, 0x3210, 0x44332211), (0x44332211, 0x88776655, 0x7654, 0x88776655),
                          (0x44332211, 0x88776655, 0x0415, 0x11552266)]:
        assert pm.byte_perm(np.uint32(x), np.uint32(y), np.uint32(s)) == want
    words = np.random.default_rng(1).integers(0, 2**32, 64, dtype=np.uint64).astype(np.uint32)
    for w in words:
        for k in range(4):
            assert pm.byte_value(w, k) == np.float32((int(w) >> (8 * k)) & 0xFF)
    lo, hi = np.float32(1.0009765625), np.float32(-65520.0)
    assert pm.half2_bits(lo, hi, pm.OUT_F16) == int(np.float16(lo).view(np.uint16)) | (0xFC00 << 16)
    with pytest.raises(ValueError, match="primitives"):
        pm.for_target(lambda f: f, primitives={"mix_value": None})
