"""One training epoch: forward, the loss (``Trainer.loss_fn``), backward, step; a tqdm progress bar on the main
process."""

from __future__ import annotations

import sys
import time
from typing import IO, TYPE_CHECKING, Optional, Union

import torch
from tqdm import tqdm

from .build import Trainer
from .processes import all_sum

if TYPE_CHECKING:
    from .signals import StopRequest


def progress_bar(total: int, desc: str, *, initial: int = 0, file: Optional[IO] = None) -> tqdm:
    """in: the epoch's steps, the bar's label, steps already done (a resumed epoch), the stream (stderr) -> out:
    a tqdm bar, drawn at most every 0.5 s on a terminal (so at least once a second while steps take under half a
    second) and every 10 s in a log file; ``miniters=1``: the time is checked at every step."""
    stream = file or sys.stderr
    tty = hasattr(stream, "isatty") and stream.isatty()
    return tqdm(total=total, desc=desc, initial=initial, file=stream, unit="step", miniters=1,
                mininterval=0.5 if tty else 10.0, dynamic_ncols=tty)


def _due(bar: tqdm) -> bool:
    """Whether the bar's next ``update(1)`` draws (so the loss, a device sync, is read only then)."""
    return bar.n + 1 >= bar.total or bar._time() - bar.last_print_t >= bar.mininterval


def _step(t: Trainer, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """One optimiser step on a batch -> the batch's loss (a tensor on the device, not synchronised)."""
    if t.channels_last:
        images = images.permute(0, 3, 1, 2)  # NHWC batch viewed as channels-last NCHW
    with torch.autocast(t.ctx.device.type, dtype=t.amp_dtype, enabled=t.amp_dtype is not None):
        logits = t.net(images)
    loss = t.loss_fn(logits.float(), targets)  # soft-target cross-entropy, or timm's BCE (--bce-loss)
    t.optimizer.zero_grad(set_to_none=True)
    t.scaler.scale(loss).backward()
    t.scaler.step(t.optimizer)
    t.scaler.update()
    t.scheduler.step()
    return loss


def train_one_epoch(trainer: Trainer, epoch: int, progress: Union[bool, IO] = False,
                    stop: Optional["StopRequest"] = None) -> dict:
    """in: a Trainer, the epoch number, whether to show a progress bar (True: on stderr; a stream: on it; the
    command line shows it on the main process only), a StopRequest or None -> out: {"train_loss", "img_per_s",
    "seconds", "steps"} of the epoch, summed over ranks (at most ``steps_per_epoch`` steps; the loss is NaN when
    no step was taken). The loader is set to ``epoch`` first (the same epoch's pass continues, another's is
    abandoned: an epoch cut short by --train-batches-per-epoch is not continued by the next). A resumed mid-epoch
    Trainer (``partial``) continues the epoch where it stopped. Asked to stop, it returns after the current step
    with ``partial``: the epoch so far (epoch, steps, loss_sum, seen, seconds), for the checkpoint."""
    t = trainer
    t.train_loader.set_epoch(epoch)
    t.net.train()
    done = t.partial if t.partial is not None and t.partial["epoch"] == epoch else None
    t.partial = None
    t0 = time.perf_counter() - (done["seconds"] if done else 0.0)
    loss_sum = torch.tensor(done["loss_sum"] if done else 0.0, dtype=torch.float64, device=t.ctx.device)
    seen, steps = (done["seen"], done["steps"]) if done else (0, 0)
    bar = None
    if progress:
        bar = progress_bar(t.steps_per_epoch, f"epoch {epoch}", initial=steps,
                           file=None if progress is True else progress)
    try:
        for images, targets in t.train_loader:
            loss = _step(t, images, targets)
            loss_sum += loss.detach()
            seen += len(images)
            steps += 1
            if bar is not None:
                if _due(bar):
                    rate = seen * t.ctx.world / (time.perf_counter() - t0)
                    bar.set_postfix_str(f"loss {loss.item():.4f}, {rate:.0f} img/s", refresh=False)
                bar.update(1)
            if steps >= t.steps_per_epoch and steps < len(t.train_loader):  # the epoch cut short
                break
            if stop is not None and steps < t.steps_per_epoch and stop.agreed(t.ctx, steps):
                t.partial = {"epoch": epoch, "steps": steps, "loss_sum": float(loss_sum), "seen": seen,
                             "seconds": time.perf_counter() - t0}
                return {"partial": t.partial}
    finally:
        if bar is not None:
            bar.close()
    seconds = time.perf_counter() - t0
    total_loss, total_steps, total_seen = all_sum([float(loss_sum), steps, seen], t.ctx.device)
    loss = total_loss / total_steps if total_steps else float("nan")
    return {"train_loss": loss, "img_per_s": total_seen / seconds, "seconds": seconds, "steps": int(total_steps)}
