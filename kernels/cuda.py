"""CUDA kernels (numba.cuda): the fused image kernel and the soft-label kernel.

The per-element math is ``pixel_math``, the same source the CPU twin compiles; on the GPU its primitives are
exact hardware equivalents (explicitly rounded multiply/add, so neither NVVM nor ptxas can contract ``a*b + c``
into an FMA that rounds once; register bit casts; the byte permute), and from sm_80 on the float32 ->
float16/bfloat16 rounding is the ``cvt.rn.{f16,bf16}x2.f32`` instruction: the GPU is bit-identical to the oracle.
The same Python functions run on a GPU, under numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``, CPU CI, with
the plain primitives) and through ``numba.cuda.compile_ptx`` (CI compiles every kernel for sm_80 and sm_90).

The image kernel comes in variants, chosen at launch: output dtype (float32 / float16 / bfloat16) x layout
(NCHW / NHWC) x access. ``vec4`` (width a multiple of 4, 4-byte-aligned input, 8-byte-aligned output): a thread
writes 4 consecutive pixels of a row from three 32-bit loads per source (12 bytes = 4 RGB pixels; a mirrored
sample reads the mirrored group and reverses it with byte permutes) with 64-bit stores. ``generic`` (any width
or alignment): a thread writes 4 pixels a block apart, with byte loads and scalar stores. Both share
``_sample`` and ``_value``; ``benchmarks/cost_model.py`` estimates their cost from the sm_90 machine code.

Launch geometry (``launch_geometry``): a 1-D grid; each block covers consecutive items of ONE sample (so the
sample's parameters are uniform over the block and each thread reads them once): no 65,535 limit on the height
or the batch. Offsets are flat unsigned 32-bit (validated: every tensor has fewer than 2**32 elements),
divisions by run-time sizes are multiply-shifts with host-computed constants. Kernels bounds-check instead of
raising: an out-of-range partner index or label writes NaN, never reads out of bounds.

Compilation: eager, for explicit signatures, per compute capability (``kernel``; ``precompile`` ahead of the
first batch), with numba-cuda's on-disk cache (``cache=True``); each kernel closes over a digest of this file
and ``pixel_math.py``, part of numba's cache key, so editing the shared math is a cache miss even though numba
checks only the kernel's own file stamp. Numba names a function's cache files (one index, one data file per
entry) after its module, ``__qualname__`` and first line, which the variants of one closure share: each
(kernel, compute capability) is jitted under a qualname of its own (``kernel_to_jit``), so its index holds one
entry and processes compiling different variants into a shared cache never pick the same data file.
"""

import contextlib
import functools
import hashlib
import importlib
import os
import threading
import types
from pathlib import Path
from typing import NamedTuple

import numpy as np
from numba import cuda
from numba.cuda import config as _cuda_config
from numba.cuda import types as _t

from . import genuine_print
from . import pixel_math as pm

THREADS = 128
THREADS_LABELS = 256
VEC = 4  # pixels per thread in the vec4 variants
_MAX_ELEMENTS = 1 << 32  # flat uint32 offsets
_MAX_BLOCKS = (1 << 31) - 1  # gridDim.x limit
KINDS_ALL = -1  # the shipped kernels read each sample's kind; the cost model pins one

_SIMULATOR = bool(_cuda_config.ENABLE_CUDASIM)
_DIGEST = int(hashlib.sha256(Path(__file__).read_bytes() + Path(pm.__file__).read_bytes()).hexdigest()[:15], 16)

_dev = cuda.jit(device=True, inline="always")  # compile_ptx needs no GPU only for numba-inlined device code


def _prepare_compiles():
    """Import, with the interpreter's print in place, what numba-cuda would import lazily inside a compile: the
    CUDA target's typing and lowering registries (``refresh``, as a compile's first step does; no GPU, NVVM or
    driver needed), among them ``numba.cuda.typing.builtins``, which registers ``builtins.print`` (see
    ``kernels.genuine_print``). Compiles then need no swap of ``print``, which every thread would see for the
    whole compile (a loader compiles in the background)."""
    if _SIMULATOR:
        return
    from numba.cuda.core.compiler_lock import global_compiler_lock
    from numba.cuda.descriptor import cuda_target

    with global_compiler_lock, genuine_print():  # as a compile refreshes; the swap only for the imports
        importlib.import_module("numba.cuda.typing.builtins")  # registers print (also imported by refresh)
        cuda_target.target_context.refresh()  # and its typing context's


_prepare_compiles()

