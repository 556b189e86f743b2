"""The loader's DALI pipelines over time: made one per epoch, the next one made in the background while the
current epoch ends, swapped in, and let go only after the GPU work that reads their buffers has completed.

- ``InFlight``: the ring of batches whose DALI memory queued GPU work still reads (the memory rule).
- ``Pipelines``: make (``make``), replace (``build``/``use``), pre-build the next epoch's (``prepare_next``),
  take it at the start of a pass (``start_pass``); what it owns lives in ``Owned``, which ``release`` lets go in
  the one safe order and which holds no reference to the loader (``weakref.finalize`` runs it when the loader is
  deleted, closed or at interpreter exit).
"""

from __future__ import annotations

import collections
import threading
from functools import partial
from typing import Callable, NamedTuple, Optional

import numpy as np

from . import dali, epochs
from .datasets import Dataset
from .order import epoch_order
from .baselines import MixParamSource
from .pipeline import SizeChoice, build_pipeline
from .spec import LoaderSpec

__all__ = ["InFlight", "Owned", "Pipelines", "PREFETCH_DEPTH"]

PREFETCH_DEPTH = 2  # DALI's prefetch queue depth


class InFlight:
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


class Built(NamedTuple):
    """A DALI pipeline made for one epoch, with its iterator and (backend "dali") its parameter source."""

    epoch: int
    pipe: object
    iterator: object
    source: Optional[MixParamSource]


class Owned:
    """What holds DALI memory: the pipeline in use and its iterator, the next epoch's pipeline being made, and
    the ring of batches queued GPU work still reads. ``release``: the background build joined, the queued work
    waited for, then the pipelines let go."""

    def __init__(self, ring: Optional[InFlight]):
        self.ring = ring
        self.pipe = self.iterator = self.source = None
        self.next = None  # (epoch, thread, box) of the next epoch's pipeline being made

    def release(self) -> None:
        pending, self.next = self.next, None
        if pending is not None:
            if pending[1] is not threading.current_thread():  # the build itself held the last reference
                pending[1].join()
            pending[2].clear()
        if self.ring is not None:
            self.ring.clear()
        self.pipe = self.iterator = self.source = None


