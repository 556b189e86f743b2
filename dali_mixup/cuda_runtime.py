"""What the GPU path asks of CUDA, in one place: the device, its current stream, events, torch-owned staging and
copies, and the kernel launches.

Memory rules (ARCHITECTURE.md, "Who owns the memory"), kept here so that every caller keeps them:

- A device is the current device: ``"cuda"`` without an index is ``torch.cuda.current_device()`` (``device``),
  for the launch context, the allocations and the stream; never GPU 0 by default.
- Work is queued on torch's current stream of that device and read by the GPU when the stream gets to it, not
  when the call returns: anything it reads that torch does not own (DALI's zero-copy outputs) must stay alive
  until an event recorded after it (``record_event``) has completed.
- A host-to-device copy reads from torch-owned pinned staging filled by an explicit copy (``to_device``), never
  from the caller's buffer: ``pin_memory()`` returns the same tensor when it is already pinned (DALI's pinned
  outputs are), and torch's caching host allocator keeps a staging block from reuse until the copies recorded on
  it have completed.
- ``owned_copy`` gives memory the caller owns: torch's stream-ordered device memory, filled on the current stream.

``CudaRuntime`` composes these from a few primitives (the methods starting with ``_``: allocation, an asynchronous
copy, an event, a launch); the test tier ``tests/emulated_gpu.py`` replaces only those primitives with an
emulated asynchronous GPU on the CPU, so the composition above is the code under test.
"""

from __future__ import annotations

from typing import Optional, Union

import numpy as np
import torch

from . import kernels

__all__ = ["CudaRuntime", "cuda_device", "runtime_for"]


def cuda_device(device: Union[str, int, torch.device]) -> torch.device:
    """in: a CUDA device ("cuda", "cuda:1", 1, torch.device) -> out: ``torch.device("cuda", index)``, the index
    being torch's current device when none is given. Raises naming the device when it is not a CUDA one."""
    device = torch.device("cuda", device) if isinstance(device, int) and not isinstance(device, bool) else \
        torch.device(device)
    if device.type != "cuda":
        raise ValueError(f"expected a CUDA device, got {device}")
    return device if device.index is not None else torch.device("cuda", torch.cuda.current_device())


def _numba_cuda():
    try:
        from numba import cuda
        return kernels.load("cuda"), cuda
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError("CUDA tensors need numba-cuda: pip install 'dali-mixup[cuda13]' "
                          f"(or numba-cuda[cu12] for CUDA 12): {exc}") from exc


class CudaRuntime:
    """The GPU path's view of one CUDA device (see the module docstring for the rules it keeps)."""

    def __init__(self, device: Union[str, torch.device]):
        self.device = cuda_device(device)

    # -- primitives: the only calls into torch.cuda and numba-cuda ---------------------------------------------
    def _stream(self):
        """Torch's current stream on this device: where every copy and kernel of the GPU path is queued."""
        return torch.cuda.current_stream(self.device)

    def _event(self):
        # blocking: a host that waits on it sleeps instead of spinning a core
        return torch.cuda.Event(blocking=True)

    def _empty(self, shape, dtype) -> torch.Tensor:
        return torch.empty(shape, dtype=dtype, device=self.device)

    def _pinned_empty(self, shape, dtype) -> torch.Tensor:
        return torch.empty(shape, dtype=dtype, pin_memory=True)

    def _copy_async(self, dst: torch.Tensor, src: torch.Tensor) -> None:
        """Queue ``dst <- src`` (casting to ``dst``'s dtype) on the current stream."""
        with torch.cuda.device(self.device):
            dst.copy_(src, non_blocking=True)

    def _launch(self, name: str, *args) -> None:
        """Launch ``kernels.cuda.<name>`` in this device's context on torch's current stream; tensor arguments
        are passed as CUDA arrays (no synchronisation)."""
        k, cuda = _numba_cuda()
        with cuda.gpus[self.device.index]:
            stream = cuda.external_stream(self._stream().cuda_stream)
            args = [cuda.as_cuda_array(a, sync=False) if isinstance(a, torch.Tensor) else a for a in args]
            getattr(k, name)(*args, stream)

    def is_on_device(self, tensor: torch.Tensor) -> bool:
        return tensor.device == self.device

    # -- what the GPU path uses ----------------------------------------------------------------------------------
    def empty(self, shape, dtype) -> torch.Tensor:
        return self._empty(shape, dtype)

    def record_event(self):
        """An event recorded on the current stream now: it completes when the work queued so far has."""
        event = self._event()
        event.record(self._stream())
        return event

    def to_device(self, host: torch.Tensor, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
        """Host ``host`` -> a new device tensor (of ``dtype``), asynchronously on the current stream, through
        torch-owned pinned staging that ``host`` is copied into first (so ``host`` may be reused at once)."""
        staging = self._pinned_empty(host.shape, host.dtype)
        staging.copy_(host)
        out = self._empty(host.shape, dtype or host.dtype)
        self._copy_async(out, staging)
        return out

    def owned_copy(self, tensor: torch.Tensor, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
        """A copy of ``tensor`` (on this device or the host) in memory the caller owns, as ``dtype``: torch's
        device memory, filled on the current stream. ``tensor`` is read by the queued copy (a device tensor when
        the stream gets there: keep it alive until an event recorded after this call has completed)."""
        if not self.is_on_device(tensor):
            return self.to_device(tensor, dtype)
        out = self._empty(tensor.shape, dtype or tensor.dtype)
        self._copy_async(out, tensor)
        return out

    def launch_mix_images(self, src, table, scale, bias, out, nchw: bool, out_kind: int) -> None:
        """The fused image kernel (``kernels.cuda.launch_mix_images``) on the current stream."""
        self._launch("launch_mix_images", src, table, scale, bias, out, nchw, out_kind)

    def launch_soft_targets(self, labels, table, off, on, out) -> None:
        """The soft-label kernel (``kernels.cuda.launch_soft_targets``) on the current stream."""
        self._launch("launch_soft_targets", labels, table, np.float32(off), np.float32(on), out)


#: Tests only: a callable(torch.device) -> runtime or None that stands in for ``CudaRuntime`` (the emulated GPU
#: of ``tests/emulated_gpu.py``). None in production.
_override = None


def runtime_for(device: torch.device) -> Optional[CudaRuntime]:
    """The runtime of the GPU path for tensors on ``device``: a ``CudaRuntime`` for a CUDA device, None for the
    CPU (everything there runs synchronously in the caller's thread)."""
    if _override is not None:
        return _override(device)
    return CudaRuntime(device) if device.type == "cuda" else None
