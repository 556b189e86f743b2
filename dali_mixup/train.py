"""``dali-mixup train``: an ImageNet-style trainer fed by the DALI loader, one process per GPU (torchrun/DDP).

Single process:   dali-mixup train --data DIR --model resnet50 --epochs 90
One node, 8 GPUs: torchrun --nproc_per_node 8 -m dali_mixup train --data DIR ...
Several nodes:    torchrun --nnodes N --node_rank R --nproc_per_node 8 --rdzv_backend c10d \\
                           --rdzv_endpoint HOST:PORT -m dali_mixup train --data DIR ...

DIR holds ``train/`` and ``val/`` ImageFolders (or give --val-data). DDP uses NCCL on GPUs and gloo on the CPU;
each rank reads its own DALI shard; metrics are reduced across ranks; only rank 0 writes checkpoints and logs.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Optional

import torch
import torch.distributed as dist
import torch.nn.functional as F

import dali_mixup as dm
from .loader import create_dali_loader


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", help="folder with train/ and val/ ImageFolders; default: the built-in sample dataset")
    p.add_argument("--val-data", help="validation ImageFolder (default: DATA/val)")
    p.add_argument("--model", default="resnet50", help="torchvision model name (timm names when timm is installed)")
    p.add_argument("--num-classes", type=int, help="default: the number of class folders in the training data")
    p.add_argument("--epochs", type=int, default=90)
    p.add_argument("--batch-size", type=int, default=64, help="per process")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--lr", type=float, default=0.1, help="learning rate for a global batch of 256 (scaled)")
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--weight-decay", type=float, default=5e-5, help="not applied to norms and biases")
    p.add_argument("--warmup-epochs", type=float, default=5.0)
    p.add_argument("--amp", default="auto", choices=["auto", "bf16", "fp16", "off"],
                   help="auto: bf16 on GPUs that support it, off on the CPU")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--mixup-alpha", type=float, default=0.2)
    p.add_argument("--cutmix-alpha", type=float, default=0.0)
    p.add_argument("--mix-mode", default="batch", choices=list(dm.MODES))
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.add_argument("--mixup-off-epoch", type=int, default=None, help="no mixing from this epoch on")
    p.add_argument("--backend", default="fused", choices=["fused", "dali", "none"])
    p.add_argument("--device", default="auto", choices=["auto", "gpu", "cpu"])
    p.add_argument("--threads", type=int, default=4, help="DALI threads per process")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", default="runs/train", help="checkpoints, metrics.csv, summary.json")
    p.add_argument("--resume", help="checkpoint to continue from (model, optimiser, scaler, schedule, loader)")
    p.add_argument("--max-steps", type=int, default=None, help="stop each epoch after this many steps (smoke runs)")
    p.add_argument("--no-progress", action="store_true")


def _param_groups(model, weight_decay):
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)  # norms and biases: no weight decay
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_model(name: str, num_classes: int) -> torch.nn.Module:
    import torchvision
    if name in torchvision.models.list_models(module=torchvision.models):
        return torchvision.models.get_model(name, num_classes=num_classes)
    try:
        import timm
    except ImportError:
        timm = None
    if timm is not None and timm.is_model(name):
        return timm.create_model(name, num_classes=num_classes)
    raise SystemExit(f"error: --model {name}: not a torchvision model" + ("" if timm else " (and timm is not installed)"))


def soft_target_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against soft targets (timm's SoftTargetCrossEntropy), averaged over the batch."""
    return torch.sum(-targets * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()


def _checksum(model) -> str:
    """Digest of the trainable parameters (BatchNorm running statistics are per rank between broadcasts)."""
    h = hashlib.sha256()
    for p in model.parameters():
        h.update(p.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


class _Progress:
    def __init__(self, total, enabled, prefix):
        self.total, self.enabled, self.prefix = total, enabled, prefix

    def update(self, done, text):
        if self.enabled:
            width = 24
            filled = int(width * done / max(self.total, 1))
            sys.stderr.write(f"\r{self.prefix} [{'#' * filled}{'.' * (width - filled)}] {done}/{self.total} {text}")
            sys.stderr.flush()

    def close(self):
        if self.enabled:
            sys.stderr.write("\n")


def _reduce(values, device):
    t = torch.tensor(values, dtype=torch.float64, device=device)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t)
    return t.tolist()


def evaluate(model, loader, device, channels_last, amp_dtype):
    model.eval()
    correct1 = correct5 = count = 0.0
    with torch.no_grad():
        for images, targets in loader:
            images = images.to(device, non_blocking=True)
            if channels_last:
                images = images.permute(0, 3, 1, 2)  # NHWC batch viewed as channels-last NCHW
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                logits = model(images)
            labels = targets.to(device)  # the eval loader gives class indices
            top = logits.topk(min(5, logits.shape[1]), dim=1).indices
            correct1 += (top[:, 0] == labels).sum().item()
            correct5 += (top == labels[:, None]).any(1).sum().item()
            count += len(labels)
    c1, c5, n = _reduce([correct1, correct5, count], device)
    return 100.0 * c1 / max(n, 1), 100.0 * c5 / max(n, 1)


def run(args) -> dict:
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    want_gpu = args.device == "gpu" or (args.device == "auto" and torch.cuda.is_available())
    if args.device == "gpu" and not torch.cuda.is_available():
        raise SystemExit("error: --device gpu: torch sees no CUDA device")
    if distributed:
        dist.init_process_group("nccl" if want_gpu else "gloo")
    rank = dist.get_rank() if distributed else 0
    world = dist.get_world_size() if distributed else 1
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if want_gpu:
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    is_main = rank == 0
    try:
        return _train(args, rank, world, device, is_main)
    finally:
        if distributed:
            dist.destroy_process_group()


def _resolve_data(args):
    from .sample_data import ensure_sample_data
    root = Path(args.data) if args.data else ensure_sample_data()
    if not root.exists():
        raise SystemExit(f"error: --data {root}: no such directory")
    train_dir = root / "train" if (root / "train").is_dir() else root
    val_dir = Path(args.val_data) if args.val_data else (root / "val" if (root / "val").is_dir() else None)
    return train_dir, val_dir


def _train(args, rank, world, device, is_main) -> dict:
    torch.manual_seed(args.seed)
    train_dir, val_dir = _resolve_data(args)
    num_classes = args.num_classes
    if num_classes is None:
        num_classes = sum(1 for p in train_dir.iterdir() if p.is_dir()) if train_dir.is_dir() else 0
        if num_classes < 1:
            raise SystemExit(f"error: --data {train_dir}: no class folders; give --num-classes")
    amp = args.amp
    if amp == "auto":
        amp = "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "off"
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "off": None}[amp]
    mix = None  # a config with both alphas 0 never mixes but still smooths the labels
    if args.mixup_alpha > 0 or args.cutmix_alpha > 0 or args.label_smoothing > 0:
        try:
            mix = dm.MixupConfig(num_classes, mixup_alpha=args.mixup_alpha, cutmix_alpha=args.cutmix_alpha,
                                 mode=args.mix_mode, label_smoothing=args.label_smoothing)
        except (TypeError, ValueError) as exc:
            raise SystemExit(f"error: {exc}") from exc
    dali_device = "gpu" if device.type == "cuda" else "cpu"
    out_dtype = torch.float16 if device.type == "cuda" else torch.float32
    # channels_last: the loader writes NHWC and the batch is viewed as NCHW with channels-last strides (no copy)
    loader_args = dict(batch_size=args.batch_size, num_classes=num_classes, image_size=args.image_size,
                       device=dali_device, num_threads=args.threads, out_dtype=out_dtype,
                       layout="NHWC" if args.channels_last else "NCHW")
    train_loader = create_dali_loader(train_dir, mixup=mix, backend=args.backend if mix else "none",
                                      seed=args.seed, **loader_args)
    if args.mixup_off_epoch is not None:
        off = args.mixup_off_epoch
        train_loader.mixup_schedule = lambda epoch: epoch < off
    val_loader = None
    if val_dir is not None:
        val_loader = create_dali_loader(val_dir, train=False, **loader_args)

    model = build_model(args.model, num_classes).to(device)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    global_batch = args.batch_size * world
    lr = args.lr * global_batch / 256
    optimizer = torch.optim.SGD(_param_groups(model, args.weight_decay), lr=lr, momentum=args.momentum,
                                nesterov=True)
    steps_per_epoch = min(len(train_loader), args.max_steps or len(train_loader))
    warmup = max(1, int(args.warmup_epochs * steps_per_epoch))
    total = max(1, args.epochs * steps_per_epoch)

    def schedule(step):
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16")
    start_epoch = 0
    out = Path(args.output)
    if args.resume:
        ckpt = torch.load(args.resume, map_location=device, weights_only=False)
        if ckpt["num_classes"] != num_classes:
            raise SystemExit(f"error: --resume {args.resume}: checkpoint has num_classes={ckpt['num_classes']}, "
                             f"the data has {num_classes}")
        if ckpt["model_name"] != args.model:
            raise SystemExit(f"error: --resume {args.resume}: checkpoint is a {ckpt['model_name']}, not {args.model}")
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        train_loader.load_state_dict(ckpt["loader"][rank] if isinstance(ckpt["loader"], list) else ckpt["loader"])
        start_epoch = ckpt["epoch"] + 1
    ddp_model = model
    if dist.is_available() and dist.is_initialized():
        ddp_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    if is_main:
        out.mkdir(parents=True, exist_ok=True)
        log_new = not (out / "metrics.csv").exists() or not args.resume
        log = open(out / "metrics.csv", "w" if log_new else "a", newline="")
        writer = csv.writer(log)
        if log_new:
            writer.writerow(["epoch", "train_loss", "val_top1", "val_top5", "lr", "img_per_s", "seconds"])
        tb = None
        try:
            from torch.utils.tensorboard import SummaryWriter
            tb = SummaryWriter(str(out / "tb"))
        except Exception:  # TensorBoard is optional
            tb = None
    history = []
    first_losses = []
    for epoch in range(start_epoch, args.epochs):
        ddp_model.train()
        progress = _Progress(steps_per_epoch, is_main and not args.no_progress, f"epoch {epoch}")
        t0 = time.perf_counter()
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        seen = 0
        for step, (images, targets) in enumerate(train_loader):
            if args.channels_last:
                images = images.permute(0, 3, 1, 2)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                logits = ddp_model(images)
            loss = soft_target_cross_entropy(logits, targets)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            loss_sum += loss.detach()
            seen += len(images)
            if step < 2:  # for checking that a resumed run sees the same batches and losses
                first_losses.append([epoch, step, loss.item(), images.float().sum().item()])
            if is_main and (step % 10 == 0 or step + 1 == steps_per_epoch):
                rate = seen * world / (time.perf_counter() - t0)
                progress.update(step + 1, f"loss {loss.item():.4f} {rate:.0f} img/s")
            if args.max_steps and step + 1 >= args.max_steps:
                break
        progress.close()
        seconds = time.perf_counter() - t0
        total_loss, total_steps, total_seen = _reduce([float(loss_sum), step + 1, seen], device)
        train_loss = total_loss / total_steps
        top1 = top5 = float("nan")
        if val_loader is not None:
            top1, top5 = evaluate(model, val_loader, device, args.channels_last, amp_dtype)
        row = dict(epoch=epoch, train_loss=train_loss, val_top1=top1, val_top5=top5,
                   lr=optimizer.param_groups[0]["lr"], img_per_s=total_seen / seconds, seconds=seconds)
        history.append(row)
        loader_states = [None] * world
        state = train_loader.state_dict()
        if dist.is_available() and dist.is_initialized():
            dist.all_gather_object(loader_states, state)
        else:
            loader_states = [state]
        if is_main:
            writer.writerow([row[k] for k in ("epoch", "train_loss", "val_top1", "val_top5", "lr", "img_per_s",
                                              "seconds")])
            log.flush()
            if tb is not None:
                for k in ("train_loss", "val_top1", "val_top5", "lr", "img_per_s"):
                    tb.add_scalar(k, row[k], epoch)
            print(f"epoch {epoch}: train loss {train_loss:.4f}, val top-1 {top1:.2f} top-5 {top5:.2f}, "
                  f"{row['img_per_s']:.0f} img/s", flush=True)
            ckpt = {"epoch": epoch, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "loader": loader_states,
                    "num_classes": num_classes, "model_name": args.model, "args": vars(args)}
            torch.save(ckpt, out / f"checkpoint-{epoch:03d}.pt")
            torch.save(ckpt, out / "checkpoint-last.pt")
    checksums = [None] * (dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1)
    if dist.is_available() and dist.is_initialized():
        dist.all_gather_object(checksums, _checksum(model))
    else:
        checksums = [_checksum(model)]
    summary = {"history": history, "first_losses": first_losses, "param_checksums": checksums,
               "world_size": world, "global_batch": global_batch, "amp": amp, "device": str(device)}
    if is_main:
        log.close()
        if tb is not None:
            tb.close()
        (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def main(argv: Optional[list] = None) -> int:
    parser = argparse.ArgumentParser(prog="dali-mixup train", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    run(parser.parse_args(argv))
    return 0
