"""Loaders built from the arguments of timm's ``train.py`` and torchvision's ``references/classification/train.py``,
so that each script's patch is a few lines (README, "Recipes").

Each builder reads the script's own options with the script's meanings and refuses, by name, an option whose
non-default value the loader cannot honour (rather than training silently with something else).
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Optional

import torch

from .config import DTYPES, MixupConfig
from .datasets import find_classes
from .loader import DaliMixupLoader, create_dali_loader
from .resolution import PerBatchSizes

__all__ = ["from_timm_args", "from_torchvision_args"]

_MODEL_DTYPES = {None: DTYPES["float32"], "": DTYPES["float32"], **DTYPES}  # timm's --model-dtype


def _source(data):
    """A path, a list of shards, or the script's dataset object for the split -> what create_dali_loader reads."""
    if isinstance(data, (str, os.PathLike, list, tuple)):
        return data
    reader_root = getattr(getattr(data, "reader", None), "root", None)  # timm's ImageDataset (folder reader)
    root = reader_root if reader_root is not None else getattr(data, "root", None)  # torchvision's ImageFolder
    if not isinstance(root, (str, os.PathLike)) or not os.path.isdir(root):
        raise ValueError(f"data: a {type(data).__name__} that does not read an image folder; pass the folder, a "
                         "file list or WebDataset shards instead")
    return root


def _device(device) -> dict:
    """The script's device ('cuda', 'cuda:1', 'cpu', torch.device) -> create_dali_loader's device/device_id."""
    device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        return dict(device="gpu", device_id=device.index)
    return dict(device="cpu")


def _refuse(options: Mapping[str, Any], args, script: str) -> None:
    """ValueError naming the first option of ``args`` whose value is not its default and cannot be honoured."""
    for name, (is_default, why) in options.items():
        value = getattr(args, name, None)
        if not is_default(value):
            raise ValueError(f"{script} option {name}={value!r} is not supported by the DALI loader: {why}")


def _square(input_size) -> int:
    channels, height, width = input_size
    if channels != 3 or height != width:
        raise ValueError(f"data_config input_size={tuple(input_size)}: the DALI loader makes square RGB batches")
    return int(height)


_TIMM_UNSUPPORTED = {
    "no_aug": (lambda v: not v, "timm's no-aug transform (resize + centre crop) is not a loader mode"),
    "vflip": (lambda v: not v, "there is no vertical flip"),
    "train_crop_mode": (lambda v: v in (None, "rrc"), "only the random-resized crop ('rrc')"),
    "color_jitter_prob": (lambda v: v is None, "colour jitter is applied to every sample"),
    "grayscale_prob": (lambda v: not v, "there is no random grayscale"),
    "gaussian_blur_prob": (lambda v: not v, "there is no random blur"),
    "aug_splits": (lambda v: not v, "augmentation splits (AugMix/JSD) are not supported"),
    "aug_repeats": (lambda v: not v, "repeated augmentation is not supported"),
    "jsd_loss": (lambda v: not v, "JSD needs augmentation splits"),
    "resplit": (lambda v: not v, "random erasing has no clean split"),
    "naflex_loader": (lambda v: not v, "NaFlex variable-resolution batches are not supported"),
    "epoch_repeats": (lambda v: not v, "an epoch is one pass over the data"),
    "train_batches_per_epoch": (lambda v: v is None, "an epoch is one pass over the data"),
}


def per_batch_sizes(args) -> Optional[PerBatchSizes]:
    """timm's scheduled-resolution options of ``args`` (``train_img_sizes``, ``train_size_probs``,
    ``train_size_schedule`` over ``epochs``, ``train_size_schedule_spread``, ``train_size_random_mix``: timm's
    train.py's names, which ``dali-mixup train`` shares) -> a ``PerBatchSizes``, or None without
    ``train_img_sizes``. A bad value raises PerBatchSizes' ValueError (the caller names its flags)."""
    sizes = getattr(args, "train_img_sizes", None)
    if sizes is None:
        return None
    probs, schedule = args.train_size_probs, args.train_size_schedule
    return PerBatchSizes(tuple(sizes), probs=tuple(probs) if probs else None, schedule=schedule,
                         epochs=args.epochs if schedule == "progressive" else None,
                         spread=args.train_size_schedule_spread, random_mix=args.train_size_random_mix)


