"""CPU twin of the CUDA kernels: the same per-element math (``pixel_math``), compiled by ``numba.njit``.

Parallel over (sample, block of rows) with ``prange``. Per row: the interleaved RGB source row is split into
three channel planes, read mirrored for a flipped sample, by vector shuffles (``_gather_row``); for mixup, or
a row crossing the CutMix box, the partner's row likewise, and the box is pasted plane by plane; then one
unit-stride loop per channel computes each value with the shared functions (``copy_value``/``mix_value``) and
writes it to its output row (float32 NCHW), or rounds it to float16/bfloat16 with the rounding the GPU uses
and/or interleaves it (NHWC). Every input byte a row needs is read once, every output element written once.

Profiled on 2 EPYC cores, B = 64, 224², one thread: the byte-by-byte deinterleave (stride-3 loads, which the
loop vectoriser turns into one ``vpinsrb`` per byte) and loops indexed ``o + x`` (kept scalar: the compiler
cannot rule out wrap-around) cost 3-5x; the shuffles and slice-indexed loops remove both.

Arrays are passed flat (1-D, C-contiguous) with their sizes. Compiled eagerly for the signatures below (the
first import compiles, later imports load numba's cache).
"""

import contextlib

import numba
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic

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


_PIXELS = 16  # pixels split into channel planes by one vector shuffle


def _split_pixels_intrinsic(mirrored):
    """A numba intrinsic ``split(src, i, dst, o, plane)``: the 16 interleaved RGB pixels at src[i:i + 48] go to
    dst[o + c * plane + x] (channel c, x in [0, 16)), in reverse pixel order when ``mirrored``. One 48-byte load,
    three constant shuffles (vpshufb/vpermt2b on x86), three 16-byte stores: the deinterleave that the loop
    vectoriser only does byte by byte (vpinsrb), about 20 times faster."""
    order = [_PIXELS - 1 - x if mirrored else x for x in range(_PIXELS)]

    @intrinsic
    def split(typingctx, src, i, dst, o, plane):
        def codegen(context, builder, signature, args):
            src_v, i_v, dst_v, o_v, plane_v = args
            src_data = context.make_array(signature.args[0])(context, builder, src_v).data
            dst_data = context.make_array(signature.args[2])(context, builder, dst_v).data
            byte = ir.IntType(8)
            pixels_t, plane_t = ir.VectorType(byte, 3 * _PIXELS), ir.VectorType(byte, _PIXELS)
            pixels = builder.load(builder.bitcast(builder.gep(src_data, [i_v]), pixels_t.as_pointer()), align=1)
            for c in range(3):
                mask = ir.Constant(ir.VectorType(ir.IntType(32), _PIXELS), [3 * x + c for x in order])
                channel = builder.shuffle_vector(pixels, ir.Constant(pixels_t, ir.Undefined), mask)
                at = builder.gep(dst_data, [builder.add(o_v, builder.mul(plane_v, ir.Constant(plane_v.type, c)))])
                builder.store(channel, builder.bitcast(at, plane_t.as_pointer()), align=1)
            return context.get_dummy_value()

        return types.void(src, i, dst, o, plane), codegen

    return split


_split_pixels = _split_pixels_intrinsic(False)
_split_pixels_mirrored = _split_pixels_intrinsic(True)


@_jit
def _gather_row(src, first, flip, width, planes):
    """planes[c * W + x] (uint8 scratch, 3 * W) = channel c of output column x of a source row: the pixel at
    first + 3 * x, or at first - 3 * x when ``flip`` (``first`` is then the row's last pixel). Whole blocks of
    16 pixels by one shuffle each, the rest pixel by pixel."""
    blocks = width // _PIXELS
    for k in range(blocks):
        if flip:
            _split_pixels_mirrored(src, first - 3 * (_PIXELS * k + _PIXELS - 1), planes, _PIXELS * k, width)
        else:
            _split_pixels(src, first + 3 * _PIXELS * k, planes, _PIXELS * k, width)
    step = -3 if flip else 3
    for x in range(blocks * _PIXELS, width):
        i = first + step * x
        planes[x] = src[i]
        planes[width + x] = src[i + 1]
        planes[2 * width + x] = src[i + 2]


@_jit
def _values(a, b, mixed, ka, kb, scale, bias, dst):
    """dst[x] (float32) = value of one channel: a[x] normalised, or the mixup of a[x] and b[x] when ``mixed``.

    Every loop here and below runs over slices with the loop counter as the index, so the compiler sees unit
    strides and vectorises (an index like ``o + x`` may wrap, and the loop then stays scalar, 3-4 times slower).
    """
    if mixed:
        for x in range(len(dst)):
            dst[x] = _mix_value(a[x], b[x], ka, kb, bias)
    else:
        for x in range(len(dst)):
            dst[x] = _copy_value(a[x], scale, bias)


