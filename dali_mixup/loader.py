"""``create_dali_loader``: the drop-in replacement for an ImageNet DataLoader.

DALI pipeline (decode, random-resized crop, augmentations, flip flags) -> DALI's iterator (torch tensors on the
training device) -> the fused kernel as the iterator's epilogue (mix + normalise + flip + cast + layout + soft
targets, one kernel each) -> ``(images, targets)``. The loader also has the DataLoader surface training scripts
touch (``sampler.set_epoch``, ``batch_sampler``, ``batch_size``, ``drop_last``, ``dataset``).
"""

from __future__ import annotations

import os
import warnings
from typing import Callable, Optional, Sequence, Union

import numpy as np
import torch

from .augment import check_augment
from .config import IMAGENET_MEAN, IMAGENET_STD, MixupConfig
from .datasets import Dataset, find_corrupt, find_dataset, without_corrupt
from .mixing import LAYOUTS, OUT_DTYPES, mix_batch
from .params import sample_params
from .pipeline import MixParamSource, build_pipeline

__all__ = ["create_dali_loader", "DaliMixupLoader", "BACKENDS", "DEVICES", "TARGETS"]

BACKENDS = ("fused", "dali", "none")
DEVICES = ("auto", "gpu", "cpu")
TARGETS = ("soft", "index")
_DTYPE_NAMES = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16"}


def _positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return value


def _default_shards(shard_id, num_shards):
    if shard_id is None and num_shards is None:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_rank(), torch.distributed.get_world_size()
        return 0, 1
    if shard_id is None or num_shards is None:
        raise ValueError("shard_id and num_shards must be given together (or both left to torch.distributed)")
    _positive_int("num_shards", num_shards)
    if isinstance(shard_id, bool) or not isinstance(shard_id, int) or not 0 <= shard_id < num_shards:
        raise ValueError(f"shard_id must be an int in [0, num_shards={num_shards}), got {shard_id!r}")
    return shard_id, num_shards


class EpochSampler:
    """``loader.sampler``: the part of a DataLoader's sampler that training scripts call. ``set_epoch(epoch)``
    sets the epoch of the loader's next pass (``DistributedSampler.set_epoch``'s meaning: the file order,
    augmentations and mixing of a pass are a function of (seed, epoch, rank)); ``len()`` is the number of samples
    this rank reads per epoch. The order itself is DALI's (its reader shuffles), so there are no indices to list."""

    def __init__(self, loader: "DaliMixupLoader"):
        self._loader = loader

    def set_epoch(self, epoch: int) -> None:
        self._loader.set_epoch(epoch)

    @property
    def epoch(self) -> int:
        return self._loader.epoch

    def __len__(self) -> int:
        return self._loader._shard_size()


class BatchSampler:
    """``loader.batch_sampler``: ``batch_size``, ``drop_last``, ``sampler`` and ``len()`` (batches per epoch)."""

    def __init__(self, loader: "DaliMixupLoader"):
        self._loader = loader
        self.sampler = loader.sampler

    @property
    def batch_size(self) -> int:
        return self._loader.batch_size

    @property
    def drop_last(self) -> bool:
        return self._loader.drop_last

    def __len__(self) -> int:
        return len(self._loader)