class Pipelines:
    """The pipelines of one loader (``spec`` over ``dataset``; ``switch``: whether an epoch's batches are mixed,
    asked by the graph's mixing step; ``ring``: the in-flight batches, None on the CPU)."""

    def __init__(self, spec: LoaderSpec, dataset: Dataset, switch: Callable[[int], bool], ring: Optional[InFlight]):
        self.spec, self.dataset, self.switch = spec, dataset, switch
        self.owned = Owned(ring)
        self.built_for: Optional[int] = None  # the epoch of the pipeline in use
        self.started = False  # whether the pipeline in use has given a batch

    def make(self, epoch: int, checkpoint: Optional[str] = None, first_batch: bool = False) -> Built:
        """A new pipeline and iterator for ``epoch``, from its start or, given ``checkpoint`` (a DALI checkpoint
        of that epoch's pipeline), where that one was; ``first_batch``: run it up to its first batch (and fill
        its prefetch queue) now. Reads the spec only, so the next epoch's can be made in a background thread."""
        from nvidia.dali.plugin.pytorch import DALIGenericIterator, LastBatchPolicy

        spec, n = self.spec, len(self.dataset)
        source = self._param_source(epoch)
        pipe = build_pipeline(self.dataset, spec, sizes=spec.sizes_at(epoch), seed=epochs.epoch_seed(spec, epoch),
                              shard_id=epochs.reader_shard(spec, epoch), order=self._reader_order(epoch),
                              checkpoint=checkpoint, size_choice=self._size_choice(epoch), mix_source=source,
                              mix_step=self._mix_step(epoch), prefetch_queue_depth=PREFETCH_DEPTH)
        outputs = ["images", "labels", "targets" if spec.mixed_in_graph else "flip"]
        # PARTIAL for training too: the loader stops after its batches and drops the pipeline (DROP would yield
        # the full batches of this rank's shard, one more than a smaller shard's ranks get)
        iterator = DALIGenericIterator([pipe], outputs, reader_name="Reader",
                                       last_batch_policy=LastBatchPolicy.PARTIAL, auto_reset=False,
                                       prepare_first_batch=first_batch)
        found = pipe.reader_meta("Reader")["epoch_size"]
        if found != n:
            raise RuntimeError(f"{self.dataset.source}: DALI's reader finds {found} samples where the scan found "
                               f"{n}: the data changed while the loader was being built")
        return Built(epoch, pipe, iterator, source)

    def _param_source(self, epoch: int) -> Optional[MixParamSource]:
        """Backend "dali": the external source of its mixing parameters, keyed as the epilogue's."""
        spec = self.spec
        if spec.backend != "dali":
            return None
        source = MixParamSource(spec.mixup if spec.mixup is not None else spec.no_mix(), spec.batch_size,
                                partial(epochs.crop_size, spec, len(self.dataset)), spec.seed, spec.shard_id,
                                epochs.runs_per_epoch(spec, len(self.dataset)),
                                first_epoch=epoch)
        source.enabled = self.switch
        return source

    def _size_choice(self, epoch: int) -> Optional[SizeChoice]:
        """A size per batch: the external source of each batch's size, keyed as the mixing parameters."""
        spec, n = self.spec, len(self.dataset)
        if epochs.size_choices(spec, n, epoch) is None:
            return None
        return SizeChoice(partial(epochs.size_choices, spec, n), spec.batch_size, epochs.runs_per_epoch(spec, n),
                          first_epoch=epoch)

    def _mix_step(self, epoch: int) -> Optional[Callable]:
        """Placement "graph": ``dali.mix`` bound to the spec; its key (epoch, step) is ``epoch`` and the pipeline's
        run count (the epilogue's key), and its position is in DALI's checkpoint."""
        spec = self.spec
        if spec.backend != "fused" or spec.placement != "graph":
            return None
        return partial(dali.mix, cfg=spec.mixup if spec.mixup is not None else spec.no_mix(), seed=spec.seed,
                       rank=spec.shard_id, batches_per_epoch=epochs.runs_per_epoch(spec, len(self.dataset)),
                       first_epoch=epoch, mean=spec.mean, std=spec.std, out_dtype=spec.out_dtype,
                       layout=spec.layout, enabled=self.switch)

    def _reader_order(self, epoch: int) -> Optional[np.ndarray]:
        """Training: the permutation of the files (of the shards, for WebDataset) that ``epoch`` reads, keyed by
        (seed, epoch) and the same on every rank (each reads its slice); evaluation: None (the dataset's order)."""
        if not self.spec.train:
            return None
        units = len(self.dataset.shards) if self.dataset.kind == "webdataset" else len(self.dataset)
        return epoch_order(units, self.spec.seed, epoch)

    def build(self, epoch: int, checkpoint: Optional[str] = None) -> None:
        """Replace the pipeline by a new one for ``epoch`` (see ``make``)."""
        self.use(None)  # let the old pipeline go before the new one takes its memory
        self.use(self.make(epoch, checkpoint))

    def use(self, built: Optional[Built]) -> None:
        """Put ``built`` in use (None: none), after the GPU work reading the old pipeline's buffers is done."""
        owned = self.owned
        if owned.ring is not None:
            owned.ring.clear()
        owned.pipe, owned.iterator, owned.source = (built.pipe, built.iterator, built.source) if built else (None,) * 3
        self.built_for, self.started = (built.epoch if built else None), False

    def prepare_next(self, epoch: int) -> None:
        """Start making ``epoch``'s pipeline, and running it up to its first batch, in a background thread while
        the caller works on the current epoch's last batches (building one took 0.1-0.15 s for 1,280 files on the
        2-core CPU here, and its first batch about one batch time; more with a long file list). ``start_pass``
        takes it if the next pass is that epoch, else drops it. For that while two pipelines hold memory."""
        box = {}

        def make():
            try:
                box["built"] = self.make(epoch, first_batch=True)
            except Exception:  # noqa: BLE001 - start_pass builds again in the caller's thread and raises there
                pass

        thread = threading.Thread(target=make, name="dali-mixup-next-epoch")  # joined at exit: no DALI call cut off
        thread.start()
        self.owned.next = (epoch, thread, box)

    def drop_next(self) -> None:
        """Drop the next epoch's pipeline being made (the stream went elsewhere)."""
        pending, self.owned.next = self.owned.next, None
        if pending is not None:
            pending[1].join()

    def start_pass(self, epoch: int, step: int) -> None:
        """A pipeline for ``epoch`` from its start (``step`` 0): the one ``prepare_next`` made when it is for this
        epoch, else a new one."""
        pending = self.owned.next
        self.drop_next()
        if pending is not None and pending[0] == epoch and step == 0 and "built" in pending[2]:
            self.use(pending[2]["built"])
        else:
            self.build(epoch)
