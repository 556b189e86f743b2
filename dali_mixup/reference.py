"""Plain-NumPy reference of both kernels: the oracle the CPU twin, the CUDA kernels and the DALI pipeline are
tested against. Written independently of ``kernels/`` (whole-array NumPy, no per-pixel code), in the same
float32 operation order, so on the CPU and the simulator the kernels must match it exactly.
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np

from .config import MixupConfig, normalization_constants
from .params import MixParams

__all__ = ["normalization_constants", "round_float32", "mix_images", "soft_targets", "compact_targets"]


def round_float32(values: np.ndarray, dtype: str) -> np.ndarray:
    """float32 values rounded to ``dtype`` (float32, float16 or bfloat16, nearest-even), returned as float32."""
    values = np.asarray(values, np.float32)
    if dtype == "float32":
        return values.copy()
    if dtype == "float16":
        return values.astype(np.float16).astype(np.float32)
    if dtype == "bfloat16":
        bits = values.view(np.uint32).astype(np.uint64)
        rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) << 16
        nan = np.isnan(values)
        rounded[nan] = (bits[nan] | 0x400000) >> 16 << 16
        return rounded.astype(np.uint32).view(np.float32)
    raise ValueError(f"dtype must be float32, float16 or bfloat16, got {dtype!r}")


def mix_images(images: np.ndarray, params: MixParams, *, mean: Sequence[float], std: Sequence[float],
               flip: Optional[np.ndarray] = None, out_dtype: str = "float32", layout: str = "NCHW") -> np.ndarray:
    """Reference of the fused image kernel.

    in:  images uint8 (B, H, W, 3) NHWC; params for B; flip (B,) bool or None.
    out: float32 values (already rounded to ``out_dtype``), (B, 3, H, W) for NCHW or (B, H, W, 3) for NHWC.
    """
    n = images.shape[0]
    x = images.astype(np.float32)
    if flip is not None:
        flip = np.asarray(flip, bool)
        x[flip] = x[flip][:, :, ::-1]
    scale, bias = normalization_constants(mean, std)
    out = np.empty(x.shape, np.float32)
    for i in range(n):
        p = params.partner[i]
        lam = params.lam[i]
        if params.use_cutmix[i]:
            y0, y1, x0, x1 = params.box[i]
            src = x[i].copy()
            src[y0:y1, x0:x1] = x[p, y0:y1, x0:x1]
            out[i] = src * scale + bias
        elif lam < 1:  # a·(λs) + (b·((1-λ)s) + bias), the kernels' float32 operation order
            ka, kb = lam * scale, (np.float32(1) - lam) * scale
            out[i] = x[i] * ka + (x[p] * kb + bias)
        else:
            out[i] = x[i] * scale + bias
    out = round_float32(out, out_dtype)
    return out.transpose(0, 3, 1, 2).copy() if layout == "NCHW" else out


def soft_targets(labels: np.ndarray, params: MixParams, cfg: MixupConfig) -> np.ndarray:
    """Reference of the soft-label kernel: float32 (B, C), ``λ s(y_i) + (1 - λ) s(y_partner)``."""
    labels = np.asarray(labels, np.int64)
    off, on = (np.float32(v) for v in cfg.off_on)
    one_hot = np.full((len(labels), cfg.num_classes), off, np.float32)
    one_hot[np.arange(len(labels)), labels] = on
    lam = params.lam[:, None]
    return one_hot * lam + one_hot[params.partner] * (np.float32(1) - lam)


def compact_targets(labels: np.ndarray, params: MixParams) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Compact form of the targets: (y_a, y_b, λ) = (labels, labels[partner], lam)."""
    labels = np.asarray(labels, np.int64)
    return labels, labels[params.partner], params.lam
