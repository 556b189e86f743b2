"""CPU twin of the CUDA kernels: the same per-element math (``pixel_math``), compiled by ``numba.njit``.

Parallel over (sample, block of rows) with ``prange``. Within a row the work is split into runs of one kind
(copy, mixup, inside/outside the CutMix box), each a loop over x that reads the three interleaved channels of
a pixel together (flip = reading the row backwards) into a planar float32 scratch row; the row is then stored
in NCHW or NHWC as float32 or as float16/bfloat16 bit patterns (the rounding functions the GPU uses). Every
input byte a row needs is read once, every output element written once.

Arrays are passed flat (1-D, C-contiguous) with their sizes, so the loops index with plain offsets.
Compiled eagerly for the signatures below (the first import compiles, later imports load numba's cache).
"""

import numpy as np
from numba import njit, prange

from . import pixel_math as pm

_jit = njit(inline="always", cache=True)
_math = pm.for_target(_jit)
_mix_value = _math.mix_value
_copy_value = _math.copy_value
_f16_bits_normal = _math.f16_bits_normal
_f32_bits_to_f16_bits = _math.f32_bits_to_f16_bits
_f32_bits_to_bf16_bits = _math.f32_bits_to_bf16_bits
_soft_target = _math.soft_target

_ROWS_PER_TASK = 16


@_jit
def _copy_run(src, base, flip, x_start, x_stop, width, scale, bias, row):
    """row[c*W + x] = normalised channel c of output column x, x in [x_start, x_stop), read from the source
    row at flat offset ``base`` (column x, or W-1-x when ``flip``)."""
    s0, s1, s2 = scale[0], scale[1], scale[2]
    b0, b1, b2 = bias[0], bias[1], bias[2]
    w2 = 2 * width
    if flip:
        last = base + 3 * (width - 1)
        for x in range(x_start, x_stop):
            i = last - 3 * x
            row[x] = _copy_value(src[i], s0, b0)
            row[width + x] = _copy_value(src[i + 1], s1, b1)
            row[w2 + x] = _copy_value(src[i + 2], s2, b2)
    else:
        for x in range(x_start, x_stop):
            i = base + 3 * x
            row[x] = _copy_value(src[i], s0, b0)
            row[width + x] = _copy_value(src[i + 1], s1, b1)
            row[w2 + x] = _copy_value(src[i + 2], s2, b2)


@_jit
def _mix_loop(src, first_a, step_a, first_b, step_b, wa, wb, width, scale, bias, row):
    """row[c*W + x] = normalised (wa * a + wb * b), pixel x of a at first_a + step_a * x (b likewise)."""
    s0, s1, s2 = scale[0], scale[1], scale[2]
    b0, b1, b2 = bias[0], bias[1], bias[2]
    w2 = 2 * width
    for x in range(width):
        i = first_a + step_a * x
        k = first_b + step_b * x
        row[x] = _mix_value(src[i], src[k], wa, wb, s0, b0)
        row[width + x] = _mix_value(src[i + 1], src[k + 1], wa, wb, s1, b1)
        row[w2 + x] = _mix_value(src[i + 2], src[k + 2], wa, wb, s2, b2)


@_jit
def _mix_run(src, base_a, flip_a, base_b, flip_b, wa, wb, width, scale, bias, row):
    """One row of mixup of two source rows, each read mirrored (from its last pixel backwards) if flipped.

    The four flip combinations call the inlined loop with literal steps, so each loop is compiled with
    constant strides (vectorisable).
    """
    end_a = base_a + 3 * (width - 1)
    end_b = base_b + 3 * (width - 1)
    if flip_a:
        if flip_b:
            _mix_loop(src, end_a, -3, end_b, -3, wa, wb, width, scale, bias, row)
        else:
            _mix_loop(src, end_a, -3, base_b, 3, wa, wb, width, scale, bias, row)
    elif flip_b:
        _mix_loop(src, base_a, 3, end_b, -3, wa, wb, width, scale, bias, row)
    else:
        _mix_loop(src, base_a, 3, base_b, 3, wa, wb, width, scale, bias, row)


@_jit
def _half_run(bits, r, out, o, width, x_step, out_kind):
    """out[o + x * x_step] = 16-bit pattern of the float32 pattern bits[r + x], x in [0, W)."""
    if out_kind == pm.OUT_BF16:
        for x in range(width):
            out[o + x * x_step] = _f32_bits_to_bf16_bits(np.int64(bits[r + x]))
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
            out[o + x * x_step] = _f32_bits_to_f16_bits(np.int64(bits[r + x]))


@_jit
def _store_row(row, out, b, y, height, width, nchw, out_kind):
    """Store the planar scratch row as row y of sample b: planes of (B, 3, H, W) or pixels of (B, H, W, 3)."""
    plane = height * width
    for c in range(3):
        r = c * width
        if nchw:
            o = (b * 3 + c) * plane + y * width
        else:
            o = (b * plane + y * width) * 3 + c
        if out_kind == pm.OUT_F32:
            if nchw:
                for x in range(width):
                    out[o + x] = row[r + x]
            else:
                for x in range(width):
                    out[o + 3 * x] = row[r + x]
        elif nchw:  # literal steps: constant strides in the inlined loops
            _half_run(row.view(np.uint32), r, out, o, width, 1, out_kind)
        else:
            _half_run(row.view(np.uint32), r, out, o, width, 3, out_kind)


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
    """
    tasks_per_sample = (height + _ROWS_PER_TASK - 1) // _ROWS_PER_TASK
    row_stride = 3 * width
    for t in prange(n * tasks_per_sample):
        b = t // tasks_per_sample
        y_start = (t % tasks_per_sample) * _ROWS_PER_TASK
        y_stop = min(height, y_start + _ROWS_PER_TASK)
        p = np.int64(params[b, pm.P_PARTNER])
        lam = params[b, pm.P_LAM]
        kind = np.int64(params[b, pm.P_KIND])
        flip_b = params[b, pm.P_FLIP] != 0
        flip_p = params[p, pm.P_FLIP] != 0
        by0 = np.int64(params[b, pm.P_Y0])
        by1 = np.int64(params[b, pm.P_Y1])
        bx0 = np.int64(params[b, pm.P_X0])
        bx1 = np.int64(params[b, pm.P_X1])
        wb = np.float32(1.0) - lam
        row = np.empty(3 * width, np.float32)
        for y in range(y_start, y_stop):
            base_b = (b * height + y) * row_stride
            base_p = (p * height + y) * row_stride
            if kind == pm.KIND_MIXUP:
                _mix_run(src, base_b, flip_b, base_p, flip_p, lam, wb, width, scale, bias, row)
            elif kind == pm.KIND_CUTMIX and y >= by0 and y < by1 and bx0 < bx1:
                _copy_run(src, base_b, flip_b, 0, bx0, width, scale, bias, row)
                _copy_run(src, base_p, flip_p, bx0, bx1, width, scale, bias, row)
                _copy_run(src, base_b, flip_b, bx1, width, width, scale, bias, row)
            else:
                _copy_run(src, base_b, flip_b, 0, width, width, scale, bias, row)
            _store_row(row, out, b, y, height, width, nchw, out_kind)


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
