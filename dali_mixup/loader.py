"""``create_dali_loader``: the drop-in replacement for an ImageNet DataLoader.

DALI pipeline (decode, random-resized crop, augmentations, flip flags) -> DALI's iterator (torch tensors on the
training device) -> the fused kernel as the iterator's epilogue (mix + normalise + flip + cast + layout + soft
targets, one kernel each; or, placement "graph", the same kernels inside the pipeline: ``dali.mix``) ->
``(images, targets)``. The loader also has the DataLoader surface training scripts
touch (``sampler.set_epoch``, ``batch_sampler``, ``batch_size``, ``drop_last``, ``dataset``).
"""

from __future__ import annotations

import collections
import dataclasses
import json
import math
import numbers
import os
import threading
import warnings
import weakref
from functools import partial
from typing import Callable, Mapping, NamedTuple, Optional, Sequence, Union

import numpy as np
import torch

from . import dali
from .augment import check_augment
from .config import IMAGENET_MEAN, IMAGENET_STD, MixupConfig, check_normalization
from .datasets import Dataset, diagnose, find_dataset, without_corrupt
from .cuda_runtime import runtime_for
from .mixing import LAYOUTS, OUT_DTYPES, mix_batch, precompile_in_background
from .order import epoch_order
from .params import batch_key, sample_params
from .dali import import_dali
from .pipeline import DALI_SEED_MAX, MixParamSource, build_pipeline, pipeline_seed

__all__ = ["create_dali_loader", "DaliMixupLoader", "BACKENDS", "DEVICES", "TARGETS"]

BACKENDS = ("fused", "dali", "none")
PLACEMENTS = ("epilogue", "graph")  # where the fused kernels run: after DALI's iterator, or inside the pipeline
_PREFETCH_DEPTH = 2  # DALI's prefetch queue depth (build_pipeline's default)
DEVICES = ("auto", "gpu", "cpu")
TARGETS = ("soft", "index")
_DTYPE_NAMES = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16"}


# state_dict layout: {"format", "identity", "epoch", "step", "in_epoch", ...}; 3: an epoch reads a permutation
# of the whole dataset keyed by (seed, epoch) (format 2 read a fixed order through DALI's shuffle buffer)
_STATE_FORMAT = 3