def _timm_sizes(args, size: int):
    """``--train-img-sizes`` and its options -> a ``PerBatchSizes`` (timm's ScheduledBatchSampler's choices), or
    ``size`` without them. ``--train-batch-sizes`` other than ``--batch-size`` are refused: DALI's readers fill
    every run with the pipeline's batch size (a batch size per run needs a Python stage feeding the graph)."""
    sizes = getattr(args, "train_img_sizes", None)
    if sizes is None:
        return size
    batch_sizes = getattr(args, "train_batch_sizes", None)
    if batch_sizes and any(b != args.batch_size for b in batch_sizes):
        raise ValueError(f"timm option train_batch_sizes={batch_sizes!r} is not supported by the DALI loader: every "
                         f"batch has --batch-size {args.batch_size} images (DALI's readers fill each run with the "
                         "pipeline's batch size); the per-batch image sizes are supported")
    try:
        return per_batch_sizes(args)
    except ValueError as exc:
        raise ValueError(f"timm options train_img_sizes={list(sizes)!r}, train_size_*: {exc}") from exc


def from_timm_args(args, data_config: Mapping[str, Any], mixup_args: Optional[Mapping[str, Any]] = None, *,
                   train: bool, data, **overrides) -> DaliMixupLoader:
    """The train or eval loader timm's ``train.py`` would build, as a DaliMixupLoader.

    in: ``args`` (train.py's parsed namespace), ``data_config`` (``resolve_data_config(vars(args), model=model)``:
    input_size, interpolation, mean, std, crop_pct), ``mixup_args`` (train.py's dict; empty or None: no mixing),
    ``data`` (the split's folder, file list or shards, or timm's folder dataset for it); ``overrides``: any
    create_dali_loader argument (e.g. ``out_dtype``, ``layout``; for the eval loader
    ``classes=loader_train.dataset.classes``, so val/'s folders are numbered as train/'s).
    -> training: timm's random-resized crop (``--scale``, ``--ratio``) to the model's size or, with
    ``--train-img-sizes``, a size per batch as timm's scheduled sampler chooses it (``--train-size-probs``,
    ``--train-size-schedule``, ``--train-size-schedule-spread``, ``--train-size-random-mix``, over ``--epochs``,
    seeded by ``--seed``), ``--hflip``, ``--train-interpolation``,
    ``--aa``, ``--color-jitter`` (off under ``--aa``, as in timm), ``--reprob``/``--remode``/``--recount``, and
    Mixup/CutMix from ``mixup_args`` with ``--mixup-off-epoch``; targets soft when mixing, else class indices
    (for timm's LabelSmoothingCrossEntropy). Evaluation: resize to input_size / crop_pct, centre crop, the
    model's interpolation, class indices (for ``accuracy``). Images in ``--model-dtype`` (float32 by default) on
    ``args.device``, one DALI thread per ``--workers``, seeded by ``--seed``; shards from torch.distributed.
    """
    size = _square(data_config["input_size"])
    if data_config.get("crop_mode") not in (None, "center"):
        raise ValueError(f"data_config crop_mode={data_config['crop_mode']!r}: only 'center' is supported")
    kw = dict(num_classes=args.num_classes, image_size=size, mean=tuple(data_config["mean"]),
              std=tuple(data_config["std"]), num_threads=max(1, args.workers), seed=args.seed,
              out_dtype=_MODEL_DTYPES[getattr(args, "model_dtype", None)], **_device(getattr(args, "device", None)))
    mixup = None
    if train:
        _refuse(_TIMM_UNSUPPORTED, args, "timm")
        mixup = MixupConfig(**mixup_args) if mixup_args else None
        aa = args.aa or None
        off = getattr(args, "mixup_off_epoch", 0)  # timm switches its own Mixup off; this covers --no-prefetcher
        kw.update(train=True, batch_size=args.batch_size, image_size=_timm_sizes(args, size), mixup=mixup,
                  targets="soft" if mixup else "index",
                  mixup_off_epoch=off if mixup is not None and off else None,
                  scale=tuple(args.scale), ratio=tuple(args.ratio), hflip=args.hflip,
                  interpolation=args.train_interpolation or data_config["interpolation"], auto_augment=aa,
                  color_jitter=None if aa else args.color_jitter,  # timm turns colour jitter off under --aa
                  re_prob=args.reprob, re_mode=args.remode, re_count=args.recount)
    else:
        kw.update(train=False, batch_size=getattr(args, "validation_batch_size", None) or args.batch_size,
                  interpolation=data_config["interpolation"], crop_pct=data_config["crop_pct"])
    kw.update(overrides)
    return create_dali_loader(_source(data), **kw)


