"""CPU twin of the CUDA kernels: the same per-element math (``pixel_math``), compiled by ``numba.njit``.

Parallel over (sample, block of rows) with ``prange``. Within a row the work is split into runs of one kind
(copy, mixup, inside/outside the CutMix box), each a loop over x that reads the three interleaved channels of
a pixel together (flip = reading the row backwards); single-source runs write finished values straight to
their places in NCHW or NHWC, mixup rows are computed into a float32 scratch row and rounded to float16/bfloat16
vectorised (the rounding functions the GPU uses). Single-source values come from a 256-entry table filled by
the shared functions (see ``mix_images``). Every input byte a row needs is
read once, every output element written once.

Arrays are passed flat (1-D, C-contiguous) with their sizes, so the loops index with plain offsets.
Compiled eagerly for the signatures below (the first import compiles, later imports load numba's cache).
"""

import numpy as np
from numba import njit, prange

from . import pixel_math as pm

_jit = njit(inline="always", cache=True)
_math = pm.for_target(_jit)
_mix_weights = _math.mix_weights
_mix_value = _math.mix_value
_copy_value = _math.copy_value
_f16_bits_normal = _math.f16_bits_normal
_half_bits = _math.half_bits
_soft_target = _math.soft_target

_ROWS_PER_TASK = 16


@_jit
def _f32_bits(v):
    """Bit pattern of a float32 as a non-negative int64 (a register move)."""
    return np.int64(np.float32(v).view(np.uint32))


@_jit
def _copy_run(src, first, step, x_start, x_stop, lut, out, o, plane_step, x_step):
    """Output columns [x_start, x_stop) of a row, channel c of column x = lut[c, source byte]; the source pixel
    of column x is at first + step * x (step -3 reads the row mirrored)."""
    l0, l1, l2 = lut[0], lut[1], lut[2]
    for x in range(x_start, x_stop):
        i = first + step * x
        j = o + x * x_step
        out[j] = l0[src[i]]
        out[j + plane_step] = l1[src[i + 1]]
        out[j + 2 * plane_step] = l2[src[i + 2]]


@_jit
def _mix_loop(src, first_a, step_a, first_b, step_b, width, ka, kb, bias, row):
    """row[c*W + x] = mix_value of channel c of pixel x of a (at first_a + step_a * x) and b (likewise)."""
    w2 = 2 * width
    for x in range(width):
        i = first_a + step_a * x
        k = first_b + step_b * x
        row[x] = _mix_value(src[i], src[k], ka[0], kb[0], bias[0])
        row[width + x] = _mix_value(src[i + 1], src[k + 1], ka[1], kb[1], bias[1])
        row[w2 + x] = _mix_value(src[i + 2], src[k + 2], ka[2], kb[2], bias[2])


@_jit
def _mix_run(src, first_a, flip_a, first_b, flip_b, width, ka, kb, bias, row):
    """One row of mixup into the planar float32 scratch ``row``. The four flip combinations call the inlined
    loop with literal steps (-3 reads a row mirrored), so each loop has constant strides and vectorises."""
    if flip_a:
        if flip_b:
            _mix_loop(src, first_a, -3, first_b, -3, width, ka, kb, bias, row)
        else:
            _mix_loop(src, first_a, -3, first_b, 3, width, ka, kb, bias, row)
    elif flip_b:
        _mix_loop(src, first_a, 3, first_b, -3, width, ka, kb, bias, row)
    else:
        _mix_loop(src, first_a, 3, first_b, 3, width, ka, kb, bias, row)


@_jit
def _half_run(bits, r, out, o, width, x_step, out_kind):
    """out[o + x * x_step] = 16-bit pattern of the float32 pattern bits[r + x], x in [0, W)."""
    if out_kind == pm.OUT_BF16:
        for x in range(width):
            out[o + x * x_step] = _half_bits(np.int64(bits[r + x]), out_kind)
        return
    # float16: the normal-range formula for every element (vectorises), the full conversion for the rare run
    # with a value below 2**-14 or >= 65520 in magnitude (zero, subnormal, overflow, inf, NaN)
    special = False
    for x in range(width):
        u = np.int64(bits[r + x])
        a = u & 0x7FFFFFFF
        special |= (a < pm.F16_NORMAL_MIN) | (a >= pm.F16_OVERFLOW)
        out[o + x * x_step] = ((u >> 16) & 0x8000) | _f16_bits_normal(a)
    if special:
        for x in range(width):
            out[o + x * x_step] = _half_bits(np.int64(bits[r + x]), out_kind)


@_jit
def _store_row(row, out, o, plane_step, width, nchw, out_kind):
    """Store the planar scratch row at output offset ``o`` (channel planes NCHW, or interleaved NHWC)."""
    for c in range(3):
        r = c * width
        oc = o + c * plane_step
        if out_kind == pm.OUT_F32:
            if nchw:
                for x in range(width):
                    out[oc + x] = row[r + x]
            else:
                for x in range(width):
                    out[oc + 3 * x] = row[r + x]
        elif nchw:  # literal steps: constant strides in the inlined loops
            _half_run(row.view(np.uint32), r, out, oc, width, 1, out_kind)
        else:
            _half_run(row.view(np.uint32), r, out, oc, width, 3, out_kind)


