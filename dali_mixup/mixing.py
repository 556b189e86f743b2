"""``mix_batch``: the fused kernels on torch tensors, CPU (CPU twin) or CUDA (CUDA kernels on torch's stream).

Any loader can call it; the DALI pipeline calls the same kernels. No host synchronisation on CUDA (unless
``check_labels`` must read CUDA labels, see ``mix_batch``).
"""

from __future__ import annotations

import threading
from typing import NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from . import host_buffers, kernels
from .config import (DTYPES, IMAGENET_MEAN, IMAGENET_STD, LAYOUTS, MixupConfig, check_normalization,
                     normalization_constants)
from .kernels import pixel_math as pm
from .cuda_runtime import _numba_cuda, cuda_device, runtime_for
from .losses import CompactTargets
from .params import MixParams, sample_params

__all__ = ["mix_batch", "mix_targets", "mix_record", "MixRecord", "OUT_DTYPES", "LAYOUTS"]

#: What the image kernel writes for each output dtype.
OUT_DTYPES = {DTYPES["float32"]: pm.OUT_F32, DTYPES["float16"]: pm.OUT_F16, DTYPES["bfloat16"]: pm.OUT_BF16}


def _cpu_kernels():
    return kernels.load("cpu")  # the first call compiles (or loads numba's cache)


def precompile_in_background(out_dtype: torch.dtype, layout: str, widths: Sequence[int], device_index: int):
    """Start compiling (or loading from numba's on-disk cache) the CUDA kernels ``mix_batch`` will launch for
    ``out_dtype``/``layout`` and images of each of ``widths`` on GPU ``device_index``, in a thread (joined at
    exit); returns it.

    A loader calls it when it is built, so the compile overlaps DALI's warm-up instead of delaying the first
    batch; a launch that needs a kernel still compiling waits for it (``kernels.cuda.kernel`` is thread-safe).
    An error here (no driver, no numba-cuda) is kept on the thread (``thread.error``), not raised: the first
    batch compiles for itself and reports it where the user sees it. While it compiles, a ``builtins.print``
    that a script replaced (non-master ranks) is the interpreter's own (see ``kernels.genuine_print``)."""

    def run():
        try:
            for width in widths:  # idempotent: a width whose kernel is ready costs a lookup
                _numba_cuda()[0].precompile(OUT_DTYPES[out_dtype], layout == "NCHW", width, device=device_index)
        except Exception as exc:  # noqa: BLE001 - reported by the first batch's own compile
            thread.error = exc

    thread = threading.Thread(target=run, name="dali-mixup-precompile")  # joined at exit: no compile cut off
    thread.error = None
    thread.start()
    return thread


def _check_images(images) -> Tuple[int, int, int]:
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images_u8 must be a torch.Tensor, got {type(images).__name__}")
    if images.dtype != torch.uint8:
        raise TypeError(f"images_u8 must have dtype torch.uint8, got {images.dtype}")
    if images.dim() != 4 or images.shape[-1] != 3:
        raise ValueError(f"images_u8 must have shape (B, H, W, 3) (NHWC, RGB), got {tuple(images.shape)}")
    n, h, w, _ = images.shape
    if n < 1 or h < 1 or w < 1:
        raise ValueError(f"images_u8 must be a non-empty batch, got shape {tuple(images.shape)}")
    return n, h, w


def _check_labels(labels, n: int, num_classes: int, device: torch.device, check: bool, rt=None) -> torch.Tensor:
    if not isinstance(labels, torch.Tensor):
        labels = torch.as_tensor(np.asarray(labels))
    if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
        raise TypeError(f"labels must be an integer tensor (int64 class indices), got {labels.dtype}")
    if labels.shape != (n,):
        raise ValueError(f"labels must have shape ({n},) to match the batch, got {tuple(labels.shape)}")
    if check:
        lo, hi = int(labels.min()), int(labels.max())
        if lo < 0 or hi >= num_classes:
            bad = lo if lo < 0 else hi
            raise ValueError(f"labels must lie in [0, num_classes={num_classes}), found {bad}")
    if rt is not None:  # on the GPU: an int64 copy through torch-owned staging unless already there
        if not rt.is_on_device(labels):
            return rt.to_device(labels.cpu().contiguous(), torch.int64)
        return labels.contiguous() if labels.dtype == torch.int64 else rt.owned_copy(labels, torch.int64)
    return labels.to(device=device, dtype=torch.int64).contiguous()


