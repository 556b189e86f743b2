"""Per-element math shared by the CUDA kernels and their CPU twin (one source).

Every function here is plain Python written in the subset that both ``numba.njit`` (CPU) and
``numba.cuda.jit(device=True)`` (GPU, and numba's CUDA simulator) compile. ``cpu.py`` and ``cuda.py`` wrap
these same function objects for their target, so the arithmetic of a mixed, normalised pixel, of a soft
target and of the float32 -> float16/bfloat16 rounding is written exactly once.

All float arithmetic is float32 (explicit ``np.float32`` casts keep numba from promoting to float64).
"""

import types

import numpy as np

# Per-sample record layout of the packed parameter table, (B, PARAM_FIELDS) float32.
# Integers are stored as float32, exact below 2**24 (sizes are validated against that bound).
P_PARTNER = 0  # index of the partner sample
P_LAM = 1  # weight of the sample itself (mixup), label weight (all kinds)
P_KIND = 2  # KIND_COPY, KIND_MIXUP or KIND_CUTMIX
P_FLIP = 3  # 1.0: this sample is read mirrored horizontally
P_Y0 = 4  # CutMix box, half-open (y0, y1, x0, x1), in output coordinates
P_Y1 = 5
P_X0 = 6
P_X1 = 7
PARAM_FIELDS = 8

KIND_COPY = 0
KIND_MIXUP = 1
KIND_CUTMIX = 2

OUT_F32 = 0
OUT_F16 = 1
OUT_BF16 = 2


# Primitives: the exact float32 operations the shared math is written with. Each is the plain operation here
# (what the CPU twin and the CUDA simulator run); a target may supply its own implementation of the same
# operation through ``for_target(..., primitives=...)``, which must give the same bits for every input. The GPU
# supplies explicitly rounded multiply/add (so NVVM cannot contract ``a*b + c`` into one FMA, which rounds once
# instead of twice), register bit casts and its byte-permute instruction; from sm_80 on, its kernels convert to
# float16/bfloat16 with the hardware instruction, which rounds as ``half2_bits`` does.


def mul_rn(a, b):
    """``a * b`` in float32, rounded to nearest even (never fused with a following add)."""
    return a * b


def add_rn(a, b):
    """``a + b`` in float32, rounded to nearest even."""
    return a + b


def sub_rn(a, b):
    """``a - b`` in float32, rounded to nearest even."""
    return a - b


def f32_bits(v):
    """The IEEE bit pattern of float32 ``v``, as a uint32."""
    return np.float32(v).view(np.uint32)


def bits_f32(u):
    """The float32 whose IEEE bit pattern is the uint32 ``u``."""
    return np.uint32(u).view(np.float32)


def half2_bits(lo, hi, out_kind):
    """Two float32 values rounded to ``out_kind`` (OUT_F16 or OUT_BF16, nearest even), packed in a uint32:
    ``lo``'s 16-bit pattern in bits 0-15, ``hi``'s in bits 16-31 (memory order of two consecutive elements)."""
    if out_kind == OUT_BF16:
        a = f32_bits_to_bf16_bits(np.int64(f32_bits(lo)))
        b = f32_bits_to_bf16_bits(np.int64(f32_bits(hi)))
    else:
        a = f32_bits_to_f16_bits(np.int64(f32_bits(lo)))
        b = f32_bits_to_f16_bits(np.int64(f32_bits(hi)))
    return np.uint32(a | (b << 16))


def byte_perm(x, y, s):
    """CUDA's ``__byte_perm`` / PTX ``prmt.b32``: byte n of the uint32 result is byte ``(s >> 4n) & 7`` of the
    8-byte value ``(y << 32) | x`` (x, y, s uint32; the selectors' sign-replicate bit is not used here)."""
    v = (np.uint64(y) << np.uint64(32)) | np.uint64(x)
    r = np.uint64(0)
    for n in range(4):
        sel = (np.uint64(s) >> np.uint64(4 * n)) & np.uint64(7)
        r |= ((v >> (sel * np.uint64(8))) & np.uint64(0xFF)) << np.uint64(8 * n)
    return np.uint32(r)