_TORCHVISION_UNSUPPORTED = {
    "ra_sampler": (lambda v: not v, "the repeated-augmentation sampler is not supported"),
}


def _torchvision_eval(args) -> dict:
    """torchvision's eval preprocessing: ``--val-resize-size``/``--val-crop-size``/``--interpolation``, or the
    transforms of ``--weights`` when given (as the script does)."""
    if not getattr(args, "weights", None):
        return dict(image_size=args.val_crop_size, val_resize_size=args.val_resize_size,
                    interpolation=args.interpolation)
    import torchvision
    preset = torchvision.models.get_weight(args.weights).transforms()
    return dict(image_size=preset.crop_size[0], val_resize_size=preset.resize_size[0],
                interpolation=preset.interpolation.value, mean=tuple(preset.mean), std=tuple(preset.std))


def _class_folders(data, classes) -> int:
    """The number of classes: that of ``classes`` (names, or a dict name -> index) when given, else the class
    folders of ``data`` (the loader's rule: folders whose name starts with "." are not classes)."""
    if classes is not None:
        return max(classes.values()) + 1 if isinstance(classes, Mapping) and classes else len(classes)
    if isinstance(data, (str, os.PathLike)) and os.path.isdir(data):
        try:
            return len(find_classes(data))
        except ValueError:
            pass
    raise ValueError(f"data={data!r}: give num_classes (no class sub-folders to count)")


def from_torchvision_args(args, *, train: bool, data, num_classes: Optional[int] = None,
                          **overrides) -> DaliMixupLoader:
    """The train or eval loader torchvision's ``references/classification/train.py`` would build.

    in: ``args`` (the script's parsed namespace), ``data`` (``train_dir`` / ``val_dir``, or its ImageFolder),
    ``num_classes`` (default: the class folders of ``data``, or the number of ``classes``); ``overrides``: any
    create_dali_loader argument — for the eval loader, ``classes=data_loader.dataset.classes`` numbers val/'s
    folders as train/'s (torchvision's script numbers them apart: a val/ lacking a class shifts later labels).
    -> training: random-resized crop to ``--train-crop-size`` with ``--interpolation``, flip 0.5,
    ``--auto-augment`` (ra, ta_wide, imagenet, cifar10, svhn; augmix refused), ``--random-erase`` (torchvision's
    constant fill), and ``--mixup-alpha``/``--cutmix-alpha`` (one of the two per batch, as the script's
    RandomChoice) with soft targets; class indices when not mixing. Label smoothing stays in the script's
    ``CrossEntropyLoss(label_smoothing=...)``, which takes both. Evaluation: ``--val-resize-size``,
    ``--val-crop-size`` (or ``--weights``' transforms), class indices. On ``args.device``, one DALI thread per
    ``--workers``; shards from torch.distributed.
    """
    _refuse(_TORCHVISION_UNSUPPORTED, args, "torchvision")
    data = _source(data)
    num_classes = num_classes if num_classes is not None else _class_folders(data, overrides.get("classes"))
    kw = dict(num_classes=num_classes, batch_size=args.batch_size, num_threads=max(1, args.workers),
              **_device(getattr(args, "device", None)))
    if train:
        aa = getattr(args, "auto_augment", None)
        if aa == "ra" and getattr(args, "ra_magnitude", 9) != 9:
            raise ValueError(f"torchvision option ra_magnitude={args.ra_magnitude} is not supported by the DALI "
                             "loader: its 'ra' is torchvision's default magnitude 9")
        mixing = args.mixup_alpha > 0 or args.cutmix_alpha > 0
        mixup = MixupConfig(num_classes, mixup_alpha=args.mixup_alpha, cutmix_alpha=args.cutmix_alpha) if mixing \
            else None
        kw.update(train=True, image_size=args.train_crop_size, interpolation=args.interpolation, auto_augment=aa,
                  re_prob=getattr(args, "random_erase", 0.0), mixup=mixup, targets="soft" if mixing else "index")
    else:
        kw.update(train=False, **_torchvision_eval(args))
    kw.update(overrides)
    return create_dali_loader(data, **kw)
