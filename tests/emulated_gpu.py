"""An emulated asynchronous GPU on the CPU (test tier 0.5): lifetime bugs give wrong pixels, deterministically.

- Streams and events: work queued on a stream runs only when something waits for it (``Event.synchronize``, a
  stream's or the device's ``synchronize``), never when it is queued; ``Event.query`` is False until then.
- DALI's outputs: ``FakeDali`` copies each batch the real (CPU) DALI iterator produces into its own pool, hands it
  out as torch tensors, and the moment the last reference to a buffer goes it POISONS the buffer and hands the
  same memory to the next batch (as DALI reuses memory no reference is left to).
- Queued work (the kernels, copies, a training step) reads DALI's memory through a raw pointer, as a GPU does:
  holding a DALI tensor in Python does not keep the memory from DALI; only the loader's own bookkeeping does.
  Torch-owned memory (what ``CudaRuntime`` allocates) is held by the queued work: torch's allocators are
  stream-ordered, so it cannot be reused before the work that uses it has run.
- ``EmulatedRuntime`` is ``dali_mixup.cuda_runtime.CudaRuntime`` with only its primitives (allocation, an
  asynchronous copy, a launch) replaced: the loader's and ``mix_batch``'s own logic is what runs. Kernels run as
  the CPU twin, which is bit-identical to the CUDA kernels and the oracle.

Use: the ``emulated_gpu`` fixture (tests/test_emulated_gpu.py) installs it for one test; a loader built with
``device="cpu"`` then behaves as a GPU loader (ring of in-flight batches, copies into memory the caller owns)
while DALI runs its CPU graph.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import weakref

import numpy as np
import torch

from dali_mixup import cuda_runtime, kernels, lifecycle

POISON = 0xA5  # what a released DALI buffer is filled with (uint8 165; float32 about -2.9e-16; never a batch)
UNFILLED = 0xFF  # what fresh device memory holds until queued work fills it (float32 NaN, int64 -1)


class Event:
    """``torch.cuda.Event`` stand-in: done once the stream it was recorded on has run up to it."""

    def __init__(self, gpu, enable_timing=False, blocking=False, interprocess=False):
        self.gpu, self.blocking = gpu, blocking
        self.stream, self.done = None, True  # CUDA: an event never recorded has completed
        gpu.events.append(self)

    def record(self, stream=None):
        self.stream, self.done = stream or self.gpu.current, False
        self.stream.queue.append(self)

    def query(self) -> bool:
        return self.done

    def synchronize(self) -> None:
        while not self.done:
            self.stream.run_one()

    def wait(self, stream=None) -> None:
        (stream or self.gpu.current).enqueue(self.synchronize)


class Stream:
    """``torch.cuda.Stream`` stand-in: a queue of work that runs in order, when waited for."""

    def __init__(self, gpu, name: str):
        self.gpu, self.name = gpu, name
        self.queue = collections.deque()  # callables and Events
        self.cuda_stream = id(self)  # the handle a launch is queued on
        gpu.all_streams.append(self)

    def enqueue(self, work) -> None:
        self.queue.append(work)

    def run_one(self) -> None:
        item = self.queue.popleft()
        if isinstance(item, Event):
            item.done = True
        else:
            item()

    def synchronize(self) -> None:
        while self.queue:
            self.run_one()

    def wait_stream(self, other: "Stream") -> None:
        event = Event(self.gpu)
        event.record(other)
        event.wait(self)

    def wait_event(self, event: Event) -> None:
        event.wait(self)

    def __repr__(self):
        return f"<emulated stream {self.name}>"


class EmulatedGpu:
    """One emulated device: its streams, the DALI buffer pool, the tensors that live "on the device"."""

    def __init__(self):
        self.all_streams = []
        self.default = Stream(self, "default")
        self.current = self.default
        self.events = []
        self.launches = []  # (kernel name, the stream handle it was queued on, torch's current stream's handle)
        self.pool = FakeDaliPool()
        self._device = {}  # storage address -> weakref to a tensor torch "allocated on the device"

    def synchronize(self) -> None:
        while any(stream.queue for stream in self.all_streams):
            for stream in self.all_streams:
                stream.synchronize()

    @contextlib.contextmanager
    def stream(self, stream):
        before, self.current = self.current, stream
        try:
            yield stream
        finally:
            self.current = before

    def on_device(self, tensor) -> bool:
        if self.pool.owns(tensor):
            return self.pool.kind(tensor) == "device"
        ref = self._device.get(tensor.untyped_storage().data_ptr())
        return ref is not None and ref() is not None

    def allocate(self, shape, dtype) -> torch.Tensor:
        tensor = torch.empty(shape, dtype=dtype)
        tensor.view(torch.uint8).fill_(UNFILLED) if tensor.numel() else None
        self._device[tensor.untyped_storage().data_ptr()] = weakref.ref(tensor)
        return tensor

    def read(self, tensor):
        """What queued work reads ``tensor`` through: DALI's memory by raw address (no reference: DALI may take it
        back while the work waits in the queue), torch's memory as the tensor (its allocator is stream-ordered)."""
        return self.pool.raw(tensor) if self.pool.owns(tensor) else tensor


