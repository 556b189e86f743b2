"""The DALI graph: one definition, parametrised by device ("gpu": mixed JPEG decode on the GPU; "cpu": a
CPU-only pipeline, device_id=None), so CPU CI runs the same code as a GPU machine.

in:  encoded images (ImageFolder / file list via readers.file, or WebDataset shards).
Training: random-resized crop (``scale``, ``ratio``, ``interpolation``), then the augmentations of
``augment.train_augment`` (auto_augment, colour jitter, random erasing) on the uint8 crop; the flip is a flag.
Evaluation: resize the shorter side to ``augment.eval_resize_size`` and crop the centre; nothing random.

out: backend "fused": ``images`` uint8 (B, size, size, 3) HWC RGB crops (unflipped), ``labels`` int64 (B,),
     ``flip`` bool (B,); the fused kernel runs on these in the iterator (epilogue), flip included. With a
     ``mix_step`` (placement "graph") the kernels run inside the graph instead (``dali.mix``): ``images``
     normalised as below, ``labels``, ``targets``.
     backend "dali" / "none": ``images`` float16/float32 (B, 3, size, size) or (B, size, size, 3), normalised
     by crop_mirror_normalize (flip included), ``labels``, ``targets`` float32 (B, C); "dali" mixes with DALI's
     own operators first (the baseline and a test oracle), "none" is plain DALI without mixing.
"""

from __future__ import annotations

from functools import partial
from typing import Callable, Optional

import numpy as np

from . import augment as aug
from .config import MixupConfig
from .dali import import_dali
from .datasets import Dataset
from .order import reorder
from .params import batch_key, sample_params
from .shards import WDS_IMAGE_EXT, WDS_LABEL_EXT, parse_label

__all__ = ["build_pipeline", "import_dali", "pipeline_seed", "DALI_SEED_MAX"]

#: The largest seed DALI takes (an int64).
DALI_SEED_MAX = 2**63 - 1

# Preallocation hints of DALI's ResNet-50 example, for the mixed (GPU) decoder.
_GPU_DECODER_HINTS = dict(device_memory_padding=211025920, host_memory_padding=140544512, hw_decoder_load=0.65)
_SHUFFLE_BUFFER = 1024  # WebDataset only: samples shuffled within this buffer (a tar is read in order)


def pipeline_seed(seed: int, shard_id: int) -> int:
    """in: the loader's seed, the rank -> out: the seed of that rank's pipeline (augmentations differ per rank)."""
    return seed + 7919 * shard_id


def _parse_cls(cls_bytes, num_classes):
    """WebDataset ``.cls`` member (ASCII digits) -> int64 label, checked against [0, num_classes) when the sample
    is read (the shard may have changed since the scan; the loader then names the shard and key)."""
    text = bytes(cls_bytes).decode("ascii", "replace")
    return np.array(parse_label(text, "a WebDataset .cls member", num_classes or None), dtype=np.int64)


class MixParamSource:
    """External source of the ``dali`` backend: per batch, the parameters of ``sample_params`` for the key
    (seed, epoch, step, rank), as the per-sample arguments DALI's operators take. The pipeline runs
    ``runs_per_epoch`` batches per epoch (the last one padded); run k of a pipeline built for epoch
    ``first_epoch`` is the batch ``params.batch_key(k, runs_per_epoch, first_epoch)``. DALI passes k (its
    ``BatchInfo.iteration``) and keeps it in its checkpoint, so a pipeline restored from one continues."""

    def __init__(self, cfg: MixupConfig, batch_size: int, size: int, seed: int, rank: int, runs_per_epoch: int,
                 first_epoch: int = 0):
        self.cfg, self.batch_size, self.size = cfg, batch_size, size
        self.seed, self.rank, self.runs_per_epoch, self.first_epoch = seed, rank, runs_per_epoch, first_epoch
        self.enabled = lambda epoch: True

    def __call__(self, info):
        epoch, step = batch_key(info.iteration, self.runs_per_epoch, self.first_epoch)
        n, s = self.batch_size, self.size
        cfg = self.cfg if self.enabled(epoch) else self.cfg.no_mix()
        p = sample_params(cfg, n, s, s, seed=self.seed, epoch=epoch, step=step, rank=self.rank)
        partner = [np.array(v, np.int32) for v in p.partner]
        lam = [np.array(v, np.float32) for v in p.lam]
        ids, anchors, shapes = [], [], []
        for i in range(n):
            y0, y1, x0, x1 = (int(v) for v in p.box[i])
            whole = ([i], [[0, 0]], [[s, s]])
            if p.use_cutmix[i] and y1 > y0 and x1 > x0:  # paste the box from the partner over the whole self
                whole = ([i, int(p.partner[i])], [[0, 0], [y0, x0]], [[s, s], [y1 - y0, x1 - x0]])
            ids.append(np.array(whole[0], np.int32))
            anchors.append(np.array(whole[1], np.int32))
            shapes.append(np.array(whole[2], np.int32))
        cut = [np.array(1.0 if c else 0.0, np.float32) for c in p.use_cutmix]
        return partner, lam, cut, ids, anchors, shapes


