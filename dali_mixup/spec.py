"""``LoaderSpec``: every option of a DALI loader, validated once, with the argument's name in each error.

``create_dali_loader`` turns its keyword arguments into a spec (``LoaderSpec.from_args``); the loader, its
pipelines and its resume identity all read the spec. Which options decide the stream of batches (which samples,
how augmented and mixed) is marked on the fields themselves (``identity=True``): ``identity`` is derived from
those marks, so a new option is in the resume identity by being declared so, not by a hand-written list.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import numbers
import os
import warnings
from dataclasses import dataclass, field
from typing import Mapping, Optional, Tuple

import torch

from .augment import check_augment
from .checks import flag, integer, one_of, probability
from .config import DTYPES, LAYOUTS, MixupConfig, check_normalization
from .resolution import Size, check_size, describe, size_at, sizes_at

__all__ = ["LoaderSpec", "BACKENDS", "DEVICES", "PLACEMENTS", "TARGETS", "DALI_SEED_MAX", "pipeline_seed"]

BACKENDS = ("fused", "dali", "none")
PLACEMENTS = ("epilogue", "graph")  # where the fused kernels run: after DALI's iterator, or inside the pipeline
DEVICES = ("auto", "gpu", "cpu")
TARGETS = ("soft", "index", "compact")
#: The largest seed DALI takes (an int64).
DALI_SEED_MAX = 2**63 - 1


def pipeline_seed(seed: int, shard_id: int) -> int:
    """in: the loader's seed, the rank -> out: the seed of that rank's pipeline (augmentations differ per rank)."""
    return seed + 7919 * shard_id


def _id(**kw):
    return field(metadata={"identity": True}, **kw)


@dataclass(frozen=True)
class LoaderSpec:
    """A DALI loader's options, checked (see ``create_dali_loader`` for their meanings). ``device`` is resolved
    ("gpu" or "cpu"), ``backend`` is "none" when ``mixup`` is None, ``augment`` holds the training augmentation
    and evaluation resize options (``augment.check_augment``'s, with scale, ratio, hflip, exif_orientation)."""

    batch_size: int = _id()
    num_classes: int = field()
    train: bool = _id()
    image_size: Size = field(metadata={"identity": True, "describe": describe})
    mixup: Optional[MixupConfig] = _id()
    backend: str = _id()
    placement: str = _id()
    device: str = _id()
    seed: int = _id()
    shard_id: int = _id()
    num_shards: int = _id()
    targets: str = _id()
    augment: Mapping = _id()
    mixup_off_epoch: Optional[int] = _id(default=None)
    device_id: Optional[int] = None
    num_threads: int = 4
    out_dtype: torch.dtype = torch.float32
    layout: str = "NCHW"
    mean: Tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: Tuple[float, float, float] = (0.229, 0.224, 0.225)
    zero_copy: bool = False
    skip_corrupt: bool = False
    record: bool = False

    @property
    def mixed_in_graph(self) -> bool:
        """Whether the batches come out of the DALI graph finished (backends dali/none, placement graph)."""
        return self.backend != "fused" or self.placement == "graph"

    def size_at(self, epoch: int) -> int:
        """The crop size of ``epoch`` (``image_size`` may be a schedule: see ``resolution``)."""
        return size_at(self.image_size, epoch)

    def sizes_at(self, epoch: int) -> Tuple[int, ...]:
        """The crop sizes ``epoch``'s batches take (more than one: a size per batch; see ``resolution``)."""
        return sizes_at(self.image_size, epoch)

    @property
    def torch_device(self) -> torch.device:
        return torch.device("cuda", self.device_id) if self.device == "gpu" else torch.device("cpu")

    @functools.cached_property
    def _no_mix(self) -> MixupConfig:
        return self.mixup.no_mix() if self.mixup is not None else MixupConfig(self.num_classes, mixup_alpha=0.0)

    def no_mix(self) -> MixupConfig:
        """The config of a batch that is not mixed (plain normalisation, smoothed one-hot targets); made once (a
        batch asks it whenever mixing is off)."""
        return self._no_mix

    def identity(self) -> dict:
        """The options marked ``identity``, as plain JSON data (a state saved with torch.save or json compares
        equal). Not in it: threads, dtype, layout, mean, std, zero-copy (the same samples in another form)."""
        out = {}
        for f in dataclasses.fields(self):
            if f.metadata.get("identity"):
                value = getattr(self, f.name)
                if "describe" in f.metadata:
                    value = f.metadata["describe"](value)
                out[f.name] = dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value
        return json.loads(json.dumps(out))

    @classmethod
    def from_args(cls, *, batch_size, num_classes, train, image_size, mixup, backend, device, num_threads, seed,
                  shard_id, num_shards, out_dtype, layout, mean, std, device_id, skip_corrupt, scale, ratio, hflip,
                  targets, interpolation, color_jitter, auto_augment, re_prob, re_mode, re_count, crop_pct,
                  val_resize_size, placement, zero_copy, exif_orientation, mixup_off_epoch,
                  record=False) -> "LoaderSpec":
        """``create_dali_loader``'s keyword arguments -> the spec; raises naming the argument."""
        batch_size, num_classes, num_threads = (
            integer(name, value, 1) for name, value in (("batch_size", batch_size), ("num_classes", num_classes),
                                                        ("num_threads", num_threads)))
        image_size = check_size(image_size, flag("train", train))
        one_of("backend", backend, BACKENDS)
        one_of("device", device, DEVICES)
        one_of("layout", layout, LAYOUTS)
        one_of("placement", placement, PLACEMENTS)
        if out_dtype not in DTYPES.values():
            raise ValueError(f"out_dtype must be torch.float32, torch.float16 or torch.bfloat16, got {out_dtype}")
        if placement == "graph" and backend != "fused":
            raise ValueError(f"placement='graph' places the fused kernels: it needs backend='fused', got {backend!r}")
        _check_mixup(mixup, num_classes)
        for name, value in (("skip_corrupt", skip_corrupt), ("zero_copy", zero_copy),
                            ("exif_orientation", exif_orientation), ("record", record)):
            flag(name, value)
        mean, std = check_normalization(mean, std)
        augment = _augment(max(sizes_at(image_size, 0)), train, scale, ratio, hflip, exif_orientation, dict(
            interpolation=interpolation, color_jitter=color_jitter, auto_augment=auto_augment, re_prob=re_prob,
            re_mode=re_mode, re_count=re_count, crop_pct=crop_pct, val_resize_size=val_resize_size))
        targets = _check_targets(targets, train, mixup)
        _check_drawn_here(targets, record, mixup, backend, placement)
        shard_id, num_shards = _default_shards(shard_id, num_shards)
        # DALI takes an int64 seed; rank r's pipeline uses pipeline_seed(seed, r)
        seed = integer("seed", seed, 0, DALI_SEED_MAX - pipeline_seed(0, num_shards - 1))
        if mixup_off_epoch is not None:
            mixup_off_epoch = integer("mixup_off_epoch", mixup_off_epoch, 0)
        if device == "auto":
            device = "gpu" if torch.cuda.is_available() else "cpu"
        device_id = cuda_device_id(device_id) if device == "gpu" else None
        return cls(batch_size=batch_size, num_classes=num_classes, train=train, image_size=image_size,
                   mixup=mixup, backend=backend if mixup is not None else "none", placement=placement,
                   device=device, seed=seed, shard_id=shard_id, num_shards=num_shards, targets=targets,
                   augment=augment, mixup_off_epoch=mixup_off_epoch, device_id=device_id, num_threads=num_threads,
                   out_dtype=out_dtype, layout=layout, mean=mean, std=std, zero_copy=zero_copy,
                   skip_corrupt=skip_corrupt, record=record)


def _pair(name, value) -> Tuple[float, float]:
    """in: (low, high) -> out: a tuple of two finite floats with 0 < low <= high; else an error naming ``name``."""
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a pair of numbers (low, high), got {value!r}") from None
    if not (math.isfinite(high) and 0 < low <= high):
        raise ValueError(f"{name} must be an increasing pair of positive numbers, got {value!r}")
    return low, high


def _check_mixup(mixup, num_classes) -> None:
    if mixup is None:
        return
    if not isinstance(mixup, MixupConfig):
        raise TypeError(f"mixup must be a MixupConfig or None, got {type(mixup).__name__}")
    if mixup.num_classes != num_classes:
        raise ValueError(f"mixup.num_classes={mixup.num_classes} differs from num_classes={num_classes}")


def _augment(image_size, train, scale, ratio, hflip, exif_orientation, options) -> dict:
    scale, ratio = _pair("scale", scale), _pair("ratio", ratio)
    if scale[1] > 1:
        raise ValueError(f"scale must lie in (0, 1], got {scale!r}")
    hflip = probability("hflip", hflip)
    checked = check_augment(image_size=image_size, train=train, **options)
    # exif_orientation decides the pixels: part of the stream's identity
    return dict(scale=scale, ratio=ratio, hflip=hflip, **checked, exif_orientation=exif_orientation)


def _check_targets(targets: Optional[str], train: bool, mixup: Optional[MixupConfig]) -> str:
    """None -> "soft" (training) / "index" (evaluation); index targets cannot carry a training loader's mixing."""
    if targets is None:
        return "soft" if train else "index"
    if targets not in TARGETS:
        raise ValueError(f"targets must be one of {TARGETS} or None, got {targets!r}")
    if targets == "index" and train and mixup is not None:
        raise ValueError("targets='index' with mixup on a training loader: class indices cannot carry mixed or "
                         "smoothed targets; pass mixup=None (and smooth in the loss) or targets='soft'")
    return targets


def _check_drawn_here(targets, record, mixup, backend, placement) -> None:
    """Compact targets and the mixing record come from the parameters the loader draws for its epilogue; where
    DALI mixes inside the graph (backend "dali", placement "graph") the parameters are drawn there, prefetched
    batches ahead of the loader's own mixing switch, so the two could disagree: refused by name."""
    if mixup is None or (backend == "fused" and placement == "epilogue"):
        return
    for name, asked in (("targets='compact'", targets == "compact"), ("record=True", record)):
        if asked:
            raise ValueError(f"{name} needs the fused epilogue (backend='fused', placement='epilogue'), where the "
                             f"loader draws each batch's parameters; got backend={backend!r}, "
                             f"placement={placement!r}")


def _default_shards(shard_id, num_shards) -> Tuple[int, int]:
    if shard_id is None and num_shards is None:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_rank(), torch.distributed.get_world_size()
        return 0, 1
    if shard_id is None or num_shards is None:
        raise ValueError("shard_id and num_shards must be given together (or both left to torch.distributed)")
    num_shards = integer("num_shards", num_shards, 1)
    if isinstance(shard_id, bool) or not isinstance(shard_id, numbers.Integral) or not 0 <= shard_id < num_shards:
        raise ValueError(f"shard_id must be an int in [0, num_shards={num_shards}), got {shard_id!r}")
    return int(shard_id), num_shards


def cuda_device_id(device_id: Optional[int]) -> int:
    """The GPU the loader decodes on and hands its batches to: ``device_id``, else torch's current device (what a
    training script selected with ``torch.cuda.set_device``, and the only GPU of a rank that sees one through
    ``CUDA_VISIBLE_DEVICES``). ``LOCAL_RANK`` is not used to choose: it only prompts a warning when it disagrees."""
    if not torch.cuda.is_available():
        raise ValueError("device='gpu' but torch sees no CUDA device")
    count = torch.cuda.device_count()
    if device_id is None:
        device_id = torch.cuda.current_device()
        local_rank = os.environ.get("LOCAL_RANK")
        if count > 1 and local_rank is not None and local_rank != str(device_id):
            warnings.warn(f"LOCAL_RANK={local_rank} but torch's current device is cuda:{device_id}: the loader uses "
                          f"cuda:{device_id}; call torch.cuda.set_device(local_rank) before building it (or pass "
                          f"device_id) to use another", stacklevel=4)
    if isinstance(device_id, bool) or not isinstance(device_id, int) or not 0 <= device_id < count:
        raise ValueError(f"device_id must be an int in [0, torch.cuda.device_count()={count}), got {device_id!r}")
    return device_id