@_jit
def _half(bits, out, out_kind):
    """out[x] = 16-bit pattern (int16) of the float32 pattern bits[x]; ``out`` may be a strided slice."""
    if out_kind == pm.OUT_BF16:
        for x in range(len(bits)):
            out[x] = _half_bits(np.int64(bits[x]), out_kind)
        return
    # float16: the normal-range formula for every element (vectorises), the full conversion for the rare run
    # with a value below 2**-14 or >= 65520 in magnitude (zero, subnormal, overflow, inf, NaN)
    special = False
    for x in range(len(bits)):
        u = np.int64(bits[x])
        a = u & 0x7FFFFFFF
        special |= (a < pm.F16_NORMAL_MIN) | (a >= pm.F16_OVERFLOW)
        out[x] = ((u >> 16) & 0x8000) | _f16_bits_normal(a)
    if special:
        for x in range(len(bits)):
            out[x] = _half_bits(np.int64(bits[x]), out_kind)


@_jit
def _emit(a, b, mixed, k, values, dst, out_kind):
    """One output row of one channel: the values of planes a (and b), k = (ka, kb, scale, bias), into ``dst``;
    float32 straight, 16-bit kinds through the float32 scratch ``values`` and their rounding."""
    ka, kb, scale, bias = k
    if out_kind == pm.OUT_F32:
        _values(a, b, mixed, ka, kb, scale, bias, dst)
    else:
        _values(a, b, mixed, ka, kb, scale, bias, values)
        _half(values.view(np.uint32), dst, out_kind)


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

    Per row: the sample's source row (and the partner's, for mixup or a row crossing the CutMix box) is split
    into channel planes, mirrored where flipped (``_gather_row``, vector shuffles); the box is pasted from the
    partner's planes; then per channel one unit-stride loop computes the values with the shared ``copy_value``
    or ``mix_value``, straight into the output plane (float32 NCHW) or into a float32 scratch that is rounded
    (float16/bfloat16) or interleaved (NHWC) on the way out.
    """
    tasks_per_sample = (height + _ROWS_PER_TASK - 1) // _ROWS_PER_TASK
    plane = height * width
    row_stride = 3 * width
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
        ka = np.empty(3, np.float32)
        kb = np.empty(3, np.float32)
        for c in range(3):
            ka[c], kb[c] = _mix_weights(params[b, pm.P_LAM], scale[c])
        mine = np.empty(3 * width, np.uint8)
        other = np.empty(3 * width, np.uint8)
        values = np.empty(width, np.float32)
        mixed = kind == pm.KIND_MIXUP
        for y in range(y_start, y_stop):
            # first source byte of output column 0 (a mirrored row starts at its last pixel)
            first_b = (b * height + y) * row_stride + (3 * (width - 1) if flip_b else 0)
            first_p = (p * height + y) * row_stride + (3 * (width - 1) if flip_p else 0)
            _gather_row(src, first_b, flip_b, width, mine)
            if mixed or (kind == pm.KIND_CUTMIX and y >= by0 and y < by1 and bx0 < bx1):
                _gather_row(src, first_p, flip_p, width, other)
                if not mixed:  # paste the partner's box into this row's planes
                    for c in range(3):
                        mine[c * width + bx0:c * width + bx1] = other[c * width + bx0:c * width + bx1]
            for c in range(3):
                a = mine[c * width:(c + 1) * width]
                o = other[c * width:(c + 1) * width]
                k = (ka[c], kb[c], scale[c], bias[c])
                if nchw:  # a contiguous output row: its own call, so its loops keep unit strides
                    at = b * 3 * plane + c * plane + y * width
                    _emit(a, o, mixed, k, values, out[at:at + width], out_kind)
                else:
                    at = (b * plane + y * width) * 3 + c
                    _emit(a, o, mixed, k, values, out[at:at + 3 * width - c:3], out_kind)


@contextlib.contextmanager
def threads(count):
    """Run the parallel kernels that the calling thread launches inside this block on at most ``count`` threads
    (None: numba's default, every core). Numba's setting is per calling thread, restored on exit.

    Why: a DALI pipeline's decoding threads already keep the cores busy; an OpenMP team on top of them spins at
    its barrier while its other member waits for a core (measured on 2 cores: about 7 ms of CPU per batch of 64,
    more than the kernel's own work)."""
    if count is None:
        yield
        return
    before = numba.get_num_threads()
    numba.set_num_threads(max(1, min(int(count), numba.config.NUMBA_NUM_THREADS)))
    try:
        yield
    finally:
        numba.set_num_threads(before)


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
