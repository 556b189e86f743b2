"""The DALI graph: one definition, parametrised by device ("gpu": mixed JPEG decode on the GPU; "cpu": a
CPU-only pipeline, device_id=None), so CPU CI runs the same code as a GPU machine.

in:  encoded images (ImageFolder / file list via readers.file, or WebDataset shards).
Training: random-resized crop (``scale``, ``ratio``, ``interpolation``), then the augmentations of
``augment.train_augment`` (auto_augment, colour jitter, random erasing) on the uint8 crop; the flip is a flag.
With a size per batch (``resolution.PerBatchSizes``) the batch's choice comes from an external source: the
resize takes its size as an argument input, and the augmentations that depend on the size (auto_augment's
translations, random erasing's boxes) are built once per size, as timm builds a transform per size, each batch
going through its size's (DALI conditionals: ``select`` on the choice); without those, no conditionals.
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
from typing import Callable, Optional, Sequence

import numpy as np

from . import augment as aug
from .baselines import MixParamSource, dali_ops
from .dali import import_dali
from .datasets import Dataset
from .order import reorder
from .params import batch_key
from .shards import WDS_IMAGE_EXT, WDS_LABEL_EXT, parse_label
from .spec import LoaderSpec, pipeline_seed

__all__ = ["build_pipeline", "SizeChoice"]

# Preallocation hints of DALI's ResNet-50 example, for the mixed (GPU) decoder.
_GPU_DECODER_HINTS = dict(device_memory_padding=211025920, host_memory_padding=140544512, hw_decoder_load=0.65)
_SHUFFLE_BUFFER = 1024  # WebDataset only: samples shuffled within this buffer (a tar is read in order)


def _parse_cls(cls_bytes, num_classes):
    """WebDataset ``.cls`` member (ASCII digits) -> int64 label, checked against [0, num_classes) when the sample
    is read (the shard may have changed since the scan; the loader then names the shard and key)."""
    text = bytes(cls_bytes).decode("ascii", "replace")
    return np.array(parse_label(text, "a WebDataset .cls member", num_classes or None), dtype=np.int64)


class SizeChoice:
    """External source of a size per batch: the index of each run's crop size, as B int32 scalars. Run k of a
    pipeline built for ``first_epoch`` is the batch ``params.batch_key(k, runs_per_epoch, first_epoch)``;
    ``choices(epoch)``: the index per batch of that epoch (``epochs.size_choices``); a padded run past the
    epoch's batches takes its first batch's. DALI keeps k in its checkpoint, so a restored pipeline continues."""

    def __init__(self, choices: Callable[[int], np.ndarray], batch_size: int, runs_per_epoch: int,
                 first_epoch: int):
        self.choices, self.batch_size = choices, batch_size
        self.runs_per_epoch, self.first_epoch = runs_per_epoch, first_epoch

    def __call__(self, info):
        epoch, step = batch_key(info.iteration, self.runs_per_epoch, self.first_epoch)
        choices = self.choices(epoch)
        return [np.array(choices[step if step < len(choices) else 0], np.int32)] * self.batch_size


def build_pipeline(dataset: Dataset, spec: LoaderSpec, *, sizes: Sequence[int], seed: int, shard_id: int,
                   order: Optional[np.ndarray] = None, checkpoint: Optional[str] = None,
                   size_choice: Optional[SizeChoice] = None, mix_source: Optional[MixParamSource] = None,
                   mix_step: Optional[Callable] = None, prefetch_queue_depth: int = 2):
    """Build (not yet started) the DALI pipeline of one epoch of ``spec`` over ``dataset``. See the module
    docstring for its outputs. ``sizes``: the epoch's crop sizes (``spec.sizes_at(epoch)``), and with more than
    one the ``size_choice`` of each batch; ``seed``: the epoch's seed (the rank is mixed in here); ``shard_id``:
    the shard the reader reads this epoch; ``checkpoint``: a DALI checkpoint of this pipeline to continue from.

    ``order``: a permutation of the files (ImageFolder, file list) or of the shards (WebDataset) that the reader
    reads in (``order.epoch_order``), or None: the dataset's order. Files are read exactly in it (reader shuffle
    off); WebDataset shards are read in it and their samples shuffled in a ``_SHUFFLE_BUFFER`` buffer (training).
    ``spec.augment['exif_orientation']``: rotate/flip images by their EXIF orientation tag when decoding (DALI's
    default); False, torchvision's ``ImageFolder`` behaviour (PIL's loader ignores the tag): the pixels as stored.

    ``mix_step``: backend "fused" only, callable(images, labels, flip=) -> (images, targets) DataNodes that mixes
    inside the graph (a ``dali.mix`` with its arguments bound); None: the iterator's epilogue mixes."""
    fn, pipeline_def, types = import_dali()
    from nvidia.dali.auto_aug.core import select
    opts = spec.augment
    augment = {k: opts[k] for k in ("interpolation", "color_jitter", "auto_augment", "re_prob", "re_mode",
                                    "re_count")}
    train, exif_orientation = spec.train, opts["exif_orientation"]
    decode_device = "mixed" if spec.device == "gpu" else "cpu"
    hints = _GPU_DECODER_HINTS if spec.device == "gpu" else {}
    reader_seed = seed  # WebDataset: the same shuffle on every rank (shards are slices of it); augmentations per rank
    if (len(sizes) > 1) != (size_choice is not None) or (len(sizes) > 1 and not train):
        raise ValueError(f"build_pipeline: sizes={tuple(sizes)} with size_choice={size_choice!r}: more than one "
                         "size needs a size_choice (training only), one size none")

    def augment_at(images, size):  # the augmentations after the crop's resize, for crops of ``size``
        return aug.train_augment(images, size=size, augment=augment, mean=spec.mean, std=spec.std)

    @pipeline_def(batch_size=spec.batch_size, num_threads=spec.num_threads, device_id=spec.device_id,
                  seed=pipeline_seed(seed, shard_id), enable_checkpointing=True,
                  prefetch_queue_depth=prefetch_queue_depth,
                  enable_conditionals=train and aug.needs_conditionals(augment))
    def graph():
        common = dict(shard_id=shard_id, num_shards=spec.num_shards, pad_last_batch=True, name="Reader",
                      seed=reader_seed, dont_use_mmap=True)
        if dataset.kind == "webdataset":
            paths = reorder(dataset.shards, order) if order is not None else dataset.shards
            encoded, cls = fn.readers.webdataset(paths=paths, ext=[WDS_IMAGE_EXT, WDS_LABEL_EXT],
                                                 missing_component_behavior="skip", random_shuffle=train,
                                                 initial_fill=_SHUFFLE_BUFFER, **common)
            # member groups with neither an image nor a label are skipped (the scan counts them as ignored; it
            # refuses a sample with one and not the other), so the reader's count equals the scan's
            labels = fn.python_function(cls, function=partial(_parse_cls, num_classes=spec.num_classes),
                                        num_outputs=1)
        else:
            files, file_labels = dataset.files, dataset.labels
            if order is not None:
                files, file_labels = reorder(files, order), reorder(file_labels, order)
            # files=: every path as given (a file_list would drop lines starting with '#'); the order is ours
            encoded, labels = fn.readers.file(files=files, labels=file_labels, random_shuffle=False, **common)
        if train:
            images = fn.decoders.image_random_crop(encoded, device=decode_device, output_type=types.RGB,
                                                   random_area=opts["scale"], random_aspect_ratio=opts["ratio"],
                                                   num_attempts=10, adjust_orientation=exif_orientation,
                                                   **hints)
            flip = fn.random.coin_flip(probability=opts["hflip"], dtype=types.BOOL)
            if size_choice is None:
                images = aug.resize(images, size=sizes[0], interpolation=opts["interpolation"])
                images = augment_at(images, sizes[0])
            else:
                choice = fn.external_source(source=size_choice, batch=True, batch_info=True)
                side = types.Constant(np.array(sizes, np.float32))[choice]  # the batch's size, per sample
                images = aug.resize(images, size=side, interpolation=opts["interpolation"])
                if aug.depends_on_size(augment):
                    images = select([partial(augment_at, size=s) for s in sizes], choice, images)
                else:
                    images = augment_at(images, None)  # colour jitter at most: nothing reads the size
        else:
            images = fn.decoders.image(encoded, device=decode_device, output_type=types.RGB,
                                       adjust_orientation=exif_orientation, **hints)
            size = sizes[0]
            shorter = aug.eval_resize_size(size, opts["crop_pct"], opts["val_resize_size"])
            images = aug.resize_and_centre_crop(images, encoded, size=size, interpolation=opts["interpolation"],
                                                shorter=shorter, exif_orientation=exif_orientation)
            flip = fn.random.coin_flip(probability=0.0, dtype=types.BOOL)
        labels = fn.cast(labels, dtype=types.INT64)
        if spec.backend == "fused":
            if mix_step is not None:  # placement "graph"
                mixed, targets = mix_step(images, labels, flip=flip)
                return mixed, fn.reshape(labels, shape=[]), targets
            return images, fn.reshape(labels, shape=[]), flip
        return dali_ops(fn, types, images, labels, flip, mix_source if spec.backend == "dali" else None, spec)

    kwargs = {"checkpoint": checkpoint} if checkpoint else {}
    return graph(**kwargs)
