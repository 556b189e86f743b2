"""The order a training epoch reads its samples in: a fresh permutation of the whole dataset per (seed, epoch),
as torch's ``DistributedSampler(shuffle=True)`` draws one, handed to DALI's reader as its file list (reader
shuffle off). Every rank draws the same permutation and reads its own contiguous slice of it (DALI's sharding),
so the ranks' slices are disjoint and together hold every sample once per epoch.

WebDataset shards cannot be read in an arbitrary sample order (a tar is read from start to end): their order is
a permutation of the shards per (seed, epoch), and DALI's reader shuffles samples within a buffer.
"""

from __future__ import annotations

from typing import List, Sequence, Tuple

import numpy as np

__all__ = ["epoch_order", "shard_slice", "reorder"]

_ORDER_STREAM = 0x0D3E5  # keeps the order's random stream apart from any other drawn from (seed, epoch)


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """in: the number of samples (or shards) ``n``, the loader's seed, the epoch -> out: int64 (n,), a
    permutation of range(n), the same for the same (seed, epoch) on any machine (NumPy's PCG64 generator keyed
    by a SeedSequence of (seed, epoch); 0.02 s for ImageNet's 1.28 M files), unrelated between epochs and
    between seeds."""
    if n < 0 or seed < 0 or epoch < 0:
        raise ValueError(f"epoch_order needs n, seed, epoch >= 0, got n={n}, seed={seed}, epoch={epoch}")
    key = np.random.SeedSequence([int(seed), int(epoch), _ORDER_STREAM])
    return np.random.Generator(np.random.PCG64(key)).permutation(n).astype(np.int64)


def shard_slice(n: int, shard: int, num_shards: int) -> Tuple[int, int]:
    """in: the number of samples, a shard index, the number of shards -> out: [begin, end) of that shard, as
    DALI's readers split a list (``floor(n * k / num_shards)``)."""
    return (n * shard) // num_shards, (n * (shard + 1)) // num_shards


def reorder(items: Sequence, order: np.ndarray) -> List:
    """in: a list, a permutation of its indices -> out: the list in that order."""
    return [items[i] for i in order.tolist()]
