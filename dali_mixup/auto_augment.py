"""AutoAugment, RandAugment and TrivialAugmentWide with timm's and torchvision's names and meanings, run by DALI's
automatic-augmentation operators (``nvidia.dali.auto_aug``) on cpu or gpu.

Names (``auto_augment=``):

- timm: ``"rand-m9-mstd0.5-inc1"`` and the rest of timm's RandAugment strings (sections ``m`` magnitude,
  ``n`` ops per image, ``p`` probability of each op, ``mstd`` magnitude noise (> 100: uniform in [0, m]),
  ``mmax`` magnitude bound, ``inc`` the increasing ops), and timm's AutoAugment policies ``"original"``,
  ``"originalr"``, ``"v0"``, ``"v0r"`` (the sub-policies are read from timm).
- torchvision (``--auto-augment``): ``"ra"`` (RandAugment, 2 ops, magnitude 9 of 31), ``"ta_wide"``
  (TrivialAugmentWide) and the AutoAugment policies ``"imagenet"``, ``"cifar10"``, ``"svhn"``; the sub-policies
  and magnitude bins are read from torchvision.
- refused by name: ``"augmix"`` (DALI has no AugMix), timm's ``t``-sections (weighted or custom op sets), the
  ``"3a"`` policy and magnitude noise on AutoAugment policies (ops or sampling DALI's operators do not have).

Each op is DALI's (``nvidia.dali.auto_aug.augmentations``: warp_affine shears and translations, rotate,
brightness, contrast, saturation, a sharpening filter, posterize, solarize, equalize, auto-contrast, invert) with
the magnitude ranges of the library the name comes from. What differs from the PIL originals, by DALI's
operators: geometric ops resample bilinearly (nearest with ``interpolation="nearest"``; timm's random
bilinear/bicubic choice and bicubic are bilinear here) and fill with one grey level (DALI takes a scalar fill:
0 for torchvision names, as torchvision; the mean of timm's per-channel mean colour, 115 for ImageNet, for timm
names); equalize follows OpenCV's histogram formula (PIL's differs slightly); the horizontal flip is applied
after these ops (by the fused kernel), not before, which for shears moves the origin to the other corner.
timm's continuous magnitudes (``mstd``) are resolved to 0.1 of a level (0.3 degrees of rotation).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np

__all__ = ["AutoAugmentSpec", "parse_auto_augment", "apply_auto_augment"]

TIMM_POLICIES = ("original", "originalr", "v0", "v0r")
TORCHVISION_POLICIES = ("imagenet", "cifar10", "svhn")
_TIMM_STEPS_PER_LEVEL = 10  # timm's continuous magnitude (0..10, mstd noise) resolved to 0.1
_TIMM_RAND_OPS = ("AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize", "SolarizeAdd", "Color",
                  "Contrast", "Brightness", "Sharpness", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel")
_INCREASING = {"Posterize": "PosterizeIncreasing", "Solarize": "SolarizeIncreasing", "Color": "ColorIncreasing",
               "Contrast": "ContrastIncreasing", "Brightness": "BrightnessIncreasing",
               "Sharpness": "SharpnessIncreasing"}
_ACCEPTED = ("rand-<sections> (timm)", *TIMM_POLICIES, "ra", "ta_wide", *TORCHVISION_POLICIES)


@dataclass(frozen=True)
class AutoAugmentSpec:
    """A parsed ``auto_augment`` name: ``source`` "timm" | "torchvision"; ``kind`` "rand" | "policy" | "trivial";
    for timm's RandAugment, its ``ops`` (timm's op names), ``num_ops``, ``magnitude``, ``prob``,
    ``magnitude_std`` (inf: uniform in [0, magnitude]) and ``magnitude_max``."""

    name: str
    source: str
    kind: str
    ops: tuple = ()
    num_ops: int = 2
    magnitude: float = 9.0
    prob: float = 1.0
    magnitude_std: float = 0.0
    magnitude_max: float = 10.0


def _timm_rand(name: str) -> AutoAugmentSpec:
    """timm's RandAugment string -> spec (timm's defaults: m 10, n 2, p 0.5, no noise, bound 10, inc 0)."""
    values = dict(m=10.0, n=2, p=0.5, mstd=0.0, mmax=10.0, inc=0)
    for section in name.split("-")[1:]:
        if section.startswith("t"):
            raise ValueError(f"auto_augment={name!r}: section {section!r} (a weighted or custom op set) is not "
                             "supported; DALI runs timm's uniform choice over its standard ops")
        match = re.fullmatch(r"(mstd|mmax|inc|m|n|p)(\d+(?:\.\d*)?)", section)
        if match is None:
            raise ValueError(f"auto_augment={name!r}: unknown RandAugment section {section!r} "
                             "(timm's sections: m<int>, n<int>, p<float>, mstd<float>, mmax<int>, inc<0|1>)")
        key, value = match.groups()
        values[key] = float(value) if key in ("p", "mstd") else int(float(value))
    if values["n"] < 1 or not 0.0 <= values["p"] <= 1.0:
        raise ValueError(f"auto_augment={name!r}: needs n >= 1 and p in [0, 1]")
    ops = tuple(_INCREASING.get(op, op) if values["inc"] else op for op in _TIMM_RAND_OPS)
    return AutoAugmentSpec(name, "timm", "rand", ops=ops, num_ops=values["n"], magnitude=float(values["m"]),
                           prob=values["p"], magnitude_std=float("inf") if values["mstd"] > 100 else values["mstd"],
                           magnitude_max=float(values["mmax"]))


def parse_auto_augment(name: str) -> AutoAugmentSpec:
    """``auto_augment`` name -> AutoAugmentSpec, or ValueError/TypeError naming what is not supported."""
    if not isinstance(name, str):
        raise TypeError(f"auto_augment must be a str or None, got {type(name).__name__}")
    if name.startswith("augmix"):
        raise ValueError(f"auto_augment={name!r}: DALI has no AugMix operator; use a RandAugment string "
                         "('rand-m9-mstd0.5-inc1'), 'ra', 'ta_wide' or an AutoAugment policy")
    if name == "rand" or name.startswith("rand-"):
        return _timm_rand(name)
    if name in TIMM_POLICIES:
        return AutoAugmentSpec(name, "timm", "policy")
    if name.split("-")[0] in TIMM_POLICIES:
        raise ValueError(f"auto_augment={name!r}: sections on AutoAugment policies (timm's magnitude noise) "
                         f"are not supported; use {name.split('-')[0]!r}")
    if name in TORCHVISION_POLICIES:
        return AutoAugmentSpec(name, "torchvision", "policy")
    if name == "ra":
        return AutoAugmentSpec(name, "torchvision", "rand", num_ops=2, magnitude=9)
    if name == "ta_wide":
        return AutoAugmentSpec(name, "torchvision", "trivial")
    raise ValueError(f"auto_augment={name!r} is not supported; accepted: {', '.join(_ACCEPTED)} "
                     "(augmix and timm's '3a' have no DALI counterpart)")


# -- timm's ops: level (0..10, signed where timm negates it at random) -> DALI op parameter --------------------------

def _as_param(to_param):
    """A magnitude -> parameter mapping for DALI: float results as float32 (one dtype for all bins), and never
    rewritten by DALI's AutoGraph (it is plain NumPy, called once per bin while the graph is built)."""
    from nvidia.dali.pipeline import do_not_convert

    def mapped(magnitude):
        value = np.asarray(to_param(float(magnitude)))
        return value.astype(np.float32) if value.dtype.kind == "f" else value
    return do_not_convert(mapped)


