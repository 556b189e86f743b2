"""Progressive resolution: the training crop size as a function of the epoch (FFCV's ImageNet recipe: train small
early and ramp up; timm's ``--train-img-sizes`` with a progressive schedule is the same idea per batch).

Each epoch of the loader is a fresh DALI pipeline, so an epoch's size is simply the size its pipeline crops to:
no recompilation, no Python stage in the graph, resume lands on the size of the resumed epoch.
"""

from __future__ import annotations

import numbers
from dataclasses import asdict, dataclass
from typing import Callable, Union

from .checks import integer

__all__ = ["ResolutionSchedule", "size_at", "check_size", "describe"]


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


Size = Union[int, ResolutionSchedule, Callable[[int], int]]


def check_size(image_size: Size, train: bool) -> Size:
    """in: ``create_dali_loader``'s ``image_size`` -> out: it, checked: an int >= 1, a ``ResolutionSchedule`` or
    a callable(epoch) -> int (training only: evaluation has one size)."""
    if isinstance(image_size, numbers.Integral) and not isinstance(image_size, bool):
        return integer("image_size", image_size, 1)
    if isinstance(image_size, ResolutionSchedule) or callable(image_size):
        if not train:
            raise ValueError("image_size: a schedule is for training loaders; evaluation has one size (an int; "
                             "FFCV's val_res)")
        return image_size
    raise TypeError(f"image_size must be an int, a ResolutionSchedule or a callable(epoch) -> int, got "
                    f"{type(image_size).__name__}")


def size_at(image_size: Size, epoch: int) -> int:
    """The crop size of ``epoch``; a callable's answer is checked (an int >= 1), naming the epoch."""
    if isinstance(image_size, numbers.Integral):
        return int(image_size)
    size = image_size(epoch)
    if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < 1:
        raise ValueError(f"image_size schedule gave {size!r} for epoch {epoch}: expected an int >= 1")
    return int(size)


def describe(image_size: Size):
    """What the resume identity records: the int, the schedule's numbers, or a callable's name (a state resumes
    only a loader with the same schedule)."""
    if isinstance(image_size, numbers.Integral):
        return int(image_size)
    if isinstance(image_size, ResolutionSchedule):
        return {"schedule": asdict(image_size)}
    return {"callable": f"{getattr(image_size, '__module__', '?')}.{getattr(image_size, '__qualname__', '?')}"}
