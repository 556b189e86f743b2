"""Epoch arithmetic of a sharded loader: pure functions of (spec, dataset size, epoch), no DALI.

Each epoch is a fresh pipeline. Rank r reads shard (r + epoch) % num_shards of that epoch's order (as one long-
lived DALI pipeline moves its reader to the next shard at each epoch); DALI pads every shard to the largest one's
batches, and the loader yields ``batches`` of them: training the full batches of the smallest shard (the same
count on every rank, as DDP needs), evaluation its own shard, the last batch partial.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from .resolution import choices_at
from .spec import LoaderSpec

__all__ = ["shard_size", "reader_shard", "runs_per_epoch", "batches", "epoch_seed", "size_choices", "crop_sizes",
           "crop_size"]


def reader_shard(spec: LoaderSpec, epoch: int) -> int:
    """The shard rank ``spec.shard_id`` reads in ``epoch``."""
    return (spec.shard_id + epoch) % spec.num_shards


def shard_size(spec: LoaderSpec, n: int, epoch: int) -> int:
    """Samples of the shard this rank reads in ``epoch``, of ``n`` in all (DALI's split: shard k holds samples
    [n k / N, n (k + 1) / N))."""
    k = reader_shard(spec, epoch)
    return (n * (k + 1)) // spec.num_shards - (n * k) // spec.num_shards


def runs_per_epoch(spec: LoaderSpec, n: int) -> int:
    """Pipeline runs per epoch, the same on every rank: the largest shard in batches, the last one padded."""
    largest = -(-n // spec.num_shards)
    return -(-largest // spec.batch_size)


def batches(spec: LoaderSpec, n: int, epoch: int) -> int:
    """Batches this rank yields in ``epoch``: training, the full batches of the smallest shard; evaluation, its own
    shard in batches, the last one partial."""
    if spec.train:
        return (n // spec.num_shards) // spec.batch_size
    return -(-shard_size(spec, n, epoch) // spec.batch_size)


def size_choices(spec: LoaderSpec, n: int, epoch: int) -> Optional[np.ndarray]:
    """A size per batch (``PerBatchSizes``): for each of ``epoch``'s batches the index of its crop size in
    ``spec.sizes_at(epoch)``, the same on every rank (timm's choice, keyed by (seed, epoch)); else None."""
    return choices_at(spec.image_size, epoch, batches(spec, n, epoch), spec.seed) if spec.train else None


def crop_sizes(spec: LoaderSpec, n: int, epoch: int) -> np.ndarray:
    """The crop size of each of ``epoch``'s batches (int64 (batches,))."""
    sizes, choices = np.asarray(spec.sizes_at(epoch)), size_choices(spec, n, epoch)
    return np.full(batches(spec, n, epoch), sizes[0]) if choices is None else sizes[choices]


def crop_size(spec: LoaderSpec, n: int, epoch: int, step: int) -> int:
    """The crop size of batch ``step`` of ``epoch`` (a padded run past the epoch's batches: its first batch's)."""
    per_batch = crop_sizes(spec, n, epoch)
    return int(per_batch[step if step < len(per_batch) else 0])


def epoch_seed(spec: LoaderSpec, epoch: int) -> int:
    """The DALI seed of ``epoch``'s pipeline (crops, augmentations): a function of (seed, epoch) (the rank is mixed
    in by ``spec.pipeline_seed``). Evaluation has nothing random: the seed itself."""
    if not spec.train:
        return spec.seed
    return int(np.random.SeedSequence((spec.seed, epoch)).generate_state(1)[0] >> 2)


def check_fits(spec: LoaderSpec, n: int, source: str) -> None:
    """Refuse shards that would give empty epochs (say why, at construction)."""
    if n < spec.num_shards:
        raise ValueError(f"{source}: {n} sample(s) cannot fill num_shards={spec.num_shards} shards "
                         "(every rank needs at least one sample)")
    if spec.train and batches(spec, n, 0) == 0:
        raise ValueError(f"batch_size={spec.batch_size} is larger than a training shard of "
                         f"{n // spec.num_shards} samples ({n} samples / {spec.num_shards} shards): training "
                         "yields full batches only, so every epoch would be empty; lower batch_size")
