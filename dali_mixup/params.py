"""Mix parameters: drawn once per batch from a counter-based key, applied by both kernels.

``sample_params`` only draws numbers; applying them is the kernels' job (parameter generation is separate
from application). The packed table (``MixParams.pack``) is what the image and label kernels read, so the λ
that weights the pixels is exactly the λ that weights the labels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from .config import MixupConfig
from .kernels import pixel_math as pm

__all__ = ["MixParams", "sample_params", "batch_key"]

# Salt of the counter-based key, so (seed, epoch, step, rank) streams differ from a user's own uses of `seed`.
_STREAM_SALT = 0x6D69787570  # "mixup"
_MAX_EXACT = 1 << 24  # indices and sizes are stored as float32 in the packed table


def batch_key(run: int, runs_per_epoch: Optional[int] = None, first_epoch: int = 0):
    """(epoch, step) of a pipeline's run ``run`` (0, 1, ...): the part of a batch's key (seed, epoch, step, rank)
    that says which batch it is. A pipeline built for epoch ``first_epoch`` runs ``runs_per_epoch`` batches an
    epoch, so run k is (first_epoch + k // runs_per_epoch, k % runs_per_epoch); None: one long epoch. The one
    place that says it: the loader's epilogue (run = its step in the epoch), the ``dali`` backend's parameter
    source and ``dali.mix`` (run = DALI's iteration count) all ask it, so every placement and backend draws the
    same parameters for the same batch."""
    if runs_per_epoch is None:
        return first_epoch, run
    more, step = divmod(run, runs_per_epoch)
    return first_epoch + more, step


@dataclass(frozen=True)
class MixParams:
    """Per-sample mix parameters of one batch (NumPy, host).

    Attributes:
        partner: (B,) int64, the sample mixed into sample i.
        lam: (B,) float32, λ = weight of the sample itself (images and labels).
        use_cutmix: (B,) bool, CutMix (paste the partner's box) instead of Mixup.
        box: (B, 4) int32, CutMix box (y0, y1, x0, x1), half-open, timm's order; zeros when not CutMix.
    """

    partner: np.ndarray
    lam: np.ndarray
    use_cutmix: np.ndarray
    box: np.ndarray

    def __post_init__(self):
        for name, dtype in (("partner", np.int64), ("lam", np.float32), ("use_cutmix", np.bool_)):
            arr = np.asarray(getattr(self, name))
            if arr.ndim != 1:
                raise ValueError(f"MixParams.{name} must be 1-D (B,), got shape {arr.shape}")
            object.__setattr__(self, name, arr.astype(dtype, copy=False))
        box = np.asarray(self.box)
        if box.ndim != 2 or box.shape[1] != 4:
            raise ValueError(f"MixParams.box must have shape (B, 4), got {box.shape}")
        object.__setattr__(self, "box", box.astype(np.int32, copy=False))
        n = len(self.partner)
        if not (len(self.lam) == len(self.use_cutmix) == len(self.box) == n):
            raise ValueError("MixParams fields must all have the same batch size B")

    @property
    def batch_size(self) -> int:
        return len(self.partner)

    def check(self, batch_size: int, height: int, width: int) -> None:
        """Raise ``ValueError`` unless these parameters fit a (batch_size, height, width) batch."""
        if self.batch_size != batch_size:
            raise ValueError(f"params are for batch size {self.batch_size}, the batch has {batch_size}")
        if self.partner.size and (self.partner.min() < 0 or self.partner.max() >= batch_size):
            raise ValueError(f"params.partner must lie in [0, {batch_size}), got "
                             f"[{self.partner.min()}, {self.partner.max()}]")
        if not np.all(np.isfinite(self.lam)) or np.any((self.lam < 0) | (self.lam > 1)):
            raise ValueError("params.lam must lie in [0, 1]")
        y0, y1, x0, x1 = self.box.T
        if np.any((y0 < 0) | (y0 > y1) | (y1 > height) | (x0 < 0) | (x0 > x1) | (x1 > width)):
            raise ValueError(f"params.box must satisfy 0 <= y0 <= y1 <= {height} and 0 <= x0 <= x1 <= {width}")

    def pack(self, flip: Optional[np.ndarray] = None) -> np.ndarray:
        """The table both kernels read: (B, PARAM_FIELDS) float32, fields per ``kernels.pixel_math``.

        ``flip``: optional (B,) bool, samples to read mirrored horizontally (the crop stage's flip).
        """
        n = self.batch_size
        table = np.zeros((n, pm.PARAM_FIELDS), np.float32)
        table[:, pm.P_PARTNER] = self.partner
        table[:, pm.P_LAM] = self.lam
        kind = np.where(self.lam < 1, pm.KIND_MIXUP, pm.KIND_COPY)
        table[:, pm.P_KIND] = np.where(self.use_cutmix, pm.KIND_CUTMIX, kind)
        if flip is not None:
            flip = np.asarray(flip)
            if flip.shape != (n,):
                raise ValueError(f"flip must have shape ({n},), got {flip.shape}")
            table[:, pm.P_FLIP] = flip.astype(bool)
        table[:, pm.P_Y0:pm.P_X1 + 1] = self.box
        return table


def _key_rng(seed, epoch, step, rank) -> np.random.Generator:
    """Counter-based generator (Philox) keyed by (seed, epoch, step, rank); touches no global state."""
    for name, value in (("seed", seed), ("epoch", epoch), ("step", step), ("rank", rank)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"{name} must be an int, got {type(value).__name__}")
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")
    seq = np.random.SeedSequence(entropy=[_STREAM_SALT, int(seed)], spawn_key=(int(epoch), int(step), int(rank)))
    return np.random.Generator(np.random.Philox(seq))


def _derangement(rng: np.random.Generator, n: int) -> np.ndarray:
    """Uniformly random permutation without fixed points (rejection; about e tries), n >= 2."""
    idx = np.arange(n)
    while True:
        perm = rng.permutation(n)
        if not np.any(perm == idx):
            return perm


def _rand_bbox(rng, lam, height, width):
    """timm's ``rand_bbox`` for a vector of λ: box of side sqrt(1-λ) around a uniform centre, clipped."""
    ratio = np.sqrt(1.0 - lam.astype(np.float64))
    cut_h = (height * ratio).astype(np.int64)
    cut_w = (width * ratio).astype(np.int64)
    cy = rng.integers(0, height, size=len(lam))
    cx = rng.integers(0, width, size=len(lam))
    y0 = np.clip(cy - cut_h // 2, 0, height)
    y1 = np.clip(cy + cut_h // 2, 0, height)
    x0 = np.clip(cx - cut_w // 2, 0, width)
    x1 = np.clip(cx + cut_w // 2, 0, width)
    return np.stack([y0, y1, x0, x1], axis=1)


def _rand_bbox_minmax(rng, minmax, n, height, width):
    """timm's ``rand_bbox_minmax``: box sides uniform in [min, max) of the image side, box inside the image."""
    lo_h, hi_h = int(height * minmax[0]), int(height * minmax[1])
    lo_w, hi_w = int(width * minmax[0]), int(width * minmax[1])
    cut_h = rng.integers(lo_h, max(hi_h, lo_h + 1), size=n)  # tiny images: min and max may floor together
    cut_w = rng.integers(lo_w, max(hi_w, lo_w + 1), size=n)
    y0 = rng.integers(0, np.maximum(height - cut_h, 1))
    x0 = rng.integers(0, np.maximum(width - cut_w, 1))
    return np.stack([y0, y0 + cut_h, x0, x0 + cut_w], axis=1)


def _draw_sets(cfg: MixupConfig, rng, n: int, height: int, width: int):
    """n independent parameter sets (λ, use_cutmix, box), timm's per-element rules, vectorised."""
    lam = np.ones(n, np.float32)
    use_cutmix = np.zeros(n, bool)
    box = np.zeros((n, 4), np.int64)
    mixup_alpha, cutmix_alpha = cfg.mixup_alpha, cfg.effective_cutmix_alpha
    if not cfg.mixes:
        return lam, use_cutmix, box
    if mixup_alpha > 0 and cutmix_alpha > 0:
        cut = rng.random(n) < cfg.switch_prob
    else:
        cut = np.full(n, cutmix_alpha > 0)
    lam_mix = rng.beta(mixup_alpha, mixup_alpha, size=n) if mixup_alpha > 0 else np.ones(n)
    lam_cut = rng.beta(cutmix_alpha, cutmix_alpha, size=n) if cutmix_alpha > 0 else np.ones(n)
    drawn = np.where(cut, lam_cut, lam_mix).astype(np.float32)
    mixed = (rng.random(n) < cfg.prob) & (drawn != 1.0)  # timm leaves a sample with λ == 1 untouched
    if cutmix_alpha > 0:
        if cfg.cutmix_minmax is not None:
            boxes = _rand_bbox_minmax(rng, cfg.cutmix_minmax, n, height, width)
        else:
            boxes = _rand_bbox(rng, drawn, height, width)
    lam = np.where(mixed, drawn, lam).astype(np.float32)
    use_cutmix = cut & mixed
    if use_cutmix.any():
        box[use_cutmix] = boxes[use_cutmix]
        if cfg.correct_lam or cfg.cutmix_minmax is not None:
            area = (box[:, 1] - box[:, 0]) * (box[:, 3] - box[:, 2])
            corrected = (1.0 - area / float(height * width)).astype(np.float32)
            lam = np.where(use_cutmix, corrected, lam).astype(np.float32)
    return lam, use_cutmix, box


def sample_params(cfg: MixupConfig, batch_size: int, height: int, width: int, *, seed: int = 0, epoch: int = 0,
                  step: int = 0, rank: int = 0) -> MixParams:
    """Draw the mix parameters of one batch from the key (seed, epoch, step, rank).

    Same key and arguments give identical parameters on any machine (NumPy's Philox and SeedSequence), and no
    global random state is read or changed. Modes: ``batch`` one set for the batch, ``pair`` one per pair
    (both members of a pair get the same λ and box), ``elem`` one per sample. Pairing ``flip``: partner of i
    is B-1-i (timm; with odd B the middle sample is its own partner). Pairing ``permutation``: a random
    derangement in modes batch/elem, a random perfect matching in mode pair (with odd B one sample is left
    unpaired and passes through). B = 1 cannot mix: the sample passes through (λ = 1).

    Args:
        cfg: the mixing configuration.
        batch_size: B >= 1. height, width: image size (>= 1) the CutMix boxes are drawn for.
        seed, epoch, step, rank: the key, non-negative ints.

    Returns:
        MixParams with partner (B,) int64, lam (B,) float32, use_cutmix (B,) bool, box (B, 4) int32.
    """
    if not isinstance(cfg, MixupConfig):
        raise TypeError(f"cfg must be a MixupConfig, got {type(cfg).__name__}")
    for name, value in (("batch_size", batch_size), ("height", height), ("width", width)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"{name} must be an int, got {type(value).__name__}")
        if not 1 <= value < _MAX_EXACT:
            raise ValueError(f"{name} must be in [1, {_MAX_EXACT}), got {value}")
    rng = _key_rng(seed, epoch, step, rank)
    n = int(batch_size)
    idx = np.arange(n)
    if n == 1:
        return MixParams(idx, np.ones(1, np.float32), np.zeros(1, bool), np.zeros((1, 4), np.int32))

    if cfg.mode == "pair":
        if cfg.pairing == "flip":
            first = idx[: n // 2]
            second = n - 1 - first
        else:
            perm = rng.permutation(n)
            first, second = perm[0:2 * (n // 2):2], perm[1:2 * (n // 2):2]
        partner = idx.copy()
        partner[first], partner[second] = second, first
        lam_s, cut_s, box_s = _draw_sets(cfg, rng, n // 2, height, width)
        lam = np.ones(n, np.float32)
        use_cutmix = np.zeros(n, bool)
        box = np.zeros((n, 4), np.int64)
        for members in (first, second):
            lam[members], use_cutmix[members], box[members] = lam_s, cut_s, box_s
    else:
        partner = n - 1 - idx if cfg.pairing == "flip" else _derangement(rng, n)
        sets = 1 if cfg.mode == "batch" else n
        lam_s, cut_s, box_s = _draw_sets(cfg, rng, sets, height, width)
        pick = np.zeros(n, np.int64) if sets == 1 else idx
        lam, use_cutmix, box = lam_s[pick], cut_s[pick], box_s[pick]
    return MixParams(partner, lam, use_cutmix, box)