def _integer(name, value, low=1, high=None):
    """in: any integral number (int, NumPy integer) -> out: an int in [low, high]; else an error naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    value = int(value)
    if value < low or (high is not None and value > high):
        raise ValueError(f"{name} must be an integer in [{low}, {high if high is not None else 'inf'}], got {value}")
    return value


def _positive_int(name, value):
    return _integer(name, value, 1)


def _pair(name, value):
    """in: (low, high) -> out: a tuple of two finite floats with 0 < low <= high; else an error naming ``name``."""
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a pair of numbers (low, high), got {value!r}") from None
    if not (math.isfinite(high) and 0 < low <= high):
        raise ValueError(f"{name} must be an increasing pair of positive numbers, got {value!r}")
    return low, high


def _plain(value):
    """A JSON round trip: tuples become lists, so a state saved with torch.save or json compares equal."""
    return json.loads(json.dumps(value))


def _default_shards(shard_id, num_shards):
    if shard_id is None and num_shards is None:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_rank(), torch.distributed.get_world_size()
        return 0, 1
    if shard_id is None or num_shards is None:
        raise ValueError("shard_id and num_shards must be given together (or both left to torch.distributed)")
    num_shards = _positive_int("num_shards", num_shards)
    if isinstance(shard_id, bool) or not isinstance(shard_id, numbers.Integral) or not 0 <= shard_id < num_shards:
        raise ValueError(f"shard_id must be an int in [0, num_shards={num_shards}), got {shard_id!r}")
    return int(shard_id), num_shards


class _InFlight:
    """Keeps DALI-owned batches alive until the GPU work that reads them has completed.

    Memory rule: DALI 2.x (dynamic executor) hands its outputs to torch zero-copy (``torch.from_dlpack``); DALI owns
    that memory and may reuse it as soon as the last reference is gone, while torch's stream, which runs behind the
    host, may still have to read it. So a batch read by work we queued (the fused epilogue's kernels, or the copy
    into memory the caller owns) is held until a CUDA event recorded right after that work has completed; a batch
    handed to the caller as is (``zero_copy=True``) is held until an event recorded at the next call (after the
    caller's step was queued) has. Each entry is waited for BEFORE it is let go. At most ``depth`` batches are held:
    past that the host waits for the oldest, i.e. it runs at most ``depth`` batches ahead of the GPU. On the CPU
    nothing is queued, so there is no ring.
    """

    def __init__(self, depth: int, runtime):
        self.depth, self._rt = depth, runtime
        self._held = collections.deque()  # [event or None, tensors]; None: waiting for the next call's event

    def __len__(self) -> int:
        return len(self._held)

    def hold(self, tensors, *, read_by_queued_work: bool) -> None:
        """Hold ``tensors`` (a batch's DALI outputs): read by work already queued on torch's current stream, or
        handed to the caller (then covered by the event of the next ``hold``/``mark``)."""
        self.mark()
        self._held.append([self._rt.record_event() if read_by_queued_work else None, tensors])
        self._release()

    def mark(self) -> None:
        """Record one event for the batches handed out since the last call (the caller's step has been queued)."""
        waiting = [entry for entry in self._held if entry[0] is None]
        if waiting:
            event = self._rt.record_event()
            for entry in waiting:
                entry[0] = event

    def clear(self) -> None:
        """Wait for every held batch's event, then let go of them all (end of an epoch, rebuild, close)."""
        self.mark()
        while self._held:
            self._let_go_oldest()

    def _release(self) -> None:
        while self._held and self._held[0][0] is not None and (
                len(self._held) > self.depth or self._held[0][0].query()):
            self._let_go_oldest()

    def _let_go_oldest(self) -> None:
        self._held[0][0].synchronize()  # first the wait (at once when the event has completed) ...
        self._held.popleft()  # ... then DALI may have its memory back


class _MixSwitch:
    """Whether a batch of ``epoch`` is mixed: ``loader.mixup_enabled`` and ``loader.mixup_schedule``. The
    pipelines ask it when DALI runs a batch (backend "dali", placement "graph"); it holds no reference to the
    loader, so a loader and its pipelines form no cycle."""

    def __init__(self, enabled: bool, can_mix: bool):
        self.enabled, self.can_mix = enabled, can_mix
        self.schedule: Optional[Callable[[int], bool]] = None

    def __call__(self, epoch: int) -> bool:
        if not (self.enabled and self.can_mix):
            return False
        return bool(self.schedule(epoch)) if self.schedule is not None else True


class _Owned:
    """What a loader owns that holds DALI memory: its pipeline and iterator, the next epoch's pipeline being made,
    and the ring of batches that queued GPU work still reads. ``release`` lets them go in the one safe order: the
    background build joined, the queued work waited for, then the pipelines. It holds no reference to the loader,
    so ``weakref.finalize`` runs it when the loader is deleted (or at interpreter exit) as ``close()`` does."""

    def __init__(self, ring: Optional[_InFlight]):
        self.ring = ring
        self.pipe = self.iterator = self.source = None
        self.next = None  # (epoch, thread, box) of the next epoch's pipeline being made: _prepare_next

    def release(self) -> None:
        pending, self.next = self.next, None
        if pending is not None:
            if pending[1] is not threading.current_thread():  # the build itself held the loader's last reference
                pending[1].join()
            pending[2].clear()
        if self.ring is not None:
            self.ring.clear()
        self.pipe = self.iterator = self.source = None


class _Position(NamedTuple):
    """Where the stream of batches handed out stands: what ``state_dict`` saves (``dali``: the pipeline's DALI
    checkpoint at that point, or None where none was taken)."""

    epoch: int
    step: int
    in_epoch: bool
    mixup_enabled: bool
    dali: Optional[str]


class _Built(NamedTuple):
    """A DALI pipeline made for one epoch, with its iterator and (backend "dali") its parameter source."""

    epoch: int
    pipe: object
    iterator: object
    source: Optional[MixParamSource]


def _alive(ref) -> "DaliMixupLoader":
    loader = ref()
    if loader is None:
        raise ReferenceError("the DaliMixupLoader this sampler belongs to has been deleted")
    return loader


class EpochSampler:
    """``loader.sampler``: the part of a DataLoader's sampler that training scripts call. ``set_epoch(epoch)``
    sets the epoch of the loader's next pass (``DistributedSampler.set_epoch``'s meaning: the file order,
    augmentations and mixing of a pass are a function of (seed, epoch, rank)); ``len()`` is the number of samples
    this rank reads per epoch. A training epoch reads ``order.epoch_order(n, seed, epoch)``, each rank its slice."""

    def __init__(self, loader: "DaliMixupLoader"):
        self._ref = weakref.ref(loader)  # the loader holds its sampler: no cycle (a dropped loader is freed at once)

    @property
    def _loader(self) -> "DaliMixupLoader":
        return _alive(self._ref)

    def set_epoch(self, epoch: int) -> None:
        self._loader.set_epoch(epoch)

    @property
    def epoch(self) -> int:
        return self._loader.epoch

    def __len__(self) -> int:
        return self._loader._shard_size()


class BatchSampler:
    """``loader.batch_sampler``: ``batch_size``, ``drop_last``, ``sampler`` and ``len()`` (batches per epoch)."""

    def __init__(self, loader: "DaliMixupLoader"):
        self._ref = weakref.ref(loader)
        self.sampler = loader.sampler

    @property
    def _loader(self) -> "DaliMixupLoader":
        return _alive(self._ref)

    @property
    def batch_size(self) -> int:
        return self._loader.batch_size

    @property
    def drop_last(self) -> bool:
        return self._loader.drop_last

    def __len__(self) -> int:
        return len(self._loader)


class DaliMixupLoader:
    """Iterator over ``(images, targets)``; one pass (``for ... in loader``) is one epoch.

    images: ``out_dtype`` (B, 3, S, S) (NCHW) or (B, S, S, 3), normalised, on the training device.
    targets: ``targets="soft"``: float32 (B, num_classes) (one-hot, smoothed, mixed); ``"index"``: int64 (B,)
    class indices, on the same device.
    Training yields full batches only, as many on every rank (those of the smallest shard, like
    ``drop_last=True``); evaluation yields every sample of the rank's shard once, the last batch partial, never an
    empty batch (ranks may then differ by one batch).
    Each pass is a fresh DALI pipeline for its epoch: rank r reads shard (r + epoch) % num_shards (as one DALI
    pipeline moves its reader on at each epoch), with file order, crops and augmentations seeded by (seed,
    epoch, rank), so ``set_epoch(e)`` (or ``sampler.set_epoch(e)``) on a new loader reproduces epoch e of an
    uninterrupted run.
    """

    def __init__(self, dataset: Dataset, *, batch_size, num_classes, train, image_size, mixup, backend, device,
                 num_threads, seed, shard_id, num_shards, out_dtype, layout, mean, std, device_id,
                 scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), hflip=0.5, augment: Optional[dict] = None,
                 targets: str = "soft", placement: str = "epilogue", zero_copy: bool = False):
        self.dataset = dataset
        self.placement = placement
        self.batch_size, self.num_classes, self.train, self.image_size = batch_size, num_classes, train, image_size
        self.mixup, self.backend, self.device_kind = mixup, backend, device
        self.num_threads, self.seed = num_threads, seed
        # the fused CPU epilogue takes the cores DALI's threads leave (measured: an oversubscribed kernel spins)
        self._kernel_threads = max(1, len(os.sched_getaffinity(0)) - num_threads) if hasattr(
            os, "sched_getaffinity") else None
        self.shard_id, self.num_shards = shard_id, num_shards
        self.out_dtype, self.layout, self.mean, self.std = out_dtype, layout, tuple(mean), tuple(std)
        self.device_id = device_id
        self.augment = dict(scale=tuple(scale), ratio=tuple(ratio), hflip=float(hflip), **(augment or {}))
        self.targets = targets
        self.device = torch.device("cuda", device_id) if device == "gpu" else torch.device("cpu")
        self.zero_copy = zero_copy
        self._switch = _MixSwitch(mixup is not None and train, mixup is not None)
        self.epoch = 0
        self.step = 0
        self._stopped = False  # StopIteration was raised: next() raises it again until a new iter(loader)
        self._lock = threading.RLock()  # next(), iter(), set_epoch() and the state: one thread at a time
        self._running = None  # the thread inside next(); _before: the position when that next() began
        self._before = self._restart = None  # _restart: a next() was interrupted: go on from that _Position
        self._in_epoch = False
        self._rt = runtime_for(self.device)  # None on the CPU: nothing runs behind the host there
        self._in_flight = _InFlight(_PREFETCH_DEPTH + 2, self._rt) if self._rt is not None else None
        self._owned = _Owned(self._in_flight)
        # del, close() or interpreter exit: the GPU work reading DALI's buffers completes, then they go
        self._finalizer = weakref.finalize(self, self._owned.release)
        self._no_mix = mixup.no_mix() if mixup is not None else MixupConfig(num_classes, mixup_alpha=0.0)
        self.sampler = EpochSampler(self)
        self.batch_sampler = BatchSampler(self)
        self._check_fits()
        #: the background compile of the CUDA kernels (fused backend on the GPU), or None; see _precompile
        self.precompile_thread = self._precompile()
        self._build()

    def _precompile(self):
        """Fused on the GPU: compile the kernels this loader launches while DALI builds and warms up (each
        process and rank would otherwise compile them at its first batch; numba's on-disk cache makes later
        processes fast). ``placement="graph"`` launches the same kernels from DALI's thread: they are ready too."""
        if self.device.type != "cuda" or self.backend != "fused":
            return None
        return precompile_in_background(self.out_dtype, self.layout, self.image_size, self.device.index)

    @property
    def drop_last(self) -> bool:
        """Training drops each rank's last partial batch, evaluation keeps it (DataLoader's ``drop_last``)."""
        return self.train

    def set_epoch(self, epoch: int) -> None:
        """Make the next pass epoch ``epoch`` (a pass under way that is another epoch's is abandoned; the same
        epoch's continues, so a loader restored mid-epoch by ``load_state_dict`` keeps its place). ``epoch``: an
        int or NumPy integer >= 0."""
        if isinstance(epoch, bool) or not isinstance(epoch, numbers.Integral) or epoch < 0:
            raise ValueError(f"epoch must be an int >= 0, got {epoch!r}")
        with self._lock:
            self._refuse_reentry("set_epoch()")
            if int(epoch) != self.epoch:
                self.epoch, self.step, self._in_epoch, self._restart = int(epoch), 0, False, None

    # -- construction -----------------------------------------------------------------------------------------
    def _check_fits(self):
        """Refuse shards that would give empty epochs (say why, at construction)."""
        n = len(self.dataset)
        if n < self.num_shards:
            raise ValueError(f"{self.dataset.source}: {n} sample(s) cannot fill num_shards={self.num_shards} shards "
                             "(every rank needs at least one sample)")
        if self.train and self._batches() == 0:
            raise ValueError(f"batch_size={self.batch_size} is larger than a training shard of "
                             f"{n // self.num_shards} samples ({n} samples / {self.num_shards} shards): training "
                             "yields full batches only, so every epoch would be empty; lower batch_size")

    def _shard_size(self, epoch: Optional[int] = None) -> int:
        """Samples of the shard this rank reads in ``epoch`` (default: the current one). DALI moves every rank to
        the next shard at each epoch: rank r reads shard (r + epoch) % num_shards."""
        n, k = len(self.dataset), (self.shard_id + (self.epoch if epoch is None else epoch)) % self.num_shards
        return (n * (k + 1)) // self.num_shards - (n * k) // self.num_shards

    def _runs_per_epoch(self) -> int:
        """Pipeline runs per epoch, the same on every rank: the largest shard in batches, the last one padded."""
        return -(-(-(-len(self.dataset) // self.num_shards)) // self.batch_size)

    def _batches(self, epoch: Optional[int] = None) -> int:
        """Batches this rank yields in ``epoch``: training, the full batches of the smallest shard (the same count on
        every rank, as DDP needs); evaluation, its own shard in batches, the last one partial."""
        if self.train:
            return (len(self.dataset) // self.num_shards) // self.batch_size
        return -(-self._shard_size(epoch) // self.batch_size)

    def _epoch_seed(self, epoch: int) -> int:
        """The DALI seed of ``epoch``'s pipeline (file order, crops, augmentations): a function of (seed, epoch)
        (the rank is mixed in by ``pipeline_seed``). Evaluation has nothing random: the seed itself."""
        if not self.train:
            return self.seed
        return int(np.random.SeedSequence((self.seed, epoch)).generate_state(1)[0] >> 2)

    def _reader_order(self, epoch: int) -> Optional[np.ndarray]:
        """Training: the permutation of the files (of the shards, for WebDataset) that ``epoch`` reads, keyed by
        (seed, epoch) and the same on every rank (each reads its slice); evaluation: None (the dataset's order)."""
        if not self.train:
            return None
        units = len(self.dataset.shards) if self.dataset.kind == "webdataset" else len(self.dataset)
        return epoch_order(units, self.seed, epoch)

    def _make_pipeline(self, epoch: int, checkpoint: Optional[str] = None, first_batch: bool = False) -> _Built:
        """A new pipeline and iterator for ``epoch``, from its start or, given ``checkpoint`` (a DALI checkpoint
        of that epoch's pipeline), where that one was; ``first_batch``: run it up to its first batch (and fill
        its prefetch queue) now. Reads the loader's options only, so the next epoch's can be made in a background
        thread (``_prepare_next``)."""
        from nvidia.dali.plugin.pytorch import DALIGenericIterator, LastBatchPolicy

        source = None
        if self.backend == "dali":
            runs = self._runs_per_epoch()
            source = MixParamSource(self.mixup if self.mixup is not None else self._no_mix, self.batch_size,
                                    self.image_size, self.seed, self.shard_id, runs, first_epoch=epoch)
            source.enabled = self._switch
        pipe = build_pipeline(
            self.dataset, batch_size=self.batch_size, train=self.train, image_size=self.image_size,
            device=self.device_kind, num_threads=self.num_threads, seed=self._epoch_seed(epoch),
            shard_id=(self.shard_id + epoch) % self.num_shards, num_shards=self.num_shards,
            device_id=self.device_id, backend=self.backend, prefetch_queue_depth=_PREFETCH_DEPTH,
            mix_source=source, num_classes=self.num_classes,
            label_smoothing=self._no_mix.label_smoothing, mean=self.mean, std=self.std,
            out_dtype=_DTYPE_NAMES[self.out_dtype], layout=self.layout, checkpoint=checkpoint,
            mix_step=self._mix_step(epoch), order=self._reader_order(epoch), **self.augment)
        outputs = ["images", "labels", "targets" if self._mixed_in_graph else "flip"]
        # PARTIAL for training too: the loader stops after len(self) full batches and drops the pipeline
        # (DROP would yield the full batches of this rank's shard, one more than a smaller shard's ranks get)
        iterator = DALIGenericIterator([pipe], outputs, reader_name="Reader",
                                       last_batch_policy=LastBatchPolicy.PARTIAL, auto_reset=False,
                                       prepare_first_batch=first_batch)
        found = pipe.reader_meta("Reader")["epoch_size"]
        if found != len(self.dataset):
            raise RuntimeError(f"{self.dataset.source}: DALI's reader finds {found} samples where the scan found "
                               f"{len(self.dataset)}: the data changed while the loader was being built")
        return _Built(epoch, pipe, iterator, source)

    def _build(self, checkpoint: Optional[str] = None):
        """Replace the pipeline by a new one for ``self.epoch`` (see ``_make_pipeline``)."""
        self._use(None)  # let the old pipeline go before the new one takes its memory
        self._use(self._make_pipeline(self.epoch, checkpoint))

    def _use(self, built: Optional[_Built]) -> None:
        if self._in_flight is not None:
            self._in_flight.clear()  # the old pipeline's buffers: let its queued readers finish first
        owned = self._owned
        owned.pipe, owned.iterator, owned.source = (built.pipe, built.iterator, built.source) if built else (None,) * 3
        self._built_for, self._started = (built.epoch if built else None), False

    # the pipeline's objects live in self._owned (see _Owned)
    _pipe = property(lambda self: self._owned.pipe)
    _source = property(lambda self: self._owned.source)
    _iter = property(lambda self: self._owned.iterator, lambda self, it: setattr(self._owned, "iterator", it))
    _next = property(lambda self: self._owned.next, lambda self, nxt: setattr(self._owned, "next", nxt))

    def close(self) -> None:
        """Let the loader's DALI pipelines go now (threads, pinned and device memory), after the GPU work that
        reads their buffers has completed; batches already handed out stay valid. Also done by ``del`` (the
        loader is in no reference cycle), at the end of a ``with`` block, and at interpreter exit. A closed
        loader cannot be iterated again."""
        self._finalizer()

    def __enter__(self) -> "DaliMixupLoader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _check_open(self) -> None:
        if not self._finalizer.alive:
            raise RuntimeError("this DaliMixupLoader is closed (close() or a with block ended): create a new one")

    def _prepare_next(self) -> None:
        """Start making the next epoch's pipeline, and running it up to its first batch, in a background thread
        while the caller works on this epoch's last batches (building one took 0.1-0.15 s for 1,280 files on the
        2-core CPU here, and its first batch about one batch time; more with a long file list). ``__iter__``
        takes it if the next pass is that epoch, else drops it. For that while two pipelines hold memory."""
        epoch, box = self.epoch + 1, {}

        def make():
            try:
                box["built"] = self._make_pipeline(epoch, first_batch=True)
            except Exception:  # noqa: BLE001 - __iter__ builds again in the caller's thread and raises there
                pass

        thread = threading.Thread(target=make, name="dali-mixup-next-epoch")  # joined at exit: no DALI call cut off
        thread.start()
        self._next = (epoch, thread, box)

    def _start_pass(self) -> None:
        """A pipeline for ``self.epoch`` from its start: the one ``_prepare_next`` made when it is for this
        epoch, else a new one."""
        pending, self._next = self._next, None
        if pending is not None:
            epoch, thread, box = pending
            thread.join()
            if epoch == self.epoch and self.step == 0 and "built" in box:
                self._use(box["built"])
                return
        self._build()

    @property
    def _mixed_in_graph(self) -> bool:
        return self.backend != "fused" or self.placement == "graph"

    def _mix_step(self, epoch: int) -> Optional[Callable]:
        """Placement "graph": ``dali.mix`` bound to this loader's options; its key (epoch, step) is ``epoch`` and
        the pipeline's run count (the epilogue's key), and its position is in DALI's checkpoint."""
        if self.backend != "fused" or self.placement != "graph":
            return None
        return partial(dali.mix, cfg=self.mixup if self.mixup is not None else self._no_mix, seed=self.seed,
                       rank=self.shard_id, batches_per_epoch=self._runs_per_epoch(), first_epoch=epoch,
                       mean=self.mean, std=self.std,
                       out_dtype=self.out_dtype, layout=self.layout, enabled=self._switch)

    # -- mixing switch ----------------------------------------------------------------------------------------
    @property
    def mixup_enabled(self) -> bool:
        """False: batches are not mixed (plain normalisation and (smoothed) one-hot targets), e.g. for the last
        epochs of a recipe; saved in ``state_dict``."""
        return self._switch.enabled

    @mixup_enabled.setter
    def mixup_enabled(self, value: bool) -> None:
        self._switch.enabled = bool(value)

    @property
    def mixup_schedule(self) -> Optional[Callable[[int], bool]]:
        """Optional callable(epoch) -> bool, consulted at every batch (e.g. ``lambda e: e < off_epoch``)."""
        return self._switch.schedule

    @mixup_schedule.setter
    def mixup_schedule(self, schedule: Optional[Callable[[int], bool]]) -> None:
        if schedule is not None and not callable(schedule):
            raise TypeError(f"mixup_schedule must be a callable(epoch) -> bool or None, got {schedule!r}")
        self._switch.schedule = schedule

    # -- iteration --------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self._batches()

    def __iter__(self):
        """Start a pass (``self.epoch``'s), or continue the one under way (resumed, or left with ``break``)."""
        with self._lock:
            self._check_open()
            self._refuse_reentry("iter()")
            self._stopped = False
            if not self._in_epoch:
                self._begin()
        return self

    def _begin(self) -> None:
        if self._started or self._built_for != self.epoch:
            self._start_pass()
        self._in_epoch = True

    def _refuse_reentry(self, what: str) -> None:
        """An error for a call made while this thread is inside ``next()`` (from a signal handler): it would
        change the position of the batch being made."""
        if self._running == threading.get_ident():
            raise RuntimeError(f"{what} called during this loader's next() in the same thread (a signal handler?): "
                               "call it between batches")

    def __next__(self):
        """The next batch. After StopIteration, StopIteration again until a new ``iter(loader)``. Threads sharing
        the loader take turns (a lock). An exception that interrupts it (KeyboardInterrupt, SystemExit from a
        signal handler) loses nothing: the next call makes that batch again, and a ``state_dict()`` taken
        meanwhile (or from the handler) is the position of the batches handed out."""
        with self._lock:
            self._check_open()
            self._refuse_reentry("next()")
            if self._stopped:
                raise StopIteration
            if not self._in_epoch:  # next() without iter(), or after set_epoch()
                self._begin()
            self._running = threading.get_ident()
            try:
                return self._next_locked()
            finally:
                self._running, self._before = None, None

    def _next_locked(self):
        if self._restart is not None:  # an interrupted next() lost DALI's batch: back to where it began
            self._use(self._make_pipeline(self.epoch, self._restart.dali))
            self._restart = None
        # signal handlers and KeyboardInterrupt run in the main thread only: its position is saved first
        self._before = self._position(with_dali=threading.current_thread() is threading.main_thread())
        try:
            images, targets = self._make_batch()
        except StopIteration:
            self._in_epoch, self._stopped = False, True
            self.epoch += 1
            self.step = 0
            raise
        except RuntimeError as exc:
            raise self._explain(exc) from exc
        except BaseException:  # KeyboardInterrupt, SystemExit, ...: DALI's batch is gone with this call
            if self._before.dali is not None:
                self._restart = self._before
            raise
        self.step += 1
        return images, targets

    def _make_batch(self):
        """The next batch of this epoch (the step is counted by the caller)."""
        self._started = True
        batch = self._next_batch()
        shared = []  # outputs handed to the caller as DALI's own memory (zero_copy)
        if self._mixed_in_graph:
            images = batch["images"]
            if images.dtype == torch.int16:  # bfloat16 mixed in the graph comes as its bits (DALI has no bfloat16)
                images = images.view(torch.bfloat16)
            images = self._hand_out(images, self.out_dtype, shared)
            targets = self._hand_out(batch["targets"], torch.float32, shared)
        else:
            images_u8, labels, flip = batch["images"], batch["labels"], batch["flip"]
            n, h, w, _ = images_u8.shape
            cfg = self.mixup if self._switch(self.epoch) else self._no_mix
            epoch, step = batch_key(self.step, None, self.epoch)  # the pipeline's run = this epoch's step
            params = sample_params(cfg, n, h, w, seed=self.seed, epoch=epoch, step=step, rank=self.shard_id)
            images, targets = mix_batch(images_u8, labels, cfg, params,
                                        mean=self.mean, std=self.std, out_dtype=self.out_dtype, layout=self.layout,
                                        flip=flip.cpu().numpy(), check_labels=False,
                                        cpu_threads=self._kernel_threads)
        if self.targets == "index":  # a copy: the caller's to keep, whatever DALI does with its own buffer
            targets = (self._rt.owned_copy(batch["labels"], torch.int64) if self._rt is not None else
                       batch["labels"].to(torch.int64, copy=True))
        if self._in_flight is not None:
            # DALI's buffers are read by work just queued (the kernels, the copies into the caller's memory): held
            # until it has completed; or handed out as they are (zero_copy): held until the next call. See _InFlight.
            self._in_flight.hold(tuple(batch.values()), read_by_queued_work=not shared)
        if self._next is None and self.step + 1 >= max(1, len(self) - _PREFETCH_DEPTH):
            self._prepare_next()  # this pipeline has produced its last batches: make the next one meanwhile
        return images, targets

    def _hand_out(self, tensor: torch.Tensor, dtype: torch.dtype, shared: list) -> torch.Tensor:
        """A DALI output as the caller gets it: on the GPU, a copy in memory the caller owns (torch's, filled on
        the current stream), or with ``zero_copy`` DALI's own memory when nothing needs converting (then noted in
        ``shared``); on the CPU, ``tensor`` itself (DALI reuses no CPU buffer a reference is left to, and nothing
        runs behind the host)."""
        if self._rt is None:
            return tensor.to(dtype)
        if self.zero_copy and tensor.dtype == dtype and self._rt.is_on_device(tensor):
            shared.append(tensor)
            return tensor
        return self._rt.owned_copy(tensor, dtype)

    def _next_batch(self) -> dict:
        """DALI's next batch of this epoch; StopIteration after ``len(self)`` batches (what is left of DALI's
        epoch, padding or a larger shard's extra batch, goes with the pipeline: the next pass builds its own)."""
        if self.step >= len(self):
            raise StopIteration
        if self._iter is None:
            self._check_open()
        return next(self._iter)[0]

    def _explain(self, exc: RuntimeError) -> Exception:
        """DALI's read and decode errors do not name the file: find what is wrong now (missing, unreadable, empty,
        corrupt files; truncated shards, bad labels, corrupt images by shard and key) and name it. DALI's own
        (multi-line) report stays attached as the cause."""
        found = diagnose(self.dataset, self.num_classes)
        if found is not None:
            return RuntimeError(f"DALI pipeline failed reading {self.dataset.source}: {found}")
        said = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return RuntimeError(f"DALI pipeline failed reading {self.dataset.source}; DALI said: {said}")

    # -- resume -----------------------------------------------------------------------------------------------
    def _stream_identity(self) -> dict:
        """What the stream of batches is drawn over: every option that decides which samples a batch holds and
        how they are augmented and mixed (add new such options here). A state resumes only a loader with the
        same identity. Not in it: num_threads, out_dtype, layout, mean, std (the same samples, in another form)."""
        mixup = dataclasses.asdict(self.mixup) if self.mixup is not None else None
        return _plain({
            "dataset": self.dataset.kind, "samples": len(self.dataset), "sample_list": self.dataset.fingerprint(),
            "train": self.train, "image_size": self.image_size, "batch_size": self.batch_size, "seed": self.seed,
            "shard_id": self.shard_id, "num_shards": self.num_shards, "backend": self.backend,
            "placement": self.placement, "device": self.device_kind, "mixup": mixup, "augment": self.augment,
            "targets": self.targets,
        })

    def _position(self, with_dali: bool = True) -> _Position:
        """Where the stream stands now (an interrupted next(): where it stood before that call)."""
        if self._restart is not None:
            return self._restart._replace(mixup_enabled=self.mixup_enabled)
        return _Position(self.epoch, self.step, self._in_epoch, self.mixup_enabled,
                         self._iter.checkpoints()[0] if with_dali else None)

    def state_dict(self) -> dict:
        """Everything needed to continue the same stream of batches (DALI's reader/RNG checkpoint included), and
        what it was saved over (``_stream_identity``): the position after the batches handed out so far. From
        another thread during ``next()``: after that batch (it waits); from a signal handler during ``next()``:
        before it (the batch is not handed out yet; an exception from the handler does not lose it)."""
        self._check_open()
        if self._running == threading.get_ident() and self._before is not None and self._before.dali is not None:
            position = self._before  # a signal handler, inside next(): the batches handed out so far
        else:
            with self._lock:
                position = self._position()
        return {"format": _STATE_FORMAT, "identity": self._stream_identity(), "epoch": position.epoch,
                "step": position.step, "in_epoch": position.in_epoch, "mixup_enabled": position.mixup_enabled,
                "dali": position.dali}

    def load_state_dict(self, state: dict) -> None:
        """Continue the stream saved by ``state_dict``. Raises naming the field when the state was saved over other
        data or options, and clearly for a state that is empty, malformed, or of another format. All or nothing:
        every field is checked and the new pipeline made before anything changes; on an error the loader is as
        it was (its pass, position and mixing switch)."""
        with self._lock:
            self._check_open()
            self._refuse_reentry("load_state_dict()")
            position = self._check_state(state)
            try:  # mid-epoch: that epoch's pipeline where it was; between epochs: the next epoch's, fresh
                built = self._make_pipeline(position.epoch, position.dali if position.in_epoch else None)
            except Exception as exc:  # noqa: BLE001 - whatever DALI raises for a bad checkpoint
                raise ValueError(f"state_dict['dali'] cannot be restored as this pipeline's DALI checkpoint: "
                                 f"{exc}") from exc
            pending, self._next = self._next, None
            if pending is not None:
                pending[1].join()  # a next epoch's pipeline being made for the old stream: not this one's
            self._use(built)
            self.epoch, self.step, self._in_epoch = position.epoch, position.step, position.in_epoch
            self.mixup_enabled, self._stopped, self._restart = position.mixup_enabled, False, None

    def _check_state(self, state) -> _Position:
        """Every field of a ``state_dict`` checked (nothing changed) -> out: its position."""
        if not isinstance(state, dict):
            raise TypeError(f"state_dict must be a dict from DaliMixupLoader.state_dict(), got {type(state).__name__}")
        if not state:
            raise ValueError("state_dict is empty: expected a dict from DaliMixupLoader.state_dict()")
        if state.get("format") != _STATE_FORMAT:
            found = f"format {state['format']!r}" if "format" in state else "no 'format' key (an older dali-mixup)"
            raise ValueError(f"state_dict has {found}; this loader reads format {_STATE_FORMAT}: a state saved by "
                             "another version cannot be resumed (start the epoch afresh)")
        missing = {"identity", "epoch", "step", "in_epoch", "mixup_enabled", "dali"} - set(state)
        if missing:
            raise ValueError(f"state_dict lacks {sorted(missing)}: not a complete DaliMixupLoader state")
        try:
            saved = _plain(state["identity"])
        except (TypeError, ValueError) as exc:
            raise ValueError(f"state_dict['identity'] is not a saved stream identity ({exc})") from None
        if not isinstance(saved, dict):
            raise ValueError(f"state_dict['identity'] must be a dict, got {type(saved).__name__}")
        current = self._stream_identity()
        for key in list(current) + [k for k in saved if k not in current]:  # the plainest difference first
            if saved.get(key) != current.get(key):
                raise ValueError(f"state_dict was saved over another stream: {key} was {saved.get(key)!r}, this "
                                 f"loader has {current.get(key)!r}")
        epoch = _integer("state_dict['epoch']", state["epoch"], 0)
        step = _integer("state_dict['step']", state["step"], 0, self._batches(epoch))
        for key in ("in_epoch", "mixup_enabled"):
            if not isinstance(state[key], (bool, np.bool_)):
                raise TypeError(f"state_dict[{key!r}] must be True or False, got {state[key]!r}")
        in_epoch = bool(state["in_epoch"])
        if in_epoch and not (isinstance(state["dali"], (bytes, str)) and state["dali"]):
            raise ValueError(f"state_dict['dali'] must be the DALI checkpoint (non-empty bytes) of a state saved "
                             f"mid-epoch, got {type(state['dali']).__name__}")
        return _Position(epoch, step, in_epoch, bool(state["mixup_enabled"]), state["dali"] if in_epoch else None)


def _cuda_device_id(device_id: Optional[int]) -> int:
    """The GPU the loader decodes on and hands its batches to: ``device_id``, else torch's current device (what a
    training script selected with ``torch.cuda.set_device``, and the only GPU of a rank that sees one through
    ``CUDA_VISIBLE_DEVICES``). ``LOCAL_RANK`` is not used to choose: it only prompts a warning when it disagrees."""
    if not torch.cuda.is_available():
        raise ValueError("device='gpu' but torch sees no CUDA device")
    count = torch.cuda.device_count()
    if device_id is None:
        device_id = torch.cuda.current_device()
        local_rank = os.environ.get("LOCAL_RANK")
        if count > 1 and local_rank is not None and local_rank != str(device_id):
            warnings.warn(f"LOCAL_RANK={local_rank} but torch's current device is cuda:{device_id}: the loader uses "
                          f"cuda:{device_id}; call torch.cuda.set_device(local_rank) before building it (or pass "
                          f"device_id) to use another", stacklevel=3)
    if isinstance(device_id, bool) or not isinstance(device_id, int) or not 0 <= device_id < count:
        raise ValueError(f"device_id must be an int in [0, torch.cuda.device_count()={count}), got {device_id!r}")
    return device_id


def create_dali_loader(data: Union[str, os.PathLike, Sequence[str]], *, batch_size: int, num_classes: int,
                       train: bool = True, image_size: int = 224, mixup: Optional[MixupConfig] = None,
                       backend: str = "fused", device: str = "auto", num_threads: int = 4, seed: int = 0,
                       shard_id: Optional[int] = None, num_shards: Optional[int] = None,
                       out_dtype: torch.dtype = torch.float32, layout: str = "NCHW",
                       mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                       device_id: Optional[int] = None, skip_corrupt: bool = False,
                       scale: Sequence[float] = (0.08, 1.0), ratio: Sequence[float] = (3 / 4, 4 / 3),
                       hflip: float = 0.5, targets: Optional[str] = None, interpolation: str = "bilinear",
                       color_jitter: Union[None, float, Sequence[float]] = None, auto_augment: Optional[str] = None,
                       re_prob: float = 0.0, re_mode: str = "const", re_count: int = 1, crop_pct: float = 0.875,
                       val_resize_size: Optional[int] = None, placement: str = "epilogue",
                       zero_copy: bool = False, classes: Union[None, Sequence[str], Mapping[str, int]] = None,
                       exif_orientation: bool = False) -> DaliMixupLoader:
    """A DALI loader of ``(images, targets)`` with Mixup/CutMix fused in (see the README).

    Args:
        data: an ImageFolder directory, a file list (``path label`` lines) or WebDataset shards.
        batch_size, num_classes, image_size: >= 1.
        train: random-resized crop (scale (0.08, 1), ratio (3/4, 4/3)) + the augmentations below + flip +
            shuffling + mixing, last partial batch dropped; False: resize the shorter side to
            floor(image_size / crop_pct) (or ``val_resize_size``), centre crop, no augmentation, no mixing, every
            sample once.
        mixup: a ``MixupConfig`` (its ``num_classes`` must match), or None for no mixing.
        targets: "soft" (float32 (B, num_classes): one-hot, smoothed, mixed) or "index" (int64 (B,) class indices,
            for ``accuracy`` and hard-label losses; not with mixup on a training loader). None: "soft" for
            training, "index" for evaluation.
        backend: "fused" (our kernel), "dali" (DALI's own operators), "none" (no mixing).
        device: "gpu" (mixed decode on the GPU), "cpu" (CPU-only DALI), "auto" (GPU when torch sees one).
        shard_id, num_shards: this rank's shard; default from torch.distributed when initialised.
        out_dtype, layout, mean, std: as ``mix_batch``; float32 by default, as a DataLoader's; float16/bfloat16
            for a model run under AMP (with channels_last: layout "NHWC").
        device_id: the GPU (default: torch's current device, as set by ``torch.cuda.set_device``).
        scale, ratio, hflip: training augmentation, torchvision's ``RandomResizedCrop(scale, ratio)`` and the
            probability of a horizontal flip (timm's names).
        interpolation: "bilinear", "bicubic", "nearest" or (training only) "random" (timm: bilinear or bicubic
            per sample), for the crop's resize (and the eval resize).
        color_jitter: training colour jitter, a number or (brightness, contrast, saturation[, hue]) (timm's
            ``--color-jitter``; torchvision's ColorJitter meaning).
        auto_augment: timm's RandAugment string ("rand-m9-mstd0.5-inc1") or AutoAugment policy ("original",
            "v0", ...), or torchvision's "ra", "ta_wide", "imagenet" (see ``dali_mixup.auto_augment``).
        re_prob, re_mode, re_count: random erasing (timm's ``--reprob``, ``--remode`` const|rand|pixel,
            ``--recount``), on the un-mixed crop (see ``dali_mixup.augment.random_erasing``).
        crop_pct, val_resize_size: evaluation resize (timm's ``crop_pct``; torchvision's ``--val-resize-size``,
            which overrides it).
        skip_corrupt: check every image first (header and end marker) and leave empty and corrupt ones out,
            logging how many (``loader.dataset.skipped``). Default: an empty image is refused here, a corrupt
            one stops iteration with an error naming it.
        placement: backend "fused": where its kernels run, "epilogue" (on DALI's uint8 output, after the
            iterator; the default) or "graph" (inside the DALI pipeline, ``dali_mixup.dali.mix``). Both give the
            same batches, bit for bit; see the README for what each costs.
        zero_copy: what a batch's memory is on the GPU. False (default): memory the caller owns (torch's,
            filled on torch's current stream), to keep as long as it likes, like any tensor. True: where DALI
            produced the batch in its final form (backends "none"/"dali", placement "graph"), its own memory,
            saving a device-to-device copy; the rule then is that the batch may only be read by work queued on
            torch's current stream before the next ``next()`` on the loader, and not kept past that call (DALI
            reuses the memory). The fused epilogue's output is always the caller's. No effect on the CPU, where
            batches are always the caller's.
        classes: ImageFolder data only: the class numbering, as torchvision's ``class_to_idx`` — a sequence of
            class names (index = position) or a dict name -> index (e.g. the training loader's
            ``loader.dataset.classes``, for an evaluation loader). A class folder it does not name is an error
            naming the folder; a named class without a folder has no samples. None: the folders' sorted names.
        exif_orientation: False (default, torchvision's ``ImageFolder``/PIL behaviour): pixels as stored, the
            EXIF orientation tag ignored; True: images rotated/flipped upright by it (DALI's decoder default).

    Every argument is checked here, and every file (see ``find_dataset``); the README's "Bad input" lists what
    each bad input gets.
    """
    batch_size = _positive_int("batch_size", batch_size)
    num_classes = _positive_int("num_classes", num_classes)
    image_size = _positive_int("image_size", image_size)
    num_threads = _positive_int("num_threads", num_threads)
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
    if out_dtype not in OUT_DTYPES:
        raise ValueError(f"out_dtype must be torch.float32, torch.float16 or torch.bfloat16, got {out_dtype}")
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if placement not in PLACEMENTS:
        raise ValueError(f"placement must be one of {PLACEMENTS}, got {placement!r}")
    if placement == "graph" and backend != "fused":
        raise ValueError(f"placement='graph' places the fused kernels: it needs backend='fused', got {backend!r}")
    if mixup is not None:
        if not isinstance(mixup, MixupConfig):
            raise TypeError(f"mixup must be a MixupConfig or None, got {type(mixup).__name__}")
        if mixup.num_classes != num_classes:
            raise ValueError(f"mixup.num_classes={mixup.num_classes} differs from num_classes={num_classes}")
    for name, flag in (("train", train), ("skip_corrupt", skip_corrupt), ("zero_copy", zero_copy),
                       ("exif_orientation", exif_orientation)):
        if not isinstance(flag, bool):
            raise TypeError(f"{name} must be True or False, got {flag!r}")
    scale, ratio = _pair("scale", scale), _pair("ratio", ratio)
    if scale[1] > 1:
        raise ValueError(f"scale must lie in (0, 1], got {scale!r}")
    if isinstance(hflip, bool) or not isinstance(hflip, numbers.Real) or not 0.0 <= float(hflip) <= 1.0:
        raise ValueError(f"hflip must be a probability in [0, 1], got {hflip!r}")
    mean, std = check_normalization(mean, std)
    augment = check_augment(image_size=image_size, train=train, interpolation=interpolation,
                            color_jitter=color_jitter, auto_augment=auto_augment, re_prob=re_prob, re_mode=re_mode,
                            re_count=re_count, crop_pct=crop_pct, val_resize_size=val_resize_size)
    augment["exif_orientation"] = exif_orientation  # decides the pixels: part of the stream's identity
    targets = _check_targets(targets, train, mixup)
    shard_id, num_shards = _default_shards(shard_id, num_shards)
    # DALI takes an int64 seed; rank r's pipeline uses pipeline_seed(seed, r)
    seed = _integer("seed", seed, 0, DALI_SEED_MAX - pipeline_seed(0, num_shards - 1))
    import_dali()  # without DALI: an ImportError naming the extra to install
    if device == "auto":
        device = "gpu" if torch.cuda.is_available() else "cpu"
    device_id = _cuda_device_id(device_id) if device == "gpu" else None
    dataset = find_dataset(data, num_classes, skip_empty=skip_corrupt, classes=classes)
    if skip_corrupt:
        dataset = without_corrupt(dataset)
    return DaliMixupLoader(dataset, batch_size=batch_size, num_classes=num_classes, train=train,
                           image_size=image_size, mixup=mixup, backend=backend if mixup is not None else "none",
                           device=device, num_threads=num_threads, seed=seed, shard_id=shard_id,
                           num_shards=num_shards, out_dtype=out_dtype, layout=layout, mean=mean, std=std,
                           device_id=device_id, scale=scale, ratio=ratio, hflip=hflip, augment=augment,
                           targets=targets, placement=placement, zero_copy=zero_copy)


def _check_targets(targets: Optional[str], train: bool, mixup: Optional[MixupConfig]) -> str:
    """None -> "soft" (training) / "index" (evaluation); index targets cannot carry a training loader's mixing."""
    if targets is None:
        return "soft" if train else "index"
    if targets not in TARGETS:
        raise ValueError(f"targets must be one of {TARGETS} or None, got {targets!r}")
    if targets == "index" and train and mixup is not None:
        raise ValueError("targets='index' with mixup on a training loader: class indices cannot carry mixed or "
                         "smoothed targets; pass mixup=None (and smooth in the loss) or targets='soft'")
    return targets
