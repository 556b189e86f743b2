"""What a run reports: one history row per epoch (``record``), metrics.csv, summary.json, the lines printed at
the end (``report``), TensorBoard when it is installed."""

from __future__ import annotations

import csv
import json
import logging
import math
from pathlib import Path
from typing import List, Optional

from .build import Trainer
from .output import BEST, LAST, atomic_write

log = logging.getLogger("dali_mixup")

METRICS = ("epoch", "train_loss", "val_top1", "val_top5", "lr", "img_per_s", "seconds")


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


def write_metrics(out: Path, history: List[dict]) -> None:
    """metrics.csv from the whole history (rewritten atomically each epoch; empty cells where a value is None)."""
    def write(fh):
        writer = csv.writer(fh)
        writer.writerow(METRICS)
        for row in history:
            writer.writerow(["" if row[k] is None else row[k] for k in METRICS])
    atomic_write(out / "metrics.csv", write, mode="w")


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
    atomic_write(out / "summary.json", lambda fh: fh.write(text), mode="w")


def report(data: dict) -> str:
    """in: a summary -> out: the lines printed at the end of a run."""
    def scores(d):
        if d is None or d.get("top1") is None:
            return "no validation (give --val-data, or a val/ folder in --data)"
        return f"top-1 {d['top1']:.2f}  top-5 {d['top5']:.2f}"
    lines = [f"{data['epochs_done']} of {data['epochs']} epochs, wall time {hms(data['wall_time_s'])}"]
    if data["final"] is not None:
        lines.append(f"  final (epoch {data['final']['epoch']}): {scores(data['final'])}")
    if data["best"] is not None:
        lines.append(f"  best  (epoch {data['best']['epoch']}): {scores(data['best'])}")
    written = [Path(p).name for p in data["files"].values() if p and Path(p).exists()]
    lines.append(f"  outputs in {data['output']}: {', '.join(written)}")
    return "\n".join(lines)


def hms(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def open_tensorboard(out: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
        return SummaryWriter(str(out / "tb"))
    except Exception:  # TensorBoard is optional
        return None