class DaliMixupLoader:
    """Iterator over ``(images, targets)``; one pass (``for ... in loader``) is one epoch.

    images: ``out_dtype`` (B, 3, S, S) (NCHW) or (B, S, S, 3), normalised, on the training device.
    targets: ``targets="soft"``: float32 (B, num_classes) (one-hot, smoothed, mixed); ``"index"``: int64 (B,)
    class indices, on the same device.
    Training drops the last partial batch of each rank's shard (like ``drop_last=True``); evaluation keeps it.
    Each training epoch is a fresh DALI pipeline seeded by (seed, epoch, rank), so ``set_epoch(e)`` (or
    ``sampler.set_epoch(e)``) on a new loader reproduces epoch e of an uninterrupted run.
    """

    def __init__(self, dataset: Dataset, *, batch_size, num_classes, train, image_size, mixup, backend, device,
                 num_threads, seed, shard_id, num_shards, out_dtype, layout, mean, std, device_id,
                 scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), hflip=0.5, augment: Optional[dict] = None,
                 targets: str = "soft"):
        self.dataset = dataset
        self.batch_size, self.num_classes, self.train, self.image_size = batch_size, num_classes, train, image_size
        self.mixup, self.backend, self.device_kind = mixup, backend, device
        self.num_threads, self.seed = num_threads, seed
        self.shard_id, self.num_shards = shard_id, num_shards
        self.out_dtype, self.layout, self.mean, self.std = out_dtype, layout, tuple(mean), tuple(std)
        self.device_id = device_id
        self.augment = dict(scale=tuple(scale), ratio=tuple(ratio), hflip=float(hflip), **(augment or {}))
        self.targets = targets
        self.device = torch.device("cuda", device_id) if device == "gpu" else torch.device("cpu")
        self.mixup_enabled = mixup is not None and train
        #: optional callable(epoch) -> bool, consulted at every batch (e.g. ``lambda e: e < off_epoch``)
        self.mixup_schedule: Optional[Callable[[int], bool]] = None
        self.epoch = 0
        self.step = 0
        self._in_epoch = False
        self._no_mix = MixupConfig(num_classes, mixup_alpha=0.0,
                                   label_smoothing=mixup.label_smoothing if mixup is not None else 0.0)
        self.sampler = EpochSampler(self)
        self.batch_sampler = BatchSampler(self)
        self._build()

    @property
    def drop_last(self) -> bool:
        """Training drops each rank's last partial batch, evaluation keeps it (DataLoader's ``drop_last``)."""
        return self.train

    def set_epoch(self, epoch: int) -> None:
        """Make the next pass epoch ``epoch`` (a pass under way that is another epoch's is abandoned; the same
        epoch's continues, so a loader restored mid-epoch by ``load_state_dict`` keeps its place)."""
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"epoch must be an int >= 0, got {epoch!r}")
        if epoch != self.epoch:
            self.epoch, self.step, self._in_epoch = epoch, 0, False

    # -- construction -----------------------------------------------------------------------------------------
    def _shard_size(self):
        n = len(self.dataset)
        return (n * (self.shard_id + 1)) // self.num_shards - (n * self.shard_id) // self.num_shards

    def _runs_per_epoch(self):
        """Pipeline runs per epoch: the shard in batches, the last one padded (even when training drops it)."""
        return -(-max(self._shard_size(), 1) // self.batch_size)

    def _epoch_seed(self) -> int:
        """The DALI seed of this epoch's pipeline (file order, crops, augmentations): a function of (seed, epoch)."""
        if not self.train:
            return self.seed
        return int(np.random.SeedSequence((self.seed, self.epoch)).generate_state(1)[0] >> 2)

    def _build(self, checkpoint: Optional[str] = None):
        """A fresh pipeline for ``self.epoch`` (continuing ``checkpoint``, a DALI checkpoint of it, when given)."""
        from nvidia.dali.plugin.pytorch import DALIGenericIterator, LastBatchPolicy

        self._source = None
        self._built_for, self._started = self.epoch, False
        if self.backend == "dali":
            runs = self._runs_per_epoch()
            self._source = MixParamSource(self.mixup if self.mixup is not None else self._no_mix, self.batch_size,
                                          self.image_size, self.seed, self.shard_id, runs)
            self._source.position = self.epoch * runs + self.step
            self._source.enabled = self._mixing_on
        with warnings.catch_warnings():
            # MixParamSource's position is restored by hand on resume (DALI warns it cannot do that itself)
            warnings.filterwarnings("ignore", message="Checkpointing enabled in a pipeline with external source")
            self._pipe = build_pipeline(
                self.dataset, batch_size=self.batch_size, train=self.train, image_size=self.image_size,
                device=self.device_kind, num_threads=self.num_threads, seed=self._epoch_seed(), shard_id=self.shard_id,
                num_shards=self.num_shards, device_id=self.device_id, backend=self.backend,
                mix_source=self._source, num_classes=self.num_classes,
                label_smoothing=self._no_mix.label_smoothing, mean=self.mean, std=self.std,
                out_dtype=_DTYPE_NAMES[self.out_dtype], layout=self.layout, checkpoint=checkpoint, **self.augment)
            outputs = ["images", "labels", "flip" if self.backend == "fused" else "targets"]
            policy = LastBatchPolicy.DROP if self.train else LastBatchPolicy.PARTIAL
            self._iter = DALIGenericIterator([self._pipe], outputs, reader_name="Reader", last_batch_policy=policy,
                                             auto_reset=False, prepare_first_batch=False)

    # -- mixing switch ----------------------------------------------------------------------------------------
    def _mixing_on(self, epoch: int) -> bool:
        if not self.mixup_enabled or self.mixup is None:
            return False
        return bool(self.mixup_schedule(epoch)) if self.mixup_schedule is not None else True

    # -- iteration --------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._iter)

    def __iter__(self):
        if self._in_epoch:
            return self  # resumed (or interrupted) mid-epoch: continue it
        if self._started or self._built_for != self.epoch:
            self._build()
        self._in_epoch = True
        return self

    def __next__(self):
        self._started = True
        try:
            batch = next(self._iter)[0]
        except StopIteration:
            self._in_epoch = False
            self.epoch += 1
            self.step = 0
            raise
        except RuntimeError as exc:
            raise self._explain(exc) from exc
        if self.backend != "fused":
            images = batch["images"].to(self.device, self.out_dtype, non_blocking=True)
            targets = batch["targets"].to(self.device, torch.float32, non_blocking=True)
        else:
            images_u8, labels, flip = batch["images"], batch["labels"], batch["flip"]
            n, h, w, _ = images_u8.shape
            cfg = self.mixup if self._mixing_on(self.epoch) else self._no_mix
            params = sample_params(cfg, n, h, w, seed=self.seed, epoch=self.epoch, step=self.step,
                                   rank=self.shard_id)
            images, targets = mix_batch(images_u8, labels, cfg, params,
                                        mean=self.mean, std=self.std, out_dtype=self.out_dtype, layout=self.layout,
                                        flip=flip.cpu().numpy(), check_labels=False)
        if self.targets == "index":
            targets = batch["labels"].to(images.device, non_blocking=True)
        self.step += 1
        return images, targets

    def _explain(self, exc: RuntimeError) -> Exception:
        """DALI's decode errors do not name the file: find the culprits (cheap scan) and name them."""
        if self.dataset.kind == "files":
            bad = find_corrupt(self.dataset.files)
            if bad:
                names = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
                return RuntimeError(f"corrupt image(s) in {self.dataset.source}: {names}: the pipeline cannot "
                                    f"decode them (pass skip_corrupt=True to leave such files out). DALI said: {exc}")
        return RuntimeError(f"DALI pipeline failed reading {self.dataset.source}: {exc}")

    # -- resume -----------------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Everything needed to continue the same stream of batches (DALI's reader/RNG checkpoint included)."""
        return {"epoch": self.epoch, "step": self.step, "in_epoch": self._in_epoch, "seed": self.seed,
                "shard_id": self.shard_id, "num_shards": self.num_shards, "batch_size": self.batch_size,
                "mixup_enabled": self.mixup_enabled, "dali": self._iter.checkpoints()[0]}

    def load_state_dict(self, state: dict) -> None:
        for key in ("seed", "shard_id", "num_shards", "batch_size"):
            if state[key] != getattr(self, key):
                raise ValueError(f"state_dict was saved with {key}={state[key]}, this loader has "
                                 f"{key}={getattr(self, key)}")
        self.epoch, self.step, self.mixup_enabled = state["epoch"], state["step"], state["mixup_enabled"]
        self._build(checkpoint=state["dali"] if state["in_epoch"] else None)
        self._in_epoch = state["in_epoch"]


def create_dali_loader(data: Union[str, os.PathLike, Sequence[str]], *, batch_size: int, num_classes: int,
                       train: bool = True, image_size: int = 224, mixup: Optional[MixupConfig] = None,
                       backend: str = "fused", device: str = "auto", num_threads: int = 4, seed: int = 0,
                       shard_id: Optional[int] = None, num_shards: Optional[int] = None,
                       out_dtype: torch.dtype = torch.float32, layout: str = "NCHW",
                       mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                       device_id: Optional[int] = None, skip_corrupt: bool = False,
                       scale: Sequence[float] = (0.08, 1.0), ratio: Sequence[float] = (3 / 4, 4 / 3),
                       hflip: float = 0.5, targets: Optional[str] = None, interpolation: str = "bilinear",
                       color_jitter: Union[None, float, Sequence[float]] = None, auto_augment: Optional[str] = None,
                       re_prob: float = 0.0, re_mode: str = "const", re_count: int = 1, crop_pct: float = 0.875,
                       val_resize_size: Optional[int] = None) -> DaliMixupLoader:
    """A DALI loader of ``(images, targets)`` with Mixup/CutMix fused in (see the README).

    Args:
        data: an ImageFolder directory, a file list (``path label`` lines) or WebDataset shards.
        batch_size, num_classes, image_size: >= 1.
        train: random-resized crop (scale (0.08, 1), ratio (3/4, 4/3)) + the augmentations below + flip +
            shuffling + mixing, last partial batch dropped; False: resize the shorter side to
            floor(image_size / crop_pct) (or ``val_resize_size``), centre crop, no augmentation, no mixing, every
            sample once.
        mixup: a ``MixupConfig`` (its ``num_classes`` must match), or None for no mixing.
        targets: "soft" (float32 (B, num_classes): one-hot, smoothed, mixed) or "index" (int64 (B,) class indices,
            for ``accuracy`` and hard-label losses; not with mixup on a training loader). None: "soft" for
            training, "index" for evaluation.
        backend: "fused" (our kernel), "dali" (DALI's own operators), "none" (no mixing).
        device: "gpu" (mixed decode on the GPU), "cpu" (CPU-only DALI), "auto" (GPU when torch sees one).
        shard_id, num_shards: this rank's shard; default from torch.distributed when initialised.
        out_dtype, layout, mean, std: as ``mix_batch``; float32 by default, as a DataLoader's; float16/bfloat16
            for a model run under AMP (with channels_last: layout "NHWC").
        device_id: the GPU (default: ``LOCAL_RANK`` or torch's current device).
        scale, ratio, hflip: training augmentation, torchvision's ``RandomResizedCrop(scale, ratio)`` and the
            probability of a horizontal flip (timm's names).
        interpolation: "bilinear", "bicubic", "nearest" or (training only) "random" (timm: bilinear or bicubic
            per sample), for the crop's resize (and the eval resize).
        color_jitter: training colour jitter, a number or (brightness, contrast, saturation[, hue]) (timm's
            ``--color-jitter``; torchvision's ColorJitter meaning).
        auto_augment: timm's RandAugment string ("rand-m9-mstd0.5-inc1") or AutoAugment policy ("original",
            "v0", ...), or torchvision's "ra", "ta_wide", "imagenet" (see ``dali_mixup.auto_augment``).
        re_prob, re_mode, re_count: random erasing (timm's ``--reprob``, ``--remode`` const|rand|pixel,
            ``--recount``), on the un-mixed crop (see ``dali_mixup.augment.random_erasing``).
        crop_pct, val_resize_size: evaluation resize (timm's ``crop_pct``; torchvision's ``--val-resize-size``,
            which overrides it).
        skip_corrupt: check every image first (header and end marker) and leave corrupt ones out, logging how
            many (``loader.dataset.skipped``). Default: a corrupt image stops iteration with an error naming it.
    """
    batch_size = _positive_int("batch_size", batch_size)
    num_classes = _positive_int("num_classes", num_classes)
    image_size = _positive_int("image_size", image_size)
    num_threads = _positive_int("num_threads", num_threads)
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
    if out_dtype not in OUT_DTYPES:
        raise ValueError(f"out_dtype must be torch.float32, torch.float16 or torch.bfloat16, got {out_dtype}")
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if mixup is not None:
        if not isinstance(mixup, MixupConfig):
            raise TypeError(f"mixup must be a MixupConfig or None, got {type(mixup).__name__}")
        if mixup.num_classes != num_classes:
            raise ValueError(f"mixup.num_classes={mixup.num_classes} differs from num_classes={num_classes}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")
    for name, pair in (("scale", scale), ("ratio", ratio)):
        if len(pair) != 2 or not 0 < float(pair[0]) <= float(pair[1]):
            raise ValueError(f"{name} must be an increasing pair of positive numbers, got {pair!r}")
    if float(scale[1]) > 1:
        raise ValueError(f"scale must lie in (0, 1], got {scale!r}")
    if not 0.0 <= float(hflip) <= 1.0:
        raise ValueError(f"hflip must be a probability in [0, 1], got {hflip!r}")
    augment = check_augment(image_size=image_size, train=train, interpolation=interpolation,
                            color_jitter=color_jitter, auto_augment=auto_augment, re_prob=re_prob, re_mode=re_mode,
                            re_count=re_count, crop_pct=crop_pct, val_resize_size=val_resize_size)
    targets = _check_targets(targets, train, mixup)
    shard_id, num_shards = _default_shards(shard_id, num_shards)
    if device == "auto":
        device = "gpu" if torch.cuda.is_available() else "cpu"
    if device == "gpu":
        if not torch.cuda.is_available():
            raise ValueError("device='gpu' but torch sees no CUDA device")
        if device_id is None:
            device_id = int(os.environ.get("LOCAL_RANK", torch.cuda.current_device()))
    else:
        device_id = None
    dataset = find_dataset(data, num_classes)
    if skip_corrupt:
        dataset = without_corrupt(dataset)
    return DaliMixupLoader(dataset, batch_size=batch_size, num_classes=num_classes, train=train,
                           image_size=image_size, mixup=mixup, backend=backend if mixup is not None else "none",
                           device=device, num_threads=num_threads, seed=seed, shard_id=shard_id,
                           num_shards=num_shards, out_dtype=out_dtype, layout=layout, mean=mean, std=std,
                           device_id=device_id, scale=scale, ratio=ratio, hflip=hflip, augment=augment,
                           targets=targets)


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