if not _SIMULATOR:
    from llvmlite import ir
    from numba.cuda import libdevice
    from numba.cuda.extending import intrinsic

    @intrinsic
    def _f32_bits_gpu(typingctx, v):
        """The bit pattern of a float32 (a register reinterpretation)."""
        return _t.uint32(_t.float32), lambda context, builder, sig, args: builder.bitcast(args[0], ir.IntType(32))

    @intrinsic
    def _bits_f32_gpu(typingctx, u):
        """The float32 with bit pattern ``u`` (a register reinterpretation)."""
        return _t.float32(_t.uint32), lambda context, builder, sig, args: builder.bitcast(args[0], ir.FloatType())

    @intrinsic
    def _byte_perm_gpu(typingctx, x, y, sel):
        """``prmt.b32``: the byte permute of ``pixel_math.byte_perm`` in one instruction."""

        def codegen(context, builder, sig, args):
            i32 = ir.IntType(32)
            asm = ir.InlineAsm(ir.FunctionType(i32, [i32, i32, i32]), "prmt.b32 $0, $1, $2, $3;", "=r,r,r,r")
            return builder.call(asm, args)

        return _t.uint32(_t.uint32, _t.uint32, _t.uint32), codegen

    @intrinsic
    def _cvt_half2(typingctx, lo, hi, out_kind):
        """(lo, hi, out_kind) -> uint32: ``cvt.rn.{f16,bf16}x2.f32`` (sm_80 and newer), both values rounded to
        nearest even, ``lo`` in bits 0-15 (the instruction puts its first operand in the upper half). The choice
        between the two is a select that folds away for a constant ``out_kind``."""

        def codegen(context, builder, sig, args):
            fnty = ir.FunctionType(ir.IntType(32), [ir.FloatType(), ir.FloatType()])
            f16, bf16 = (builder.call(ir.InlineAsm(fnty, f"cvt.rn.{t}x2.f32 $0, $1, $2;", "=r,f,f"),
                                      [args[1], args[0]]) for t in ("f16", "bf16"))
            is_bf16 = builder.icmp_signed("==", args[2], ir.Constant(args[2].type, pm.OUT_BF16))
            return builder.select(is_bf16, bf16, f16)

        return _t.uint32(_t.float32, _t.float32, out_kind), codegen

    @intrinsic
    def _mad32(typingctx, a, b, c):
        """``(a * b + c) mod 2**32`` in 32-bit unsigned arithmetic (numba computes integers in 64 bits and the
        truncation does not always narrow back): the kernels' flat offsets."""

        def codegen(context, builder, sig, args):
            return builder.add(builder.mul(args[0], args[1]), args[2])

        return _t.uint32(_t.uint32, _t.uint32, _t.uint32), codegen

    _PRIMITIVES = dict(mul_rn=libdevice.fmul_rn, add_rn=libdevice.fadd_rn, sub_rn=libdevice.fsub_rn,
                       f32_bits=_f32_bits_gpu, bits_f32=_bits_f32_gpu, byte_perm=_byte_perm_gpu)
else:
    _PRIMITIVES = None  # the simulator runs the plain primitives

    def _mad32(a, b, c):
        return np.uint32((int(a) * int(b) + int(c)) & 0xFFFFFFFF)

_math = pm.for_target(_dev, primitives=_PRIMITIVES)
_mix_weights = _math.mix_weights
_mix_floats = _math.mix_floats
_norm_float = _math.norm_float
_byte_value = _math.byte_value
_half2_soft = _math.half2_bits
_byte_perm = _math.byte_perm
_f32_bits = _math.f32_bits
_in_box = _math.in_box
_soft_target = _math.soft_target


@_dev
def _store_f32(out, o, step, slots):
    """Three runs of 4 consecutive float32 outputs (``slots``), run j at uint64 index 2 * (o + j * step) of the
    output viewed as uint64: two 64-bit stores each."""
    for j in range(3):  # a 3-trip loop over constant-indexed tuples: unrolled
        q = slots[j]
        i = np.uint64(_mad32(j, step, o)) * np.uint64(2)
        out[i] = np.uint64(_f32_bits(q[0])) | (np.uint64(_f32_bits(q[1])) << np.uint64(32))
        out[i + np.uint64(1)] = np.uint64(_f32_bits(q[2])) | (np.uint64(_f32_bits(q[3])) << np.uint64(32))