def _equalize(data, _):
    from nvidia.dali import fn
    return fn.equalize(data)


def _sharpen(data, kernel):
    from nvidia.dali import fn
    return fn.filter(data, kernel)


def _dali_ops():
    """DALI's augmentation ops (``nvidia.dali.auto_aug.augmentations``), with equalize and sharpness calling
    ``fn.equalize`` / ``fn.filter`` (DALI's module still calls their deprecated ``experimental`` names, which
    warns at every pipeline build)."""
    from types import SimpleNamespace

    from nvidia.dali.auto_aug import augmentations as a
    from nvidia.dali.auto_aug.core import augmentation
    ops = SimpleNamespace(**{name: getattr(a, name) for name in (
        "auto_contrast", "invert", "identity", "rotate", "shear_x", "shear_y", "translate_x_no_shape",
        "translate_y_no_shape", "posterize", "solarize", "solarize_add", "color", "contrast", "brightness",
        "sharpness_kernel", "shift_enhance_range")})
    ops.equalize = augmentation(_equalize, name="equalize")
    ops.sharpness = augmentation(_sharpen, mag_range=(0, 0.9), randomly_negate=True, mag_to_param=a.sharpness_kernel,
                                 param_device="auto", name="sharpness")
    return ops


def _posterize_mask(bits) -> np.ndarray:
    """bits to keep (0..8) -> the uint8 mask that keeps them (0 bits: black, as PIL's posterize(0))."""
    bits = int(min(8, max(0, bits)))
    return np.array((0xFF << (8 - bits)) & 0xFF, dtype=np.uint8)


