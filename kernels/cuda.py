"""CUDA kernels (numba.cuda): the fused image kernel and the soft-label kernel.

The per-element math is ``pixel_math``, the same source the CPU twin compiles. The same Python functions run
on a GPU (compiled eagerly for ``SIGNATURES`` on first use), under numba's CUDA simulator
(``NUMBA_ENABLE_CUDASIM=1``, CPU CI), and through ``numba.cuda.compile_ptx`` (CI compiles every kernel for
sm_80 and sm_90 without a GPU).

Launch geometry: the image kernel runs one thread per output pixel (3 channels), a block of ``THREADS_X``
threads along a row, grid (ceil(W / THREADS_X), H, B); the label kernel one thread per target element.
Kernels bounds-check instead of raising: an out-of-range partner index or label writes NaN, never reads out of
bounds.
"""

import functools

import numpy as np
from numba import cuda
from numba.cuda import config as _cuda_config
from numba.cuda import types as _t

from . import genuine_print
from . import pixel_math as pm

THREADS_X = 128
THREADS_LABELS = 256

_math = pm.for_target(cuda.jit(device=True, inline="always"))
_mix_weights = _math.mix_weights
_mix_value = _math.mix_value
_copy_value = _math.copy_value
_source_column = _math.source_column
_in_box = _math.in_box
_half_bits = _math.half_bits
_soft_target = _math.soft_target

if _cuda_config.ENABLE_CUDASIM:

    def _f32_bits(v):  # simulator: the kernel runs as Python on NumPy scalars
        return int(np.asarray(v, dtype=np.float32).view(np.uint32))

else:
    from numba.cuda import libdevice

    @cuda.jit(device=True, inline="always")
    def _f32_bits(v):
        return np.int64(libdevice.float_as_int(v)) & 0xFFFFFFFF


@cuda.jit(device=True, inline="always")
def _store_f32(out, b, c, y, x, nchw, out_kind, v):
    if nchw:
        out[b, c, y, x] = v
    else:
        out[b, y, x, c] = v


@cuda.jit(device=True, inline="always")
def _store_h16(out, b, c, y, x, nchw, out_kind, v):
    h = _half_bits(_f32_bits(v), out_kind)
    if nchw:
        out[b, c, y, x] = h
    else:
        out[b, y, x, c] = h


def _make_mix_kernel(store):
    def mix_images(src, params, s0, s1, s2, o0, o1, o2, out, nchw, out_kind):
        """in: src uint8 (B, H, W, 3); params float32 (B, PARAM_FIELDS); value = x * s_c + o_c.
        out: float32, or int16 holding float16/bfloat16 bits (``out_kind``); (B, 3, H, W) if nchw else (B, H, W, 3).
        """
        x = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
        y = cuda.blockIdx.y
        b = cuda.blockIdx.z
        n = src.shape[0]
        height = src.shape[1]
        width = src.shape[2]
        if x >= width or y >= height or b >= n:
            return
        p = np.int32(params[b, pm.P_PARTNER])
        if p < 0 or p >= n:
            for c in range(3):
                store(out, b, c, y, x, nchw, out_kind, np.float32(np.nan))
            return
        lam = params[b, pm.P_LAM]
        kind = np.int32(params[b, pm.P_KIND])
        xa = _source_column(x, width, params[b, pm.P_FLIP] != 0)
        xb = _source_column(x, width, params[p, pm.P_FLIP] != 0)
        from_partner = kind == pm.KIND_CUTMIX and _in_box(
            y, x, np.int32(params[b, pm.P_Y0]), np.int32(params[b, pm.P_Y1]),
            np.int32(params[b, pm.P_X0]), np.int32(params[b, pm.P_X1]))
        for c in range(3):
            s = s0
            o = o0
            if c == 1:
                s = s1
                o = o1
            elif c == 2:
                s = s2
                o = o2
            if kind == pm.KIND_MIXUP:
                ka, kb = _mix_weights(lam, s)
                v = _mix_value(src[b, y, xa, c], src[p, y, xb, c], ka, kb, o)
            elif from_partner:
                v = _copy_value(src[p, y, xb, c], s, o)
            else:
                v = _copy_value(src[b, y, xa, c], s, o)
            store(out, b, c, y, x, nchw, out_kind, v)

    return mix_images


