"""``dali-mixup train``: an ImageNet-style trainer fed by the DALI loader, one process per GPU (torchrun/DDP).

Single process:   dali-mixup train --data DIR --model resnet50 --epochs 90
One node, 8 GPUs: torchrun --nproc_per_node 8 -m dali_mixup train --data DIR ...
Several nodes:    torchrun --nnodes N --node_rank R --nproc_per_node 8 --rdzv_backend c10d \\
                           --rdzv_endpoint HOST:PORT -m dali_mixup train --data DIR ...

DIR holds ``train/`` and ``val/`` ImageFolders (or give --val-data). DDP uses NCCL on GPUs and gloo on the CPU;
each rank reads its own DALI shard; metrics are reduced across ranks; only rank 0 writes checkpoints and logs.

The steps, each usable alone: ``setup`` (processes and device) -> ``prepare_output`` (never overwrite a run by
accident) -> ``build`` (loaders, model, optimiser, schedule) -> ``restore`` (resume from ``load_checkpoint``) ->
per epoch ``train_one_epoch``, ``evaluate``, ``record`` and ``save_checkpoint`` (atomic; the last N and the best
top-1 kept) -> ``summary``. ``run`` strings them together for the command line.
"""

from __future__ import annotations

import csv
import difflib
import io
import json
import logging
import math
import os
import pickle
import re
import shlex
import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional, Tuple

import torch
import torch.distributed as dist
import torch.nn.functional as F

import dali_mixup as dm
from . import loader as _loader
from . import output_folder as _folder
from .datasets import find_classes
from .run_args import ARGS_FILE, resumed_args, write_args

log = logging.getLogger("dali_mixup")

METRICS = ("epoch", "train_loss", "val_top1", "val_top5", "lr", "img_per_s", "seconds")
_NUMBERED = re.compile(r"checkpoint-(\d+)\.pt$")
LAST, BEST = "checkpoint-last.pt", "checkpoint-best.pt"


# -- data and model ----------------------------------------------------------------------------------------------
def find_splits(data: Optional[str], val_data: Optional[str]) -> Tuple[Path, Optional[Path]]:
    """in: --data (None: the built-in sample dataset), --val-data -> out: (training folder, validation folder or
    None). DATA may be an ImageFolder itself or hold train/ (and val/)."""
    from .sample_data import ensure_sample_data
    root = Path(data) if data is not None else ensure_sample_data()
    if not root.exists():
        raise FileNotFoundError(f"--data {root}: no such folder")
    if not root.is_dir():
        raise ValueError(f"--data {root}: not a folder (an ImageFolder, or a folder holding train/ and val/)")
    train_dir = root / "train" if (root / "train").is_dir() else root
    if val_data is not None:
        val_dir = Path(val_data)
        if not val_dir.is_dir():
            raise FileNotFoundError(f"--val-data {val_dir}: no such folder")
        return train_dir, val_dir
    return train_dir, (root / "val" if (root / "val").is_dir() else None)


def count_classes(folder: Path) -> int:
    """in: an ImageFolder -> out: its number of classes, by the loader's rule (``datasets.find_classes``: hidden
    folders are not classes); an error naming the folder when it has none."""
    try:
        return len(find_classes(folder))
    except ValueError:
        raise ValueError(f"--data {folder}: no class folders to count; give --num-classes") from None


def mixup_config(args, num_classes: int) -> Optional[dm.MixupConfig]:
    """in: the mixing flags -> out: their MixupConfig, or None when they ask for neither mixing nor smoothing."""
    if not (args.mixup_alpha > 0 or args.cutmix_alpha > 0 or args.cutmix_minmax or args.label_smoothing > 0):
        return None
    return dm.MixupConfig(num_classes, mixup_alpha=args.mixup_alpha, cutmix_alpha=args.cutmix_alpha,
                          cutmix_minmax=tuple(args.cutmix_minmax) if args.cutmix_minmax else None, prob=args.prob,
                          switch_prob=args.switch_prob, mode=args.mode, label_smoothing=args.label_smoothing,
                          pairing=args.pairing)


def check_model_name(name: str) -> str:
    """in: --model -> out: "torchvision" or "timm", the library that has it; otherwise an error with the
    nearest names."""
    import torchvision
    known = torchvision.models.list_models(module=torchvision.models)
    if name in known:
        return "torchvision"
    try:
        import timm
    except ImportError:
        timm = None
    if timm is not None:
        if timm.is_model(name):
            return "timm"
        known = known + timm.list_models()
    near = difflib.get_close_matches(name, list(dict.fromkeys(known)), n=3)  # torchvision's and timm's resnet18: once
    hint = f" (did you mean {', '.join(near)}?)" if near else ""
    if timm is None:
        raise ValueError(f"--model {name}: not a torchvision model, and timm (whose models would count too) is not "
                         f"installed{hint}")
    raise ValueError(f"--model {name}: neither a torchvision nor a timm model{hint}")


