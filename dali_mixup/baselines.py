"""The baselines ``dali-mixup bench`` compares against, apart from the product path: Mixup/CutMix with DALI's own
operators (``dali_ops``, backend "dali"; also an oracle in tests) and the external source of its parameters
(``MixParamSource``), drawn by the same ``sample_params`` for the same batch key as the fused kernels. Without a
parameter source, ``dali_ops`` is plain DALI (backend "none": crop_mirror_normalize and one-hot targets).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from .config import MixupConfig
from .params import batch_key, sample_params

__all__ = ["MixParamSource", "dali_ops"]


class MixParamSource:
    """External source of the ``dali`` backend: per batch, the parameters of ``sample_params`` for the key
    (seed, epoch, step, rank), as the per-sample arguments DALI's operators take. The pipeline runs
    ``runs_per_epoch`` batches per epoch (the last one padded); run k of a pipeline built for epoch
    ``first_epoch`` is the batch ``params.batch_key(k, runs_per_epoch, first_epoch)``. DALI passes k (its
    ``BatchInfo.iteration``) and keeps it in its checkpoint, so a pipeline restored from one continues.
    ``size``: callable(epoch, step) -> the batch's crop size (``epochs.crop_size``)."""

    def __init__(self, cfg: MixupConfig, batch_size: int, size: Callable[[int, int], int], seed: int, rank: int,
                 runs_per_epoch: int, first_epoch: int = 0):
        self.cfg, self.batch_size, self.size = cfg, batch_size, size
        self.seed, self.rank, self.runs_per_epoch, self.first_epoch = seed, rank, runs_per_epoch, first_epoch
        self.enabled = lambda epoch: True

    def __call__(self, info):
        epoch, step = batch_key(info.iteration, self.runs_per_epoch, self.first_epoch)
        n, s = self.batch_size, self.size(epoch, step)
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


def dali_ops(fn, types, images, labels, flip, source, spec):
    """Everything with DALI's own operators: with a ``source``, Mixup/CutMix by permute_batch + arithmetic and
    multi_paste (each a full pass over the batch: the baseline the fused kernel beats); then (always)
    crop_mirror_normalize and one_hot soft targets. Without a source this is plain DALI (backend "none")."""
    off, on = spec.no_mix().off_on
    one_hot = fn.one_hot(labels, num_classes=spec.num_classes, on_value=on, off_value=off)
    dali_dtype = types.FLOAT16 if spec.out_dtype == torch.float16 else types.FLOAT  # bfloat16: float32, cast later
    normalize = dict(dtype=dali_dtype, output_layout="CHW" if spec.layout == "NCHW" else "HWC",
                     mean=[m * 255 for m in spec.mean], std=[s * 255 for s in spec.std])
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
