"""``create_dali_loader``: the drop-in replacement for an ImageNet DataLoader.

DALI pipeline (decode, random-resized crop, augmentations, flip flags; ``lifecycle``: one per epoch) -> DALI's
iterator (torch tensors on the training device) -> the placement's strategy (``epilogue``: the fused kernels on
DALI's uint8 output, or the batch the graph finished) -> ``(images, targets)``. The loader is the DataLoader
surface training scripts touch (``sampler.set_epoch``, ``batch_sampler``, ``batch_size``, ``drop_last``,
``dataset``), the iteration protocol and the resume state; its options are a validated ``LoaderSpec``.
"""

from __future__ import annotations

import numbers
import os
import threading
import warnings
import weakref
from typing import Callable, List, Mapping, Optional, Sequence, Tuple, Union

import torch

from . import epilogue, epochs
from . import state as states
from .config import IMAGENET_MEAN, IMAGENET_STD, MixupConfig
from .cuda_runtime import runtime_for
from .dali import import_dali
from .datasets import Dataset, diagnose, find_dataset, without_corrupt
from .lifecycle import PREFETCH_DEPTH, InFlight, Pipelines
from .mixing import mix_record, precompile_in_background
from .resolution import Size
from .spec import BACKENDS, DEVICES, TARGETS, LoaderSpec

__all__ = ["create_dali_loader", "DaliMixupLoader", "BACKENDS", "DEVICES", "TARGETS"]