def build_model(name: str, num_classes: int) -> torch.nn.Module:
    """in: a torchvision or timm model name -> out: the model, randomly initialised, with num_classes outputs."""
    if check_model_name(name) == "torchvision":
        import torchvision
        return torchvision.models.get_model(name, num_classes=num_classes)
    import timm
    return timm.create_model(name, num_classes=num_classes)


def soft_target_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """in: logits (B, C), soft targets (B, C) -> out: cross-entropy averaged over the batch (timm's
    SoftTargetCrossEntropy)."""
    return torch.sum(-targets * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()


def _param_groups(model, weight_decay):
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)  # norms and biases: no weight decay
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


# -- processes ---------------------------------------------------------------------------------------------------
@dataclass
class Context:
    """The process's place in the run: rank, world size, device; ``owns_group``: this run started the
    process group (and ends it)."""

    rank: int
    world: int
    device: torch.device
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup(device: str) -> Context:
    """in: --device (auto|gpu|cpu) -> out: the Context; joins torchrun's process group (NCCL on GPUs, gloo on
    CPUs) unless one is already running."""
    want_gpu = device == "gpu" or (device == "auto" and torch.cuda.is_available())
    if device == "gpu" and not torch.cuda.is_available():
        raise ValueError("--device gpu: torch sees no CUDA device")
    owns = False
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if want_gpu else "gloo")
        owns = True
    distributed = dist.is_available() and dist.is_initialized()
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    if want_gpu:
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local_rank)
        return Context(rank, world, torch.device("cuda", local_rank), owns)
    return Context(rank, world, torch.device("cpu"), owns)


def teardown(ctx: Context) -> None:
    if ctx.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def _reduce(values, device) -> List[float]:
    """in: numbers of this rank -> out: their sums over all ranks."""
    t = torch.tensor(values, dtype=torch.float64, device=device)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t)
    return t.tolist()


def _gather(obj, world) -> list:
    if dist.is_available() and dist.is_initialized():
        out = [None] * world
        dist.all_gather_object(out, obj)
        return out
    return [obj]


# -- the output folder -------------------------------------------------------------------------------------------
def run_files(out: Path) -> List[Path]:
    """in: an output folder -> out: the files a training run writes there (checkpoints, metrics, summary)."""
    if not out.is_dir():
        return []
    return sorted(p for p in out.iterdir() if p.name in ("metrics.csv", "summary.json", LAST, BEST)
                  or _NUMBERED.match(p.name))


def _refuse_a_run_there(out: Path, resume: bool, overwrite: bool) -> None:
    found = run_files(out)
    if found and not (resume or overwrite):
        names = ", ".join(p.name for p in found[:3]) + (", ..." if len(found) > 3 else "")
        raise ValueError(f"--output {out} already holds a run ({names}): pass --resume to continue it, --overwrite "
                         f"to replace it, or choose another --output")


