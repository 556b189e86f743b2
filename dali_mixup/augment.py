"""Training augmentations of the common recipes (timm's and torchvision's), as pieces of the DALI graph.

Every piece takes and returns uint8 HWC crops (B, S, S, 3) on the graph's device ("cpu" or "gpu": one
definition serves both); per-sample parameters are drawn by DALI's random operators, so they are seeded by the
pipeline and saved in its checkpoint, and they live on the CPU, as DALI's argument inputs do.

Order in the graph (timm's and torchvision's): random-resized crop resampled with ``interpolation`` -> [the
horizontal flip: read mirrored by the fused kernel] -> ``auto_augment`` -> ``color_jitter`` -> random erasing ->
the fused kernel (mix, normalise, cast). Random erasing thus runs on the un-mixed uint8 crop, as in timm's and
torchvision's per-sample transforms; its fill is expressed in pixels (see ``random_erasing``).

Evaluation takes none of these: resize the shorter side to ``eval_resize_size`` and crop the centre.
"""

from __future__ import annotations

import itertools
import math
from numbers import Real
from typing import Optional, Sequence, Tuple, Union

import numpy as np

from .auto_augment import apply_auto_augment, parse_auto_augment
from .checks import probability

__all__ = ["INTERPOLATIONS", "RE_MODES", "check_augment", "depends_on_size", "eval_resize_size", "needs_conditionals",
           "resize", "resize_and_centre_crop", "train_augment"]

INTERPOLATIONS = ("bilinear", "bicubic", "nearest", "random")
RE_MODES = ("const", "rand", "pixel")
# timm's RandomErasing (torchvision's RandomErasing: scale (0.02, 0.33), ratio (0.3, 3.3), the same 10 attempts)
_RE_AREA = (0.02, 1 / 3)
_RE_LOG_ASPECT = (math.log(0.3), math.log(1 / 0.3))
_RE_ATTEMPTS = 10
_LUMA = (0.299, 0.587, 0.114)  # ITU-R 601-2, PIL's "L" and torchvision's grayscale


# -- options -----------------------------------------------------------------------------------------------------

def _color_jitter(value) -> Optional[Tuple[float, float, float, float]]:
    """None | float | (brightness, contrast, saturation[, hue]) -> None or the 4 strengths (timm's reading)."""
    if value is None:
        return None
    if isinstance(value, Real) and not isinstance(value, bool):
        value = (value, value, value)  # a scalar: brightness, contrast, saturation; no hue (timm)
    if not isinstance(value, (tuple, list)) or len(value) not in (3, 4) or not all(
            isinstance(v, Real) and not isinstance(v, bool) and v >= 0 for v in value):
        raise ValueError("color_jitter must be a number >= 0 or (brightness, contrast, saturation[, hue]) of "
                         f"numbers >= 0, got {value!r}")
    strengths = tuple(float(v) for v in value) + ((0.0,) if len(value) == 3 else ())
    if strengths[3] > 0.5:
        raise ValueError(f"color_jitter hue must lie in [0, 0.5] (a fraction of a turn), got {strengths[3]}")
    return strengths if any(strengths) else None


def check_augment(*, image_size: int, train: bool, interpolation: str = "bilinear",
                  color_jitter: Union[None, float, Sequence[float]] = None, auto_augment: Optional[str] = None,
                  re_prob: float = 0.0, re_mode: str = "const", re_count: int = 1, crop_pct: float = 0.875,
                  val_resize_size: Optional[int] = None) -> dict:
    """Validate the augmentation options -> the normalised dict the loader keeps (and the graph is built from).

    Raises ValueError/TypeError naming the argument. Bad values fail for an eval loader too, although evaluation
    uses only ``interpolation``, ``crop_pct`` and ``val_resize_size``.
    """
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {interpolation!r}")
    if interpolation == "random" and not train:
        raise ValueError("interpolation='random' is timm's training choice (bilinear or bicubic per sample); "
                         "an eval loader needs 'bilinear', 'bicubic' or 'nearest'")
    if auto_augment == "":
        auto_augment = None
    if auto_augment is not None:
        parse_auto_augment(auto_augment)
    if re_mode not in RE_MODES:
        raise ValueError(f"re_mode must be one of {RE_MODES} (timm's --remode), got {re_mode!r}")
    if isinstance(re_count, bool) or not isinstance(re_count, int) or re_count < 1:
        raise ValueError(f"re_count must be an int >= 1 (timm's --recount), got {re_count!r}")
    if isinstance(crop_pct, bool) or not isinstance(crop_pct, Real) or not 0.0 < float(crop_pct) <= 1.0:
        raise ValueError(f"crop_pct must lie in (0, 1], got {crop_pct!r}")
    if val_resize_size is not None and (isinstance(val_resize_size, bool) or not isinstance(val_resize_size, int)
                                        or val_resize_size < image_size):
        raise ValueError(f"val_resize_size must be an int >= image_size={image_size}, got {val_resize_size!r}")
    return dict(interpolation=interpolation, color_jitter=_color_jitter(color_jitter), auto_augment=auto_augment,
                re_prob=probability("re_prob", re_prob), re_mode=re_mode, re_count=re_count,
                crop_pct=float(crop_pct), val_resize_size=val_resize_size)