def byte_value(word, k):
    """Byte ``k`` (0 = least significant) of the uint32 ``word`` as an exact float32.

    One byte permute builds the bit pattern of 2**23 + byte (the byte in the low mantissa bits, the exponent
    byte 0x4B from the constant word), one subtraction of 2**23 leaves the byte: exact, and on the GPU two
    full-rate instructions instead of an extract and an integer-to-float conversion (a quarter-rate one).
    """
    return sub_rn(bits_f32(byte_perm(np.uint32(0x4B000000), word, np.uint32(0x3104 + k))), np.float32(8388608.0))


def mix_weights(lam, scale):
    """Per-channel weights of a mixup sample: ``(ka, kb) = (λ·s, (1 − λ)·s)``, float32.

    ``s = 1 / (255 std)`` (and ``bias = -mean / std``) fold the normalisation into the mix, so a mixed value is
    ``a·ka + (b·kb + bias)``; with λ = 1 this is exactly ``copy_value`` (ka = s, kb = 0).
    """
    return mul_rn(lam, scale), mul_rn(sub_rn(np.float32(1.0), lam), scale)


def mix_floats(fa, fb, ka, kb, bias):
    """``fa·ka + (fb·kb + bias)`` in float32, each operation rounded: the mixed, normalised value of one channel
    whose sample and partner values ``fa``, ``fb`` are already float32 (exact byte values)."""
    return add_rn(mul_rn(fa, ka), add_rn(mul_rn(fb, kb), bias))


def mix_value(a, b, ka, kb, bias):
    """Mixed and normalised value of one channel: ``a·ka + (b·kb + bias)`` in float32 (see ``mix_weights``);
    ``a``/``b`` are the uint8 channel values of the sample and its partner."""
    return mix_floats(np.float32(a), np.float32(b), ka, kb, bias)


def norm_float(fa, scale, bias):
    """``fa·scale + bias`` in float32, each operation rounded (``fa`` an exact byte value)."""
    return add_rn(mul_rn(fa, scale), bias)


def copy_value(a, scale, bias):
    """Normalised value of one channel read from a single source (no mixing, or inside a CutMix box)."""
    return norm_float(np.float32(a), scale, bias)


def source_column(x, width, flip):
    """Column to read for output column ``x`` of a sample whose horizontal flip flag is ``flip``."""
    if flip:
        return width - 1 - x
    return x


def in_box(y, x, y0, y1, x0, x1):
    """True when pixel (y, x) lies inside the half-open box [y0, y1) x [x0, x1)."""
    return y >= y0 and y < y1 and x >= x0 and x < x1


F16_NORMAL_MIN = 0x38800000  # float32 pattern of 2**-14, the smallest normal float16
F16_OVERFLOW = 0x477FF000  # float32 pattern of 65520: this and above round to infinity


def f16_bits_normal(a):
    """float16 pattern of |x| from its float32 pattern ``a``, valid for F16_NORMAL_MIN <= a < F16_OVERFLOW:
    rebias the exponent and round 13 bits away, nearest even."""
    n = a - 0x38000000
    return (n + 0x0FFF + ((n >> 13) & 1)) >> 13


