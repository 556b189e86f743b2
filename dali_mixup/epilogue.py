"""What the loader does with a batch DALI hands over, one strategy per placement.

- ``FusedEpilogue`` (backend "fused", placement "epilogue"): DALI gives uint8 crops, labels and flip flags; the
  fused kernels mix, flip, normalise, cast and lay them out (``mix_batch``) with the parameters of the batch's key.
- ``HandOut`` (placement "graph", backends "dali" and "none"): DALI gives the finished batch; on the GPU it is
  copied into memory the caller owns (or, ``zero_copy``, handed out as DALI's own).

in:  a batch dict of DALI's torch tensors (zero-copy: DALI's memory), the batch's (epoch, step).
out: (images, targets, shared, params): ``shared`` lists the outputs handed out as DALI's own memory (the
     loader's ring then holds the batch until the caller's next call instead of until the queued work's event);
     ``params`` the batch's ``MixParams`` where the loader drew them (the fused epilogue; a loader without
     mixing when compact targets or the mixing record are asked for), else None.
"""

from __future__ import annotations

import os
from typing import Callable, Optional

import torch

from .mixing import _compact_targets, mix_batch
from .params import batch_key, sample_params
from .spec import LoaderSpec

__all__ = ["FusedEpilogue", "HandOut", "for_spec", "index_targets"]


class FusedEpilogue:
    """The fused kernels on DALI's uint8 output, on torch's current stream (the CPU twin on the CPU)."""

    def __init__(self, spec: LoaderSpec, switch: Callable[[int], bool]):
        self.spec, self.switch = spec, switch
        # on the CPU the kernel takes the cores DALI's threads leave (measured: an oversubscribed kernel spins)
        self.cpu_threads = max(1, len(os.sched_getaffinity(0)) - spec.num_threads) if hasattr(
            os, "sched_getaffinity") else None

    def __call__(self, batch: dict, epoch: int, step: int):
        spec = self.spec
        images_u8, labels, flip = batch["images"], batch["labels"], batch["flip"]
        n, h, w, _ = images_u8.shape
        cfg = spec.mixup if self.switch(epoch) else spec.no_mix()
        params = _params(spec, cfg, n, h, w, epoch, step)
        images, targets = mix_batch(images_u8, labels, cfg, params, mean=spec.mean, std=spec.std,
                                    out_dtype=spec.out_dtype, layout=spec.layout, flip=flip.cpu().numpy(),
                                    check_labels=False, cpu_threads=self.cpu_threads,
                                    targets="compact" if spec.targets == "compact" else "dense")
        return images, targets, [], params


class HandOut:
    """A batch DALI finished (placement "graph", backends "dali"/"none"), as the caller gets it."""

    def __init__(self, spec: LoaderSpec, runtime):
        self.spec, self.rt = spec, runtime

    def __call__(self, batch: dict, epoch: int, step: int):
        images, shared, spec = batch["images"], [], self.spec
        if images.dtype == torch.int16:  # bfloat16 mixed in the graph comes as its bits (DALI has no bfloat16)
            images = images.view(torch.bfloat16)
        images = self._hand_out(images, spec.out_dtype, shared)
        params = None
        if spec.targets == "compact" or spec.record:  # only without mixing (spec): the no-mix parameters
            h, w = images.shape[2:] if spec.layout == "NCHW" else images.shape[1:3]  # the batch's crop size
            params = _params(spec, spec.no_mix(), len(batch["labels"]), h, w, epoch, step)
        if spec.targets == "compact":
            targets = _compact_targets(batch["labels"], params, spec.no_mix(), self.rt.device if self.rt else
                                       torch.device("cpu"), self.rt, False)
        elif spec.targets == "index":
            targets = None  # the loader's copy of the labels (index_targets): DALI's one-hot rows are not copied
        else:
            targets = self._hand_out(batch["targets"], torch.float32, shared)
        return images, targets, shared, params

    def _hand_out(self, tensor: torch.Tensor, dtype: torch.dtype, shared: list) -> torch.Tensor:
        """On the GPU, a copy in memory the caller owns (torch's, filled on the current stream), or with
        ``zero_copy`` DALI's own memory when nothing needs converting (then noted in ``shared``); on the CPU,
        ``tensor`` itself (DALI reuses no CPU buffer a reference is left to, and nothing runs behind the host)."""
        if self.rt is None:
            return tensor.to(dtype)
        if self.spec.zero_copy and tensor.dtype == dtype and self.rt.is_on_device(tensor):
            shared.append(tensor)
            return tensor
        return self.rt.owned_copy(tensor, dtype)


def _params(spec: LoaderSpec, cfg, n: int, h: int, w: int, epoch: int, step: int):
    """The batch's parameters, drawn for its key: the pipeline's run in the epoch is the step."""
    epoch, step = batch_key(step, None, epoch)
    return sample_params(cfg, n, h, w, seed=spec.seed, epoch=epoch, step=step, rank=spec.shard_id)


def for_spec(spec: LoaderSpec, switch: Callable[[int], bool], runtime) -> Callable:
    """The strategy of ``spec``'s placement and backend."""
    return HandOut(spec, runtime) if spec.mixed_in_graph else FusedEpilogue(spec, switch)


def index_targets(labels: torch.Tensor, runtime: Optional[object]) -> torch.Tensor:
    """int64 (B,) class indices, a copy the caller owns (whatever DALI does with its own buffer)."""
    return runtime.owned_copy(labels, torch.int64) if runtime is not None else labels.to(torch.int64, copy=True)