def _timm_ops(size: int):
    """timm op name -> (DALI augmentation, level -> parameter or None, randomly negated); timm's formulas, with
    the hyper-parameters timm's transforms use (translate_pct 0.45 of the image)."""
    a = _dali_ops()

    def enhance(level):  # timm's *Increasing enhance ops: 1 +- 0.9 level/10, kept >= 0.1
        return max(0.1, 1.0 + (level / 10.0) * 0.9)

    def enhance_original(level):
        return (level / 10.0) * 1.8 + 0.1

    def warp(scale, axis):  # shear or translation along x (axis 0) or y (axis 1)
        return lambda level: [(level / 10.0) * scale if i == axis else 0.0 for i in range(2)]

    return {
        "AutoContrast": (a.auto_contrast, None, False), "Equalize": (a.equalize, None, False),
        "Invert": (a.invert, None, False),
        "Rotate": (a.rotate, lambda level: (level / 10.0) * 30.0, True),
        "ShearX": (a.shear_x, warp(0.3, 0), True), "ShearY": (a.shear_y, warp(0.3, 1), True),
        "TranslateXRel": (a.translate_x_no_shape, warp(0.45 * size, 0), True),
        "TranslateYRel": (a.translate_y_no_shape, warp(0.45 * size, 1), True),
        "Posterize": (a.posterize, lambda level: _posterize_mask(int((level / 10.0) * 4)), False),
        "PosterizeIncreasing": (a.posterize, lambda level: _posterize_mask(4 - int((level / 10.0) * 4)), False),
        "PosterizeOriginal": (a.posterize, lambda level: _posterize_mask(int((level / 10.0) * 4) + 4), False),
        "Solarize": (a.solarize, lambda level: min(256, int((level / 10.0) * 256)), False),
        "SolarizeIncreasing": (a.solarize, lambda level: 256 - min(256, int((level / 10.0) * 256)), False),
        "SolarizeAdd": (a.solarize_add, lambda level: np.uint8(min(128, int((level / 10.0) * 110))), False),
        "Color": (a.color, enhance_original, False), "Contrast": (a.contrast, enhance_original, False),
        "Brightness": (a.brightness, enhance_original, False),
        "Sharpness": (a.sharpness, lambda level: a.sharpness_kernel(enhance_original(level) - 1.0), False),
        "ColorIncreasing": (a.color, enhance, True), "ContrastIncreasing": (a.contrast, enhance, True),
        "BrightnessIncreasing": (a.brightness, enhance, True),
        "SharpnessIncreasing": (a.sharpness, lambda level: a.sharpness_kernel(enhance(level) - 1.0), True),
    }


