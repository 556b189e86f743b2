"""``MixupConfig``: what to mix and how, with timm's argument names, validated at construction."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np
import torch

from .checks import flag, integer, real

__all__ = ["MixupConfig", "MODES", "PAIRINGS", "IMAGENET_MEAN", "IMAGENET_STD", "DTYPES", "LAYOUTS",
           "check_normalization", "normalization_constants"]

MODES = ("batch", "pair", "elem")
PAIRINGS = ("permutation", "flip")

#: The output image dtypes, by the name DALI, the CLI and the state use for them.
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
#: The output image layouts.
LAYOUTS = ("NCHW", "NHWC")

#: ImageNet channel statistics in timm's convention (fractions of 255), RGB order.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def check_normalization(mean: Sequence[float], std: Sequence[float]) -> Tuple[Tuple[float, ...], Tuple[float, ...]]:
    """in: per-channel ``mean`` and ``std``, RGB, fractions of 255 (timm's convention) -> out: both as 3-tuples of
    float. Raises naming the argument: not 3 finite numbers, mean outside [0, 1], std outside (0, 1] (values
    above 1 look like the 0-255 convention: the hint says so)."""
    checked = []
    for name, value in (("mean", mean), ("std", std)):
        try:
            values = tuple(float(v) for v in value) if not isinstance(value, (str, bytes)) else None
        except (TypeError, ValueError):
            values = None
        if values is None or len(values) != 3 or not all(math.isfinite(v) for v in values):
            raise ValueError(f"{name} must be 3 finite numbers (RGB, fractions of 255), got {value!r}")
        if any(v > 1 for v in values):
            raise ValueError(f"{name} must be fractions of 255, got {value!r}: that looks like the 0-255 "
                             f"convention; divide by 255 (ImageNet: mean={IMAGENET_MEAN}, std={IMAGENET_STD})")
        checked.append(values)
    if any(v < 0 for v in checked[0]):
        raise ValueError(f"mean must lie in [0, 1] (fractions of 255), got {mean!r}")
    if any(v <= 0 for v in checked[1]):
        raise ValueError(f"std must be > 0, got {std!r}")
    return checked[0], checked[1]


def normalization_constants(mean: Sequence[float], std: Sequence[float]) -> Tuple[np.ndarray, np.ndarray]:
    """(scale, bias), float32 (3,), with ``(x / 255 - mean) / std == x * scale + bias`` (timm's convention): the
    per-channel constants both kernels and the oracle use."""
    mean = np.asarray(mean, np.float64)
    std = np.asarray(std, np.float64)
    return (1.0 / (255.0 * std)).astype(np.float32), (-mean / std).astype(np.float32)


def _probability(name, value):
    value = real(name, value)  # a TypeError for a non-number, as every field of the config
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value}")
    return value


@dataclass(frozen=True)
class MixupConfig:
    """Mixup / CutMix settings; the names and meanings of timm's ``Mixup``.

    Args:
        num_classes: number of classes C (>= 1); targets are (B, C).
        mixup_alpha: α of Beta(α, α) for Mixup λ; 0 disables Mixup.
        cutmix_alpha: α of Beta(α, α) for CutMix λ; 0 disables CutMix (unless ``cutmix_minmax`` is set).
        cutmix_minmax: (min, max) fractions of the image side for the CutMix box, 0 < min < max <= 1; when set,
            CutMix is on (as in timm, it behaves as ``cutmix_alpha=1``), the box size is drawn uniformly from
            this range and λ is always corrected to the box area.
        prob: probability that a batch (mode ``batch``), pair or element is mixed at all.
        switch_prob: probability of CutMix instead of Mixup when both are enabled.
        mode: ``batch`` (one λ and one choice per batch), ``pair`` (per pair of samples) or ``elem`` (per sample).
        correct_lam: for CutMix, λ = 1 - (clipped box area / image area).
        label_smoothing: ε of the soft targets, ``off = ε / C``, ``on = 1 - ε + ε / C``. Default 0.0: unlike
            timm's ``Mixup`` (whose ``label_smoothing`` defaults to 0.1), no smoothing unless asked for.
        pairing: ``permutation`` (a random derangement: nobody is paired with itself) or ``flip`` (timm's
            i <-> B-1-i).
    """

    num_classes: int
    mixup_alpha: float = 1.0
    cutmix_alpha: float = 0.0
    cutmix_minmax: Optional[Tuple[float, float]] = None
    prob: float = 1.0
    switch_prob: float = 0.5
    mode: str = "batch"
    correct_lam: bool = True
    label_smoothing: float = 0.0
    pairing: str = "permutation"

    def __post_init__(self):
        set_ = object.__setattr__
        set_(self, "num_classes", integer("num_classes", self.num_classes, 1))
        for name in ("mixup_alpha", "cutmix_alpha"):
            value = real(name, getattr(self, name))
            if value < 0:
                raise ValueError(f"{name} must be >= 0 (0 disables it), got {value}")
            set_(self, name, value)
        if self.cutmix_minmax is not None:
            mm = self.cutmix_minmax
            if not isinstance(mm, (tuple, list)) or len(mm) != 2:
                raise ValueError(f"cutmix_minmax must be a (min, max) pair or None, got {mm!r}")
            lo = real("cutmix_minmax[0]", mm[0])
            hi = real("cutmix_minmax[1]", mm[1])
            if not 0.0 < lo < hi <= 1.0:
                raise ValueError(f"cutmix_minmax must satisfy 0 < min < max <= 1, got ({lo}, {hi})")
            set_(self, "cutmix_minmax", (lo, hi))
        set_(self, "prob", _probability("prob", self.prob))
        set_(self, "switch_prob", _probability("switch_prob", self.switch_prob))
        ls = real("label_smoothing", self.label_smoothing)
        if not 0.0 <= ls < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {ls}")
        set_(self, "label_smoothing", ls)
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.pairing not in PAIRINGS:
            raise ValueError(f"pairing must be one of {PAIRINGS}, got {self.pairing!r}")
        flag("correct_lam", self.correct_lam)

    @property
    def effective_cutmix_alpha(self) -> float:
        """CutMix α as timm uses it: 1.0 whenever ``cutmix_minmax`` is set."""
        return 1.0 if self.cutmix_minmax is not None else self.cutmix_alpha

    @property
    def mixes(self) -> bool:
        """False when this config can never change a sample (no α, no minmax, or prob = 0)."""
        return self.prob > 0.0 and (self.mixup_alpha > 0.0 or self.effective_cutmix_alpha > 0.0)

    def no_mix(self) -> "MixupConfig":
        """This config with mixing off: the same classes and label smoothing (plain normalisation and smoothed
        one-hot targets), what a batch gets while mixing is switched off."""
        return MixupConfig(self.num_classes, mixup_alpha=0.0, label_smoothing=self.label_smoothing)

    @property
    def off_on(self) -> Tuple[float, float]:
        """timm's label-smoothing values ``(off, on)`` = (ε / C, 1 - ε + ε / C)."""
        off = self.label_smoothing / self.num_classes
        return off, 1.0 - self.label_smoothing + off