@_dev
def _store_hw(out, o, step, slots, out_kind):
    """Three runs of 4 consecutive 16-bit outputs, run j at uint64 index o + j * step: one 64-bit store each,
    converted by the hardware (sm_80 and newer)."""
    for j in range(3):
        q = slots[j]
        out[_mad32(j, step, o)] = np.uint64(_cvt_half2(q[0], q[1], out_kind)) | (
            np.uint64(_cvt_half2(q[2], q[3], out_kind)) << np.uint64(32))


@_dev
def _store_soft(out, o, step, slots, out_kind):
    """``_store_hw`` with the shared software rounding (before sm_80)."""
    for j in range(3):
        q = slots[j]
        out[_mad32(j, step, o)] = np.uint64(_half2_soft(q[0], q[1], out_kind)) | (
            np.uint64(_half2_soft(q[2], q[3], out_kind)) << np.uint64(32))


@_dev
def _udiv(n, magic, shift):
    """floor(n / d) for n < 2**31, with (magic, shift) = ``_magic(d)``: one wide multiply and a shift."""
    return np.uint32((np.uint64(n) * np.uint64(magic)) >> np.uint64(shift))


@_dev
def _block_item(bps, bps_m, bps_sh):
    """(sample b, item s within the sample) of this thread: block k covers items [(k % bps) * T, ...) of
    sample k // bps, T = blockDim.x."""
    blk = np.uint32(cuda.blockIdx.x)
    b = _udiv(blk, bps_m, bps_sh)
    return b, np.uint32((blk - b * bps) * np.uint32(cuda.blockDim.x) + np.uint32(cuda.threadIdx.x))


@_dev
def _sample(params, b, n, only_kind, scale, bias):
    """Parameters of sample ``b``: (partner, kind, flip_a, flip_b, box (y0, y1, x0, x1), scale, bias, ka, kb),
    the last four per channel. A partner outside [0, n) gives NaN scale, bias and weights (every value NaN, for
    any kind) and reads the sample itself, never out of bounds."""
    p = np.uint32(np.int32(params[b, pm.P_PARTNER]))
    kind = np.int32(params[b, pm.P_KIND]) if only_kind == KINDS_ALL else np.int32(only_kind)
    if p >= n:
        p = b
        nan = np.float32(np.nan)
        scale = bias = (nan, nan, nan)
    lam = params[b, pm.P_LAM]
    ka0, kb0 = _mix_weights(lam, scale[0])
    ka1, kb1 = _mix_weights(lam, scale[1])
    ka2, kb2 = _mix_weights(lam, scale[2])
    box = (np.int32(params[b, pm.P_Y0]), np.int32(params[b, pm.P_Y1]), np.int32(params[b, pm.P_X0]),
           np.int32(params[b, pm.P_X1]))
    return (p, kind, params[b, pm.P_FLIP] != 0, params[p, pm.P_FLIP] != 0, box, scale, bias, (ka0, ka1, ka2),
            (kb0, kb1, kb2))


@_dev
def _value(kind, from_b, fa, fb, c, scale, bias, ka, kb):
    """Channel ``c`` of one output pixel from its sample's and partner's values ``fa``, ``fb``."""
    if kind == pm.KIND_MIXUP:
        return _mix_floats(fa, fb, ka[c], kb[c], bias[c])
    return _norm_float(fb if from_b else fa, scale[c], bias[c])


def _element_value(k, ctx):
    """Value of element k = 3*i + c (pixel i, channel c) of a 4-pixel group. ``ctx`` = (kind, y_in, x, box, a, b,
    scale, bias, ka, kb), ``a``/``b`` the words of the sample's and the partner's 4 pixels (output order)."""
    kind, y_in, x, box, a, b, scale, bias, ka, kb = ctx
    i = k // 3
    c = k - 3 * i
    if kind == pm.KIND_MIXUP:
        return _mix_floats(_byte_value(a[k >> 2], k & 3), _byte_value(b[k >> 2], k & 3), ka[c], kb[c], bias[c])
    src = b if y_in and box[2] <= x + i and x + i < box[3] else a
    return _norm_float(_byte_value(src[k >> 2], k & 3), scale[c], bias[c])


def _subroutine(py_func, restype):
    """``py_func`` (two arguments) as a device function that numba compiles once per argument types and calls
    (NVVM inlines the calls), instead of inlining it at every call site, which recompiles it each time: the
    kernel writes out its 12 element computations, and compiling them was most of the compile time."""
    if _SIMULATOR:
        return py_func

    @intrinsic
    def call(typingctx, a0, a1):
        def codegen(context, builder, sig, args):
            return context.compile_internal(builder, py_func, sig, args)

        return restype(a0, a1), codegen

    return call


