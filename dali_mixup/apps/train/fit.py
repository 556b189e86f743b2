"""``dali-mixup train``'s whole run: the run's own flags on resume, the output folder, build, restore, then per
epoch train, evaluate, record, checkpoint and log; a signal stops it with a checkpoint and the command that
resumes it."""

from __future__ import annotations

import logging
import shlex
import time
from pathlib import Path
from typing import Optional

import torch

from ... import image_headers
from ..args import count_classes, find_splits
from .build import Trainer, build, check_model_name
from .checkpoint import check_resumable, checkpoint_state, load_checkpoint, plain_args, restore, save_checkpoint
from .epoch import train_one_epoch
from .evaluate import evaluate
from .output import LAST, atomic_write, prepare_output, remove_if_unused
from .processes import Context, setup, teardown
from .records import METRICS, open_tensorboard, record, report, summary, write_metrics, write_summary
from .run_args import resumed_args, write_args
from .signals import Interrupted, StopRequest

log = logging.getLogger("dali_mixup")


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
        args = resumed_args(args, ckpt["args"], str(path))
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
            write_args(out, plain_args(args), lambda p, text: atomic_write(p, lambda fh: fh.write(text), "w"))
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
            remove_if_unused(out)
        teardown(ctx)


def _extra(trainer: Trainer, args) -> dict:
    return {"model": args.model, "num_classes": trainer.num_classes, "world_size": trainer.ctx.world,
            "global_batch": trainer.global_batch, "lr": trainer.lr, "amp": trainer.amp,
            "device": str(trainer.ctx.device)}


def _fit(trainer: Trainer, args, out: Path, started: float) -> None:
    t, ctx = trainer, trainer.ctx
    tb = open_tensorboard(out) if ctx.is_main else None
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


def _fit_epoch(t: Trainer, args, out: Path, started: float, epoch: int, tb, stop: StopRequest) -> bool:
    """One epoch: train, evaluate, record, checkpoint, log. -> whether to go on (False after a stop request;
    stopped mid-epoch, the checkpoint is a mid-epoch one: ``partial`` holds the epoch so far)."""
    ctx = t.ctx
    stats = train_one_epoch(t, epoch, progress=ctx.is_main and not args.no_progress, stop=stop)
    if stats.get("partial") is not None:  # stopped mid-epoch: save where it is
        wall = t.wall_time_s + time.perf_counter() - started
        state = checkpoint_state(t, epoch - 1, args, wall, partial=stats["partial"])
        if ctx.is_main:
            atomic_write(out / LAST, lambda fh: torch.save(state, fh))
        return False
    top1, top5 = evaluate(t) if t.val_loader is not None else (None, None)
    is_best = record(t, epoch, stats, top1, top5)
    wall = t.wall_time_s + time.perf_counter() - started
    state = checkpoint_state(t, epoch, args, wall)  # every rank: the loaders' states are gathered
    if ctx.is_main:
        save_checkpoint(state, out, epoch=epoch, keep=args.keep_checkpoints, is_best=is_best)
        _write_logs(t, args, out, wall, tb)
        print(_epoch_line(t.history[-1], stats), flush=True)
    return not stop.agreed(ctx)


def _write_logs(t: Trainer, args, out: Path, wall: float, tb) -> None:
    """metrics.csv, summary.json and TensorBoard, after an epoch (main process)."""
    write_metrics(out, t.history)
    write_summary(out, summary(t.history, t.best, epochs=args.epochs, wall_time_s=wall, out=out,
                               extra=_extra(t, args)))
    if tb is not None:
        row = t.history[-1]
        for k in METRICS[1:]:
            if row[k] is not None:
                tb.add_scalar(k, row[k], row["epoch"])


def _epoch_line(row: dict, stats: dict) -> str:
    """The line printed after an epoch: its loss, validation top-1/top-5, images per second."""
    val = "no validation" if row["val_top1"] is None else f"val top-1 {row['val_top1']:.2f} top-5 {row['val_top5']:.2f}"
    loss = f"{row['train_loss']:.4f}" if row["train_loss"] is not None else (
        "none (no steps)" if stats.get("steps", 1) == 0 else "not finite")
    return f"epoch {row['epoch']}: train loss {loss}, {val}, {stats['img_per_s']:.0f} img/s"


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
    history, done = ckpt["history"], ckpt["epoch"] + 1
    data = summary(history, ckpt["best"], epochs=done, wall_time_s=float(ckpt["wall_time_s"]),
                   out=path.parent, extra={})
    print(f"the run in {path.parent} is complete: {path.name} holds {done} epoch(s), --epochs asks for "
          f"{args.epochs}; nothing to train, nothing rewritten (raise --epochs to train longer)\n" + report(data),
          flush=True)