def _timm_augmentations(names: Sequence[str], size: int, magnitude_max: float, steps_per_level: int):
    """timm op names -> ({name: DALI augmentation} over the level grid linspace(0, magnitude_max) with
    ``steps_per_level`` steps per unit, the grid's bin count)."""
    table = _timm_ops(size)
    levels = np.linspace(0.0, magnitude_max, int(round(magnitude_max * steps_per_level)) + 1)
    out = {}
    for name in names:
        if name not in table:
            raise ValueError(f"timm's augmentation op {name!r} has no DALI counterpart here")
        base, to_param, signed = table[name]
        out[name] = base.augmentation(name=name) if to_param is None else base.augmentation(
            mag_range=levels, randomly_negate=signed, mag_to_param=_as_param(to_param), name=name)
    return out, len(levels)


def _timm_policy(spec: AutoAugmentSpec, size: int):
    """timm's AutoAugment policy (sub-policies read from timm) -> DALI Policy over integer levels 0..10."""
    try:
        from timm.data.auto_augment import auto_augment_policy
    except ImportError as exc:
        raise ImportError(f"auto_augment={spec.name!r} reads timm's policy: pip install timm") from exc
    sub_policies = auto_augment_policy(spec.name)  # op names, probabilities and levels
    augs, bins = _timm_augmentations(sorted({op.name for sub in sub_policies for op in sub}), size, 10.0, 1)
    return _policy(spec.name, bins, [[(augs[op.name], op.prob, int(op.magnitude)) for op in sub]
                                     for sub in sub_policies])


def _policy(name: str, bins: int, sub_policies):
    """[[(augmentation, probability, bin)]] -> DALI Policy (bins dropped for ops without magnitude; ops that
    never run, probability 0, left out)."""
    from nvidia.dali.auto_aug.core import Policy
    return Policy(name, bins, [[(aug, p, None if aug.mag_range is None else b) for aug, p, b in sub if p > 0]
                               for sub in sub_policies])


# -- torchvision's ops: torchvision's magnitude -> DALI op parameter --------------------------------------------------

def _torchvision_augmentations(space: dict):
    """torchvision's augmentation space {name: (magnitudes, signed)} -> {name: DALI augmentation} whose magnitude
    bins are torchvision's own values."""
    a = _dali_ops()
    fixed = {"Identity": a.identity, "AutoContrast": a.auto_contrast, "Equalize": a.equalize, "Invert": a.invert}
    with_magnitude = {
        "ShearX": (a.shear_x, lambda m: [m, 0.0]), "ShearY": (a.shear_y, lambda m: [0.0, m]),
        "TranslateX": (a.translate_x_no_shape, lambda m: [float(int(m)), 0.0]),  # torchvision truncates
        "TranslateY": (a.translate_y_no_shape, lambda m: [0.0, float(int(m))]),
        "Rotate": (a.rotate, lambda m: m), "Solarize": (a.solarize, lambda m: m),
        "Brightness": (a.brightness, a.shift_enhance_range), "Color": (a.color, a.shift_enhance_range),
        "Contrast": (a.contrast, a.shift_enhance_range), "Sharpness": (a.sharpness, a.sharpness_kernel),
        "Posterize": (a.posterize, _posterize_mask),
    }
    out = {}
    for name, (magnitudes, signed) in space.items():
        if name in fixed:
            out[name] = fixed[name].augmentation(name=name)
        elif name in with_magnitude:
            base, to_param = with_magnitude[name]
            out[name] = base.augmentation(mag_range=np.asarray(magnitudes, dtype=np.float32),
                                          randomly_negate=bool(signed), mag_to_param=_as_param(to_param), name=name)
        else:
            raise ValueError(f"torchvision's augmentation op {name!r} has no DALI counterpart here")
    return out


def _torchvision(spec: AutoAugmentSpec, size: int):
    """-> torchvision's policy as a DALI Policy, or its op list (DALI augmentations), with the bin count."""
    try:
        import torchvision.transforms as T
    except ImportError as exc:
        raise ImportError(f"auto_augment={spec.name!r} reads torchvision's policy: pip install torchvision") from exc
    if spec.kind == "policy":
        transform = T.AutoAugment(T.AutoAugmentPolicy(spec.name))
        augs = _torchvision_augmentations(transform._augmentation_space(10, (size, size)))
        return _policy(spec.name, 10, [[(augs[op], p, b) for op, p, b in sub] for sub in transform.policies]), 10
    if spec.kind == "rand":
        transform = T.RandAugment(num_ops=spec.num_ops, magnitude=int(spec.magnitude))
        space = transform._augmentation_space(transform.num_magnitude_bins, (size, size))
    else:
        transform = T.TrivialAugmentWide()
        space = transform._augmentation_space(transform.num_magnitude_bins)
    return list(_torchvision_augmentations(space).values()), transform.num_magnitude_bins