_element = _subroutine(_element_value, _t.float32)


@_dev
def _mirror4(w0, w1, w2):
    """The 12 bytes of 4 RGB pixels (three little-endian words) with the pixel order reversed: four byte
    permutes (bytes 0-11 -> 9 10 11 6 | 7 8 3 4 | 5 0 1 2)."""
    t = _byte_perm(w1, w2, np.uint32(0x0043))  # w1.b3, w2.b0, -, w1.b0
    return (_byte_perm(w1, w2, np.uint32(0x2765)), _byte_perm(t, w0, np.uint32(0x3710)),
            _byte_perm(w0, w1, np.uint32(0x2105)))


@_dev
def _load4(src, row, w4, xg, flip):
    """Words of the 4 pixels of group ``xg`` of a source row as output order sees them (mirrored if ``flip``)."""
    xs = w4 - np.uint32(1) - xg if flip else xg
    i = np.uint64(_mad32(_mad32(row, w4, xs), 3, 0))  # 64-bit: the three loads share one address
    w0, w1, w2 = src[i], src[i + np.uint64(1)], src[i + np.uint64(2)]
    if flip:
        return _mirror4(w0, w1, w2)
    return w0, w1, w2


def _make_vec4_kernel(out_kind, nchw, only_kind, hw):
    f32_out = out_kind == pm.OUT_F32
    digest = _DIGEST

    def mix_images(src, params, s0, s1, s2, o0, o1, o2, out, n, height, w4, bps, bps_m, bps_sh, w4_m, w4_sh):
        """in: src uint32 (B*H*W*3/4,), the flat NHWC uint8 batch read as words (W % 4 == 0); params float32
        (B, PARAM_FIELDS); value = x * s_c + o_c. out: uint64, the flat output (float32 pairs or 16-bit quads)
        of (B, 3, H, W) if NCHW else (B, H, W, 3). A thread: the 4 pixels of group s = y * W/4 + xg of sample b.

        The variant (f32_out, nchw, hw, only_kind) is closure constants: numba prunes the other branches before
        inlining, and ``digest`` (never negative) makes the kernel sources part of numba's on-disk cache key.
        """
        if digest < 0:
            return
        b, s = _block_item(bps, bps_m, bps_sh)
        groups = np.uint32(height * w4)
        if s >= groups:
            return
        y = _udiv(s, w4_m, w4_sh)
        xg = np.uint32(s - y * w4)
        x = np.int32(xg * np.uint32(VEC))
        p, kind, flip_a, flip_b, box, scale, bias, ka, kb = _sample(params, b, n, only_kind, (s0, s1, s2),
                                                                    (o0, o1, o2))
        y_in = kind == pm.KIND_CUTMIX and box[0] <= np.int32(y) and np.int32(y) < box[1]
        zero = np.uint32(0)
        a = (zero, zero, zero)
        bw = (zero, zero, zero)
        if not (y_in and box[2] <= x and x + VEC <= box[3]):  # some pixel of the group is the sample's own
            a = _load4(src, _mad32(b, height, y), w4, xg, flip_a)
        if kind == pm.KIND_MIXUP or (y_in and box[2] < x + VEC and x < box[3]):  # some pixel is the partner's
            bw = _load4(src, _mad32(p, height, y), w4, xg, flip_b)
        # the 12 values, element k = 3 * pixel + channel (written out: each call site specialises on its k)
        ctx = (kind, y_in, x, box, a, bw, scale, bias, ka, kb)
        v0, v1, v2, v3 = _element(0, ctx), _element(1, ctx), _element(2, ctx), _element(3, ctx)
        v4, v5, v6, v7 = _element(4, ctx), _element(5, ctx), _element(6, ctx), _element(7, ctx)
        v8, v9, v10, v11 = _element(8, ctx), _element(9, ctx), _element(10, ctx), _element(11, ctx)
        # 64-bit stores in memory order, as three runs of 4 values: NCHW a run of 4 pixels per channel plane,
        # NHWC the 12 values as they lie
        if nchw:
            o, step = _mad32(_mad32(b, 3, 0), groups, s), groups
            slots = ((v0, v3, v6, v9), (v1, v4, v7, v10), (v2, v5, v8, v11))
        else:
            o, step = _mad32(_mad32(b, groups, s), 3, 0), np.uint32(1)
            slots = ((v0, v1, v2, v3), (v4, v5, v6, v7), (v8, v9, v10, v11))
        if f32_out:
            _store_f32(out, o, step, slots)
        elif hw:
            _store_hw(out, o, step, slots, out_kind)
        else:
            _store_soft(out, o, step, slots, out_kind)

    return mix_images