class _MixSwitch:
    """Whether a batch of ``epoch`` is mixed: ``loader.mixup_enabled`` and ``mixup_off_epoch``. The pipelines ask
    it when DALI runs a batch (backend "dali", placement "graph"); it holds no reference to the loader, so a loader
    and its pipelines form no cycle."""

    def __init__(self, enabled: bool, can_mix: bool, off_epoch: Optional[int]):
        self.enabled, self.can_mix, self.off_epoch = enabled, can_mix, off_epoch
        self.schedule: Optional[Callable[[int], bool]] = None  # deprecated: loader.mixup_schedule

    def __call__(self, epoch: int) -> bool:
        if not (self.enabled and self.can_mix) or (self.off_epoch is not None and epoch >= self.off_epoch):
            return False
        return bool(self.schedule(epoch)) if self.schedule is not None else True


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
        loader = self._loader
        return epochs.shard_size(loader.spec, len(loader.dataset), loader.epoch)


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
    def batch_sizes(self) -> Tuple[int, ...]:
        """The batch size of each crop size a batch may take (timm's ``ScheduledBatchSampler.batch_sizes``): one
        batch size here, whatever the size."""
        loader = self._loader
        return (loader.batch_size,) * len(loader.spec.sizes_at(loader.epoch))

    @property
    def average_batch_size(self) -> float:
        """timm's ``ScheduledBatchSampler.average_batch_size`` (its learning-rate and loss-scale reference)."""
        return float(self._loader.batch_size)

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

    def __init__(self, dataset: Dataset, spec: LoaderSpec):
        self.dataset, self.spec = dataset, spec
        epochs.check_fits(spec, len(dataset), dataset.source)
        self.epoch = self.step = 0
        self._stopped = False  # StopIteration was raised: next() raises it again until a new iter(loader)
        self._lock = threading.RLock()  # next(), iter(), set_epoch() and the state: one thread at a time
        self._running = None  # the thread inside next(); _before: the position when that next() began
        self._before = self._restart = None  # _restart: a next() was interrupted: go on from that Position
        self._in_epoch = False
        self._switch = _MixSwitch(spec.mixup is not None and spec.train, spec.mixup is not None, spec.mixup_off_epoch)
        self._rt = runtime_for(self.device)  # None on the CPU: nothing runs behind the host there
        self._in_flight = InFlight(PREFETCH_DEPTH + 2, self._rt) if self._rt is not None else None
        self._pipes = Pipelines(spec, dataset, self._switch, self._in_flight)
        self._epilogue = epilogue.for_spec(spec, self._switch, self._rt)
        # del, close() or interpreter exit: the GPU work reading DALI's buffers completes, then they go
        self._finalizer = weakref.finalize(self, self._pipes.owned.release)
        self.sampler = EpochSampler(self)
        self.batch_sampler = BatchSampler(self)
        #: the background compile of the CUDA kernels (fused backend on the GPU), or None; see _precompile
        self.precompile_thread = self._precompile()
        self._pipes.build(self.epoch)

    def __getattr__(self, name):  # the options, as a DataLoader's attributes: loader.batch_size, loader.train, ...
        spec = self.__dict__.get("spec")
        if spec is not None and name in LoaderSpec.__dataclass_fields__:
            return getattr(spec, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @property
    def device(self) -> torch.device:
        """Where the batches are: torch's ``cuda:<device_id>`` or the CPU."""
        return self.spec.torch_device

    def _precompile(self):
        """Fused on the GPU: compile the kernels this loader launches while DALI builds and warms up (each
        process and rank would otherwise compile them at its first batch; numba's on-disk cache makes later
        processes fast). ``placement="graph"`` launches the same kernels from DALI's thread: they are ready too."""
        if self.device.type != "cuda" or self.spec.backend != "fused":
            return None
        return precompile_in_background(self.spec.out_dtype, self.spec.layout, self.spec.sizes_at(self.epoch),
                                        self.device.index)

    def size_at(self, epoch: Optional[int] = None) -> int:
        """The crop size of ``epoch`` (default: the current one); ``image_size`` may be a schedule. A size per
        batch (``PerBatchSizes``): a ValueError; ``sizes_at`` gives each batch's."""
        return self.spec.size_at(self.epoch if epoch is None else epoch)

    def sizes_at(self, epoch: Optional[int] = None) -> List[int]:
        """The crop size of each batch of ``epoch`` (default: the current one), ``len(self)`` of them; with
        ``PerBatchSizes`` the sizes timm's sampler would choose, the same on every rank."""
        return epochs.crop_sizes(self.spec, len(self.dataset), self.epoch if epoch is None else epoch).tolist()

    @property
    def drop_last(self) -> bool:
        """Training drops each rank's last partial batch, evaluation keeps it (DataLoader's ``drop_last``)."""
        return self.spec.train

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

    def _batches(self, epoch: int) -> int:
        return epochs.batches(self.spec, len(self.dataset), epoch)

    # -- the pipelines (see lifecycle.Pipelines) --------------------------------------------------------------
    _pipe = property(lambda self: self._pipes.owned.pipe)
    _iter = property(lambda self: self._pipes.owned.iterator,
                     lambda self, it: setattr(self._pipes.owned, "iterator", it))
    _next = property(lambda self: self._pipes.owned.next)

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

    # -- mixing switch ----------------------------------------------------------------------------------------
    @property
    def mixup_enabled(self) -> bool:
        """False: batches are not mixed (plain normalisation and (smoothed) one-hot targets), from the next batch
        on (with backend "dali" or placement "graph", after the batches DALI has prefetched); saved in
        ``state_dict``. Epochs from ``mixup_off_epoch`` on are never mixed."""
        return self._switch.enabled

    @mixup_enabled.setter
    def mixup_enabled(self, value: bool) -> None:
        self._switch.enabled = bool(value)

    @property
    def mixup_schedule(self) -> Optional[Callable[[int], bool]]:
        """Deprecated: pass ``mixup_off_epoch`` to ``create_dali_loader`` (or set ``mixup_enabled``)."""
        return self._switch.schedule

    @mixup_schedule.setter
    def mixup_schedule(self, schedule: Optional[Callable[[int], bool]]) -> None:
        warnings.warn("loader.mixup_schedule is deprecated: pass mixup_off_epoch= to create_dali_loader (timm's "
                      "--mixup-off-epoch), or set loader.mixup_enabled", DeprecationWarning, stacklevel=2)
        if schedule is not None and not callable(schedule):
            raise TypeError(f"mixup_schedule must be a callable(epoch) -> bool or None, got {schedule!r}")
        self._switch.schedule = schedule

    # -- iteration --------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self._batches(self.epoch)

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
        if self._pipes.started or self._pipes.built_for != self.epoch:
            self._pipes.start_pass(self.epoch, self.step)
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
            self._pipes.use(self._pipes.make(self.epoch, self._restart.dali))
            self._restart = None
        # signal handlers and KeyboardInterrupt run in the main thread only: its position is saved first
        self._before = self._position(with_dali=threading.current_thread() is threading.main_thread())
        try:
            batch = self._make_batch()
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
        return batch

    def _make_batch(self):
        """The next batch of this epoch (the step is counted by the caller)."""
        if self.step >= len(self):  # what is left of DALI's epoch (padding, a larger shard's batch) is dropped
            raise StopIteration
        self._pipes.started = True
        batch = next(self._iter)[0]
        images, targets, shared, params = self._epilogue(batch, self.epoch, self.step)
        if self.spec.targets == "index":
            targets = epilogue.index_targets(batch["labels"], self._rt)
        out = (images, targets) + ((mix_record(params, self.device),) if self.spec.record else ())
        if self._in_flight is not None:
            # DALI's buffers are read by work just queued (the kernels, the copies into the caller's memory): held
            # until it has completed; or handed out as they are (zero_copy): held until the next call. See InFlight.
            self._in_flight.hold(tuple(batch.values()), read_by_queued_work=not shared)
        if self._next is None and self.step + 1 >= max(1, len(self) - PREFETCH_DEPTH):
            self._pipes.prepare_next(self.epoch + 1)  # this pipeline's last batches: make the next one meanwhile
        return out

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
        """What the stream of batches is drawn over: the dataset (kind, size, sample list) and the spec's options
        that decide which samples a batch holds and how they are augmented and mixed (``LoaderSpec.identity``)."""
        return states.plain({"dataset": self.dataset.kind, "samples": len(self.dataset),
                             "sample_list": self.dataset.fingerprint(), **self.spec.identity()})

    def _position(self, with_dali: bool = True) -> states.Position:
        """Where the stream stands now (an interrupted next(): where it stood before that call)."""
        if self._restart is not None:
            return self._restart._replace(mixup_enabled=self.mixup_enabled)
        return states.Position(self.epoch, self.step, self._in_epoch, self.mixup_enabled,
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
        return states.as_dict(position, self._stream_identity())

    def load_state_dict(self, state: dict) -> None:
        """Continue the stream saved by ``state_dict``. Raises naming the field when the state was saved over other
        data or options, and clearly for a state that is empty, malformed, or of another format. All or nothing:
        every field is checked and the new pipeline made before anything changes; on an error the loader is as
        it was (its pass, position and mixing switch)."""
        with self._lock:
            self._check_open()
            self._refuse_reentry("load_state_dict()")
            position = states.check(state, self._stream_identity(), self._batches)
            try:  # mid-epoch: that epoch's pipeline where it was; between epochs: the next epoch's, fresh
                built = self._pipes.make(position.epoch, position.dali if position.in_epoch else None)
            except Exception as exc:  # noqa: BLE001 - whatever DALI raises for a bad checkpoint
                raise ValueError(f"state_dict['dali'] cannot be restored as this pipeline's DALI checkpoint: "
                                 f"{exc}") from exc
            self._pipes.drop_next()  # a next epoch's pipeline being made for the old stream: not this one's
            self._pipes.use(built)
            self.epoch, self.step, self._in_epoch = position.epoch, position.step, position.in_epoch
            self.mixup_enabled, self._stopped, self._restart = position.mixup_enabled, False, None


def create_dali_loader(data: Union[str, os.PathLike, Sequence[str]], *, batch_size: int, num_classes: int,
                       train: bool = True, image_size: Size = 224, mixup: Optional[MixupConfig] = None,
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
                       exif_orientation: bool = False, mixup_off_epoch: Optional[int] = None,
                       record: bool = False) -> DaliMixupLoader:
    """A DALI loader of ``(images, targets)`` with Mixup/CutMix fused in (see the README).

    Args:
        data: an ImageFolder directory, a file list (``path label`` lines) or WebDataset shards.
        batch_size, num_classes: >= 1.
        image_size: the square crop size, an int >= 1; training also a ``ResolutionSchedule`` (FFCV's progressive
            resizing: min_res, max_res, end_ramp, start_ramp) or a callable(epoch) -> size: each epoch's pipeline
            crops to its own size (``loader.size_at(epoch)``; a resumed loader continues at its epoch's size); or
            a ``PerBatchSizes`` (timm's ``--train-img-sizes``): each batch at the size timm's scheduled sampler
            picks for it (``loader.sizes_at(epoch)``).
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
        mixup_off_epoch: training: no mixing from this epoch on (timm's ``--mixup-off-epoch``); None: mixing in
            every epoch. ``loader.mixup_enabled = False`` also switches it off, at the next batch.
        targets: also "compact": ``CompactTargets`` (per sample the label, the partner's label and λ, with the
            smoothing; int64/float32 whatever the image dtype; no (B, C) rows), for ``dm.mixup_cross_entropy``
            and ``dm.mixup_binary_cross_entropy``; the same images as "soft".
        record: batches are ``(images, targets, record)``, ``record`` a ``MixRecord`` on the batches' device:
            per sample the partner, λ, CutMix box and kind (TransMix/TokenMix-style reweighting).
        Compact targets and the record need the fused epilogue when mixing (backend "fused", placement
            "epilogue").

    Every argument is checked here, and every file (see ``find_dataset``); the README's "Bad input" lists what
    each bad input gets.
    """
    spec = LoaderSpec.from_args(
        batch_size=batch_size, num_classes=num_classes, train=train, image_size=image_size, mixup=mixup,
        backend=backend, device=device, num_threads=num_threads, seed=seed, shard_id=shard_id, num_shards=num_shards,
        out_dtype=out_dtype, layout=layout, mean=mean, std=std, device_id=device_id, skip_corrupt=skip_corrupt,
        scale=scale, ratio=ratio, hflip=hflip, targets=targets, interpolation=interpolation,
        color_jitter=color_jitter, auto_augment=auto_augment, re_prob=re_prob, re_mode=re_mode, re_count=re_count,
        crop_pct=crop_pct, val_resize_size=val_resize_size, placement=placement, zero_copy=zero_copy,
        exif_orientation=exif_orientation, mixup_off_epoch=mixup_off_epoch, record=record)
    import_dali()  # without DALI: an ImportError naming the extra to install
    dataset = find_dataset(data, num_classes, skip_empty=skip_corrupt, classes=classes)
    if skip_corrupt:
        dataset = without_corrupt(dataset)
    return DaliMixupLoader(dataset, spec)