def eval_resize_size(image_size: int, crop_pct: float, val_resize_size: Optional[int]) -> int:
    """The shorter side before the centre crop: ``val_resize_size`` (torchvision) or floor(size / crop_pct) (timm)."""
    return val_resize_size if val_resize_size is not None else math.floor(image_size / crop_pct)


def depends_on_size(augment: dict) -> bool:
    """Whether the training augmentations read the crop size (auto_augment's translations, random erasing's boxes
    and noise): a size per batch then builds them once per size."""
    return bool(augment.get("auto_augment") or augment.get("re_prob"))


def needs_conditionals(augment: dict) -> bool:
    """Whether the training graph branches per sample (DALI's ``enable_conditionals``)."""
    return bool(augment.get("auto_augment") or augment.get("color_jitter") or augment.get("re_prob"))


# -- graph pieces ------------------------------------------------------------------------------------------------

def _interp_type(interpolation: str):
    """-> DALI's interpolation type, or per-sample types (bilinear or bicubic, equally likely) for "random"."""
    from nvidia.dali import fn, types
    fixed = {"bilinear": types.INTERP_LINEAR, "bicubic": types.INTERP_CUBIC, "nearest": types.INTERP_NN}
    if interpolation != "random":
        return fixed[interpolation]
    pick = fn.random.uniform(values=[int(types.INTERP_LINEAR), int(types.INTERP_CUBIC)], dtype=types.INT32)
    return fn.cast(pick, dtype=types.DALIDataType.INTERP_TYPE)


def resize(images, *, size, interpolation: str):
    """in: uint8 HWC crops of any size -> out: uint8 (size, size, 3), resampled with ``interpolation``,
    antialiased when shrinking (as torchvision's Resize). ``size``: an int, or a per-sample float (an argument
    input: a size per batch)."""
    from nvidia.dali import fn
    return fn.resize(images, resize_x=size, resize_y=size, interp_type=_interp_type(interpolation))


