"""Progressive resolution: the training crop size as a function of the epoch (FFCV's ImageNet recipe: train small
early and ramp up), or of the batch (timm's scheduled resolution, ``--train-img-sizes``).

Each epoch of the loader is a fresh DALI pipeline, so an epoch's size is simply the size its pipeline crops to:
no recompilation, no Python stage in the graph, resume lands on the size of the resumed epoch. Per batch
(``PerBatchSizes``), the batch's size is an argument input of the graph (``pipeline``), from an external source
that is a function of (seed, epoch, step), so it is resumable too.
"""

from __future__ import annotations

import functools
import numbers
from dataclasses import asdict, dataclass
from typing import Callable, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from .checks import integer, one_of, real

__all__ = ["ResolutionSchedule", "PerBatchSizes", "size_at", "sizes_at", "choices_at", "check_size", "describe"]


@dataclass(frozen=True)
class ResolutionSchedule:
    """FFCV's schedule: ``min_res`` up to epoch ``start_ramp``, ``max_res`` from epoch ``end_ramp`` on, and in
    between the linear interpolation rounded to the nearest multiple of ``step`` (FFCV: 32). FFCV's ResNet-50
    recipe: min_res 160, max_res 192, end_ramp 76 (88-epoch run), start_ramp 65, evaluation at 256 (``val_res``,
    here the evaluation loader's own ``image_size``)."""

    min_res: int
    max_res: int
    end_ramp: int
    start_ramp: int
    step: int = 32

    def __post_init__(self):
        for name, low in (("min_res", 1), ("max_res", 1), ("step", 1), ("end_ramp", 0), ("start_ramp", 0)):
            object.__setattr__(self, name, integer(f"ResolutionSchedule.{name}", getattr(self, name), low))
        if self.min_res > self.max_res:
            raise ValueError(f"ResolutionSchedule: min_res={self.min_res} must be <= max_res={self.max_res}")
        if self.start_ramp > self.end_ramp:
            raise ValueError(f"ResolutionSchedule: start_ramp={self.start_ramp} must be <= "
                             f"end_ramp={self.end_ramp}")

    def __call__(self, epoch: int) -> int:
        """The crop size of ``epoch`` (FFCV's ``get_resolution``)."""
        if epoch <= self.start_ramp:
            return self.min_res
        if epoch >= self.end_ramp:
            return self.max_res
        t = (epoch - self.start_ramp) / (self.end_ramp - self.start_ramp)
        size = self.min_res + t * (self.max_res - self.min_res)
        return max(self.step, int(round(size / self.step)) * self.step)


@dataclass(frozen=True)
class PerBatchSizes:
    """timm's scheduled resolution with one batch size (``train.py --train-img-sizes``, ``--train-size-probs``,
    ``--train-size-schedule``, ``--train-size-schedule-spread``, ``--train-size-random-mix``): every batch is
    cropped to one of ``sizes``, chosen per batch as timm's ``ScheduledBatchSampler`` chooses it, so for the same
    seed and batches per epoch the same size in the same place of every epoch.

    ``probs``: the sizes' base weights (default uniform; a 0 never chosen). ``schedule`` "constant": one draw per
    batch from the weights (with torch's generator seeded by the loader's seed), made once and shuffled each epoch;
    "progressive": over ``epochs`` epochs a window moves from the first size to the last, the weights times a
    Gaussian of ``spread`` (in size-index units; 0: the nearest size alone) about the window's centre, with a
    ``random_mix`` fraction of uniform draws over the sizes in use, drawn afresh each epoch and shuffled."""

    sizes: Tuple[int, ...]
    probs: Optional[Tuple[float, ...]] = None
    schedule: str = "constant"
    epochs: Optional[int] = None
    spread: float = 0.65
    random_mix: float = 0.1

    def __post_init__(self):
        name = "PerBatchSizes"
        if isinstance(self.sizes, (str, bytes)) or not isinstance(self.sizes, Sequence) or not self.sizes:
            raise ValueError(f"{name}.sizes must be a non-empty sequence of ints >= 1, got {self.sizes!r}")
        set_ = object.__setattr__
        set_(self, "sizes", tuple(integer(f"{name}.sizes[{i}]", v, 1) for i, v in enumerate(self.sizes)))
        if self.probs is not None:
            if isinstance(self.probs, (str, bytes)) or not isinstance(self.probs, Sequence) or \
                    len(self.probs) != len(self.sizes):
                raise ValueError(f"{name}.probs must be {len(self.sizes)} weights, one per size, got {self.probs!r}")
            probs = tuple(real(f"{name}.probs[{i}]", v) for i, v in enumerate(self.probs))
            if min(probs) < 0 or sum(probs) <= 0:
                raise ValueError(f"{name}.probs must be >= 0 with a positive sum, got {probs}")
            set_(self, "probs", probs)
        one_of(f"{name}.schedule", self.schedule, ("constant", "progressive"))
        set_(self, "spread", real(f"{name}.spread", self.spread))
        set_(self, "random_mix", real(f"{name}.random_mix", self.random_mix))
        if self.schedule == "progressive":
            if len(self.sizes) < 2:
                raise ValueError(f"{name}: a progressive schedule needs at least two sizes, got {self.sizes}")
            if self.epochs is None:
                raise ValueError(f"{name}.epochs: a progressive schedule needs the epochs it ramps over (timm: "
                                 "--epochs)")
            set_(self, "epochs", integer(f"{name}.epochs", self.epochs, 1))
            if self.spread < 0:
                raise ValueError(f"{name}.spread must be >= 0, got {self.spread}")
            if not 0.0 <= self.random_mix <= 1.0:
                raise ValueError(f"{name}.random_mix must lie in [0, 1], got {self.random_mix}")

    def _base(self) -> torch.Tensor:
        """The base weights, normalised (float64, as timm computes them)."""
        if self.probs is None:
            return torch.full((len(self.sizes),), 1.0 / len(self.sizes), dtype=torch.float64)
        weights = torch.tensor(self.probs, dtype=torch.float64)
        return weights / weights.sum()

    def weights(self, epoch: int) -> torch.Tensor:
        """The probability of each size in ``epoch`` (float64; a progressive schedule's moving window)."""
        base = self._base()
        if self.schedule == "constant":
            return base
        progress = 1.0 if self.epochs == 1 else min(max(epoch / (self.epochs - 1), 0.0), 1.0)
        centre = progress * (len(self.sizes) - 1)
        offsets = torch.arange(len(self.sizes), dtype=torch.float64) - centre
        if self.spread == 0:
            window = (offsets.abs() == offsets.abs().min()).to(torch.float64)
        else:
            window = torch.exp(-0.5 * (offsets / self.spread) ** 2)
        window = window * base
        if window.sum() > 0:
            window = window / window.sum()
        else:  # the window covers only sizes of weight 0: the nearest size in use
            window = torch.zeros_like(base)
            window[min(np.flatnonzero(base.numpy() > 0), key=lambda i: abs(i - centre))] = 1.0
        if self.random_mix:
            uniform = (base > 0).to(torch.float64)
            window = (1.0 - self.random_mix) * window + self.random_mix * (uniform / uniform.sum())
        return window / window.sum()

    def choices(self, epoch: int, batches: int, seed: int) -> np.ndarray:
        """The size index of each of ``epoch``'s ``batches`` batches (int32), as timm's sampler orders them."""
        return _choices(self, epoch, batches, seed).copy()