def prepare_output(out: Path, *, resume: bool, overwrite: bool, is_main: bool) -> Optional[_folder.OutputLock]:
    """in: --output, whether --resume/--overwrite were given -> out: the folder ready, and (main process) its lock,
    held for the run. A run already there is an error unless resumed (kept, appended to) or overwritten (its run
    files removed, nothing else). A folder that cannot be written, or that another trainer holds (named: pid, host,
    start time), is an error now; temporary files of a writer that died are removed."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--output {out}: is a file, not a folder")
    _refuse_a_run_there(out, resume, overwrite)  # before locking (a refused command leaves nothing behind) ...
    lock = None
    if is_main:  # ... and again under the lock: the folder is only known while no other trainer writes there
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise type(exc)(f"--output {out}: cannot create the folder ({exc.strerror or exc})") from None
        _folder.check_writable(out)
        lock = _folder.OutputLock(out).acquire()
    try:
        _refuse_a_run_there(out, resume, overwrite)
        if not is_main:
            return None
        _folder.remove_stale_temps(out)
        if overwrite and not resume:
            for p in run_files(out):
                p.unlink()
            shutil.rmtree(out / "tb", ignore_errors=True)
    except BaseException:
        if lock is not None:
            lock.release()
        raise
    return lock


def _atomic_write(path: Path, write: Callable[[io.IOBase], None], mode: str = "wb") -> None:
    """Write through a temporary file in the same folder, flushed to disk, then renamed over ``path``: a kill
    at any moment leaves either the old file or the new one, never a broken one. The temporary file is created
    exclusively under an unpredictable name (``tempfile.mkstemp``): a file or link planted in the folder is never
    written through."""
    fd, tmp = _folder.exclusive_temp(path)
    try:
        with open(fd, mode, **({"newline": "", "encoding": "utf-8"} if "b" not in mode else {})) as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _atomic_link(src: Path, dst: Path) -> None:
    """``dst`` becomes the same file as ``src`` (a hard link; a copy where links are not supported), atomically,
    through a temporary name nobody can predict (``os.link`` refuses an existing name; the copy goes to a file
    created exclusively)."""
    tmp = _folder.new_temp_name(dst)
    try:
        os.link(src, tmp)
    except FileExistsError:
        return _atomic_link(src, dst)  # 2**-32: another name
    except OSError:
        def copy(fh):
            with open(src, "rb") as source:
                shutil.copyfileobj(source, fh)
        _atomic_write(dst, copy)
        return
    try:
        os.replace(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def save_checkpoint(state: dict, out: Path, *, epoch: int, keep: int, is_best: bool) -> Path:
    """in: a checkpoint dict, the output folder, the epoch, how many numbered checkpoints to keep, whether this
    epoch is the best so far -> out: the path of ``checkpoint-NNN.pt``. Written atomically; checkpoint-last.pt
    (and checkpoint-best.pt when best) point at it; numbered checkpoints up to this epoch beyond the newest
    ``keep`` are deleted (later-numbered ones, left by an abandoned continuation, are overwritten in turn)."""
    path = out / f"checkpoint-{epoch:03d}.pt"
    _atomic_write(path, lambda fh: torch.save(state, fh))
    _atomic_link(path, out / LAST)
    if is_best:
        _atomic_link(path, out / BEST)
    numbered = sorted((int(m.group(1)), p) for p in out.iterdir() if (m := _NUMBERED.match(p.name)))
    older = [p for n, p in numbered if n <= epoch]
    for p in older[:max(0, len(older) - keep)]:
        p.unlink()
    return path


#: What ``restore`` reads from a checkpoint (``checkpoint_state`` writes these and more).
CHECKPOINT_KEYS = ("epoch", "model", "optimizer", "scheduler", "scaler", "loader", "num_classes", "model_name")


def load_checkpoint(path: Path) -> dict:
    """in: a checkpoint path -> out: its dict, tensors on the CPU. Loaded with ``torch.load(weights_only=True)``:
    tensors and plain data only, so a crafted file cannot run code; one that needs more is refused, naming it.
    A file that is not a checkpoint, or one that lacks what ``restore`` reads, is an error naming what is
    missing."""
    if not path.is_file():
        raise FileNotFoundError(f"--resume {path}: no such checkpoint")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ValueError(f"--resume {path}: refused: it holds more than tensors and plain data, and loading it "
                         f"could run code ({_unsafe_part(exc)}); dali-mixup loads checkpoints with "
                         "torch.load(weights_only=True): resume from a checkpoint that dali-mixup train wrote") \
            from None
    except Exception as exc:
        raise ValueError(f"--resume {path}: not a readable checkpoint ({exc})") from exc
    if not isinstance(ckpt, dict):
        raise ValueError(f"--resume {path}: not a dali-mixup train checkpoint (it holds a {type(ckpt).__name__}, "
                         "not a dict)")
    missing = [k for k in CHECKPOINT_KEYS if k not in ckpt]
    if missing:
        has = ", ".join(repr(k) for k in ckpt) or "nothing"
        raise ValueError(f"--resume {path}: not a complete dali-mixup train checkpoint: it lacks "
                         f"{', '.join(repr(k) for k in missing)} (it has {has})")
    return ckpt


def _unsafe_part(exc: Exception) -> str:
    """The line of torch's weights-only refusal that names what was refused (e.g. the global ``posix.system``)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    named = [line for line in lines if "GLOBAL" in line or "Unsupported" in line]
    return (named or lines or ["refused by torch.load(weights_only=True)"])[0]


def check_resumable(ckpt: dict, path: Path, *, model: str, num_classes: int) -> None:
    """A checkpoint of another model or class count is an error naming both."""
    if ckpt["num_classes"] != num_classes:
        raise ValueError(f"--resume {path}: checkpoint has num_classes={ckpt['num_classes']}, the data has "
                         f"{num_classes}")
    if ckpt["model_name"] != model:
        raise ValueError(f"--resume {path}: checkpoint is a {ckpt['model_name']}, not {model}")


# -- building ----------------------------------------------------------------------------------------------------
@dataclass
class Trainer:
    """Everything one run holds. ``model`` is the bare model (checkpoints, evaluation); ``net`` the one trained
    (DDP-wrapped under torchrun). ``history`` has one row per finished epoch (``METRICS``), ``best`` the
    epoch with the best validation top-1, ``wall_time_s`` the time of the earlier sessions of a resumed run."""

    model: torch.nn.Module
    net: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    train_loader: object
    val_loader: Optional[object]
    ctx: Context
    amp: str
    channels_last: bool
    steps_per_epoch: int
    num_classes: int
    global_batch: int
    lr: float
    history: List[dict] = field(default_factory=list)
    best: Optional[dict] = None
    start_epoch: int = 0
    wall_time_s: float = 0.0
    partial: Optional[dict] = None

    @property
    def amp_dtype(self) -> Optional[torch.dtype]:
        return {"bf16": torch.bfloat16, "fp16": torch.float16, "off": None}[self.amp]


def _cosine_with_warmup(warmup: int, total: int) -> Callable[[int], float]:
    def factor(step):
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))
    return factor