_MIX_SIGS = [
    "void(uint8[::1], int64, int64, int64, float32[:, ::1], float32[::1], float32[::1], float32[::1], boolean, int64)",
    "void(uint8[::1], int64, int64, int64, float32[:, ::1], float32[::1], float32[::1], int16[::1], boolean, int64)",
]


@njit(_MIX_SIGS, parallel=True, cache=True)
def mix_images(src, n, height, width, params, scale, bias, out, nchw, out_kind):
    """Fused mix + normalise + cast + layout, on the CPU.

    in:  src uint8, the flat (n, height, width, 3) NHWC batch; params float32 (n, PARAM_FIELDS) (see
         ``pixel_math``); scale, bias float32 (3,) with value = x * scale + bias.
    out: flat float32, or int16 holding float16/bfloat16 bits (``out_kind``), of (n, 3, H, W) when ``nchw``
         else (n, H, W, 3); written in place.

    A single-source pixel (copy, CutMix) depends on one byte per channel, so its finished output values are
    tabulated once per call, (3, 256), by the shared ``copy_value`` and rounding: a lookup per element, bit
    for bit the direct computation. Mixup pixels are computed (``mix_value``, vectorised).
    """
    copy_lut = np.empty((3, 256), out.dtype)
    for c in range(3):
        for v in range(256):
            value = _copy_value(np.uint8(v), scale[c], bias[c])
            if out_kind == pm.OUT_F32:
                copy_lut[c, v] = value
            else:
                copy_lut[c, v] = _half_bits(_f32_bits(value), out_kind)
    tasks_per_sample = (height + _ROWS_PER_TASK - 1) // _ROWS_PER_TASK
    plane = height * width
    row_stride = 3 * width
    plane_step = plane if nchw else 1
    x_step = 1 if nchw else 3
    for t in prange(n * tasks_per_sample):
        b = t // tasks_per_sample
        y_start = (t % tasks_per_sample) * _ROWS_PER_TASK
        y_stop = min(height, y_start + _ROWS_PER_TASK)
        p = np.int64(params[b, pm.P_PARTNER])
        kind = np.int64(params[b, pm.P_KIND])
        flip_b = params[b, pm.P_FLIP] != 0
        flip_p = params[p, pm.P_FLIP] != 0
        by0 = np.int64(params[b, pm.P_Y0])
        by1 = np.int64(params[b, pm.P_Y1])
        bx0 = np.int64(params[b, pm.P_X0])
        bx1 = np.int64(params[b, pm.P_X1])
        step_b = -3 if flip_b else 3
        step_p = -3 if flip_p else 3
        ka = np.empty(3, np.float32)
        kb = np.empty(3, np.float32)
        for c in range(3):
            ka[c], kb[c] = _mix_weights(params[b, pm.P_LAM], scale[c])
        row = np.empty(3 * width, np.float32)
        for y in range(y_start, y_stop):
            # first source byte of output column 0 (a mirrored row starts at its last pixel)
            first_b = (b * height + y) * row_stride + (3 * (width - 1) if flip_b else 0)
            first_p = (p * height + y) * row_stride + (3 * (width - 1) if flip_p else 0)
            o = b * 3 * plane + y * width if nchw else (b * plane + y * width) * 3
            if kind == pm.KIND_MIXUP:
                _mix_run(src, first_b, flip_b, first_p, flip_p, width, ka, kb, bias, row)
                _store_row(row, out, o, plane_step, width, nchw, out_kind)
            elif kind == pm.KIND_CUTMIX and y >= by0 and y < by1 and bx0 < bx1:
                _copy_run(src, first_b, step_b, 0, bx0, copy_lut, out, o, plane_step, x_step)
                _copy_run(src, first_p, step_p, bx0, bx1, copy_lut, out, o, plane_step, x_step)
                _copy_run(src, first_b, step_b, bx1, width, copy_lut, out, o, plane_step, x_step)
            else:
                _copy_run(src, first_b, step_b, 0, width, copy_lut, out, o, plane_step, x_step)


@njit("void(int64[::1], float32[:, ::1], float32, float32, float32[:, ::1])", cache=True)
def soft_targets(labels, params, off, on, out):
    """Dense soft targets, on the CPU.

    in:  labels int64 (B,); params float32 (B, PARAM_FIELDS); off/on: timm's smoothing values.
    out: float32 (B, C), written in place; a row whose label (or partner's label) is outside [0, C) is NaN.
    """
    n, num_classes = out.shape
    for b in range(n):
        ya = labels[b]
        yb = labels[np.int64(params[b, pm.P_PARTNER])]
        lam = params[b, pm.P_LAM]
        bad = ya < 0 or ya >= num_classes or yb < 0 or yb >= num_classes
        for c in range(num_classes):
            if bad:
                out[b, c] = np.nan
            else:
                out[b, c] = _soft_target(c, ya, yb, lam, off, on)