def build_pipeline(dataset: Dataset, *, batch_size: int, train: bool, image_size: int, device: str,
                   num_threads: int, seed: int, shard_id: int, num_shards: int, device_id: Optional[int],
                   backend: str, mix_source: Optional[MixParamSource] = None, num_classes: int = 0,
                   label_smoothing: float = 0.0, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
                   out_dtype: str = "float16", layout: str = "NCHW", checkpoint: Optional[str] = None,
                   prefetch_queue_depth: int = 2, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), hflip: float = 0.5,
                   interpolation: str = "bilinear", color_jitter=None, auto_augment: Optional[str] = None,
                   re_prob: float = 0.0, re_mode: str = "const", re_count: int = 1, crop_pct: float = 0.875,
                   val_resize_size: Optional[int] = None, mix_step: Optional[Callable] = None,
                   order: Optional[np.ndarray] = None, exif_orientation: bool = False):
    """Build (not yet started) the DALI pipeline of one split. See the module docstring for its outputs; the
    augmentation options are ``augment.check_augment``'s (validated there).

    ``order``: a permutation of the files (ImageFolder, file list) or of the shards (WebDataset) that the reader
    reads in (``order.epoch_order``), or None: the dataset's order. Files are read exactly in it (reader shuffle
    off); WebDataset shards are read in it and their samples shuffled in a ``_SHUFFLE_BUFFER`` buffer (training).
    ``exif_orientation``: rotate/flip images by their EXIF orientation tag when decoding (DALI's default); False,
    torchvision's ``ImageFolder`` behaviour (PIL's loader ignores the tag): the pixels as stored.

    ``mix_step``: backend "fused" only, callable(images, labels, flip=) -> (images, targets) DataNodes that mixes
    inside the graph (a ``dali.mix`` with its arguments bound); None: the iterator's epilogue mixes."""
    fn, pipeline_def, types = import_dali()
    augment = dict(interpolation=interpolation, color_jitter=color_jitter, auto_augment=auto_augment,
                   re_prob=re_prob, re_mode=re_mode, re_count=re_count)
    decode_device = "mixed" if device == "gpu" else "cpu"
    hints = _GPU_DECODER_HINTS if device == "gpu" else {}
    reader_seed = seed  # WebDataset: the same shuffle on every rank (shards are slices of it); augmentations per rank

    @pipeline_def(batch_size=batch_size, num_threads=num_threads, device_id=device_id,
                  seed=pipeline_seed(seed, shard_id), enable_checkpointing=True,
                  prefetch_queue_depth=prefetch_queue_depth,
                  enable_conditionals=train and aug.needs_conditionals(augment))
    def graph():
        common = dict(shard_id=shard_id, num_shards=num_shards, pad_last_batch=True, name="Reader",
                      seed=reader_seed, dont_use_mmap=True)
        if dataset.kind == "webdataset":
            paths = reorder(dataset.shards, order) if order is not None else dataset.shards
            encoded, cls = fn.readers.webdataset(paths=paths, ext=[WDS_IMAGE_EXT, WDS_LABEL_EXT],
                                                 missing_component_behavior="skip", random_shuffle=train,
                                                 initial_fill=_SHUFFLE_BUFFER, **common)
            # member groups with neither an image nor a label are skipped (the scan counts them as ignored; it
            # refuses a sample with one and not the other), so the reader's count equals the scan's
            labels = fn.python_function(cls, function=partial(_parse_cls, num_classes=num_classes), num_outputs=1)
        else:
            files, file_labels = dataset.files, dataset.labels
            if order is not None:
                files, file_labels = reorder(files, order), reorder(file_labels, order)
            # files=: every path as given (a file_list would drop lines starting with '#'); the order is ours
            encoded, labels = fn.readers.file(files=files, labels=file_labels, random_shuffle=False, **common)
        if train:
            images = fn.decoders.image_random_crop(encoded, device=decode_device, output_type=types.RGB,
                                                   random_area=tuple(scale), random_aspect_ratio=tuple(ratio),
                                                   num_attempts=10, adjust_orientation=exif_orientation,
                                                   **hints)
            images = aug.resize(images, size=image_size, interpolation=interpolation)
            flip = fn.random.coin_flip(probability=hflip, dtype=types.BOOL)
            images = aug.train_augment(images, size=image_size, augment=augment, mean=mean, std=std)
        else:
            images = fn.decoders.image(encoded, device=decode_device, output_type=types.RGB,
                                       adjust_orientation=exif_orientation, **hints)
            images = aug.resize_and_centre_crop(images, encoded, size=image_size, interpolation=interpolation,
                                                shorter=aug.eval_resize_size(image_size, crop_pct, val_resize_size),
                                                exif_orientation=exif_orientation)
            flip = fn.random.coin_flip(probability=0.0, dtype=types.BOOL)
        labels = fn.cast(labels, dtype=types.INT64)
        if backend == "fused":
            if mix_step is not None:  # placement "graph"
                mixed, targets = mix_step(images, labels, flip=flip)
                return mixed, fn.reshape(labels, shape=[]), targets
            return images, fn.reshape(labels, shape=[]), flip
        return _dali_ops(fn, types, images, labels, flip, mix_source if backend == "dali" else None,
                         num_classes, label_smoothing, mean, std, out_dtype, layout)

    kwargs = {"checkpoint": checkpoint} if checkpoint else {}
    return graph(**kwargs)