def build(args, ctx: Context, train_dir: Path, val_dir: Optional[Path], num_classes: int) -> Trainer:
    """in: the train flags, the Context, the data folders -> out: a Trainer at epoch 0 (loaders, model,
    SGD + cosine schedule with warm-up, grad scaler)."""
    torch.manual_seed(args.seed)
    amp = args.amp
    if amp == "auto":
        amp = "bf16" if ctx.device.type == "cuda" and torch.cuda.is_bf16_supported() else "off"
    mix = mixup_config(args, num_classes)
    # channels_last: the loader writes NHWC and the batch is viewed as NCHW with channels-last strides (no copy)
    common = dict(batch_size=args.batch_size, num_classes=num_classes, image_size=args.image_size,
                  device="gpu" if ctx.device.type == "cuda" else "cpu", num_threads=args.threads,
                  out_dtype=torch.float16 if ctx.device.type == "cuda" else torch.float32,
                  layout="NHWC" if args.channels_last else "NCHW", skip_corrupt=args.skip_corrupt)
    train_loader = _loader.create_dali_loader(train_dir, mixup=mix, backend=args.backend if mix else "none",
                                              seed=args.seed, **common, **getattr(args, "train_loader_options", {}))
    if len(train_loader) == 0:
        raise ValueError(f"--batch-size {args.batch_size}: larger than this process's share of {train_dir} "
                         f"({len(train_loader.dataset)} images over {ctx.world} process(es)): no full batch")
    if args.mixup_off_epoch:
        off = args.mixup_off_epoch
        train_loader.mixup_schedule = lambda epoch: epoch < off
    val_loader = None
    if val_dir is not None:  # numbered by the training classes' names (a class missing from val/ shifts nothing)
        val_loader = _loader.create_dali_loader(val_dir, train=False, classes=train_loader.dataset.classes,
                                                **common, **getattr(args, "eval_loader_options", {}))
    model = build_model(args.model, num_classes).to(ctx.device)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    global_batch = args.batch_size * ctx.world
    lr = args.lr if args.lr is not None else args.lr_base * global_batch / 256
    optimizer = torch.optim.SGD(_param_groups(model, args.weight_decay), lr=lr, momentum=args.momentum,
                                nesterov=args.momentum > 0)
    steps = min(len(train_loader), args.max_steps or len(train_loader))
    warmup = max(1, int(args.warmup_epochs * steps))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _cosine_with_warmup(warmup, max(1, args.epochs * steps)))
    scaler = torch.amp.GradScaler(ctx.device.type, enabled=amp == "fp16")
    net = model
    if dist.is_available() and dist.is_initialized():
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)
    return Trainer(model, net, optimizer, scheduler, scaler, train_loader, val_loader, ctx, amp,
                   args.channels_last, steps, num_classes, global_batch, lr)


def restore(trainer: Trainer, ckpt: dict) -> None:
    """in: a Trainer fresh from ``build``, a checkpoint -> out: the Trainer where the checkpoint left off
    (weights, optimiser, schedule, scaler, this rank's loader stream, history, best, wall time)."""
    trainer.model.load_state_dict(ckpt["model"])
    trainer.optimizer.load_state_dict(ckpt["optimizer"])
    trainer.scheduler.load_state_dict(ckpt["scheduler"])
    trainer.scaler.load_state_dict(ckpt["scaler"])
    states = ckpt["loader"] if isinstance(ckpt["loader"], list) else [ckpt["loader"]]
    if len(states) != trainer.ctx.world:
        raise ValueError(f"--resume: the checkpoint was written by {len(states)} process(es), this run has "
                         f"{trainer.ctx.world}; resume with the same number of processes")
    trainer.train_loader.load_state_dict(states[trainer.ctx.rank])
    trainer.history = list(ckpt.get("history", []))
    trainer.best = ckpt.get("best")
    trainer.wall_time_s = float(ckpt.get("wall_time_s", 0.0))
    trainer.start_epoch = ckpt["epoch"] + 1
    trainer.partial = ckpt.get("partial")  # stopped mid-epoch: the epoch so far (its loader state is mid-epoch)


