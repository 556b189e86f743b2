"""Recycled host memory for the CPU outputs of ``mix_batch``.

Why: a new batch from ``torch.empty`` is new memory each time for large batches (glibc maps blocks above its
32 MiB threshold afresh and returns them on free), so the kernel's first write to every 4 KiB page is a page
fault that the kernel zero-fills. Profiled on 2 EPYC cores: a float32 batch of 64 × 3 × 224² (38.5 MB) cost
about 11 ms more to fill when freshly allocated than when reused, as much as the fused kernel itself; plain
DALI recycles its output memory and pays nothing. float16 batches (19 MB) fell under the threshold, which is
why only the float32 path lagged.

How: a small pool of NumPy byte buffers handed out as torch tensors (``torch.from_numpy``, zero-copy). A tensor
made this way holds a reference to its buffer, and so does every view of it, and every array or tensor derived
from those; a buffer is reused only when the pool holds the last reference, i.e. when nothing the caller can
still reach shares its memory. Safe for callers that keep batches, only slower for them.
"""

from __future__ import annotations

import math
import sys
import threading
from typing import List, Sequence

import numpy as np
import torch

__all__ = ["HostBufferPool", "empty"]


def _refs_when_unused() -> int:
    """The reference count a pooled buffer shows when only the pool's list holds it (measured, not assumed)."""
    probe = [np.empty(1, np.uint8)]
    return sys.getrefcount(probe[0])


_UNUSED = _refs_when_unused()


class HostBufferPool:
    """Up to ``capacity`` reusable host buffers; ``empty`` hands out tensors backed by them."""

    def __init__(self, capacity: int = 4):
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise ValueError(f"capacity must be an int >= 1, got {capacity!r}")
        self.capacity = capacity
        self._buffers: List[np.ndarray] = []
        self._lock = threading.Lock()

    def empty(self, shape: Sequence[int], dtype: torch.dtype) -> torch.Tensor:
        """in: shape, a torch dtype -> out: an uninitialised contiguous CPU tensor of them, backed by a pooled
        buffer no tensor refers to any more (or by a new one, kept for later)."""
        nbytes = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
        with self._lock:
            buffer = self._take(nbytes)
        return torch.from_numpy(buffer).view(dtype).view(tuple(shape))

    def _take(self, nbytes: int) -> np.ndarray:
        for i in range(len(self._buffers)):
            if self._buffers[i].nbytes == nbytes and sys.getrefcount(self._buffers[i]) == _UNUSED:
                return self._buffers[i]
        buffer = np.empty(nbytes, np.uint8)
        self._buffers.append(buffer)
        while len(self._buffers) > self.capacity:  # forget an unused one first, else the oldest (its users keep it)
            unused = [i for i in range(len(self._buffers) - 1) if sys.getrefcount(self._buffers[i]) == _UNUSED]
            del self._buffers[unused[0] if unused else 0]
        return buffer


_POOL = HostBufferPool()


def empty(shape: Sequence[int], dtype: torch.dtype) -> torch.Tensor:
    """in: shape, dtype -> out: an uninitialised contiguous CPU tensor from the process-wide pool."""
    return _POOL.empty(shape, dtype)
