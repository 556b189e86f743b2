"""Every CUDA kernel compiles to PTX for sm_80 and sm_90 (numba.cuda.compile_ptx needs no GPU)."""

import pytest

from dali_mixup.kernels import cuda as kcuda


@pytest.mark.parametrize("cc", [(8, 0), (9, 0)])
@pytest.mark.parametrize("name", sorted(kcuda.SIGNATURES))
def test_kernel_compiles_to_ptx(name, cc):
    ptx = kcuda.compile_ptx(name, cc)
    assert f".target sm_{cc[0]}{cc[1]}" in ptx
    assert ".entry" in ptx
    # all arithmetic stays in float32: no double-precision instruction slipped in through a promotion
    assert ".f64" not in ptx