def _check_norm(mean, std) -> Tuple[np.ndarray, np.ndarray]:
    return normalization_constants(*check_normalization(mean, std))


def _resolve_params(cfg, params, n, h, w, key) -> MixParams:
    if params is None:
        return sample_params(cfg, n, h, w, **key)
    if not isinstance(params, MixParams):
        raise TypeError(f"params must be a MixParams or None, got {type(params).__name__}")
    params.check(n, h, w)
    return params


def _flip_array(flip, n) -> Optional[np.ndarray]:
    if flip is None:
        return None
    flip = flip.cpu().numpy() if isinstance(flip, torch.Tensor) else np.asarray(flip)
    if flip.shape != (n,):
        raise ValueError(f"flip must have shape ({n},), got {flip.shape}")
    return flip.astype(bool)


def mix_targets(labels, cfg: MixupConfig, params: MixParams, *, dense: bool = True,
                device: Union[str, torch.device, None] = None, check_labels: bool = True):
    """Soft targets of a batch for given parameters.

    Args:
        labels: int64 (B,) class indices (tensor or array-like), CPU or CUDA.
        cfg: gives ``num_classes`` and ``label_smoothing``.
        params: the batch's ``MixParams`` (the same λ the images were mixed with).
        dense: True -> float32 (B, C) ``λ s(y) + (1 - λ) s(y_partner)``; False -> the compact form
            ``(y_a, y_b, lam)``: int64 (B,), int64 (B,), float32 (B,) (``CompactTargets`` holds them with the
            smoothing, for the losses).
        device: where the result lives (default: the labels' device); ``"cuda"`` is torch's current device.
        check_labels: raise on labels outside [0, C) (reads CUDA labels back, a synchronisation).
    """
    n = params.batch_size
    device = _target_device(device, labels)
    rt = runtime_for(device)
    if not dense:
        return tuple(_compact_targets(labels, params, cfg, device, rt, check_labels))
    labels = _check_labels(labels, n, cfg.num_classes, device, check_labels, rt)
    return _dense_targets(labels, params.pack(), cfg, device, rt)


def _compact_targets(labels, params: MixParams, cfg: MixupConfig, device, rt, check: bool) -> CompactTargets:
    """(a, b, λ) of a batch on ``device``: the labels, their partners' labels (gathered on the host when the
    labels are there, before one staged copy each), λ; with ``cfg``'s classes and smoothing."""
    if not isinstance(labels, torch.Tensor):
        labels = torch.as_tensor(np.asarray(labels))
    partner, lam = torch.from_numpy(params.partner), torch.from_numpy(params.lam)
    if rt is None:  # the CPU: everything stays where it is
        a = _check_labels(labels, params.batch_size, cfg.num_classes, device, check)
        return CompactTargets(a, a[partner], lam, cfg.num_classes, cfg.label_smoothing)
    if rt.is_on_device(labels):  # the gather runs on the device, on the current stream
        a = _check_labels(labels, params.batch_size, cfg.num_classes, device, check, rt)
        b = a[rt.to_device(partner)]
    else:  # gathered on the host, then one staged copy each
        a = _check_labels(labels, params.batch_size, cfg.num_classes, torch.device("cpu"), check)
        a, b = rt.to_device(a), rt.to_device(a[partner])
    return CompactTargets(a, b, rt.to_device(lam), cfg.num_classes, cfg.label_smoothing)


