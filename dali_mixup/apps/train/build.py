"""Building a run: the model (torchvision or timm), the loaders, SGD with a warm-up + cosine schedule, the grad
scaler, all held by one ``Trainer``."""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable, List, Optional

import torch
import torch.distributed as dist

from ... import loader as _loader
from ...losses import mixup_binary_cross_entropy, mixup_cross_entropy
from ...compat import per_batch_sizes
from ...resolution import ResolutionSchedule
from ..args import mixup_config
from .processes import Context


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


def _param_groups(model, weight_decay):
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)  # norms and biases: no weight decay
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


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
    loss_fn: Callable[[torch.Tensor, object], torch.Tensor] = mixup_cross_entropy

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
                                              seed=args.seed, mixup_off_epoch=(args.mixup_off_epoch or None)
                                              if mix else None, targets=getattr(args, "targets", "soft"),
                                              **dict(common, image_size=train_size(args)),
                                              **getattr(args, "train_loader_options", {}))
    if len(train_loader) == 0:
        raise ValueError(f"--batch-size {args.batch_size}: larger than this process's share of {train_dir} "
                         f"({len(train_loader.dataset)} images over {ctx.world} process(es)): no full batch")
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
                   args.channels_last, steps, num_classes, global_batch, lr, loss_fn=make_loss(args))


def train_size(args):
    """The training crop size: --img-size, FFCV's progressive schedule from --min-res, --max-res, --end-ramp and
    --start-ramp, or timm's size per batch from --train-img-sizes and its options (with either, --img-size is the
    validation size)."""
    names = ("min_res", "max_res", "end_ramp", "start_ramp")
    given = [n for n in names if getattr(args, n, None) is not None]
    per_batch = getattr(args, "train_img_sizes", None)
    if given and per_batch:
        raise ValueError("--train-img-sizes (a size per batch) and --min-res/--max-res (a size per epoch) are "
                         "alternatives: give one")
    if per_batch:
        try:
            return per_batch_sizes(args)
        except ValueError as exc:
            raise ValueError(f"--train-img-sizes {' '.join(map(str, per_batch))} with --train-size-probs/"
                             f"--train-size-schedule: {exc}") from exc
    if not given:
        return args.image_size
    if len(given) < len(names):
        missing = ", ".join("--" + n.replace("_", "-") for n in names if n not in given)
        raise ValueError(f"progressive resizing needs --min-res, --max-res, --end-ramp and --start-ramp: {missing} "
                         f"missing")
    return ResolutionSchedule(args.min_res, args.max_res, args.end_ramp, args.start_ramp)


def make_loss(args) -> Callable[[torch.Tensor, object], torch.Tensor]:
    """The training loss of the flags, on dense or compact targets: soft-target cross-entropy (timm's
    SoftTargetCrossEntropy), or with --bce-loss timm's BinaryCrossEntropy(--bce-target-thresh, --bce-sum,
    --bce-pos-weight) as timm's train.py builds it with Mixup."""
    bce = getattr(args, "bce_loss", False)
    given = [f"--bce-{name.replace('_', '-')}" for name in ("target_thresh", "pos_weight")
             if getattr(args, f"bce_{name}", None) is not None] + (["--bce-sum"] if getattr(args, "bce_sum", False)
                                                                   else [])
    if not bce:
        if given:
            raise ValueError(f"{', '.join(given)}: only with --bce-loss")
        return mixup_cross_entropy
    return partial(mixup_binary_cross_entropy, target_threshold=args.bce_target_thresh, sum_classes=args.bce_sum,
                   pos_weight=args.bce_pos_weight)

