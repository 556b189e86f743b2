"""Mixup/CutMix as a step of your own DALI pipeline: call ``mix`` inside any ``@pipeline_def``.

The same kernels as ``mix_batch`` (the CPU twin on "cpu" images, the numba.cuda kernels on "gpu" images) and the
same parameters, drawn by ``sample_params`` from the key (seed, epoch, step, rank), with the step taken from the
pipeline's own run count. The graph it adds::

    key    = external_source(_RunKey)           cpu   (epoch, step) of this run; DALI checkpoints its position
    table  = python_function(_ParamTable)       cpu   key, images.shape(), labels[, flip] -> packed MixParams
    images, targets = python_function(_Mixer)   the images' device: the fused image kernel + the soft-label kernel

On the GPU, ``_Mixer`` receives CuPy arrays and launches the numba kernels on DALI's CUDA stream (no host
synchronisation); the parameter table reaches the GPU by DALI's own host-to-device copy. What it costs: both
python_functions run under the GIL (and a process-wide lock that serialises DALI's Python operators), and DALI
copies what a python_function returns into its own buffers (the one copy beyond the kernels; see the README).

Importing this module imports neither DALI nor CuPy: ``mix`` does, when called.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from . import kernels
from .checks import integer
from .config import (DTYPES, IMAGENET_MEAN, IMAGENET_STD, MixupConfig, check_normalization,
                     normalization_constants)
from .kernels import pixel_math as pm
from .mixing import LAYOUTS, OUT_DTYPES
from .params import batch_key, sample_params

__all__ = ["mix", "import_dali"]

# out_kind -> (dtype the kernel writes, dtype DALI receives): DALI has no bfloat16, so its bits travel as int16
_KERNEL_DTYPES = {pm.OUT_F32: (np.float32, np.float32), pm.OUT_F16: (np.int16, np.float16),
                  pm.OUT_BF16: (np.int16, np.int16)}


def import_dali():
    """The ``nvidia.dali`` modules, or an ImportError that says what to install."""
    try:
        from nvidia.dali import fn, pipeline_def, types
    except ImportError as exc:
        raise ImportError("the DALI loader needs NVIDIA DALI: pip install 'dali-mixup[cuda13]' "
                          "(nvidia-dali-cuda130; '[cuda12]' for CUDA 12)") from exc
    return fn, pipeline_def, types


def _import_cupy():
    try:
        import cupy
    except ImportError as exc:
        raise ImportError("dali_mixup.dali.mix on 'gpu' images needs CuPy (DALI hands python_function CuPy "
                          "arrays): pip install 'dali-mixup[cuda13]' (cupy-cuda13x; '[cuda12]': "
                          "cupy-cuda12x)") from exc
    return cupy


def _batch_view(xp, samples):
    """in: a list of B per-sample arrays of one shape and dtype (NumPy or CuPy) -> out: one (B, ...) C-contiguous
    array. When DALI laid the samples out back to back (its usual contiguous batch) this is a view of its memory,
    no copy; otherwise the samples are stacked (a copy)."""
    first = samples[0]
    size = first.nbytes
    base = _pointer(first)
    if first.flags.c_contiguous and all(
            s.shape == first.shape and s.dtype == first.dtype and s.flags.c_contiguous
            and _pointer(s) == base + i * size for i, s in enumerate(samples)):
        return xp.lib.stride_tricks.as_strided(first, (len(samples),) + first.shape, (size,) + first.strides)
    return xp.stack(samples)


def _pointer(array) -> int:
    return array.ctypes.data if isinstance(array, np.ndarray) else array.data.ptr


class _RunKey:
    """External source: the key (epoch, step) of each pipeline run, as B int64 (2,) samples.

    DALI passes a ``BatchInfo``: ``iteration`` counts the runs (a reader-driven pipeline never ends an epoch
    for DALI's external sources, so it counts on across epochs), ``epoch_idx`` counts the epochs that a source
    ended. DALI saves both in its checkpoint and restores them, so a resumed pipeline continues the same keys.
    With ``batches_per_epoch``, run k of a reader's pipeline is (epoch, step) = divmod(k, batches_per_epoch);
    ``first_epoch`` is added to the epoch (a pipeline built afresh for each epoch)."""

    def __init__(self, batch_size: int, batches_per_epoch: Optional[int], first_epoch: int = 0):
        self.batch_size, self.batches_per_epoch, self.first_epoch = batch_size, batches_per_epoch, first_epoch

    def __call__(self, info):
        epoch, step = batch_key(info.iteration, self.batches_per_epoch, self.first_epoch + info.epoch_idx)
        key = np.array([epoch, step], np.int64)
        return [key] * self.batch_size


class _ParamTable:
    """CPU python_function: per run, ``sample_params`` for the key, packed with the flip flags (the table both
    kernels read). in: key int64 (2,), shape int64 (3,) = (H, W, C), label int (any one-element shape)[, flip
    bool] per sample -> out: float32 (PARAM_FIELDS,) per sample. Checks the batch and the labels first."""

    def __init__(self, cfg: MixupConfig, seed: int, rank: int, enabled: Optional[Callable[[int], bool]]):
        self.cfg, self.seed, self.rank, self.enabled = cfg, seed, rank, enabled
        self.no_mix = cfg.no_mix()

    def __call__(self, keys, shapes, labels, flips=None):
        n = len(shapes)
        shapes = _batch_view(np, shapes)
        if shapes.shape[1] != 3 or shapes[0, 2] != 3 or (shapes != shapes[0]).any():
            found = sorted({tuple(int(v) for v in s) for s in shapes})[:3]
            raise ValueError(f"dali_mixup.dali.mix: images must be HWC with 3 channels and one size across the "
                             f"batch (resize or crop them first), got shapes {found}")
        labels = _batch_view(np, labels)
        if labels.size != n:
            raise ValueError(f"dali_mixup.dali.mix: labels must hold one class index per sample, got samples of "
                             f"shape {labels.shape[1:]}")
        labels = labels.reshape(n)
        if labels.min() < 0 or labels.max() >= self.cfg.num_classes:
            bad = labels.min() if labels.min() < 0 else labels.max()
            raise ValueError(f"dali_mixup.dali.mix: labels must lie in [0, num_classes={self.cfg.num_classes}), "
                             f"found {bad}")
        epoch, step = (int(v) for v in keys[0])
        on = self.enabled is None or bool(self.enabled(epoch))
        params = sample_params(self.cfg if on else self.no_mix, n, int(shapes[0, 0]), int(shapes[0, 1]),
                               seed=self.seed, epoch=epoch, step=step, rank=self.rank)
        return list(params.pack(None if flips is None else _batch_view(np, flips).reshape(n).astype(bool)))


class _Mixer:
    """python_function (batch processing) on the images' device: the fused image kernel and the soft-label kernel.

    in:  images uint8 (H, W, 3), labels int64 (), table float32 (PARAM_FIELDS,) per sample.
    out: images (3, H, W) ("NCHW") or (H, W, 3) per sample, float32 / float16 / int16 holding bfloat16 bits;
         targets float32 (C,) per sample. NumPy on "cpu", CuPy on "gpu" (on DALI's stream).
    """

    def __init__(self, device: str, num_classes: int, scale, bias, off_on, nchw: bool, out_kind: int):
        self.device, self.num_classes, self.nchw, self.out_kind = device, num_classes, nchw, out_kind
        self.scale, self.bias = scale, bias
        self.off, self.on = (np.float32(v) for v in off_on)
        self.kernel_dtype, self.dali_dtype = _KERNEL_DTYPES[out_kind]
        self.k = kernels.load("cuda" if device == "gpu" else "cpu")

    def _shape(self, src):
        """in: the uint8 (B, H, W, 3) batch (checked here) -> out: the shape of the output images."""
        if src.dtype != np.uint8:
            raise TypeError(f"dali_mixup.dali.mix: images must be uint8 (decoded, before normalisation), got "
                            f"{src.dtype}")
        n, h, w, _ = src.shape
        return (n, 3, h, w) if self.nchw else (n, h, w, 3)

    def __call__(self, images, labels, table):
        return self._gpu(images, labels, table) if self.device == "gpu" else self._cpu(images, labels, table)

    def _cpu(self, images, labels, table):
        src, labels, table = (_batch_view(np, x) for x in (images, labels, table))
        out = np.empty(self._shape(src), self.kernel_dtype)
        n, h, w, _ = src.shape
        targets = np.empty((n, self.num_classes), np.float32)
        self.k.mix_images(src.reshape(-1), n, h, w, table, self.scale, self.bias, out.reshape(-1), self.nchw,
                          self.out_kind)
        self.k.soft_targets(labels, table, self.off, self.on, targets)
        return list(out.view(self.dali_dtype)), list(targets)

    def _gpu(self, images, labels, table):
        from numba import cuda
        from nvidia.dali.ops import PythonFunction
        cupy = _import_cupy()
        src, labels, table = (_batch_view(cupy, x) for x in (images, labels, table))
        # allocated on cupy's current stream, which DALI's wrapper has set to its own: the memory pool reuses
        # these blocks in that stream's order, after DALI has copied them out
        out = cupy.empty(self._shape(src), self.kernel_dtype)
        targets = cupy.empty((len(src), self.num_classes), np.float32)
        with cuda.gpus[src.device.id]:
            stream = cuda.external_stream(PythonFunction.current_stream().ptr)
            arrays = [cuda.as_cuda_array(x, sync=False) for x in (src, table, out, labels, targets)]
            self.k.launch_mix_images(arrays[0], arrays[1], self.scale, self.bias, arrays[2], self.nchw,
                                     self.out_kind, stream)
            self.k.launch_soft_targets(arrays[3], arrays[1], self.off, self.on, arrays[4], stream)
        return list(out.view(self.dali_dtype)), list(targets)


def _out_dtype(out_dtype) -> int:
    dtype = DTYPES.get(out_dtype, out_dtype) if isinstance(out_dtype, str) else out_dtype
    if dtype not in OUT_DTYPES:
        raise ValueError(f"out_dtype must be torch.float32, torch.float16 or torch.bfloat16 (or its name), "
                         f"got {out_dtype!r}")
    return OUT_DTYPES[dtype]


def _check_node(name, node, devices):
    from nvidia.dali.data_node import DataNode
    if not isinstance(node, DataNode):
        raise TypeError(f"dali_mixup.dali.mix: {name} must be a DALI DataNode (an operator's output inside "
                        f"@pipeline_def), got {type(node).__name__}")
    if node.device not in devices:
        raise ValueError(f"dali_mixup.dali.mix: {name} must be a {' or '.join(devices)} DataNode, got one on "
                         f"{node.device!r}" + (" (produce it on the CPU, e.g. fn.random.coin_flip)" if
                                               devices == ("cpu",) else ""))


def mix(images, labels, cfg: MixupConfig, *, flip=None, seed: int = 0, rank: int = 0,
        batches_per_epoch: Optional[int] = None, first_epoch: int = 0, mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD, out_dtype: Union[torch.dtype, str] = torch.float32,
        layout: str = "NCHW", enabled: Optional[Callable[[int], bool]] = None) -> Tuple[object, object]:
    """Mix, normalise, cast and lay out a batch inside a DALI pipeline; soft targets from the same λ.

    Call it inside a ``@pipeline_def`` function, on DataNodes; it returns DataNodes.

    Args:
        images: uint8 HWC RGB, one size across the batch (after your crop/resize), on "cpu" or "gpu"; the
            kernels run on that device.
        labels: integer class indices in [0, num_classes), one element per sample (a reader's labels), on "cpu".
        cfg: the mixing configuration (``num_classes``, ``label_smoothing``; no mixing when it does not mix).
        flip: optional bool (or 0/1) per sample on "cpu": samples the kernel reads mirrored (the flip is fused,
            no extra pass), e.g. ``fn.random.coin_flip(dtype=types.BOOL)``.
        seed, rank: the key's seed and rank (use the DDP rank, so ranks mix differently).
        batches_per_epoch: pipeline runs per epoch (with a reader and ``pad_last_batch=True``:
            ceil(shard size / batch size)); run k then has the key (epoch, step) = divmod(k, batches_per_epoch).
            None: epoch 0, step k. Only needed to match keys with an epoch-counting loop (``mix_batch``'s).
        first_epoch: the epoch of the pipeline's first run (build one pipeline per epoch with ``first_epoch=e``
            and run e's keys are those of epoch e of one long-lived pipeline).
        mean, std: per-channel statistics, fractions of 255 (timm's convention).
        out_dtype: torch.float32, torch.float16 or torch.bfloat16 (or "float32", "float16", "bfloat16").
            DALI has no bfloat16: a bfloat16 output is an INT16 tensor holding its bits (in torch:
            ``tensor.view(torch.bfloat16)``).
        layout: "NCHW" (each sample CHW) or "NHWC" (HWC).
        enabled: optional callable(epoch) -> bool, asked at each run: False gives that run no mixing (plain
            normalisation and smoothed one-hot targets). It is asked when DALI runs the batch, which is
            ``prefetch_queue_depth`` runs ahead of the batch your loop is at.

    Returns:
        (images, targets): images as ``out_dtype`` (3, H, W) or (H, W, 3) per sample, layout "CHW"/"HWC";
        targets float32 (num_classes,) per sample; both on the images' device.

    The images' shapes are read on the CPU (``DataNode.shape()``): "gpu" images need DALI's dynamic executor (the
    default since DALI 2.0). The batch size must be the pipeline's ``batch_size`` at every run (readers give
    that). The key's position is part of DALI's checkpoint (``enable_checkpointing=True``): a pipeline rebuilt
    from a checkpoint continues the same parameters.
    """
    fn, _, types = import_dali()
    from nvidia.dali.pipeline import Pipeline
    pipe = Pipeline.current()
    if pipe is None:
        raise RuntimeError("dali_mixup.dali.mix must be called inside a pipeline definition (@pipeline_def)")
    if not isinstance(cfg, MixupConfig):
        raise TypeError(f"cfg must be a MixupConfig, got {type(cfg).__name__}")
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if enabled is not None and not callable(enabled):
        raise TypeError(f"enabled must be a callable(epoch) -> bool or None, got {type(enabled).__name__}")
    out_kind = _out_dtype(out_dtype)
    seed, rank = integer("seed", seed, 0), integer("rank", rank, 0)
    if batches_per_epoch is not None:
        batches_per_epoch = integer("batches_per_epoch", batches_per_epoch, 1)
    first_epoch = integer("first_epoch", first_epoch, 0)
    scale, bias = normalization_constants(*check_normalization(mean, std))
    _check_node("images", images, ("cpu", "gpu"))
    _check_node("labels", labels, ("cpu",))
    if flip is not None:
        _check_node("flip", flip, ("cpu",))
    mixer = _Mixer(images.device, cfg.num_classes, scale, bias, cfg.off_on, layout == "NCHW", out_kind)

    key = fn.external_source(source=_RunKey(pipe.max_batch_size, batches_per_epoch, first_epoch), batch=True,
                             batch_info=True, dtype=types.INT64)
    table_inputs = [key, images.shape(), labels] + ([flip] if flip is not None else [])
    table = fn.python_function(*table_inputs, function=_ParamTable(cfg, seed, rank, enabled),
                               batch_processing=True, num_outputs=1)
    labels = fn.reshape(fn.cast(labels, dtype=types.INT64), shape=[])
    if images.device == "gpu":
        labels, table = labels.gpu(), table.gpu()
    mixed, targets = fn.python_function(images, labels, table, function=mixer, device=images.device,
                                        batch_processing=True, num_outputs=2,
                                        output_layouts=["CHW" if layout == "NCHW" else "HWC"])
    return mixed, targets