class MixRecord(NamedTuple):
    """What a batch's mixing did, per sample, on the batch's device (a loader's ``record=True``): what
    TransMix/TokenMix-style methods need to reweight the labels (e.g. by attention) without recomputing.

    partner: int64 (B,) the sample mixed into sample i; lam: float32 (B,) the weight of sample i itself (the λ of
    its images and targets); box: int32 (B, 4) (y0, y1, x0, x1), half-open, timm's order, the CutMix box pasted
    from the partner (zeros for Mixup); cutmix: bool (B,) CutMix (True) or Mixup (False). Resuming a loader
    continues the same records (they are the keyed parameters)."""

    partner: torch.Tensor
    lam: torch.Tensor
    box: torch.Tensor
    cutmix: torch.Tensor


def mix_record(params: MixParams, device: Union[str, torch.device] = "cpu") -> MixRecord:
    """in: a batch's ``MixParams`` -> out: its ``MixRecord`` on ``device`` (``"cuda"``: torch's current device),
    copied through torch-owned pinned staging on the current stream."""
    device = _target_device(device, None)
    rt = runtime_for(device)
    fields = [torch.from_numpy(np.ascontiguousarray(v)) for v in (params.partner, params.lam, params.box,
                                                                   params.use_cutmix)]
    return MixRecord(*(rt.to_device(t) if rt is not None else t.to(device) for t in fields))


def _target_device(device, labels) -> torch.device:
    """``device`` (``"cuda"`` without an index: torch's current device), else the labels' device."""
    if device is None:
        return labels.device if isinstance(labels, torch.Tensor) else torch.device("cpu")
    device = torch.device(device)
    return cuda_device(device) if device.type == "cuda" else device


def _dense_targets(labels: torch.Tensor, table: np.ndarray, cfg: MixupConfig, device, rt, table_dev=None):
    off, on = (np.float32(v) for v in cfg.off_on)
    shape = (len(table), cfg.num_classes)
    if rt is not None:
        out = rt.empty(shape, torch.float32)
        if table_dev is None:
            table_dev = rt.to_device(torch.from_numpy(table))
        rt.launch_soft_targets(labels, table_dev, off, on, out)
    else:
        out = torch.empty(shape, dtype=torch.float32, device=device)
        _cpu_kernels().soft_targets(labels.numpy(), table, off, on, out.numpy())
    return out