def f32_bits_to_f16_bits(u):
    """IEEE float32 bit pattern -> IEEE float16 bit pattern, round to nearest even (as a cast in hardware).

    ``u`` is the float32 pattern as a non-negative integer < 2**32. Handles zeros, subnormals, overflow to
    infinity, infinities and NaN (quiet NaN kept). Written without early exits (selects only) so the CPU
    compiler can vectorise it; every path is computed and one is picked.
    """
    sign = (u >> 16) & 0x8000
    a = u & 0x7FFFFFFF
    normal = f16_bits_normal(a)
    # subnormal in float16 (unit 2**-24): shift the full significand; below 2**-25 it shifts out to zero
    shift = min(max(126 - (a >> 23), 1), 31)
    m = (a & 0x7FFFFF) | 0x800000
    q = m >> shift
    rem = m & ((1 << shift) - 1)
    half = 1 << (shift - 1)
    sub = q + ((rem > half) | ((rem == half) & ((q & 1) == 1)))
    special = 0x7E00 if a > 0x7F800000 else 0x7C00  # NaN stays a quiet NaN; inf and overflow -> inf
    res = sub
    if a >= F16_NORMAL_MIN:
        res = normal
    if a >= F16_OVERFLOW:
        res = special
    return sign | res


def f32_bits_to_bf16_bits(u):
    """IEEE float32 bit pattern -> bfloat16 bit pattern, round to nearest even; NaN stays a quiet NaN."""
    if (u & 0x7FFFFFFF) > 0x7F800000:
        return ((u >> 16) | 0x40) & 0xFFFF
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16) & 0xFFFF


def half_bits(u, out_kind):
    """float32 bit pattern -> 16-bit pattern of ``out_kind`` (OUT_F16 or OUT_BF16), as a signed int16 value.

    The output buffers of 16-bit kinds are int16 views of the torch float16/bfloat16 tensors, so the pattern
    is returned in int16's range (two's complement).
    """
    if out_kind == OUT_BF16:
        h = f32_bits_to_bf16_bits(u)
    else:
        h = f32_bits_to_f16_bits(u)
    if h >= 0x8000:
        h -= 0x10000
    return h


def soft_target(c, ya, yb, lam, off, on):
    """Soft target of class ``c`` for labels ``ya`` (weight ``lam``) and ``yb`` (weight ``1 - lam``).

    ``off = ε / C`` and ``on = 1 - ε + ε / C`` (timm's label smoothing); a label outside ``[0, C)`` gives NaN
    for the whole row instead of a silently wrong target.
    """
    ta = off
    if c == ya:
        ta = on
    tb = off
    if c == yb:
        tb = on
    return add_rn(mul_rn(ta, lam), mul_rn(tb, sub_rn(np.float32(1.0), lam)))


PRIMITIVES = ("mul_rn", "add_rn", "sub_rn", "f32_bits", "bits_f32", "byte_perm")
_SHARED = PRIMITIVES + ("half2_bits", "byte_value", "mix_weights", "mix_floats", "mix_value", "norm_float",
                        "copy_value", "source_column", "in_box", "f16_bits_normal", "f32_bits_to_f16_bits",
                        "f32_bits_to_bf16_bits", "half_bits", "soft_target")


def for_target(decorator, primitives=None):
    """Compile every shared function with ``decorator`` (``numba.njit(...)`` or ``cuda.jit(device=True)``).

    ``primitives``: optional {name: compiled function} replacing some of ``PRIMITIVES`` on this target by an
    implementation of the same exact operation (e.g. the GPU's explicitly rounded multiply).

    Returns a namespace of compiled functions in which calls between shared functions also resolve to the
    compiled versions of the same target (each copy gets its own globals), so one source serves all targets.
    """
    primitives = dict(primitives or {})
    unknown = sorted(set(primitives) - set(PRIMITIVES))
    if unknown:
        raise ValueError(f"primitives: {unknown} are not among {PRIMITIVES}")
    scope = dict(globals())
    compiled = dict(primitives)
    for name in _SHARED:
        if name in primitives:
            continue
        fn = globals()[name]
        clone = types.FunctionType(fn.__code__, scope, name, fn.__defaults__, fn.__closure__)
        clone.__qualname__ = fn.__qualname__
        clone.__doc__ = fn.__doc__
        compiled[name] = decorator(clone)
    scope.update(compiled)
    return types.SimpleNamespace(**compiled)