def _pixel_words(s, ctx):
    """The three output words (float32 bits, or a float16/bfloat16 pattern) of pixel ``s`` = y * W + x of the
    sample; ``ctx`` = (src, b, p, kind, flip_a, flip_b, box, scale, bias, ka, kb, geometry, conversion), geometry
    = (height, width, w_m, w_sh), conversion = (f32_out, hw, out_kind). Reads only the bytes it uses."""
    src, b, p, kind, flip_a, flip_b, box, scale, bias, ka, kb, (height, width, w_m, w_sh), conversion = ctx
    f32_out, hw, out_kind = conversion
    y = _udiv(s, w_m, w_sh)
    x = np.uint32(s - y * width)
    from_b = kind == pm.KIND_CUTMIX and _in_box(np.int32(y), np.int32(x), box[0], box[1], box[2], box[3])
    mirrored = width - np.uint32(1) - x
    ia = np.uint64(_mad32(_mad32(_mad32(b, height, y), width, mirrored if flip_a else x), 3, 0))
    ib = np.uint64(_mad32(_mad32(_mad32(p, height, y), width, mirrored if flip_b else x), 3, 0))
    w0 = w1 = w2 = np.uint32(0)
    for c in range(3):
        fa = np.float32(0)
        fb = np.float32(0)
        if not from_b:
            fa = _byte_value(np.uint32(src[ia + np.uint64(c)]), 0)
        if kind == pm.KIND_MIXUP or from_b:
            fb = _byte_value(np.uint32(src[ib + np.uint64(c)]), 0)
        v = _value(kind, from_b, fa, fb, c, scale, bias, ka, kb)
        if f32_out:
            w = _f32_bits(v)
        elif hw:
            w = _cvt_half2(v, v, out_kind) & np.uint32(0xFFFF)
        else:
            w = _half2_soft(v, v, out_kind) & np.uint32(0xFFFF)
        if c == 0:
            w0 = w
        elif c == 1:
            w1 = w
        else:
            w2 = w
    return w0, w1, w2


_pixel = _subroutine(_pixel_words, _t.UniTuple(_t.uint32, 3))


@_dev
def _store3(out, b, s, plane, nchw, words):
    """The three words of pixel ``s`` of sample ``b`` into the flat output (channel planes if ``nchw``)."""
    if nchw:
        o = _mad32(_mad32(b, 3, 0), plane, s)
        out[o], out[_mad32(1, plane, o)], out[_mad32(2, plane, o)] = words
    else:
        o = np.uint64(_mad32(_mad32(b, plane, s), 3, 0))
        out[o], out[o + np.uint64(1)], out[o + np.uint64(2)] = words


def _make_generic_kernel(out_kind, nchw, only_kind, hw):
    f32_out = out_kind == pm.OUT_F32
    digest = _DIGEST

    def mix_images(src, params, s0, s1, s2, o0, o1, o2, out, n, height, width, bps, bps_m, bps_sh, w_m, w_sh):
        """in: src uint8 (B*H*W*3,), the flat NHWC batch; params float32 (B, PARAM_FIELDS); value = x * s_c + o_c.
        out: the flat output as uint32 (float32 bits) or uint16 (float16/bfloat16 bits), of (B, 3, H, W) if NCHW
        else (B, H, W, 3). A thread: pixels s, s + T, s + 2T, s + 3T (s = y * W + x, T = blockDim.x) of sample
        b, each with byte loads and scalar stores. Closure constants as in the vec4 kernel.
        """
        if digest < 0:
            return
        b, s = _block_item(bps, bps_m, bps_sh)
        t = np.uint32(cuda.blockDim.x)
        s = _mad32(s - np.uint32(cuda.threadIdx.x), 3, s)  # block k covers items [(k % bps) * 4T, ...)
        plane = np.uint32(height * width)
        if s >= plane:
            return
        p, kind, flip_a, flip_b, box, scale, bias, ka, kb = _sample(params, b, n, only_kind, (s0, s1, s2),
                                                                    (o0, o1, o2))
        ctx = (src, b, p, kind, flip_a, flip_b, box, scale, bias, ka, kb, (height, width, w_m, w_sh),
               (f32_out, hw, out_kind))
        _store3(out, b, s, plane, nchw, _pixel(s, ctx))
        s = np.uint32(s + t)
        if s < plane:
            _store3(out, b, s, plane, nchw, _pixel(s, ctx))
        s = np.uint32(s + t)
        if s < plane:
            _store3(out, b, s, plane, nchw, _pixel(s, ctx))
        s = np.uint32(s + t)
        if s < plane:
            _store3(out, b, s, plane, nchw, _pixel(s, ctx))

    return mix_images


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