def mix_batch(images_u8: torch.Tensor, labels, cfg: MixupConfig, params: Optional[MixParams] = None, *,
              mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
              out_dtype: torch.dtype = torch.float32, layout: str = "NCHW", flip=None, seed: int = 0,
              epoch: int = 0, step: int = 0, rank: int = 0,
              check_labels: bool = True, cpu_threads: Optional[int] = None,
              targets: str = "dense") -> Tuple[torch.Tensor, Union[torch.Tensor, CompactTargets]]:
    """Mix, normalise, cast and lay out a uint8 batch in one kernel; soft targets from the same λ.

    Args:
        images_u8: uint8 (B, H, W, 3) NHWC RGB, on the CPU or a CUDA device.
        labels: int64 (B,) class indices in [0, num_classes).
        cfg: the mixing configuration (``mixup_alpha = cutmix_alpha = 0`` or ``prob = 0``: no mixing, plain
            normalisation and (smoothed) one-hot targets).
        params: the batch's ``MixParams``; None draws them from the key (seed, epoch, step, rank).
        mean, std: per-channel statistics, fractions of 255 (timm's convention).
        out_dtype: torch.float32, torch.float16 or torch.bfloat16 (correctly rounded).
        layout: "NCHW" or "NHWC" for the output images.
        flip: optional (B,) bool, samples to mirror horizontally while reading (fused, no extra pass).
        seed, epoch, step, rank: the key when ``params`` is None.
        check_labels: raise on labels outside [0, C). With CUDA labels this reads them back (a host
            synchronisation); pass False when labels are already known valid. Unchecked, a bad label of sample i
            gives NaN rows, never a wrong target: row i and the row of the sample whose partner is i (two rows,
            one when i is its own partner; partners are drawn even when a batch is not mixed).
        cpu_threads: at most this many threads for the CPU kernel (None: every core); a caller whose other
            threads already keep the cores busy (a DALI pipeline decoding) passes fewer. Ignored on CUDA.
        targets: "dense" (float32 (B, C), the soft-label kernel) or "compact" (``CompactTargets``: the labels,
            the partners' labels and λ, no (B, C) rows; the losses of ``dali_mixup.losses`` read both).

    Returns:
        (images, targets): images ``out_dtype`` (B, 3, H, W) or (B, H, W, 3), targets float32 (B, C), both on
        the device of ``images_u8``. On CUDA the kernels run on torch's current stream, asynchronously: they read
        ``images_u8`` when the stream reaches them, so its memory must not be reused or overwritten before then.
        Torch-owned tensors are safe (torch's allocator is stream-ordered); memory owned by someone else (DALI's
        zero-copy outputs) must be kept alive until an event recorded after this call has completed, as the DALI
        loader does. Labels and the parameter table are copied into torch-owned pinned staging first, so the
        caller may reuse its host buffers at once.
    """
    if not isinstance(cfg, MixupConfig):
        raise TypeError(f"cfg must be a MixupConfig, got {type(cfg).__name__}")
    n, h, w = _check_images(images_u8)
    if out_dtype not in OUT_DTYPES:
        raise ValueError(f"out_dtype must be one of torch.float32, torch.float16, torch.bfloat16, got {out_dtype}")
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if cpu_threads is not None and (isinstance(cpu_threads, bool) or not isinstance(cpu_threads, int)
                                    or cpu_threads < 1):
        raise ValueError(f"cpu_threads must be an int >= 1 or None, got {cpu_threads!r}")
    if targets not in ("dense", "compact"):
        raise ValueError(f"targets must be 'dense' or 'compact', got {targets!r}")
    scale, bias = _check_norm(mean, std)
    device = images_u8.device
    rt = runtime_for(device)
    params = _resolve_params(cfg, params, n, h, w, dict(seed=seed, epoch=epoch, step=step, rank=rank))
    table = params.pack(_flip_array(flip, n))
    if targets == "compact":
        compact = _compact_targets(labels, params, cfg, device, rt, check_labels)
    else:
        labels = _check_labels(labels, n, cfg.num_classes, device, check_labels, rt)

    nchw = layout == "NCHW"
    shape = (n, 3, h, w) if nchw else (n, h, w, 3)
    out_kind = OUT_DTYPES[out_dtype]
    if rt is not None:
        images_out = rt.empty(shape, out_dtype)
        kernel_out = images_out if out_dtype == torch.float32 else images_out.view(torch.int16)
        table_dev = rt.to_device(torch.from_numpy(table))
        rt.launch_mix_images(images_u8.contiguous(), table_dev, scale, bias, kernel_out, nchw, out_kind)
        if targets == "compact":
            return images_out, compact
        return images_out, _dense_targets(labels, table, cfg, device, rt, table_dev)
    if device.type != "cpu":
        raise ValueError(f"images_u8 must be on the CPU or a CUDA device, got {device}")
    images_out = host_buffers.empty(shape, out_dtype)  # recycled host memory: no page faults (see host_buffers)
    kernel_out = images_out if out_dtype == torch.float32 else images_out.view(torch.int16)
    k = _cpu_kernels()
    with k.threads(cpu_threads):
        k.mix_images(images_u8.contiguous().numpy().reshape(-1), n, h, w, table, scale, bias,
                     kernel_out.numpy().reshape(-1), nchw, out_kind)
    if targets == "compact":
        return images_out, compact
    return images_out, _dense_targets(labels, table, cfg, device, None)