# -- one epoch, evaluation ---------------------------------------------------------------------------------------
class Progress:
    """One progress line (bar, steps, ETA, the caller's text) on a stream, redrawn when ``interval`` seconds
    have passed since the last draw and at the last step: at least once a second while steps take under a
    second. On a terminal the line is redrawn in place; elsewhere (a log file) it is a new line each time."""

    def __init__(self, total: int, prefix: str, stream=None, interval: Optional[float] = None,
                 clock: Callable[[], float] = time.monotonic):
        self.total, self.prefix, self.stream, self.clock = total, prefix, stream or sys.stderr, clock
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.interval = interval if interval is not None else (0.5 if self.tty else 10.0)
        self.start = clock()
        self.last_draw = None

    def due(self, done: int) -> bool:
        """Whether ``update(done, ...)`` would draw (so the caller computes its text only then)."""
        return done >= self.total or self.last_draw is None or self.clock() - self.last_draw >= self.interval

    def update(self, done: int, text: str = "") -> None:
        if not self.due(done):
            return
        now = self.clock()
        self.last_draw = now
        elapsed = now - self.start
        eta = elapsed / max(done, 1) * (self.total - done)
        width = 24
        filled = int(width * done / max(self.total, 1))
        line = (f"{self.prefix} [{'#' * filled}{'.' * (width - filled)}] {done}/{self.total} "
                f"{_clock(elapsed)} elapsed, ETA {_clock(eta)}  {text}")
        self.stream.write(f"\r{line}\x1b[K" if self.tty else line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty and self.last_draw is not None:
            self.stream.write("\n")
            self.stream.flush()


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def train_one_epoch(trainer: Trainer, epoch: int, progress: Optional[Progress] = None,
                    stop: Optional["StopRequest"] = None) -> dict:
    """in: a Trainer, the epoch number, a Progress or None, a StopRequest or None -> out: {"train_loss",
    "img_per_s", "seconds", "steps"} of the epoch, summed over ranks (at most ``steps_per_epoch`` steps; the
    loss is NaN when no step was taken). The loader is set to ``epoch`` first (the same epoch's pass continues,
    another's is abandoned: an epoch cut short by --max-steps is not continued by the next). A resumed
    mid-epoch Trainer (``partial``) continues the epoch where it stopped. Asked to stop, it returns after the
    current step with ``partial``: the epoch so far (epoch, steps, loss_sum, seen, seconds), for the checkpoint."""
    t = trainer
    t.train_loader.set_epoch(epoch)
    t.net.train()
    done = t.partial if t.partial is not None and t.partial["epoch"] == epoch else None
    t.partial = None
    t0 = time.perf_counter() - (done["seconds"] if done else 0.0)
    loss_sum = torch.tensor(done["loss_sum"] if done else 0.0, dtype=torch.float64, device=t.ctx.device)
    seen, steps = (done["seen"], done["steps"]) if done else (0, 0)
    for images, targets in t.train_loader:
        if t.channels_last:
            images = images.permute(0, 3, 1, 2)  # NHWC batch viewed as channels-last NCHW
        with torch.autocast(t.ctx.device.type, dtype=t.amp_dtype, enabled=t.amp_dtype is not None):
            logits = t.net(images)
        loss = soft_target_cross_entropy(logits, targets)
        t.optimizer.zero_grad(set_to_none=True)
        t.scaler.scale(loss).backward()
        t.scaler.step(t.optimizer)
        t.scaler.update()
        t.scheduler.step()
        loss_sum += loss.detach()
        seen += len(images)
        steps += 1
        if progress is not None and progress.due(steps):
            rate = seen * t.ctx.world / (time.perf_counter() - t0)
            progress.update(steps, f"loss {loss.item():.4f}  {rate:.0f} img/s")
        if steps >= t.steps_per_epoch and steps < len(t.train_loader):  # --max-steps: the epoch cut short
            break
        if stop is not None and steps < t.steps_per_epoch and stop.agreed(t.ctx, steps):
            if progress is not None:
                progress.close()
            t.partial = {"epoch": epoch, "steps": steps, "loss_sum": float(loss_sum), "seen": seen,
                         "seconds": time.perf_counter() - t0}
            return {"partial": t.partial}
    if progress is not None:
        progress.close()
    seconds = time.perf_counter() - t0
    total_loss, total_steps, total_seen = _reduce([float(loss_sum), steps, seen], t.ctx.device)
    loss = total_loss / total_steps if total_steps else float("nan")
    return {"train_loss": loss, "img_per_s": total_seen / seconds, "seconds": seconds, "steps": int(total_steps)}


def evaluate(trainer: Trainer) -> Tuple[float, float]:
    """in: a Trainer with a validation loader -> out: (top-1, top-5) in percent over every validation image
    of every rank. Targets may be class indices (B,) or one-hot rows (B, C)."""
    t = trainer
    t.model.eval()
    correct1 = correct5 = count = 0.0
    with torch.no_grad():
        for images, targets in t.val_loader:
            if t.channels_last:
                images = images.permute(0, 3, 1, 2)
            with torch.autocast(t.ctx.device.type, dtype=t.amp_dtype, enabled=t.amp_dtype is not None):
                logits = t.model(images)
            labels = targets.to(t.ctx.device)
            labels = labels.argmax(1) if labels.ndim == 2 else labels
            top = logits.topk(min(5, logits.shape[1]), dim=1).indices
            correct1 += (top[:, 0] == labels).sum().item()
            correct5 += (top == labels[:, None]).any(1).sum().item()
            count += len(labels)
    c1, c5, n = _reduce([correct1, correct5, count], t.ctx.device)
    return 100.0 * c1 / max(n, 1), 100.0 * c5 / max(n, 1)


def _finite(value):
    """in: a number or None -> out: the number, or None when it is NaN/inf (JSON and CSV never hold NaN)."""
    return None if value is None or not math.isfinite(value) else float(value)


def record(trainer: Trainer, epoch: int, stats: dict, top1: Optional[float], top5: Optional[float]) -> bool:
    """in: the epoch's training stats and validation top-1/top-5 (None without validation) -> out: whether it
    is the best epoch so far by top-1. Appends the epoch's row to the history."""
    row = dict(epoch=epoch, train_loss=_finite(stats["train_loss"]), val_top1=_finite(top1),
               val_top5=_finite(top5), lr=trainer.optimizer.param_groups[0]["lr"],
               img_per_s=_finite(stats["img_per_s"]), seconds=stats["seconds"])
    trainer.history.append(row)
    if stats.get("steps", 1) == 0:
        log.warning("epoch %d: no training step was taken (no loss to record)", epoch)
    elif row["train_loss"] is None:
        log.warning("epoch %d: the training loss is not finite (diverged? try a lower --lr)", epoch)
    is_best = row["val_top1"] is not None and (trainer.best is None or row["val_top1"] > trainer.best["top1"])
    if is_best:
        trainer.best = {"epoch": epoch, "top1": row["val_top1"], "top5": row["val_top5"]}
    return is_best


def checkpoint_state(trainer: Trainer, epoch: int, args, wall_time_s: float, partial: Optional[dict] = None) -> dict:
    """in: a Trainer after ``record`` (or stopped mid-epoch: ``epoch`` the last whole one, -1 for none, and
    ``partial`` the epoch so far) -> out: the checkpoint dict (every rank's loader state gathered: all ranks must
    call this). Plain data and tensors only: ``torch.load(weights_only=True)`` reads it."""
    t = trainer
    loaders = _gather(t.train_loader.state_dict(), t.ctx.world)
    return {"partial": partial, "epoch": epoch, "model": t.model.state_dict(), "optimizer": t.optimizer.state_dict(),
            "scheduler": t.scheduler.state_dict(), "scaler": t.scaler.state_dict(), "loader": loaders,
            "num_classes": t.num_classes, "model_name": args.model, "history": t.history, "best": t.best,
            "wall_time_s": wall_time_s, "args": plain_args(args)}


def plain_args(args) -> dict:
    """in: the parsed flags -> out: those that are plain data (str, int, float, bool, None, and lists, tuples and
    dicts of them), as they are saved with a run (checkpoints, args.json; ``torch.load(weights_only=True)`` and
    JSON read them back)."""
    def plain(v):
        if v is None or isinstance(v, (str, bool, int, float)):
            return type(v) in (str, bool, int, float, type(None))  # not numpy scalars, not str/int subclasses
        if isinstance(v, (list, tuple)):
            return all(plain(x) for x in v)
        if isinstance(v, dict):
            return all(isinstance(k, str) and plain(x) for k, x in v.items())
        return False
    return {k: v for k, v in vars(args).items() if plain(v) and k != "given"}


# -- logs and the summary ----------------------------------------------------------------------------------------
def write_metrics(out: Path, history: List[dict]) -> None:
    """metrics.csv from the whole history (rewritten atomically each epoch; empty cells where a value is None)."""
    def write(fh):
        writer = csv.writer(fh)
        writer.writerow(METRICS)
        for row in history:
            writer.writerow(["" if row[k] is None else row[k] for k in METRICS])
    _atomic_write(out / "metrics.csv", write, mode="w")


def summary(history: List[dict], best: Optional[dict], *, epochs: int, wall_time_s: float, out: Path,
            extra: dict) -> dict:
    """in: the history, the best epoch, the planned epochs, the wall time -> out: the summary (JSON-safe, no
    NaN): final and best top-1/top-5, wall time, where the outputs are, the history."""
    last = history[-1] if history else None
    final = None if last is None else {"epoch": last["epoch"], "top1": last["val_top1"], "top5": last["val_top5"],
                                       "train_loss": last["train_loss"]}
    done = len(history)
    files = {"last": str(out / LAST) if done else None, "best": str(out / BEST) if best else None,
             "metrics": str(out / "metrics.csv"), "summary": str(out / "summary.json")}
    return {"output": str(out), "epochs_done": done, "epochs": epochs, "complete": done >= epochs,
            "final": final, "best": best, "wall_time_s": round(wall_time_s, 3), "files": files, **extra,
            "history": history}


def write_summary(out: Path, data: dict) -> None:
    text = json.dumps(data, indent=2, allow_nan=False) + "\n"
    _atomic_write(out / "summary.json", lambda fh: fh.write(text), mode="w")


def report(data: dict) -> str:
    """in: a summary -> out: the lines printed at the end of a run."""
    def scores(d):
        if d is None or d.get("top1") is None:
            return "no validation (give --val-data, or a val/ folder in --data)"
        return f"top-1 {d['top1']:.2f}  top-5 {d['top5']:.2f}"
    lines = [f"{data['epochs_done']} of {data['epochs']} epochs, wall time {_clock(data['wall_time_s'])}"]
    if data["final"] is not None:
        lines.append(f"  final (epoch {data['final']['epoch']}): {scores(data['final'])}")
    if data["best"] is not None:
        lines.append(f"  best  (epoch {data['best']['epoch']}): {scores(data['best'])}")
    written = [Path(p).name for p in data["files"].values() if p and Path(p).exists()]
    lines.append(f"  outputs in {data['output']}: {', '.join(written)}")
    return "\n".join(lines)


def _tensorboard(out: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
        return SummaryWriter(str(out / "tb"))
    except Exception:  # TensorBoard is optional
        return None


# -- the whole run -----------------------------------------------------------------------------------------------
def _warn_about_plan(args, val_dir: Optional[Path]) -> None:
    if val_dir is None:
        log.warning("no validation folder (no val/ in --data %s, no --val-data): the run reports no top-1/top-5 "
                    "and keeps no best checkpoint", args.data or "(sample dataset)")
    if args.warmup_epochs > args.epochs:
        log.warning("--warmup-epochs %g is longer than the run (--epochs %d): the learning rate never reaches its "
                    "peak and the cosine decay never starts", args.warmup_epochs, args.epochs)


def run(args) -> Optional[Trainer]:
    """in: the parsed ``train`` flags -> out: the Trainer after the last epoch (``None`` when a resumed run
    was already complete). Prints one line per epoch and, at the end, the final and best top-1/top-5, the wall
    time and where the outputs are."""
    started = time.perf_counter()
    ckpt = None
    if args.resume is not None:  # the run's own flags first: every flag left out takes the run's value
        path = Path(args.resume) if args.resume else Path(args.output) / LAST
        ckpt = load_checkpoint(path)
        args = resumed_args(args, ckpt.get("args") or {}, str(path))
        from . import image_headers  # the run's own image limits
        image_headers.set_limits(getattr(args, "max_image_pixels", None), getattr(args, "max_aspect_ratio", None))
    check_model_name(args.model)
    out = Path(args.output)
    created = not out.exists()
    ctx = setup(args.device)
    lock, ok = None, False
    try:
        train_dir, val_dir = find_splits(args.data, args.val_data)
        num_classes = args.num_classes or count_classes(train_dir)
        if ckpt is not None:
            check_resumable(ckpt, path, model=args.model, num_classes=num_classes)
            if ckpt["epoch"] + 1 >= args.epochs:  # nothing to do: the folder is not even locked
                _say_complete(ckpt, path, args, out, ctx)
                ok = True
                return None
        lock = prepare_output(out, resume=args.resume is not None, overwrite=args.overwrite, is_main=ctx.is_main)
        if ctx.is_main:
            _warn_about_plan(args, val_dir)
            write_args(out, plain_args(args), lambda p, text: _atomic_write(p, lambda fh: fh.write(text), "w"))
        trainer = build(args, ctx, train_dir, val_dir, num_classes)
        if ckpt is not None:
            restore(trainer, ckpt)
            del ckpt
        _fit(trainer, args, out, started)
        ok = True
        return trainer
    finally:
        if lock is not None:
            lock.release()
        if ctx.is_main and created and not ok:
            _remove_if_unused(out)
        teardown(ctx)


def _remove_if_unused(out: Path) -> None:
    """A run that failed before writing anything leaves no folder it created (only its lock and args.json)."""
    if not out.is_dir():
        return
    left = {p.name for p in out.iterdir()}
    if left <= {_folder.LOCK, ARGS_FILE}:
        for name in left:
            (out / name).unlink(missing_ok=True)
        out.rmdir()


def _extra(trainer: Trainer, args) -> dict:
    return {"model": args.model, "num_classes": trainer.num_classes, "world_size": trainer.ctx.world,
            "global_batch": trainer.global_batch, "lr": trainer.lr, "amp": trainer.amp,
            "device": str(trainer.ctx.device)}


def _fit(trainer: Trainer, args, out: Path, started: float) -> None:
    t, ctx = trainer, trainer.ctx
    tb = _tensorboard(out) if ctx.is_main else None
    if ctx.is_main:
        print(f"training {args.model} ({t.num_classes} classes) on {ctx.world} process(es), {ctx.device}: global "
              f"batch {t.global_batch}, lr {t.lr:g}, AMP {t.amp}, epochs {t.start_epoch}..{args.epochs - 1}, "
              f"{t.steps_per_epoch} step(s) per epoch", flush=True)
    stop = StopRequest().install()
    try:
        for epoch in range(t.start_epoch, args.epochs):
            if not _fit_epoch(t, args, out, started, epoch, tb, stop):
                break
    finally:
        stop.restore()
    if ctx.is_main and tb is not None:
        tb.close()
    if stop.signum is not None and (t.partial is not None or len(t.history) < args.epochs):
        raise Interrupted(stop.signum, _resume_hint(t, args, out))
    if ctx.is_main:
        print("done: " + report(summary(t.history, t.best, epochs=args.epochs, out=out, extra=_extra(t, args),
                                        wall_time_s=t.wall_time_s + time.perf_counter() - started)), flush=True)


def _fit_epoch(t: Trainer, args, out: Path, started: float, epoch: int, tb, stop: "StopRequest") -> bool:
    """One epoch: train, evaluate, record, checkpoint, log. -> whether to go on (False after a stop request;
    stopped mid-epoch, the checkpoint is a mid-epoch one: ``partial`` holds the epoch so far)."""
    ctx = t.ctx
    progress = Progress(t.steps_per_epoch, f"epoch {epoch}") if ctx.is_main and not args.no_progress else None
    stats = train_one_epoch(t, epoch, progress, stop=stop)
    if stats.get("partial") is not None:  # stopped mid-epoch: save where it is
        wall = t.wall_time_s + time.perf_counter() - started
        state = checkpoint_state(t, epoch - 1, args, wall, partial=stats["partial"])
        if ctx.is_main:
            _atomic_write(out / LAST, lambda fh: torch.save(state, fh))
        return False
    top1, top5 = evaluate(t) if t.val_loader is not None else (None, None)
    is_best = record(t, epoch, stats, top1, top5)
    wall = t.wall_time_s + time.perf_counter() - started
    state = checkpoint_state(t, epoch, args, wall)
    if not ctx.is_main:
        return not stop.agreed(ctx)
    save_checkpoint(state, out, epoch=epoch, keep=args.keep_checkpoints, is_best=is_best)
    write_metrics(out, t.history)
    data = summary(t.history, t.best, epochs=args.epochs, wall_time_s=wall, out=out, extra=_extra(t, args))
    write_summary(out, data)
    if tb is not None:
        for k in METRICS[1:]:
            if t.history[-1][k] is not None:
                tb.add_scalar(k, t.history[-1][k], epoch)
    row = t.history[-1]
    val = "no validation" if row["val_top1"] is None else f"val top-1 {top1:.2f} top-5 {top5:.2f}"
    loss = f"{row['train_loss']:.4f}" if row["train_loss"] is not None else (
        "none (no steps)" if stats.get("steps", 1) == 0 else "not finite")
    print(f"epoch {epoch}: train loss {loss}, {val}, {stats['img_per_s']:.0f} img/s", flush=True)
    return not stop.agreed(ctx)


class Interrupted(Exception):
    """The run stopped on SIGINT/SIGTERM after saving a checkpoint; the message says how to resume. The command
    line exits with 128 + the signal's number."""

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.signum = signum
        self.exit_status = 128 + signum


class StopRequest:
    """SIGINT (Ctrl-C) and SIGTERM ask the run to stop after the current step and save a checkpoint; a second
    signal stops it at once (KeyboardInterrupt). Installed only in the main thread; ``restore`` puts the previous
    handlers back. Under torchrun every rank gets the signal; ``agreed`` makes all ranks stop at the same step."""

    POLL_STEPS = 20  # several processes: they agree on stopping every this many steps (one all_reduce)

    def __init__(self):
        self.signum: Optional[int] = None
        self._previous = {}

    def install(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.signum is not None:
            self.restore()
            raise KeyboardInterrupt
        self.signum = signum
        print(f"\n{signal.Signals(signum).name}: stopping after this step to save a checkpoint (send it again to "
              "stop at once, without saving)", file=sys.stderr, flush=True)

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def agreed(self, ctx: Context, step: Optional[int] = None) -> bool:
        """Whether to stop now: this process's request alone, or (several processes) any rank's, checked every
        ``POLL_STEPS`` steps and at epoch ends (``step`` None), so all ranks stop together."""
        if ctx.world == 1:
            return self.signum is not None
        if step is not None and step % self.POLL_STEPS:
            return False
        flag = _reduce([float(self.signum if self.signum is not None else 0)], ctx.device)[0]
        if flag and self.signum is None:
            self.signum = signal.SIGTERM
        return bool(flag)


def _resume_hint(t: Trainer, args, out: Path) -> str:
    """The message of an interrupted run: where it stopped, what was saved, the exact command that resumes."""
    partial = t.partial
    where = (f"epoch {partial['epoch']}, step {partial['steps']} of {t.steps_per_epoch}" if partial
             else f"the end of epoch {t.history[-1]['epoch']}" if t.history else "the start")
    launcher = (f"torchrun --nproc_per_node {t.ctx.world} -m dali_mixup" if t.ctx.world > 1 else "dali-mixup")
    return (f"interrupted at {where}; saved {out / LAST}. To continue (the run's flags are saved with it): "
            f"{launcher} train --output {shlex.quote(str(out))} --resume")


def _say_complete(ckpt: dict, path: Path, args, out: Path, ctx: Context) -> None:
    """A resumed run that has nothing left to train: say so and show its results; nothing is written."""
    if not ctx.is_main:
        return
    history, done = ckpt.get("history", []), ckpt["epoch"] + 1
    data = summary(history, ckpt.get("best"), epochs=done, wall_time_s=float(ckpt.get("wall_time_s", 0.0)),
                   out=path.parent, extra={})
    print(f"the run in {path.parent} is complete: {path.name} holds {done} epoch(s), --epochs asks for "
          f"{args.epochs}; nothing to train, nothing rewritten (raise --epochs to train longer)\n" + report(data),
          flush=True)