@functools.lru_cache(maxsize=8)
def _choices(sizes: PerBatchSizes, epoch: int, batches: int, seed: int) -> np.ndarray:
    if sizes.schedule == "constant":  # one composition for every epoch, drawn over the sizes in use
        draw, base = torch.Generator().manual_seed(seed), sizes._base()
        used = np.flatnonzero(base.numpy() > 0)
        picks = [int(used[int(torch.multinomial(base[used], 1, generator=draw))]) for _ in range(batches)]
    else:
        draw, weights = torch.Generator().manual_seed(seed + 2 * epoch), sizes.weights(epoch)
        picks = [int(torch.multinomial(weights, 1, generator=draw)) for _ in range(batches)]
    if batches > 1:  # the epoch's order
        order = torch.randperm(batches, generator=torch.Generator().manual_seed(seed + 2 * epoch + 1)).numpy()
        picks = [picks[i] for i in order]
    return np.array(picks, dtype=np.int32)


Size = Union[int, ResolutionSchedule, PerBatchSizes, Callable[[int], int]]


def check_size(image_size: Size, train: bool) -> Size:
    """in: ``create_dali_loader``'s ``image_size`` -> out: it, checked: an int >= 1, a ``ResolutionSchedule``, a
    ``PerBatchSizes`` or a callable(epoch) -> int (training only: evaluation has one size)."""
    if isinstance(image_size, numbers.Integral) and not isinstance(image_size, bool):
        return integer("image_size", image_size, 1)
    if isinstance(image_size, (ResolutionSchedule, PerBatchSizes)) or callable(image_size):
        if not train:
            raise ValueError("image_size: a schedule is for training loaders; evaluation has one size (an int; "
                             "FFCV's val_res)")
        return image_size
    raise TypeError(f"image_size must be an int, a ResolutionSchedule, a PerBatchSizes or a callable(epoch) -> "
                    f"int, got {type(image_size).__name__}")


def sizes_at(image_size: Size, epoch: int) -> Tuple[int, ...]:
    """The crop sizes of ``epoch``'s batches: one, or per batch (``PerBatchSizes``) the sizes they choose from;
    a callable's answer is checked (an int >= 1), naming the epoch."""
    if isinstance(image_size, PerBatchSizes):
        return image_size.sizes
    if isinstance(image_size, numbers.Integral):
        return (int(image_size),)
    size = image_size(epoch)
    if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < 1:
        raise ValueError(f"image_size schedule gave {size!r} for epoch {epoch}: expected an int >= 1")
    return (int(size),)


def size_at(image_size: Size, epoch: int) -> int:
    """The crop size of ``epoch``, when its batches have one (a ValueError for ``PerBatchSizes``)."""
    sizes = sizes_at(image_size, epoch)
    if len(sizes) > 1:
        raise ValueError(f"image_size={image_size!r} chooses a size per batch: an epoch has no one size (the loader's "
                         "sizes_at(epoch) gives each batch's)")
    return sizes[0]


def choices_at(image_size: Size, epoch: int, batches: int, seed: int) -> Optional[np.ndarray]:
    """Per batch of ``epoch`` the index of its size in ``sizes_at(epoch)`` (int32 (batches,)); None when the epoch
    has one size."""
    if isinstance(image_size, PerBatchSizes) and len(image_size.sizes) > 1:
        return image_size.choices(epoch, batches, seed)
    return None


def describe(image_size: Size):
    """What the resume identity records: the int, the schedule's numbers, or a callable's name (a state resumes
    only a loader with the same schedule)."""
    if isinstance(image_size, numbers.Integral):
        return int(image_size)
    if isinstance(image_size, ResolutionSchedule):
        return {"schedule": asdict(image_size)}
    if isinstance(image_size, PerBatchSizes):
        return {"per_batch": asdict(image_size)}
    return {"callable": f"{getattr(image_size, '__module__', '?')}.{getattr(image_size, '__qualname__', '?')}"}