# --- registry: every kernel, its signature, compilation -------------------------------------------------------

_OUT_NAMES = {pm.OUT_F32: "f32", pm.OUT_F16: "f16", pm.OUT_BF16: "bf16"}
_f32 = _t.float32
_u32t = _t.uint32


def image_kernel_name(out_kind, nchw, vec):
    """Name of the image kernel variant: ``mix_images_<f32|f16|bf16>_<nchw|nhwc>_<vec4|generic>``."""
    return f"mix_images_{_OUT_NAMES[out_kind]}_{'nchw' if nchw else 'nhwc'}_{'vec4' if vec else 'generic'}"


def _image_entry(out_kind, nchw, vec):
    make = _make_vec4_kernel if vec else _make_generic_kernel
    src = _t.uint32[::1] if vec else _t.uint8[::1]
    out = _t.uint64[::1] if vec else (_t.uint32[::1] if out_kind == pm.OUT_F32 else _t.uint16[::1])
    sig = (src, _f32[:, ::1], *(_f32,) * 6, out, *(_u32t,) * 8)
    return (lambda hw, only_kind: make(out_kind, nchw, only_kind, hw)), sig


KERNELS = {image_kernel_name(k, nchw, vec): _image_entry(k, nchw, vec)
           for k in _OUT_NAMES for nchw in (True, False) for vec in (True, False)}
KERNELS["soft_targets"] = ((lambda hw, only_kind: soft_targets),
                           (_t.int64[::1], _f32[:, ::1], _f32, _f32, _f32[:, ::1]))


def _hardware_half(cc):
    """The cvt.rn.{f16,bf16}x2.f32 instructions exist from sm_80; older GPUs use the shared software rounding."""
    return tuple(cc) >= (8, 0)


def python_kernel(name, cc, only_kind=KINDS_ALL):
    """(Python function, signature) of kernel ``name`` as compiled for compute capability ``cc``.

    ``only_kind``: KINDS_ALL (what launches run: each sample's kind read from its parameters), or one
    ``pixel_math.KIND_*`` to compile the image kernel for samples of that kind only (the cost model's view of
    one kind's path; never launched).
    """
    build, sig = KERNELS[name]
    return build(_hardware_half(cc), only_kind), sig


def cache_qualname(name, cc):
    """The ``__qualname__`` under which kernel ``name`` is jitted for compute capability ``cc``, e.g.
    ``mix_images_f16_nchw_vec4_sm90``: numba-cuda's on-disk cache names the function's files
    ``<module>.<qualname>-<first line>.py<XY>.nbi`` (the index) and ``.<n>.nbc`` (the data), so each variant
    and compute capability gets files of its own."""
    return f"{name}_sm{int(cc[0])}{int(cc[1])}"


def kernel_to_jit(name, cc):
    """(Python function, signature) that ``kernel`` hands to ``cuda.jit(signature, cache=True)`` for compute
    capability ``cc``: ``python_kernel``'s function, copied under ``cache_qualname(name, cc)``.

    Numba-cuda's cache keeps one index file per module, qualname and first line, mapping keys (signature,
    compute capability, hashes of the bytecode and of the closure's values) to data files ``<base>.1.nbc``,
    ``.2.nbc``...; saving an entry reads the index, takes the first data-file name the index does not use, then
    writes the index and the data, with no lock between processes. The image-kernel variants are closures of
    one ``def`` (one qualname, one line): under that shared name, two processes compiling different variants
    at once (float16 and bfloat16 jobs sharing a cache) could both take ``.1.nbc``, and one variant's index
    entry would then name the other's code. Under its own name, each index holds one entry. The closure (and
    its ``digest``) is the function's own, so the cache key still changes with the kernel sources.
    """
    fn, sig = python_kernel(name, cc)
    own = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__)
    own.__kwdefaults__ = fn.__kwdefaults__
    own.__doc__ = fn.__doc__
    own.__module__ = fn.__module__
    own.__qualname__ = cache_qualname(name, cc)
    return own, sig