def _dali_ops(fn, types, images, labels, flip, source, num_classes, smoothing, mean, std, out_dtype, layout):
    """Everything with DALI's own operators: with a ``source``, Mixup/CutMix by permute_batch + arithmetic and
    multi_paste (each a full pass over the batch: the baseline the fused kernel beats); then (always)
    crop_mirror_normalize and one_hot soft targets. Without a source this is plain DALI (backend "none")."""
    off = smoothing / num_classes
    on = 1.0 - smoothing + off
    one_hot = fn.one_hot(labels, num_classes=num_classes, on_value=on, off_value=off)
    dali_dtype = {"float32": types.FLOAT, "float16": types.FLOAT16, "bfloat16": types.FLOAT}[out_dtype]
    normalize = dict(dtype=dali_dtype, output_layout="CHW" if layout == "NCHW" else "HWC",
                     mean=[m * 255 for m in mean], std=[s * 255 for s in std])
    if source is None:
        images = fn.crop_mirror_normalize(images, mirror=fn.cast(flip, dtype=types.INT32), **normalize)
        return images, fn.reshape(labels, shape=[]), one_hot
    partner, lam, cut, ids, anchors, shapes = fn.external_source(source=source, num_outputs=6, batch=True,
                                                                        batch_info=True)
    lam_t, cut_t = lam, cut  # per-sample scalars; arithmetic needs them where the images are
    if images.device == "gpu":
        lam_t, cut_t = lam.gpu(), cut.gpu()
    images = fn.flip(images, horizontal=fn.cast(flip, dtype=types.INT32))
    other = fn.permute_batch(images, indices=partner)
    mixed = images * lam_t + other * (1.0 - lam_t)
    pasted = fn.multi_paste(images, in_ids=ids, in_anchors=anchors, shapes=shapes, out_anchors=anchors,
                            dtype=types.FLOAT)
    mixed = pasted * cut_t + mixed * (1.0 - cut_t)
    images = fn.crop_mirror_normalize(mixed, **normalize)
    targets = one_hot * lam + fn.permute_batch(one_hot, indices=partner) * (1.0 - lam)
    return images, fn.reshape(labels, shape=[]), targets
