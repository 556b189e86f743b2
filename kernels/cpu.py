"""CPU twin of the CUDA kernels: the same per-element math (``pixel_math``), compiled by ``numba.njit``.

Parallel over (sample, block of rows) with ``prange``; within a row the work is split into runs of equal kind
(copy, mixup, CutMix box) so each inner loop is branch-free. Every input byte a row needs is read once and every
output element is written once; a row is assembled in a small float32 scratch buffer and stored as float32 or
as float16/bfloat16 bit patterns (correctly rounded, same function as the GPU).

Compiled eagerly for the signatures below (the first import compiles them, later imports load numba's cache).
"""

import numpy as np
from numba import njit, prange

from . import pixel_math as pm

_jit = njit(inline="always", cache=True)
_math = pm.for_target(_jit)
_mix_value = _math.mix_value
_copy_value = _math.copy_value
_half_bits = _math.half_bits
_soft_target = _math.soft_target

_ROWS_PER_TASK = 16


@_jit
def _copy_run(src, b, y, x_start, x_stop, flip, scale, bias, row, width):
    """row[c*W + x] = normalised src[b, y, x', c] for x in [x_start, x_stop), x' mirrored if flip."""
    for c in range(3):
        s = scale[c]
        o = bias[c]
        base = c * width
        if flip:
            for x in range(x_start, x_stop):
                row[base + x] = _copy_value(src[b, y, width - 1 - x, c], s, o)
        else:
            for x in range(x_start, x_stop):
                row[base + x] = _copy_value(src[b, y, x, c], s, o)


@_jit
def _mix_run(src, b, p, y, flip_b, flip_p, wa, wb, scale, bias, row, width):
    """row[c*W + x] = normalised (wa * src[b] + wb * src[p]) at (y, x), each source read mirrored if flipped."""
    for c in range(3):
        s = scale[c]
        o = bias[c]
        base = c * width
        for x in range(width):
            xa = x
            if flip_b:
                xa = width - 1 - x
            xb = x
            if flip_p:
                xb = width - 1 - x
            row[base + x] = _mix_value(src[b, y, xa, c], src[p, y, xb, c], wa, wb, s, o)


@_jit
def _store_row(row, row_bits, out, b, y, width, nchw, out_kind):
    """Write the assembled row (planar scratch) into out[b, :, y, :] (NCHW) or out[b, y, :, :] (NHWC)."""
    if out_kind == pm.OUT_F32:
        if nchw:
            for c in range(3):
                for x in range(width):
                    out[b, c, y, x] = row[c * width + x]
        else:
            for x in range(width):
                for c in range(3):
                    out[b, y, x, c] = row[c * width + x]
    else:
        if nchw:
            for c in range(3):
                for x in range(width):
                    out[b, c, y, x] = _half_bits(np.int64(row_bits[c * width + x]), out_kind)
        else:
            for x in range(width):
                for c in range(3):
                    out[b, y, x, c] = _half_bits(np.int64(row_bits[c * width + x]), out_kind)


_MIX_SIGS = [
    "void(uint8[:, :, :, ::1], float32[:, ::1], float32[::1], float32[::1], float32[:, :, :, ::1], boolean, int64)",
    "void(uint8[:, :, :, ::1], float32[:, ::1], float32[::1], float32[::1], int16[:, :, :, ::1], boolean, int64)",
]


@njit(_MIX_SIGS, parallel=True, cache=True)
def mix_images(src, params, scale, bias, out, nchw, out_kind):
    """Fused mix + normalise + cast + layout, on the CPU.

    in:  src uint8 (B, H, W, 3) NHWC, C-contiguous; params float32 (B, PARAM_FIELDS) (see ``pixel_math``);
         scale, bias float32 (3,) with value = x * scale + bias.
    out: float32 or int16 (bit patterns of float16/bfloat16 per ``out_kind``), C-contiguous,
         (B, 3, H, W) when ``nchw`` else (B, H, W, 3); written in place.
    """
    n, height, width, _ = src.shape
    tasks_per_sample = (height + _ROWS_PER_TASK - 1) // _ROWS_PER_TASK
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
        row_bits = row.view(np.uint32)
        for y in range(y_start, y_stop):
            if kind == pm.KIND_MIXUP:
                _mix_run(src, b, p, y, flip_b, flip_p, lam, wb, scale, bias, row, width)
            elif kind == pm.KIND_CUTMIX and y >= by0 and y < by1 and bx0 < bx1:
                _copy_run(src, b, y, 0, bx0, flip_b, scale, bias, row, width)
                _copy_run(src, p, y, bx0, bx1, flip_p, scale, bias, row, width)
                _copy_run(src, b, y, bx1, width, flip_b, scale, bias, row, width)
            else:
                _copy_run(src, b, y, 0, width, flip_b, scale, bias, row, width)
            _store_row(row, row_bits, out, b, y, width, nchw, out_kind)


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
