"""The losses that read mixed targets, dense or compact: soft-target cross-entropy and timm's binary cross-entropy.

Compact targets (``CompactTargets``: per sample the two labels and λ, with the smoothing) describe the same soft
target as the dense (B, C) row, ``t = λ s(a) + (1 - λ) s(b)``, ``s(y) = off + (on - off) onehot(y)``, in
O(B) memory; the losses here compute from them without ever building the (B, C) targets (ImageNet-21k at
B = 1,024: 89 MB of float32 targets a batch, written by the label kernel and read again by the loss).

in:  logits float32/float16/bfloat16 (B, C) on any device; targets float32 (B, C) or ``CompactTargets`` on the
     logits' device.
out: a scalar float32 loss (the logits' dtype for dense targets outside autocast, as timm's losses give).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple, Union

import torch
import torch.nn.functional as F

__all__ = ["CompactTargets", "mixup_cross_entropy", "mixup_binary_cross_entropy", "MixupCrossEntropy",
           "MixupBinaryCrossEntropy"]


@dataclass(frozen=True)
class CompactTargets:
    """The mixed soft targets of a batch as per-sample (a, b, λ): ``t[i] = lam[i] s(a[i]) + (1 - lam[i]) s(b[i])``.

    a: int64 (B,) the samples' labels; b: int64 (B,) their partners' labels; lam: float32 (B,) the weight of a
    (the λ the images were mixed with); num_classes and label_smoothing give ``s`` (timm's off/on values).
    Unpacks as ``a, b, lam = targets`` (FFCV's and the papers' (y_a, y_b, λ)); ``dense()`` builds the (B, C) rows.
    """

    a: torch.Tensor
    b: torch.Tensor
    lam: torch.Tensor
    num_classes: int
    label_smoothing: float = 0.0

    def __post_init__(self):
        n = self.a.shape
        if len(n) != 1 or self.b.shape != n or self.lam.shape != n:
            raise ValueError(f"CompactTargets: a, b and lam must have one shape (B,), got {tuple(self.a.shape)}, "
                             f"{tuple(self.b.shape)}, {tuple(self.lam.shape)}")
        if self.a.dtype != torch.int64 or self.b.dtype != torch.int64 or self.lam.dtype != torch.float32:
            raise TypeError(f"CompactTargets: a and b must be int64 and lam float32 (whatever the images' dtype: "
                            f"float16/bfloat16 cannot hold every class id), got {self.a.dtype}, {self.b.dtype}, "
                            f"{self.lam.dtype}")

    def __iter__(self):
        return iter((self.a, self.b, self.lam))

    @property
    def batch_size(self) -> int:
        return self.a.shape[0]

    @property
    def device(self) -> torch.device:
        return self.a.device

    @property
    def off_on(self) -> Tuple[float, float]:
        """timm's label-smoothing values ``(off, on)`` = (ε / C, 1 - ε + ε / C)."""
        off = self.label_smoothing / self.num_classes
        return off, 1.0 - self.label_smoothing + off

    def to(self, device, non_blocking: bool = False) -> "CompactTargets":
        """The same targets on ``device``."""
        return CompactTargets(*(t.to(device, non_blocking=non_blocking) for t in self), self.num_classes,
                              self.label_smoothing)

    def cuda(self, device=None, non_blocking: bool = False) -> "CompactTargets":
        return CompactTargets(*(t.cuda(device, non_blocking=non_blocking) for t in self), self.num_classes,
                              self.label_smoothing)

    def dense(self) -> torch.Tensor:
        """float32 (B, C): the dense soft targets these describe (for inspection; the losses never build them)."""
        off, on = self.off_on
        rows = torch.full((self.batch_size, self.num_classes), off, dtype=torch.float32, device=self.device)
        lam = self.lam.unsqueeze(1)
        rows = rows + (on - off) * lam * F.one_hot(self.a, self.num_classes)
        return rows + (on - off) * (1 - lam) * F.one_hot(self.b, self.num_classes)


Targets = Union[torch.Tensor, CompactTargets]


def _check(logits: torch.Tensor, targets: Targets) -> None:
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
        raise ValueError(f"logits must be a (B, C) tensor, got {getattr(logits, 'shape', type(logits).__name__)}")
    if isinstance(targets, CompactTargets):
        if targets.num_classes != logits.shape[1] or targets.batch_size != logits.shape[0]:
            raise ValueError(f"compact targets of {targets.batch_size} samples over {targets.num_classes} classes "
                             f"do not match logits of shape {tuple(logits.shape)}")
    elif not isinstance(targets, torch.Tensor) or targets.shape != logits.shape:
        raise ValueError(f"targets must be CompactTargets or dense (B, C) targets of the logits' shape "
                         f"{tuple(logits.shape)}, got {getattr(targets, 'shape', type(targets).__name__)}")


def _picked(values: torch.Tensor, targets: CompactTargets) -> Tuple[torch.Tensor, torch.Tensor]:
    """in: float32 (B, C) -> out: float32 (B,) values at each sample's a and b."""
    both = values.gather(1, torch.stack((targets.a, targets.b), 1))
    return both[:, 0], both[:, 1]


def _weighted_sum(values: torch.Tensor, targets: CompactTargets, g=lambda t: t) -> torch.Tensor:
    """float32 (B,): ``sum_c g(t_c) values_c`` over each row, for the compact targets' rows ``t`` (whose classes
    take the value ``off`` but at a and b), from the row sums and the two picked entries."""
    off, on = targets.off_on
    lam, same = targets.lam, targets.a == targets.b
    t_a = off + (on - off) * torch.where(same, torch.ones_like(lam), lam)
    t_b = off + (on - off) * (1 - lam)
    v_a, v_b = _picked(values, targets)
    g_off = g(torch.tensor(off, dtype=torch.float32, device=values.device))
    total = g_off * values.sum(1) + (g(t_a) - g_off) * v_a
    return total + torch.where(same, torch.zeros_like(v_b), (g(t_b) - g_off) * v_b)


def mixup_cross_entropy(logits: torch.Tensor, targets: Targets) -> torch.Tensor:
    """Soft-target cross-entropy, ``mean_i sum_c -t_ic log_softmax(logits)_ic``.

    Dense targets: timm's ``SoftTargetCrossEntropy`` exactly (the same operations, so the same dtype rules under
    autocast and outside it). Compact targets: the same value from the log-softmax's row sums and the entries
    at a and b (``sum_c t_c logp_c = off sum_c logp_c + (on - off)(λ logp_a + (1 - λ) logp_b)``), summed in
    float32; it equals the dense loss to float32 rounding (tested: relative difference below 1e-5).
    """
    _check(logits, targets)
    if not isinstance(targets, CompactTargets):
        return torch.sum(-targets * F.log_softmax(logits, dim=-1), dim=-1).mean()
    logp = F.log_softmax(logits, dim=-1).float()
    return -_weighted_sum(logp, targets).mean()


def mixup_binary_cross_entropy(logits: torch.Tensor, targets: Targets, *, target_threshold: Optional[float] = None,
                               sum_classes: bool = False,
                               pos_weight: Union[None, float, torch.Tensor] = None) -> torch.Tensor:
    """Binary cross-entropy on mixed targets: timm's ``BinaryCrossEntropy(target_threshold, sum_classes,
    pos_weight)`` as timm's ``train.py`` builds it with Mixup (``--bce-loss``, ``--bce-target-thresh``,
    ``--bce-sum``, ``--bce-pos-weight``): targets above ``target_threshold`` become 1, the rest 0; the mean over
    all B x C elements, or (``sum_classes``) the sum over classes averaged over the batch.

    Dense targets: timm's operations exactly. Compact targets: the per-element loss is linear in the target,
    ``(x + sp) + t (-x + (w - 1) sp)`` with ``sp = softplus(-x)`` and ``w`` the positive weight, so its sum over a
    row needs only the row sum and the entries at a and b (float32; equal to the dense loss to float32 rounding).
    """
    _check(logits, targets)
    if target_threshold is not None and not 0.0 <= float(target_threshold) <= 1.0:
        raise ValueError(f"target_threshold must lie in [0, 1] or be None, got {target_threshold!r}")
    if pos_weight is not None and not isinstance(pos_weight, torch.Tensor):
        pos_weight = torch.tensor(float(pos_weight))
    if not isinstance(targets, CompactTargets):
        if target_threshold is not None:
            targets = targets.gt(target_threshold).to(dtype=targets.dtype)
        pos_weight = None if pos_weight is None else pos_weight.to(logits.device)
        loss = F.binary_cross_entropy_with_logits(logits, targets, pos_weight=pos_weight,
                                                  reduction="none" if sum_classes else "mean")
        return loss.sum(-1).mean() if sum_classes else loss
    x = logits.float()
    sp = F.softplus(-x)
    w = 1.0 if pos_weight is None else pos_weight.to(device=x.device, dtype=torch.float32)
    slope = -x + (w - 1) * sp
    g = (lambda t: t) if target_threshold is None else (lambda t: (t > target_threshold).float())
    rows = (x + sp).sum(1) + _weighted_sum(slope, targets, g)
    return rows.mean() if sum_classes else rows.sum() / x.numel()


class MixupCrossEntropy(torch.nn.Module):
    """``mixup_cross_entropy`` as a module (a drop-in for timm's ``SoftTargetCrossEntropy``)."""

    def forward(self, logits: torch.Tensor, targets: Targets) -> torch.Tensor:
        return mixup_cross_entropy(logits, targets)


class MixupBinaryCrossEntropy(torch.nn.Module):
    """``mixup_binary_cross_entropy`` as a module (a drop-in for timm's ``BinaryCrossEntropy`` on mixed targets)."""

    def __init__(self, target_threshold: Optional[float] = None, sum_classes: bool = False,
                 pos_weight: Union[None, float, torch.Tensor] = None):
        super().__init__()
        self.target_threshold, self.sum_classes = target_threshold, sum_classes
        self.register_buffer("pos_weight", None if pos_weight is None else torch.as_tensor(float(pos_weight)))

    def forward(self, logits: torch.Tensor, targets: Targets) -> torch.Tensor:
        return mixup_binary_cross_entropy(logits, targets, target_threshold=self.target_threshold,
                                          sum_classes=self.sum_classes, pos_weight=self.pos_weight)