class EmulatedRuntime(cuda_runtime.CudaRuntime):
    """``CudaRuntime`` on the emulated GPU: the primitives queue work instead of running it."""

    def __init__(self, gpu: EmulatedGpu, device: torch.device):
        self.gpu, self.device = gpu, device  # the CPU: tensors live in host memory, "on the device" by bookkeeping

    def _empty(self, shape, dtype):
        return self.gpu.allocate(shape, dtype)

    def _pinned_empty(self, shape, dtype):
        return torch.empty(shape, dtype=dtype)

    def _copy_async(self, dst, src):
        src = self.gpu.read(src)
        self._stream().enqueue(lambda: dst.copy_(src))

    def _launch(self, name, *args):
        gpu, stream = self.gpu, self._stream()
        gpu.launches.append((name, stream.cuda_stream, torch.cuda.current_stream().cuda_stream))
        args = [gpu.read(a) if isinstance(a, torch.Tensor) else a for a in args]
        cpu = kernels.load("cpu")
        if name == "launch_mix_images":
            src, table, scale, bias, out, nchw, out_kind = args
            n, h, w, _ = src.shape

            def work():
                cpu.mix_images(src.numpy().reshape(-1), n, h, w, table.numpy(), scale, bias,
                               out.numpy().reshape(-1), nchw, out_kind)
        elif name == "launch_soft_targets":
            labels, table, off, on, out = args

            def work():
                cpu.soft_targets(labels.numpy(), table.numpy(), off, on, out.numpy())
        else:  # pragma: no cover - a kernel this emulation does not know
            raise NotImplementedError(name)
        stream.enqueue(work)

    def is_on_device(self, tensor) -> bool:
        return self.gpu.on_device(tensor)


class FakeDaliPool:
    """DALI's output memory: buffers handed out as tensors, poisoned and reused the moment no reference is left."""

    DEVICE_OUTPUTS = ("images", "targets")  # on a GPU pipeline these are GPU outputs; labels and flip are pinned host

    def __init__(self):
        self._free = collections.defaultdict(list)  # (kind, nbytes) -> free slabs (last freed first)
        self._slabs = {}  # address of a slab -> (kind, slab)
        self.released = 0
        self.handed_out = 0

    def adopt(self, name: str, tensor: torch.Tensor) -> torch.Tensor:
        """A batch output as DALI hands it out: ``tensor``'s bytes in a pooled buffer (the last freed one first)."""
        kind = "device" if name in self.DEVICE_OUTPUTS else "host"
        data = tensor.contiguous().view(-1).view(torch.uint8).numpy() if tensor.numel() else np.empty(0, np.uint8)
        free = self._free[(kind, max(data.nbytes, 1))]
        slab = free.pop() if free else np.empty(max(data.nbytes, 1), np.uint8)
        self._slabs[slab.ctypes.data] = (kind, slab)
        slab[:data.nbytes] = data
        view = slab[:data.nbytes]  # a new array object over the slab: its life is the tensor's storage's
        weakref.finalize(view, self._release, kind, slab)
        self.handed_out += 1
        return torch.from_numpy(view).view(tensor.dtype).view(tensor.shape)

    def _release(self, kind, slab) -> None:
        slab.fill(POISON)
        self.released += 1
        self._free[(kind, slab.nbytes)].append(slab)

    def owns(self, tensor) -> bool:
        return tensor.untyped_storage().data_ptr() in self._slabs

    def kind(self, tensor) -> str:
        return self._slabs[tensor.untyped_storage().data_ptr()][0]

    def raw(self, tensor) -> torch.Tensor:
        """``tensor``'s memory, read through its address: a tensor that keeps no reference to it."""
        assert tensor.is_contiguous(), "DALI's outputs are contiguous"
        nbytes = tensor.numel() * tensor.element_size()
        buffer = (ctypes.c_uint8 * max(nbytes, 1)).from_address(tensor.data_ptr())
        return torch.from_numpy(np.ctypeslib.as_array(buffer)[:nbytes]).view(tensor.dtype).view(tensor.shape)


class FakeDaliIterator:
    """The loader's DALI iterator with every output moved into ``FakeDaliPool`` memory; the rest forwarded."""

    def __init__(self, iterator, pool: FakeDaliPool):
        self._iterator, self._pool = iterator, pool

    def __next__(self):
        return [{name: self._pool.adopt(name, t) for name, t in batch.items()} for batch in next(self._iterator)]

    def __iter__(self):
        return self

    def __getattr__(self, name):
        return getattr(self._iterator, name)


def install(monkeypatch) -> EmulatedGpu:
    """Make this process's CPU an emulated GPU for the test: torch.cuda's streams and events, the runtime of the
    GPU path, and DALI's outputs (see the module docstring)."""
    gpu = EmulatedGpu()
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: gpu.current)
    monkeypatch.setattr(torch.cuda, "Event", lambda **kw: Event(gpu, **kw))
    monkeypatch.setattr(torch.cuda, "Stream", lambda *a, **kw: Stream(gpu, f"user{len(gpu.all_streams)}"))
    monkeypatch.setattr(torch.cuda, "stream", gpu.stream)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: gpu.synchronize())
    monkeypatch.setattr(cuda_runtime, "_override",
                        lambda device: EmulatedRuntime(gpu, device) if device.type == "cpu" else None)
    make = lifecycle.Pipelines.make

    def make_pipeline(self, *args, **kwargs):
        built = make(self, *args, **kwargs)
        return built._replace(iterator=FakeDaliIterator(built.iterator, gpu.pool))

    monkeypatch.setattr(lifecycle.Pipelines, "make", make_pipeline)
    return gpu


def step(gpu: EmulatedGpu, images, targets, out: list, stream=None) -> None:
    """A training step as the GPU runs it: queued on ``stream`` (default: the current one), it reads the batch
    when the stream gets there (DALI's memory by address, torch's memory held) and records what it saw in ``out``."""
    stream = stream or gpu.current
    images, targets = gpu.read(images), gpu.read(targets)
    slot = len(out)
    out.append(None)

    def work():
        out[slot] = (images.clone(), targets.clone())

    stream.enqueue(work)