mix_images_f32 = _make_mix_kernel(_store_f32)
mix_images_h16 = _make_mix_kernel(_store_h16)


def soft_targets(labels, params, off, on, out):
    """in: labels int64 (B,); params float32 (B, PARAM_FIELDS). out: float32 (B, C); NaN row for a bad label."""
    i = cuda.grid(1)
    n = out.shape[0]
    num_classes = out.shape[1]
    if i >= n * num_classes:
        return
    b = i // num_classes
    c = i - b * num_classes
    p = np.int64(params[b, pm.P_PARTNER])
    if p < 0 or p >= n:
        out[b, c] = np.float32(np.nan)
        return
    ya = labels[b]
    yb = labels[p]
    if ya < 0 or ya >= num_classes or yb < 0 or yb >= num_classes:
        out[b, c] = np.float32(np.nan)
        return
    out[b, c] = _soft_target(c, ya, yb, params[b, pm.P_LAM], off, on)


_f32 = _t.float32
_MIX_ARGS = (_t.uint8[:, :, :, ::1], _f32[:, ::1], _f32, _f32, _f32, _f32, _f32, _f32)
SIGNATURES = {
    "mix_images_f32": (mix_images_f32, (*_MIX_ARGS, _f32[:, :, :, ::1], _t.boolean, _t.int32)),
    "mix_images_h16": (mix_images_h16, (*_MIX_ARGS, _t.int16[:, :, :, ::1], _t.boolean, _t.int32)),
    "soft_targets": (soft_targets, (_t.int64[::1], _f32[:, ::1], _f32, _f32, _f32[:, ::1])),
}


def compile_ptx(name, cc):
    """PTX of kernel ``name`` for compute capability ``cc`` (e.g. (9, 0)); needs no GPU."""
    fn, sig = SIGNATURES[name]
    with genuine_print():  # numba-cuda imports typing modules lazily while compiling (see kernels.genuine_print)
        ptx, _ = cuda.compile_ptx(fn, sig, cc=cc)
    return ptx


@functools.lru_cache(maxsize=None)
def kernel(name):
    """The launchable kernel ``name``, compiled for its signature on first use (on the simulator: as is)."""
    fn, sig = SIGNATURES[name]
    if _cuda_config.ENABLE_CUDASIM:
        return cuda.jit(fn)
    with genuine_print():  # numba-cuda imports typing modules lazily while compiling (see kernels.genuine_print)
        return cuda.jit(sig)(fn)


def launch_mix_images(src, params, scale, bias, out, nchw, out_kind, stream=0, threads_x=THREADS_X):
    """Launch the fused image kernel on ``stream`` (numba device arrays or CUDA-array-interface objects).

    ``threads_x``: threads per block along a row (the simulator tests use small blocks).
    """
    n, height, width, _ = src.shape
    name = "mix_images_f32" if out_kind == pm.OUT_F32 else "mix_images_h16"
    grid = ((width + threads_x - 1) // threads_x, height, n)
    s = [np.float32(v) for v in scale]
    o = [np.float32(v) for v in bias]
    kernel(name)[grid, threads_x, stream](src, params, s[0], s[1], s[2], o[0], o[1], o[2], out, bool(nchw),
                                          np.int32(out_kind))


def launch_soft_targets(labels, params, off, on, out, stream=0, threads=THREADS_LABELS):
    """Launch the soft-label kernel on ``stream``."""
    total = out.shape[0] * out.shape[1]
    blocks = (total + threads - 1) // threads
    kernel("soft_targets")[blocks, threads, stream](labels, params, np.float32(off), np.float32(on), out)