@functools.lru_cache(maxsize=None)
def compile_ptx(name, cc, only_kind=KINDS_ALL):
    """PTX of kernel ``name`` for compute capability ``cc`` (e.g. (9, 0)); needs no GPU (kept per arguments)."""
    fn, sig = python_kernel(name, cc, only_kind)
    ptx, _ = cuda.compile_ptx(fn, sig, cc=tuple(cc))  # no print swap needed (_prepare_compiles)
    return ptx


_compiled = {}
_compile_lock = threading.Lock()


def _fresh_lock_after_fork():
    """A child forked while another thread compiled would find ``_compile_lock`` held forever."""
    global _compile_lock
    _compile_lock = threading.Lock()


os.register_at_fork(after_in_child=_fresh_lock_after_fork)


def kernel(name):
    """The launchable kernel ``name`` for the current device: compiled eagerly for its signature on first use
    (or loaded from numba's on-disk cache), then kept; under the simulator, the Python function as is.
    Thread-safe: concurrent callers wait for one compilation."""
    cc = None if _SIMULATOR else cuda.get_current_device().compute_capability
    found = _compiled.get((name, cc))
    if found is not None:
        return found
    with _compile_lock:
        if (name, cc) not in _compiled:
            if _SIMULATOR:
                _compiled[(name, cc)] = cuda.jit(python_kernel(name, (0, 0))[0])
            else:
                fn, sig = kernel_to_jit(name, cc)  # own cache files per variant and compute capability
                _compiled[(name, cc)] = cuda.jit(sig, cache=True)(fn)  # no print swap needed (_prepare_compiles)
        return _compiled[(name, cc)]


def precompile(out_kind=None, nchw=None, width=None, device=None):
    """Compile (or load from numba's on-disk cache) the kernels a loader will launch, ahead of the first batch.

    Contract: idempotent and thread-safe, so a loader may call it from a background thread when it is built
    (while DALI warms up); a launch that needs a kernel still being compiled waits for that compilation (each
    kernel is compiled once per process and compute capability), and an error (no driver, no CUDA) is raised to
    the caller (a background thread should keep it and let the first batch's own compile report it). It
    launches nothing and allocates no device memory; it makes ``device``'s primary context (the one torch uses)
    current in the calling thread. From a background thread pass ``device``: a new thread has no current
    device, and numba would take device 0.

    in:  out_kind: ``pixel_math.OUT_*`` of the images, or None for all three; nchw: the layout, or None for
         both; width: the image width the loader produces (a multiple of 4 selects the vec4 kernel, others the
         generic one; None: both); device: CUDA device index (None: the calling thread's current device).
    out: the names of the kernels now ready (the soft-label kernel included).
    """
    if out_kind is not None and out_kind not in _OUT_NAMES:
        raise ValueError(f"out_kind must be one of {sorted(_OUT_NAMES)} (pixel_math.OUT_*) or None, got {out_kind!r}")
    kinds = list(_OUT_NAMES) if out_kind is None else [out_kind]
    layouts = [True, False] if nchw is None else [bool(nchw)]
    access = [True, False] if width is None else [int(width) % VEC == 0]
    names = [image_kernel_name(k, lay, vec) for k in kinds for lay in layouts for vec in access] + ["soft_targets"]
    with cuda.gpus[int(device)] if device is not None else contextlib.nullcontext():
        for name in names:
            kernel(name)
    return tuple(names)


# --- launch geometry and launches -----------------------------------------------------------------------------


def _magic(d):
    """(magic, shift) with floor(n / d) == (n * magic) >> shift for every 0 <= n < 2**31 (d >= 1); both < 2**32.

    Round-up method: shift = 31 + ceil(log2 d), magic = floor(2**shift / d) + 1, so that
    2**shift < magic * d <= 2**shift + 2**(shift - 31), which makes the quotient exact for 31-bit n.
    """
    shift = 31 + (int(d) - 1).bit_length()
    return (1 << shift) // int(d) + 1, shift


class Geometry(NamedTuple):
    """A launch of the image kernel: ``blocks`` x ``threads`` (1-D), ``items`` per sample (4-pixel groups for
    vec4, pixels for generic), ``per_thread`` items per thread (1 group, or 4 pixels a block apart), and the
    kernel's trailing uint32 arguments (n, height, items per row, blocks per sample and the multiply-shift
    constants dividing by it and by the items per row)."""

    blocks: int
    threads: int
    items: int
    per_thread: int
    args: tuple