def _dali_suite(spec: AutoAugmentSpec, size: int):
    """spec -> (DALI Policy or list of augmentations, bin count); plain Python, run unconverted by AutoGraph."""
    if spec.source == "torchvision":
        return _torchvision(spec, size)
    if spec.kind == "policy":
        return _timm_policy(spec, size), 11
    augs, bins = _timm_augmentations(spec.ops, size, spec.magnitude_max, _TIMM_STEPS_PER_LEVEL)
    return list(augs.values()), bins


# -- the graph ---------------------------------------------------------------------------------------------------

def _level_bin(spec: AutoAugmentSpec):
    """timm's per-op magnitude: m, + N(0, mstd) or U(0, m), clipped to [0, mmax] -> its bin on the level grid."""
    from nvidia.dali import fn, math as dmath, types
    if spec.magnitude_std == 0:
        return int(round(min(spec.magnitude, spec.magnitude_max) * _TIMM_STEPS_PER_LEVEL))
    if spec.magnitude_std == float("inf"):
        level = fn.random.uniform(range=[0.0, spec.magnitude])
    else:
        level = fn.random.normal(mean=spec.magnitude, stddev=spec.magnitude_std)
    level = dmath.clamp(level, 0.0, spec.magnitude_max)
    return fn.cast(level * float(_TIMM_STEPS_PER_LEVEL), dtype=types.INT32)  # cast rounds to nearest


def _timm_rand_augment(images, spec: AutoAugmentSpec, augs, bins: int, **op_kwargs):
    """timm's RandAugment: ``num_ops`` layers; each picks an op uniformly (with replacement), applies it with
    probability ``prob``, at a magnitude drawn per sample and layer, negated at random for the signed ops."""
    from nvidia.dali import fn, types
    from nvidia.dali.auto_aug.core import select, signed_bin
    ops = augs + [_dali_ops().identity]  # the last: "not applied this layer"
    for _ in range(spec.num_ops):
        op = fn.random.uniform(values=list(range(len(augs))), dtype=types.INT32)
        if spec.prob < 1:
            run = fn.cast(fn.random.coin_flip(probability=spec.prob), dtype=types.INT32)
            op = op * run + len(augs) * (1 - run)
        images = select(ops, op, images, magnitude_bin=signed_bin(_level_bin(spec)), num_magnitude_bins=bins,
                        **op_kwargs)
    return images


def apply_auto_augment(spec: AutoAugmentSpec, images, *, size: int, mean: Sequence[float], interpolation: str):
    """in: uint8 (size, size, 3) HWC crops -> out: the same, through ``spec`` (needs ``enable_conditionals``)."""
    from nvidia.dali import types
    from nvidia.dali.auto_aug import auto_augment, rand_augment, trivial_augment
    from nvidia.dali.pipeline import do_not_convert
    fill = 0 if spec.source == "torchvision" else int(round(np.mean([min(255, round(255 * m)) for m in mean])))
    interp = types.INTERP_NN if interpolation == "nearest" else types.INTERP_LINEAR
    op_kwargs = dict(fill_value=fill, interp_type=interp)
    suite, bins = do_not_convert(_dali_suite)(spec, size)
    if spec.kind == "policy":
        return auto_augment.apply_auto_augment(suite, images, **op_kwargs)
    if spec.source == "timm":
        return _timm_rand_augment(images, spec, suite, bins, **op_kwargs)
    if spec.kind == "rand":
        return rand_augment.apply_rand_augment(suite, images, spec.num_ops, int(spec.magnitude),
                                               num_magnitude_bins=bins, **op_kwargs)
    return trivial_augment.apply_trivial_augment(suite, images, num_magnitude_bins=bins, **op_kwargs)