def _resized_side(side, other, shorter: int):
    """torchvision's Resize(int) for one side: the shorter side -> ``shorter``, the longer -> floor(shorter *
    long / short) (exact integer arithmetic). in/out: per-sample int32."""
    from nvidia.dali import fn, types
    longer = fn.cast(side > other, dtype=types.INT32)
    return shorter + longer * ((side * shorter) // other - shorter)


def _centre_offset(extent, size: int):
    """torchvision's CenterCrop offset int(round((extent - size) / 2)), Python's round (half to even)."""
    excess = extent - size
    half = excess // 2
    return half + (excess & 1) * (half & 1)


def resize_and_centre_crop(images, encoded, *, size: int, shorter: int, interpolation: str,
                           exif_orientation: bool = False):
    """in: decoded uint8 HWC images and their encoded files -> out: uint8 (size, size, 3): the shorter side
    resized to ``shorter`` and the longer as torchvision's (and timm's) Resize(int) sizes it, then the centre
    crop with CenterCrop's rounding, so the pixels line up with theirs. The sizes come from the files' headers
    (``peek_image_shape``, on the CPU), so the same graph serves GPU-decoded images; ``exif_orientation`` must be
    the decoder's (a rotated image has its sides swapped)."""
    from nvidia.dali import fn, types
    shape = fn.peek_image_shape(encoded, dtype=types.INT32, adjust_orientation=exif_orientation)
    height, width = shape[0], shape[1]
    new_h, new_w = _resized_side(height, width, shorter), _resized_side(width, height, shorter)
    images = fn.resize(images, resize_x=fn.cast(new_w, dtype=types.FLOAT), resize_y=fn.cast(new_h, dtype=types.FLOAT),
                       interp_type=_interp_type(interpolation))
    start = fn.cast(fn.stack(_centre_offset(new_h, size), _centre_offset(new_w, size)), dtype=types.INT32)
    return fn.slice(images, start=start, shape=[size, size], axis_names="HW")


def train_augment(images, *, size: int, augment: dict, mean: Sequence[float], std: Sequence[float]):
    """in: uint8 (size, size, 3) crops -> out: the same, through auto_augment, colour jitter and random erasing
    (each only when asked for; a pipeline with any of them needs ``enable_conditionals=True``)."""
    if augment["auto_augment"]:
        geometric = "nearest" if augment["interpolation"] == "nearest" else "bilinear"
        images = apply_auto_augment(parse_auto_augment(augment["auto_augment"]), images, size=size, mean=mean,
                                    interpolation=geometric)
    if augment["color_jitter"]:
        images = color_jitter(images, *augment["color_jitter"])
    if augment["re_prob"] > 0:
        images = random_erasing(images, size=size, prob=augment["re_prob"], mode=augment["re_mode"],
                                count=augment["re_count"], mean=mean, std=std)
    return images


def color_jitter(images, brightness: float, contrast: float, saturation: float, hue: float):
    """torchvision's ColorJitter (timm's ``--color-jitter``) on uint8 HWC images, in a random order per sample.

    Factors are uniform in [max(0, 1 - s), 1 + s] (hue: [-h, h] of a turn). Brightness scales (``fn.brightness``),
    contrast blends with the mean grey level (PIL's Contrast, DALI's auto-augment contrast), saturation blends with
    the grey (luma) image (``fn.saturation``, PIL's Color). Hue: DALI's ``fn.hue`` rotates colours about the grey
    axis, an approximation of torchvision's HSV hue shift.
    """
    from nvidia.dali import fn, types
    from nvidia.dali.auto_aug import augmentations as aug
    from nvidia.dali.auto_aug.core import select

    def factor(s):
        return fn.random.uniform(range=[max(0.0, 1.0 - s), 1.0 + s])

    ops = []
    if brightness:
        ops.append((aug.brightness.op, factor(brightness)))
    if contrast:
        ops.append((aug.contrast.op, factor(contrast)))
    if saturation:
        ops.append((aug.color.op, factor(saturation)))
    if hue:
        ops.append((lambda data, degrees: fn.hue(data, hue=degrees), fn.random.uniform(range=[-hue, hue]) * 360.0))
    if len(ops) == 1:
        return ops[0][0](images, ops[0][1])
    orders = np.array(list(itertools.permutations(range(len(ops)))), dtype=np.int32)  # (k!, k)
    order = fn.random.uniform(values=list(range(len(orders))), dtype=types.INT32)
    branches = [lambda data, *factors, i=i: ops[i][0](data, factors[i]) for i in range(len(ops))]
    for slot in range(len(ops)):
        images = select(branches, types.Constant(orders[:, slot])[order], images, *[f for _, f in ops])
    return images


def _erase_region(size: int, regions, active):
    """One erased box per sample, drawn as timm's RandomErasing draws it: up to 10 attempts of an area fraction
    U(0.02, 1/3) / regions and a log-uniform aspect in (0.3, 1/0.3); the first that fits is placed uniformly.
    in: ``regions`` (int or per-sample int: the sample's box count), ``active`` (per-sample bool)
    -> (anchor, shape): per-sample float (2,) (y, x) and (h, w); shape (0, 0) when inactive or nothing fitted."""
    from nvidia.dali import fn, math as dmath, types
    area = fn.random.uniform(range=list(_RE_AREA), shape=[_RE_ATTEMPTS]) * float(size * size) / regions
    aspect = dmath.exp(fn.random.uniform(range=list(_RE_LOG_ASPECT), shape=[_RE_ATTEMPTS]))
    none = types.Constant(np.zeros(1, np.int32))
    h = fn.cat(fn.cast(dmath.sqrt(area * aspect), dtype=types.INT32), none)  # cast rounds to nearest
    w = fn.cat(fn.cast(dmath.sqrt(area / aspect), dtype=types.INT32), none)
    fits = fn.cast((h < size) & (w < size), dtype=types.INT32)  # the appended (0, 0) always fits
    rank = types.Constant(np.arange(_RE_ATTEMPTS + 1, dtype=np.int32)) + (_RE_ATTEMPTS + 1) * (1 - fits)
    first = fn.reductions.min(rank)  # the first attempt that fits, or the appended empty box
    on = fn.cast(active, dtype=types.INT32)
    h, w = h[first] * on, w[first] * on
    top = dmath.floor(fn.random.uniform(range=[0.0, 1.0]) * fn.cast(size - h + 1, dtype=types.FLOAT))
    left = dmath.floor(fn.random.uniform(range=[0.0, 1.0]) * fn.cast(size - w + 1, dtype=types.FLOAT))
    return fn.stack(top, left), fn.cast(fn.stack(h, w), dtype=types.FLOAT)


def random_erasing(images, *, size: int, prob: float, mode: str, count: int, mean: Sequence[float],
                   std: Sequence[float]):
    """timm's RandomErasing (``--reprob``, ``--remode``, ``--recount``; torchvision's ``--random-erase`` is mode
    "const") on the un-mixed uint8 crops, before the fused kernel.

    With probability ``prob`` a sample gets 1 box (or uniformly 1..count boxes). The fill is timm's, expressed in
    pixels, since the crops are still uint8: "const" (timm's 0 after normalisation) is the mean colour rounded to
    integers, e.g. (124, 116, 104) for ImageNet, which normalises to within 0.5/(255 std) ~ 0.009 of 0;
    "rand" (a normal colour per box) and "pixel" (a normal value per pixel and channel, timm's default
    ``--remode``) draw z ~ N(0, 1) in normalised space as timm does and store round(255 (mean + std z)) clipped
    to [0, 255]: normalised, that is z quantised to steps of 1/(255 std) ~ 0.017 and clipped to about
    [-2.1, 2.2] (ImageNet's red channel; about 3% of timm's draws fall outside).
    """
    from nvidia.dali import fn, types
    regions = count if count == 1 else fn.random.uniform(values=list(range(1, count + 1)), dtype=types.INT32)
    erase = fn.random.coin_flip(probability=prob, dtype=types.BOOL)
    boxes = [_erase_region(size, regions, erase & (k < regions) if count > 1 else erase) for k in range(count)]
    mean255 = [255.0 * m for m in mean]
    std255 = [255.0 * s for s in std]
    if mode == "pixel":
        if erase:  # DALI conditional: only the erased samples pay for the noise
            images = _fill_with_noise(images, boxes, size, mean255, std255)
        return images
    for anchor, shape in boxes:
        fill = [float(round(m)) for m in mean255]
        if mode == "rand":
            z = fn.random.normal(shape=[3])
            fill = fn.cast(fn.cast(_to_pixels(z, mean255, std255), dtype=types.UINT8), dtype=types.FLOAT)
        images = fn.erase(images, anchor=anchor, shape=shape, axis_names="HW", fill_value=fill)
    return images


def _to_pixels(z, mean255, std255):
    """normalised values z -> clipped pixel values (float): clamp(255 mean + 255 std z, 0, 255)."""
    from nvidia.dali import math as dmath, types
    mean = types.Constant(np.array(mean255, np.float32))
    std = types.Constant(np.array(std255, np.float32))
    return dmath.clamp(mean + std * z, 0.0, 255.0)


def _fill_with_noise(images, boxes, size, mean255, std255):
    """in: uint8 (size, size, 3) images, boxes [(anchor, shape)] -> the boxes filled with per-pixel noise."""
    from nvidia.dali import fn, types
    keep = types.Constant(np.ones((size, size, 1), np.uint8), layout="HWC", device="cpu")
    for anchor, shape in boxes:
        keep = fn.erase(keep, anchor=anchor, shape=shape, axis_names="HW", fill_value=0)
    if images.device == "gpu":
        keep = keep.gpu()
    noise = fn.cast(_to_pixels(fn.random.normal(images, dtype=types.FLOAT), mean255, std255), dtype=types.UINT8)
    return fn.cast(images * keep + noise * (1 - keep), dtype=types.UINT8)