def launch_geometry(n, height, width, vec, threads=THREADS):
    """The 1-D launch of the image kernel for a (n, height, width, 3) batch; ``vec``: the vec4 kernels.

    Each thread writes 4 pixels (vec4: one group of 4 consecutive pixels; generic: 4 pixels ``threads`` apart),
    each block ``threads * per_thread`` consecutive items of ONE sample: blocks per sample = ceil(items / that),
    blocks = n * that (at most 2**31 - 1, the grid's x limit; no 65,535 limit on height or batch). Raises
    ValueError when a tensor would have 2**32 elements or more (the kernels use 32-bit offsets).
    """
    if not (0 < threads <= 1024):
        raise ValueError(f"threads must be in [1, 1024], got {threads}")
    if vec and width % VEC:
        raise ValueError(f"the vec4 kernels need a width that is a multiple of {VEC}, got {width}")
    elements = n * height * width * 3
    if elements >= _MAX_ELEMENTS:
        raise ValueError(f"images_u8 of shape ({n}, {height}, {width}, 3) has {elements} elements; the kernels "
                         f"use 32-bit offsets (fewer than 2**32 elements): split the batch")
    row = width // VEC if vec else width
    items = height * row
    per_thread = 1 if vec else VEC
    per_sample = -(-items // (threads * per_thread))
    blocks = n * per_sample
    if blocks > _MAX_BLOCKS:  # unreachable below 2**32 elements, kept as the grid's own limit
        raise ValueError(f"{blocks} blocks exceed the grid limit {_MAX_BLOCKS}")
    args = (n, height, row, per_sample, *_magic(per_sample), *_magic(row))
    return Geometry(blocks, threads, items, per_thread, tuple(np.uint32(v) for v in args))


def _address(arr):
    """Device address of a numba device array (or of the NumPy array behind a simulator array)."""
    iface = getattr(arr, "__cuda_array_interface__", None)
    if iface is None:
        return arr.__array_interface__["data"][0]
    return iface["data"][0]


def use_vec4(width, src_address, out_address):
    """True when the vec4 kernels apply: width a multiple of 4, input 4-byte and output 8-byte aligned."""
    return width % VEC == 0 and src_address % 4 == 0 and out_address % 8 == 0


def launch_mix_images(src, params, scale, bias, out, nchw, out_kind, stream=0, threads=THREADS, access="auto"):
    """Launch the fused image kernel on ``stream`` (numba device arrays or CUDA-array-interface objects).

    in:  src uint8 (B, H, W, 3) C-contiguous; params float32 (B, PARAM_FIELDS); scale, bias: 3 floats each.
    out: float32 (out_kind OUT_F32) or 16-bit (int16/uint16 holding float16/bfloat16 bits), (B, 3, H, W) if
         ``nchw`` else (B, H, W, 3), C-contiguous; written asynchronously.
    ``threads``: threads per block; ``access``: "auto" (vec4 when ``use_vec4``), "vec4" or "generic".
    """
    n, height, width, channels = src.shape
    want = (n, 3, height, width) if nchw else (n, height, width, 3)
    if channels != 3 or tuple(out.shape) != want:
        raise ValueError(f"src must be (B, H, W, 3) and out {want}, got {tuple(src.shape)} and {tuple(out.shape)}")
    if tuple(params.shape) != (n, pm.PARAM_FIELDS):
        raise ValueError(f"params must be ({n}, {pm.PARAM_FIELDS}) (MixParams.pack), got {tuple(params.shape)}")
    if access not in ("auto", "vec4", "generic"):
        raise ValueError(f"access must be 'auto', 'vec4' or 'generic', got {access!r}")
    vec = use_vec4(width, _address(src), _address(out)) if access == "auto" else access == "vec4"
    geo = launch_geometry(n, height, width, vec, threads)
    flat_src = src.reshape(src.size)
    flat_out = out.reshape(out.size)
    if vec:
        flat_src = flat_src.view(np.uint32)
        flat_out = flat_out.view(np.uint64)
    else:
        flat_out = flat_out.view(np.uint32 if out_kind == pm.OUT_F32 else np.uint16)
    s = [np.float32(v) for v in scale]
    o = [np.float32(v) for v in bias]
    kernel(image_kernel_name(out_kind, nchw, vec))[geo.blocks, geo.threads, stream](
        flat_src, params, s[0], s[1], s[2], o[0], o[1], o[2], flat_out, *geo.args)


def launch_soft_targets(labels, params, off, on, out, stream=0, threads=THREADS_LABELS):
    """Launch the soft-label kernel on ``stream``."""
    total = out.shape[0] * out.shape[1]
    blocks = (total + threads - 1) // threads
    kernel("soft_targets")[blocks, threads, stream](labels, params, np.float32(off), np.float32(on), out)
